"""What the FCM and APNs providers share: find the route's credentials, build the message of a
custom HTTP body for the platform, and send it inside the node's slot (chatpush/push/mobile.py)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from chatpush.clock import Clock
from chatpush.config import MobileSettings
from chatpush.providers.base import CredentialKind, CredentialSource, SendResult
from chatpush.push.mobile import MobileMessage, mobile_message
from chatpush.routing.router import Target

C = TypeVar("C")


def read_credentials(fields: Mapping[str, str], required: Sequence[str]) -> PrivateKeyTypes:
    """Check that ``required`` fields are there and read ``private_key`` (PEM): the key, or a
    ValueError that says what is missing or unreadable."""
    missing = [name for name in required if not fields.get(name)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    try:
        return load_pem_private_key(fields["private_key"].encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"private_key is not a readable PEM private key ({exc})") from None


class MobileProvider(ABC, Generic[C]):
    kind: ClassVar[CredentialKind]
    platform: ClassVar[Literal["fcm", "ios"]]
    label: ClassVar[str]
    """How errors name the service: FCM, APNs."""

    def __init__(self, settings: MobileSettings, clock: Clock, credentials: CredentialSource):
        self._settings = settings
        self._clock = clock
        self._credentials = credentials

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def parse(self, fields: Mapping[str, str]) -> C:
        """The credentials from their stored fields (ValueError says what is wrong)."""

    @abstractmethod
    async def send_message(self, credentials: C, message: MobileMessage) -> SendResult:
        """One message with these credentials; the verdict carries the provider's own error."""

    async def send(
        self,
        target: Target,
        body: dict[str, Any],
        *,
        chat_id: str,
        message_id: str,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
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
            credentials = self.parse(fields)
        except ValueError as exc:
            return SendResult(
                "failed", 0, error=f"{self.label} credentials: {exc}", temporary=False
            )
        message = mobile_message(body, chat_id=chat_id, target=target, platform=self.platform)
        if node_slot is None:
            return await self.send_message(credentials, message)
        async with node_slot:
            return await self.send_message(credentials, message)
