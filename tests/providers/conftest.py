"""Provider tests: real fake servers on 127.0.0.1, a FakeClock, credentials from a plain dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatpush.providers.base import CredentialKind, Notification, Target
from chatpush.providers.envelope import Kind


@dataclass
class Credentials:
    """A CredentialSource over a dict: (kind, group, provider) → fields."""

    sets: dict[tuple[str, str, str | None], Mapping[str, str]] = field(default_factory=dict)

    async def lookup(
        self, kind: CredentialKind, group: str, provider: str | None
    ) -> Mapping[str, str] | None:
        return self.sets.get((kind, group, provider)) or self.sets.get((kind, group, None))


def target(**fields: object) -> Target:
    base: dict[str, object] = {
        "url": None,
        "message": None,
        "signing_secret": None,
        "authorization": None,
        "group_name": "mobile",
    }
    return Target(**{**base, **fields})  # type: ignore[arg-type]


def chat_notification(
    body: dict[str, Any],
    kind: Kind,
    chat_id: str,
    *,
    position: int | None = None,
    attempt: int | None = None,
    message_id: str = "m1",
) -> Notification:
    """The envelope a chat's outbox row becomes in the dispatcher."""
    return Notification("chat", chat_id, kind, message_id, body, position=position, attempt=attempt)
