"""Provider tests: real fake servers on 127.0.0.1, a FakeClock, credentials from a plain dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chatpush.providers.base import CredentialKind, Target


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
