"""What every provider is: one class per kind of device, behind :class:`Provider`.

A provider module holds one class: its device type (and aliases), the kind of stored
credentials it uses if any, its own settings model, how it is made from the app's context
(:meth:`Provider.create`), its ``send``, and the mapping of its service's errors into a
:class:`SendResult` at its own boundary. One line registers it
(``@chatpush.providers.registry.register``); docs/providers.md shows a whole one.

What a provider is given is a :class:`Notification` (``providers/envelope.py``): the source, the
ordering key, the kind, the message id and the provider-neutral content.

The outcome of one send: sent, target rejected (a dead device), or an error. A failed send says
what kind of failure it is: ``temporary`` (a resend may succeed: 5xx, a timeout, no connection)
or not (a resend cannot: 401/403, 400, a refused payload), ``retry_after_s`` (the service asked
to wait that long before the next try), and ``backoff`` (the whole service, not this one
notification, asked everyone to wait: FCM's 429, a receiver's 503 with ``Retry-After``; the send
is held, not failed). What happens next is decided by ``push/rules.py: decide`` (docs/push.md,
"Outcomes").
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ValidationError

from chatpush.config import ConfigError, format_validation_error
from chatpush.providers.envelope import Alert, Notification
from chatpush.providers.result import Outcome, SendResult

__all__ = [
    "Alert",
    "CredentialKind",
    "CredentialSource",
    "Notification",
    "Outcome",
    "Provider",
    "ProviderContext",
    "Publisher",
    "SendResult",
    "Target",
]

if TYPE_CHECKING:
    from chatpush.clock import Clock
    from chatpush.config import Settings
    from chatpush.providers.http import HttpClient


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to deliver: the effective provider settings of the group that serves it."""

    url: str | None
    message: str | None
    signing_secret: str | None
    authorization: str | None
    group_name: str = ""
    provider: str | None = None
    """The named provider (``GCTI_GMS_PushProvider``): with the group, the key of credentials."""
    debug: bool = False
    """``GCTI_GMS_PushDebug``: the debug receiver, or the APNs sandbox."""
    fcm_title: str | None = None
    fcm_body: str | None = None
    apple_title: str | None = None
    apple_body: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    """The group's (or named provider's) keys for other device types: ``<device type>.<key>``."""
    device_id: str | None = None
    """The device (token, device id, URL) of the notification's destination: set by the
    dispatcher. A chat's providers read the device id from the chat's body as ever; other
    sources' notifications are rendered for this one."""
    destination_authorization: str | None = None
    """The destination's own ``Authorization`` (a subscription's), set by the dispatcher; None
    when it has none. ``authorization`` above is this one, else the group's: ``httpcb`` sends
    only this one (issue 17)."""


CredentialKind = str
"""The kind of a set of stored credentials (``fcm``, ``apns``): a provider's credentials_kind."""


class CredentialSource(Protocol):
    """The provider credentials of a node group (and named provider), decrypted; None if unset.

    ``provider`` None means the group's default credentials. A named provider without credentials
    of its own uses the group's default ones."""

    async def lookup(
        self, kind: CredentialKind, group: str, provider: str | None
    ) -> Mapping[str, str] | None: ...


class Publisher(Protocol):
    """What the ``comet`` provider publishes through (the app's Bayeux server)."""

    async def publish(
        self, channel: str, data: Any, *, audience: Callable[[Any], bool] | None = None
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the app hands every provider it makes."""

    settings: Settings
    clock: Clock
    credentials: CredentialSource
    http: HttpClient
    """The app's one HTTP/1.1 client session (custom HTTP, FCM)."""
    publisher: Publisher | None = None


class Provider(ABC):
    """One kind of device: made by :meth:`create`, started and closed with the app, and one
    ``send`` per notification."""

    device_type: ClassVar[str]
    """The ``GCTI_GMS_PushDeviceType`` it serves (lower case)."""
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names of the device type (``android`` for ``fcm``)."""
    credentials_kind: ClassVar[CredentialKind | None] = None
    """The kind of stored credentials it uses (the admin API and the CLI offer it), if any;
    such a provider also defines ``credential_fields``, ``read_credentials`` and
    ``test_credentials``."""
    credential_fields: ClassVar[tuple[str, ...]] = ()
    """What is kept of the credentials given to the admin API or the CLI."""
    settings_model: ClassVar[type[BaseModel] | None] = None
    """Its own settings: ``[provider_options.<device type>]`` of the configuration file."""
    internal: ClassVar[bool] = False
    """Only the platform's own sources name its device type (``ccwebhook``): no chat, callback
    push key, agent device or ``pushEnabled`` can, and it is in no list of device types."""

    @classmethod
    @abstractmethod
    def create(cls, context: ProviderContext) -> Provider:
        """The provider, made from the app's context."""

    @classmethod
    def options(cls, settings: Settings) -> BaseModel | None:
        """Its ``[provider_options.<device type>]``, validated by ``settings_model`` (ConfigError
        says what is wrong); None when it has no settings model."""
        given = settings.provider_options.get(cls.device_type, {})
        if cls.settings_model is None:
            if given:
                raise ConfigError(f"provider_options.{cls.device_type}: takes no options")
            return None
        try:
            return cls.settings_model.model_validate(given)
        except ValidationError as exc:
            where = ("provider_options", cls.device_type)
            raise ConfigError(format_validation_error(exc, where)) from None

    @classmethod
    def read_credentials(cls, fields: Mapping[str, str]) -> object:
        """Its credentials from their fields; ValueError says what is missing or wrong."""
        raise NotImplementedError(f"{cls.__name__} uses no credentials")

    async def test_credentials(
        self, fields: Mapping[str, str], device_token: str, *, sandbox: bool = False
    ) -> SendResult:
        """Send one test notification to ``device_token`` with these credentials."""
        raise NotImplementedError(f"{type(self).__name__} uses no credentials")

    async def start(self) -> None:  # noqa: B027 (optional: most providers open something)
        """Open what it needs (connections); the app awaits this before any send."""

    async def close(self) -> None:  # noqa: B027
        """Close what ``start`` opened."""

    @abstractmethod
    async def send(
        self,
        target: Target,
        notification: Notification,
        *,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        """Deliver one notification (its kind and typed fields are on the envelope; its body is
        the content to render); map every error of the service into the result. ``node_slot``:
        the sending node's limit of requests in flight, held while the service is asked."""
