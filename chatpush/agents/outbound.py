"""What agent alerts hand to the delivery platform: one notification per device, in the shape of
the platform's ``NewNotification`` (docs/agents.md), and the outbox that takes them.

The fields are the platform's, one for one, so handing a ring over is a copy
(:class:`Outbox` implementations do it inside the caller's transaction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.engine import Connection

SOURCE = "agent_alert"
"""The platform's source name for agent alerts (ordering keys, trail, metrics)."""


@dataclass(frozen=True, slots=True)
class Destination:
    device_type: str
    device_id: str
    group_name: str = "default"
    provider: str | None = None
    debug: bool = False
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    title: str
    body: str
    category: str | None = None
    sound: str | None = "default"


@dataclass(frozen=True, slots=True)
class AgentPush:
    """One ring or cancel for one device."""

    key: str
    """``<conversation>/<user>/<device>``: a cancel goes after its ring on one device, never
    before it (the platform sends one notification per key at a time, in order)."""
    kind: Literal["alert", "cancel"]
    body: dict[str, Any]
    destination: Destination
    alert: Alert | None = None
    renderings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    apns_push_type: str | None = "alert"
    priority: Literal["high", "normal"] = "high"
    max_attempts: int = 1
    retry_delays_s: Sequence[float] = ()
    source: str = SOURCE


class Outbox(Protocol):
    """Where rings and cancels go: the delivery platform's durable outbox."""

    def enqueue(self, conn: Connection, pushes: Sequence[AgentPush], now_ms: int) -> list[str]:
        """Inside the caller's write transaction; the message ids, one per push, in order."""
        ...

    def poke(self) -> None:
        """After the commit: wake the dispatcher."""
        ...
