"""FCM and APNs credentials: encrypted at rest, never readable back, looked up by the providers.

Each node group (and each named provider of one, ``GCTI_GMS_PushProvider``) may hold one set of
credentials per kind (``fcm``: a service account; ``apns``: a token-auth key). They are stored as
a Fernet token (AES-128-CBC + HMAC-SHA256) made with ``security.credentials_key``; what the admin
API and the CLI show is ``masked``: the first characters of each field and its length, as the GMS
credentials page shows a few characters. The providers get the decrypted fields through
``lookup``, cached for ``CACHE_TTL_MS`` (a change made on another instance is seen within it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from chatpush.clock import Clock
from chatpush.config import MobileSettings
from chatpush.errors import NotConfigured
from chatpush.providers import registry
from chatpush.providers.base import CredentialKind
from chatpush.providers.mobile import TEST_BODY, TEST_TITLE, test_message
from chatpush.providers.outbound import disallowed
from chatpush.store import credentials as rows
from chatpush.store.database import Database

log = logging.getLogger("chatpush.credentials")

CACHE_TTL_MS = 30_000
SHOWN_CHARS = 4
__all__ = ["TEST_BODY", "TEST_TITLE", "test_message"]


def kinds() -> tuple[CredentialKind, ...]:
    """The credentials kinds of the registered providers (``fcm``, ``apns``)."""
    return tuple(registry.credentials_classes())


def fields_of(kind: CredentialKind) -> tuple[str, ...]:
    """What is kept of what is given: a whole service-account JSON may be sent for ``fcm``, its
    other fields are not stored."""
    return registry.credentials_classes()[kind].credential_fields


def credential_fields(
    kind: CredentialKind, given: object, mobile: MobileSettings
) -> dict[str, str]:
    """The fields of ``kind`` in ``given``, checked by the provider's own parser, and an FCM
    ``token_uri`` against ``mobile.allowed_hosts`` (ValueError)."""
    if not isinstance(given, dict):
        raise ValueError("credentials must be a JSON object")
    fields = {name: given[name] for name in fields_of(kind) if given.get(name) is not None}
    wrong = [name for name, value in fields.items() if not isinstance(value, str)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: must be strings")
    parse(kind, fields)
    token_uri = fields.get("token_uri")
    if token_uri:
        refused = disallowed(token_uri, mobile.allowed_hosts)
        if refused is not None:
            raise ValueError(f"token_uri: {refused}")
    return fields


def parse(kind: CredentialKind, fields: Mapping[str, str]) -> object:
    """The credentials of ``kind`` read by their provider (ValueError says what is wrong)."""
    return registry.credentials_classes()[kind].read_credentials(fields)


def mask(value: str) -> str:
    """A few characters and the length: enough to tell two keys apart, not to use one."""
    shown = value[:SHOWN_CHARS] if len(value) > 2 * SHOWN_CHARS else ""
    return f"{shown}… ({len(value)} characters)"


@dataclass(frozen=True, slots=True)
class StoredCredentials:
    """What may be shown of stored credentials."""

    group: str
    provider: str | None
    kind: str
    updated_at_ms: int
    masked: dict[str, str]
    """Field → ``mask(value)``; empty when the row cannot be decrypted with the current key."""
    readable: bool = True

    def to_wire(self) -> dict[str, object]:
        return {
            "group": self.group,
            "provider": self.provider,
            "kind": self.kind,
            "updatedAt": self.updated_at_ms,
            "readable": self.readable,
            "fields": self.masked,
        }


class CredentialVault:
    def __init__(self, db: Database, clock: Clock, key: SecretStr | None) -> None:
        self._db = db
        self._clock = clock
        self._fernet = Fernet(key.get_secret_value().encode()) if key is not None else None
        self._cache: dict[tuple[str, str, str | None], tuple[int, Mapping[str, str] | None]] = {}

    @property
    def configured(self) -> bool:
        return self._fernet is not None

    async def put(
        self, kind: CredentialKind, group: str, provider: str | None, fields: Mapping[str, str]
    ) -> StoredCredentials:
        token = self._require().encrypt(json.dumps(dict(fields), sort_keys=True).encode())
        now_ms = self._clock.now_ms()
        await self._db.write(rows.put, group, provider, kind, token.decode(), now_ms)
        self._cache.clear()
        return StoredCredentials(group, provider, kind, now_ms, _masked(fields))

    async def show(
        self, kind: CredentialKind, group: str, provider: str | None
    ) -> StoredCredentials | None:
        row = await self._db.read(rows.get, group, provider, kind)
        return self._shown(row) if row is not None else None

    async def show_all(self) -> list[StoredCredentials]:
        return [self._shown(row) for row in await self._db.read(rows.list_all)]

    async def remove(self, kind: CredentialKind, group: str, provider: str | None) -> bool:
        removed: bool = await self._db.write(rows.remove, group, provider, kind)
        self._cache.clear()
        return removed

    async def lookup(
        self, kind: CredentialKind, group: str, provider: str | None
    ) -> Mapping[str, str] | None:
        """The decrypted fields for the group's named ``provider``, or the group's own ones."""
        if self._fernet is None:
            return None
        now_ms = self._clock.now_ms()
        cached = self._cache.get((kind, group, provider))
        if cached is not None and cached[0] > now_ms:
            return cached[1]
        fields = None
        for name in dict.fromkeys([provider, None]):
            row = await self._db.read(rows.get, group, name, kind)
            if row is not None:
                fields = self._decrypt(row)
                break
        self._cache[(kind, group, provider)] = (now_ms + CACHE_TTL_MS, fields)
        return fields

    def _require(self) -> Fernet:
        if self._fernet is None:
            raise NotConfigured(
                "security.credentials_key is not set: provider credentials cannot be stored "
                "(make a key with `chatpush credentials new-key`)"
            )
        return self._fernet

    def _decrypt(self, row: rows.CredentialRow) -> dict[str, str] | None:
        try:
            plain = self._require().decrypt(row.ciphertext.encode())
        except InvalidToken:
            log.error(
                "%s credentials of group %s cannot be decrypted with security.credentials_key "
                "(was the key changed?)",
                row.kind,
                row.group_name,
                extra={"action": "credentials_unreadable", "group": row.group_name},
            )
            return None
        fields: dict[str, str] = json.loads(plain)
        return fields

    def _shown(self, row: rows.CredentialRow) -> StoredCredentials:
        fields = self._decrypt(row) if self._fernet is not None else None
        return StoredCredentials(
            row.group_name,
            row.provider,
            row.kind,
            row.updated_at_ms,
            _masked(fields or {}),
            readable=fields is not None,
        )


def _masked(fields: Mapping[str, str]) -> dict[str, str]:
    return {name: mask(value) for name, value in sorted(fields.items())}


def new_key() -> str:
    return Fernet.generate_key().decode()
