"""How agent alerts hand rings and cancels to the delivery platform.

A ring or cancel is the platform's ``NewNotification`` (source ``agent_alert``); an
:class:`Outbox` takes them inside the caller's write transaction and returns their message ids.
:class:`PlatformOutbox` is the delivery platform's own (``chatpush.delivery.enqueue``, then a poke
of the dispatcher after the commit); tests may give another (``create_app(agent_outbox=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from sqlalchemy.engine import Connection

from chatpush.delivery import Alert, Destination, NewNotification, enqueue

__all__ = ["SOURCE", "AgentPush", "Alert", "Destination", "Outbox", "PlatformOutbox"]

SOURCE: Literal["agent_alert"] = "agent_alert"
"""The platform's source name for agent alerts (ordering keys, trail, metrics)."""

AgentPush = NewNotification
"""One ring or cancel for one device. Its key is ``<conversation>/<user>/<device>``: a cancel
goes after its ring on one device, never before it (one notification per key at a time)."""


class Outbox(Protocol):
    """Where rings and cancels go."""

    def enqueue(self, conn: Connection, pushes: Sequence[AgentPush], now_ms: int) -> list[str]:
        """Inside the caller's write transaction; the message ids, one per push, in order."""
        ...

    def poke(self) -> None:
        """After the commit: wake the dispatcher."""
        ...


class PlatformOutbox:
    """The delivery platform's outbox."""

    def __init__(self, poke: Callable[[], None]) -> None:
        self._poke = poke

    def enqueue(self, conn: Connection, pushes: Sequence[AgentPush], now_ms: int) -> list[str]:
        return enqueue(conn, pushes, now_ms)

    def poke(self) -> None:
        self._poke()
