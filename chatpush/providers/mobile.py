"""What the FCM and APNs providers share: find the route's credentials, build the platform's
message of a notification (its kind from the envelope, its content from the body;
chatpush/providers/message.py), and send it inside the node's slot."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar, Generic, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from chatpush.clock import Clock
from chatpush.config import MobileSettings
from chatpush.providers.base import (
    CredentialKind,
    CredentialSource,
    Notification,
    Provider,
    SendResult,
    Target,
)
from chatpush.providers.message import RENDERED, MobileMessage, mobile_message, source_message

C = TypeVar("C")
MAX_PARSED_CREDENTIALS = 64
"""Credentials kept read per provider (one per node group and named provider in use)."""


def read_credentials(
    fields: Mapping[str, str], required: Sequence[str], *, stored: bool = False
) -> PrivateKeyTypes:
    """Check that ``required`` fields are there and read ``private_key`` (PEM): the key, or a
    ValueError that says what is missing or unreadable.

    ``stored``: the fields were read from the credentials store, which takes only credentials
    read here in full (``chatpush/push/credentials.py``), so an RSA key's consistency checks
    are skipped: they cost 40 ms of CPU, holding the GIL, on the event loop, at the first send
    of every process (the first second of benchmarks/agent_alerts.py, docs/PERFORMANCE.md §10.3).
    """
    missing = [name for name in required if not fields.get(name)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    try:
        return load_pem_private_key(
            fields["private_key"].encode(), password=None, unsafe_skip_rsa_key_validation=stored
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"private_key is not a readable PEM private key ({exc})") from None


TEST_TITLE = "chatpush"
TEST_BODY = "Test notification: these credentials work."


def test_message(device_token: str, *, sandbox: bool = False) -> MobileMessage:
    """The one notification a "test credentials" call sends."""
    return MobileMessage(
        device_token, "bare", TEST_TITLE, TEST_BODY, {"test": "true"}, sandbox=sandbox
    )


class MobileProvider(Provider, Generic[C]):
    kind: ClassVar[CredentialKind]
    """Its ``credentials_kind``."""
    platform: ClassVar[Literal["fcm", "ios"]]
    label: ClassVar[str]
    """How errors name the service: FCM, APNs."""

    def __init__(self, settings: MobileSettings, clock: Clock, credentials: CredentialSource):
        self._settings = settings
        self._clock = clock
        self._credentials = credentials
        self._parsed: dict[tuple[tuple[str, str], ...], C] = {}
        """Credentials read, by their stored fields (at most ``MAX_PARSED_CREDENTIALS``)."""

    @classmethod
    @abstractmethod
    def read_credentials(cls, fields: Mapping[str, str]) -> C:
        """The credentials from their stored fields (ValueError says what is wrong)."""

    @classmethod
    def read_stored_credentials(cls, fields: Mapping[str, str]) -> C:
        """The credentials from fields read from the store, which were read in full with
        ``read_credentials`` when they were stored: a provider may skip costly checks here."""
        return cls.read_credentials(fields)

    def parse(self, fields: Mapping[str, str], *, stored: bool = False) -> C:
        """The credentials read from ``fields``, remembered by their content: reading a PEM key
        costs milliseconds (an RSA key, 5-40 ms), once per credentials rather than per send.
        ``stored``: ``fields`` come from the credentials store (``read_stored_credentials``)."""
        key = tuple(sorted(fields.items()))
        found = self._parsed.get(key)
        if found is None:
            found = (
                self.read_stored_credentials(fields) if stored else self.read_credentials(fields)
            )
            if len(self._parsed) >= MAX_PARSED_CREDENTIALS:
                self._parsed.pop(next(iter(self._parsed)))
            self._parsed[key] = found
        return found

    async def test_credentials(
        self, fields: Mapping[str, str], device_token: str, *, sandbox: bool = False
    ) -> SendResult:
        try:
            credentials = self.parse(fields)
        except ValueError as exc:  # stored before a check that now refuses them
            return SendResult("failed", 0, error=f"{self.label} credentials: {exc}")
        return await self.send_message(credentials, test_message(device_token, sandbox=sandbox))

    @abstractmethod
    async def send_message(self, credentials: C, message: MobileMessage) -> SendResult:
        """One message with these credentials; the verdict carries the provider's own error."""

    async def send(
        self,
        target: Target,
        notification: Notification,
        *,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        chat = notification.source == "chat"
        if chat and notification.kind not in RENDERED:
            return SendResult(
                "failed",
                0,
                error=f"{self.label} has no message for a notification of kind {notification.kind}",
                temporary=False,
            )
        fields = await self._credentials.lookup(self.kind, target.group_name, target.provider)
        if fields is None:
            named = f" provider {target.provider!r}" if target.provider else ""
            return SendResult(
                "failed",
                0,
                error=f"no {self.label} credentials for group {target.group_name!r}{named}",
                temporary=False,
            )
        try:
            credentials = self.parse(fields, stored=True)
        except ValueError as exc:
            return SendResult(
                "failed", 0, error=f"{self.label} credentials: {exc}", temporary=False
            )
        render = mobile_message if chat else source_message
        message = render(notification, target=target, platform=self.platform)
        if node_slot is None:
            return await self.send_message(credentials, message)
        async with node_slot:
            return await self.send_message(credentials, message)
