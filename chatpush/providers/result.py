"""The outcome of one send (re-exported by ``providers/base.py``, where the module docstring says
what each field means). Its own module, importing nothing of the package, so that the helpers
beside the providers (``outbound.py``) can build one without importing the base class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Outcome", "SendResult"]

Outcome = Literal["sent", "rejected", "failed"]
"""``rejected``: the provider says the device token is dead (it ends the subscription)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    latency_ms: int
    http_status: int | None = None
    error: str | None = None
    temporary: bool = True
    retry_after_s: float | None = None
    """The service asked that this be tried again no sooner (seconds)."""
    backoff: bool = False
    """The service asked that nothing at all be sent to it for ``retry_after_s``: hold the send."""

    @property
    def permanent(self) -> bool:
        """Failed, and no resend of the same notification can succeed."""
        return self.outcome == "failed" and not self.temporary

    @property
    def held(self) -> bool:
        """Not tried or refused for now under a service-wide backoff: sent again after it."""
        return self.outcome == "failed" and self.temporary and self.backoff
