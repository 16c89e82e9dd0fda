"""The outcome of one send: sent, target rejected (a dead device), or an error."""

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
