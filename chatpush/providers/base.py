"""The outcome of one send: sent, target rejected (a dead device), or an error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["sent", "rejected", "failed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    latency_ms: int
    http_status: int | None = None
    error: str | None = None
    temporary: bool = True
    retry_after_s: float | None = None
