"""What the store keeps of a push subscription: the request it was made with and its state.

Plain data: ``push/rules.py: decide`` computes states, ``store/subscriptions.py`` reads and writes
them; neither layer needs the other's code for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["active", "failed", "done", "rejected"]
"""``rejected``: the provider reported the device token dead; nothing is ever sent to it again."""


@dataclass(frozen=True, slots=True)
class Trigger:
    position: int
    attempt: int
    final: bool = False
    held: bool = True
    """Decided but not yet handed to the outbox (held while the client is in the foreground)."""


@dataclass(frozen=True, slots=True)
class State:
    status: Status = "active"
    ack_position: int = 0
    notifiable_last: int = 0
    outstanding: Trigger | None = None
    wake_at_ms: int | None = None
    foreground_until_ms: int | None = None
    """The client is connected live until then (renewed while it stays): push waits."""

    def in_foreground(self, now_ms: int) -> bool:
        return self.foreground_until_ms is not None and now_ms < self.foreground_until_ms


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """What Request Chat subscribed to (``push/subscription.py: parse_subscription``)."""

    device_id: str
    device_type: str
    group_name: str
    provider: str | None
    debug: bool
    notify_requestor: bool
    include_payload: bool
    reliable: bool
    client_channel: str | None
