"""The outcome of one send: sent, target rejected (a dead device), or an error.

A failed send says what kind of failure it is, mapped by the provider at its own boundary from its
service's errors: ``temporary`` (a resend may succeed: 5xx, a timeout, no connection) or not (a
resend cannot: 401/403, 400, a refused payload), ``retry_after_s`` (the service asked to wait that
long before the next try), and ``backoff`` (the whole service, not this one notification, asked
everyone to wait: FCM's 429, a receiver's 503 with ``Retry-After``; the send is held, not failed).
What happens next is decided by ``push/rules.py: decide`` (docs/push.md, "Outcomes").
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from chatpush.routing.router import Target

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


class Provider(Protocol):
    """What the dispatcher needs of a provider: a lifespan and one ``send`` per notification."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(
        self,
        target: Target,
        body: dict[str, Any],
        *,
        chat_id: str,
        message_id: str,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult: ...


CredentialKind = Literal["fcm", "apns"]


class CredentialSource(Protocol):
    """The provider credentials of a node group (and named provider), decrypted; None if unset.

    ``provider`` None means the group's default credentials. A named provider without credentials
    of its own uses the group's default ones."""

    async def lookup(
        self, kind: CredentialKind, group: str, provider: str | None
    ) -> Mapping[str, str] | None: ...
