"""The settings tree: a TOML file (``--config``, ``CHATPUSH_CONFIG``) with ``CHATPUSH_*`` overrides.

Every model forbids unknown keys, so a typo stops start-up with a message naming the key.
Service options keep the Chat Server names (``flex-push-resend-delay``) that operators know.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import string
import tomllib
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from chatpush import device_types
from chatpush.environment import Schema, read_environment

FLEX_PUSH_CONTENT_KEYS = ("app-dbid", "secure-key", "session-id", "user-id")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    alias: Annotated[str, Field(min_length=1, max_length=32)] = "1"
    """This instance's alias: the envelope's ``alias`` and the triggers' ``app-dbid``."""
    instance_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    """Names this instance in leases and node records; default: host name and port."""
    nodes: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = None
    """The nodes of ``[groups.*]`` this instance hosts; default: all of them (one instance)."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65536
    body_read_timeout_s: Annotated[float, Field(gt=0, le=600)] = 15.0
    """A request body (any route, CometD long-polling included) must arrive whole within this long
    of its headers; otherwise 408 and the connection closes (chatpush/api/body_timeout.py)."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Reverse proxies (addresses or networks) whose ``X-Forwarded-For`` names the client that
    per-address limits count against (chatpush/addresses.py); empty: the peer's address."""
    ipv6_prefix_length: Annotated[int, Field(ge=32, le=128)] = 64
    """Per-address limits count an IPv6 client as its network of this many bits (56 or 48 where
    customers' sites hold a whole /56 or /48 and one of them abuses it)."""
    shutdown_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """``auto``: uvloop where it is installed (a dependency on Linux and macOS), else asyncio's
    own loop. uvloop spends less CPU per chat event (docs/PERFORMANCE.md §8)."""
    widget: bool = False
    """Serve the chat widget page at ``/widget/`` (docs/widget.md): static files of the package,
    nothing else; off by default, as a production site usually hosts its own page."""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        import ipaddress

        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return entries

    cors_origins: list[str] = Field(default_factory=list)
    """Web pages (``https://shop.example.com``) whose scripts may call the Chat API v2
    (``/genesys/2/chat/...``) and CometD (``/genesys/cometd``) from a browser; ``"*"``, alone:
    any page (then without credentials). Empty: no CORS at all (docs/chat-api.md, "CORS")."""
    cors_admin_origins: list[str] = Field(default_factory=list)
    """Web pages whose scripts may call ``/api/`` (the chat-server side and admin API, with an
    ``X-API-Key``) from a browser: exact origins only. Empty: none."""
    cors_max_age_s: Annotated[int, Field(ge=0, le=86400)] = 600
    """How long a browser may reuse a preflight answer (Chromium caps it at 7,200 s)."""

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, entries: list[str]) -> list[str]:
        if "*" in entries and len(entries) > 1:
            raise ValueError('"*" already allows every origin: list it alone, or drop it')
        return [entry if entry == "*" else _web_origin(entry) for entry in entries]

    @field_validator("cors_admin_origins")
    @classmethod
    def _cors_admin_origins(cls, entries: list[str]) -> list[str]:
        if "*" in entries:
            raise ValueError('"*" is not allowed here: list the exact origins of your pages')
        return [_web_origin(entry) for entry in entries]


def _web_origin(entry: str) -> str:
    """``entry`` of a CORS origin list as a browser sends it in ``Origin``: ``scheme://host`` or
    ``scheme://host:port``, lower case, the default port left out."""
    example = "write it as a browser sends it: https://shop.example.com, http://localhost:8000"
    try:
        parts = urllib.parse.urlsplit(entry.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"{entry!r} is not an origin; {example}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{entry!r} is not an origin (http or https and a host); {example}")
    if parts.username is not None or parts.password is not None or "*" in parts.netloc:
        raise ValueError(f"{entry!r}: no user, password or wildcard in an origin; {example}")
    if parts.path or parts.query or parts.fragment or entry.strip().endswith(("?", "#")):
        raise ValueError(f"{entry!r}: an origin has no path, not even a final /; {example}")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default_port) else f"{scheme}://{host}:{port}"


class DatabaseSettings(_Strict):
    url: str = "sqlite+aiosqlite:///chatpush.db"
    pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @field_validator("url")
    @classmethod
    def _known_driver(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


SCOPES = ("chat-server", "admin", "bridge", "metrics")
Scope = Literal["chat-server", "admin", "bridge", "metrics"]


class ApiKeySettings(_Strict):
    """One key of ``[[security.keys]]`` and what it may do (docs/security.md)."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    """Names the key in logs (never the key itself)."""
    key: SecretStr
    scopes: Annotated[list[Scope], Field(min_length=1)]

    @field_validator("key")
    @classmethod
    def _long_enough(cls, key: SecretStr) -> SecretStr:
        if len(key.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. secrets.token_urlsafe(32))")
        return key


class SecuritySettings(_Strict):
    keys: list[ApiKeySettings] = Field(default_factory=list)
    """API keys with scopes: ``chat-server``, ``admin``, ``bridge``, ``metrics``."""
    api_keys: list[SecretStr] = Field(default_factory=list)
    """Keys with every scope (the older form; a warning at start says it is broad)."""
    public_metrics: bool = False
    """``/metrics`` without a key (only where the port is reachable by the scraper alone)."""
    credentials_key: SecretStr | None = None
    """Encrypts FCM and APNs credentials at rest (a Fernet key: ``chatpush credentials new-key``).
    Without it, credentials cannot be stored and the mobile providers have none."""

    @field_validator("credentials_key")
    @classmethod
    def _fernet_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            import base64
            import binascii

            try:
                raw = base64.urlsafe_b64decode(key.get_secret_value().encode())
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    "must be a Fernet key (32 bytes, url-safe base64); "
                    "make one with `chatpush credentials new-key`"
                )
        return key


class MobileSettings(_Strict):
    """Where the mobile providers send (settings, so tests and emulators can point elsewhere)."""

    fcm_token_uri: str = "https://oauth2.googleapis.com/token"
    """Used when the service account's credentials name no ``token_uri`` of their own."""
    fcm_api_url: str = "https://fcm.googleapis.com"
    apns_host: str = "api.push.apple.com"
    apns_sandbox_host: str = "api.sandbox.push.apple.com"
    """For subscriptions with ``GCTI_GMS_PushDebug=true``."""
    apns_port: Annotated[int, Field(ge=1, le=65535)] = 443
    apns_ca_file: str | None = None
    """A CA bundle to trust instead of the system's (a test or a private APNs proxy)."""
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    total_timeout_s: Annotated[float, Field(gt=0, le=600)] = 15.0
    allowed_hosts: tuple[str, ...] = Field(
        (
            "oauth2.googleapis.com",
            "fcm.googleapis.com",
            "api.push.apple.com",
            "api.push.apple.com:2197",
            "api.sandbox.push.apple.com",
            "api.sandbox.push.apple.com:2197",
        ),
        validate_default=True,
    )
    """The only places FCM and APNs requests go to (the token endpoint of stored credentials
    included): ``host`` (https, port 443), ``host:port`` (https), or ``https://host[:port]`` /
    ``http://host[:port]`` (plain http only for an entry written so: a test or an emulator)."""
    max_answer_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65_536
    """The most of an answer read from FCM, its token endpoint or APNs; a longer one fails."""

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_allowed_origin(entry) for entry in entries)


def _allowed_origin(entry: str) -> str:
    """``entry`` of ``mobile.allowed_hosts`` as ``scheme://host:port``, lower case."""
    text = entry.strip().lower()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(
            f"{entry!r}: a host name, or https://host[:port] or http://host[:port], nothing more"
        )
    host = parts.hostname.rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}:{port}"


class ChatSettings(_Strict):
    restrict_services: bool = False
    """When true, only services named under [services.*] (besides ``default``) are served."""
    max_message_chars: Annotated[int, Field(ge=1, le=1_000_000)] = 16384
    max_nickname_chars: Annotated[int, Field(ge=1, le=10_000)] = 128
    max_user_data_keys: Annotated[int, Field(ge=0, le=10_000)] = 100
    max_user_data_value_chars: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    ended_chat_retention_s: Annotated[int, Field(ge=0, le=366 * 86400)] = 86400
    purge_interval_s: Annotated[int, Field(ge=1, le=86400)] = 300
    chats_per_address_per_minute: Annotated[int, Field(ge=0, le=1_000_000)] = 30
    """Request Chat (REST and CometD) per client address and minute, per instance; 0: no limit."""
    chats_per_address_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    """How many of those one address may make at once before the per-minute rate applies."""
    max_tracked_addresses: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    """The most client addresses a per-address limit remembers (least recently seen go first)."""
    max_events_per_chat: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    """Transcript events one chat may hold; beyond it new events are refused (ending still
    adds the leave events)."""
    max_refresh_events: Annotated[int, Field(ge=1, le=100_000)] = 100
    """The most events one Chat API reply (refresh, send, CometD envelope) carries; the client
    continues from ``nextPosition``."""
    max_refresh_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 131_072
    """The most bytes of events (their wire JSON in UTF-8) one such reply carries; a reply still
    carries one event when that event alone is larger. In memory a CometD queue may count up to
    4 bytes a character, so 4 times this (and 8 times ``server.max_body_bytes``, the largest
    event) must fit in ``cometd.max_queued_bytes``: start-up checks it."""
    idle_chat_timeout_s: Annotated[int, Field(ge=0, le=366 * 86400)] = 3600
    """A chat without a push subscription and with no client request for this long is ended
    (chats with one end by flex-push-timeout); 0: never."""


class LoggingSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "text"] = "auto"


def parse_delays_s(value: Any) -> tuple[int, ...]:
    """A retry timetable: an integer or a comma list of integers (``"5,15,60,300"``), each 1 to
    86400 seconds, at least one (``flex-push-resend-delay``, ``cc_webhook_retry_delay``)."""
    if isinstance(value, bool):
        raise ValueError("must be an integer or a comma list of integers")
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("must be an integer or a comma list of integers")
    delays: list[int] = []
    for item in items:
        if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
            raise ValueError(f"{item!r} is not an integer number of seconds")
        try:
            delay = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"{item!r} is not an integer number of seconds") from None
        if not 1 <= delay <= 86400:
            raise ValueError(f"{delay} is outside 1-86400 seconds")
        delays.append(delay)
    if not delays:
        raise ValueError("needs at least one delay")
    return tuple(delays)


def check_webhook_secret(secret: SecretStr | None) -> SecretStr | None:
    """A Standard Webhooks signing secret: ``whsec_`` + non-empty base64 (the message never
    quotes the value: it is a secret)."""
    if secret is not None:
        raw = secret.get_secret_value().removeprefix("whsec_")
        try:
            if not base64.b64decode(raw, validate=True):
                raise ValueError("must not be empty")
        except binascii.Error:
            raise ValueError("must be whsec_ followed by base64") from None
    return secret


def _parse_bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


class ServiceOptions(_Strict):
    """Chat Server options of one service (docs/chat-api.md), already merged over ``default``."""

    # Only the Chat Server names: with the Python names accepted too, a service could set
    # ``flex_push_enabled`` over a default's ``flex-push-enabled`` and the merge would ignore it.
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)

    flex_push_enabled: bool = Field(True, alias="flex-push-enabled")
    flex_push_on_join: bool = Field(True, alias="flex-push-on-join")
    flex_push_timeout_s: Annotated[int, Field(ge=1, le=1_728_000)] = Field(
        86400, alias="flex-push-timeout"
    )
    flex_push_resend_delays_s: tuple[int, ...] = Field((15,), alias="flex-push-resend-delay")
    flex_push_resend_attempts: Annotated[int, Field(ge=0, le=100)] = Field(
        3, alias="flex-push-resend-attempts"
    )
    flex_push_content: tuple[str, ...] = Field(("session-id", "user-id"), alias="flex-push-content")
    push_notification_include_payload: bool = Field(
        False, alias="push_notification_include_payload"
    )
    push_customer_notify_requestor: bool = Field(True, alias="push-customer-notify-requestor")
    """False: a customer's ``GCTI_GMS_NotifyRequestor=true`` is refused (400)."""
    push_customer_include_payload: bool = Field(True, alias="push-customer-include-payload")
    """False: a customer's ``GCTI_GMS_PushIncludePayload=true`` is refused (400) unless
    ``push_notification_include_payload`` turns the payload on anyway."""
    push_device_id_secret: SecretStr | None = Field(None, alias="push-device-id-secret")
    """Set: a subscription must prove its device id (HMAC-SHA256, docs/push.md)."""
    push_device_id_previous_secret: SecretStr | None = Field(
        None, alias="push-device-id-previous-secret"
    )
    """Also accepted while the mobile backend moves to a new ``push-device-id-secret``."""

    # -- callback options (issue 17, docs/callbacks.md): GMS names, in the same tables ----------
    cb_ttl_s: Annotated[int, Field(ge=60, le=366 * 86400)] = Field(86400, alias="_ttl")
    cb_mandatory_lookup_keys: tuple[str, ...] = Field(
        ("_customer_number",), alias="_mandatory_customer_lookup_keys"
    )
    cb_call_direction: Literal["USERTERMINATED", "USERORIGINATED"] = Field(
        "USERTERMINATED", alias="_call_direction"
    )
    cb_wait_for_agent: bool = Field(False, alias="_wait_for_agent")
    cb_wait_for_user_confirm: bool = Field(False, alias="_wait_for_user_confirm")
    cb_provide_code: bool = Field(False, alias="_provide_code")
    cb_media_type: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        "voice", alias="_media_type"
    )
    cb_max_dial_attempts: Annotated[int, Field(ge=1, le=100)] = Field(3, alias="_max_dial_attempts")
    cb_snooze_duration_s: Annotated[int, Field(ge=1, le=86400)] = Field(
        300, alias="_snooze_duration"
    )
    cb_user_confirm_timeout_s: Annotated[int, Field(ge=1, le=86400)] = Field(
        30, alias="_user_confirm_timeout"
    )
    cb_push_threshold_min: Annotated[int, Field(ge=0, le=1440)] = Field(
        5, alias="_push_notification_threshold"
    )
    cb_provider_name: Annotated[str, Field(max_length=200)] = Field("", alias="_provider_name")
    cb_node_group: Annotated[str, Field(max_length=200)] = Field("", alias="_node_group")
    cb_max_notify_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        3, alias="_max_notify_delivery_attempts"
    )
    cb_max_request_by_time_bucket: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        None, alias="_max_request_by_time_bucket"
    )
    """Set: availability is served (slots of ``_request_time_bucket`` minutes)."""
    cb_request_time_bucket_min: Annotated[int, Field(ge=1, le=1440)] = Field(
        15, alias="_request_time_bucket"
    )
    cb_timezone: str = Field("UTC", alias="_timezone")
    cb_open_hours: str | None = Field(None, alias="_open_hours")
    """``"mon-fri 08:00-18:00"`` (several: ``;`` between); unset: always open."""
    # Status notifications (§5.1): None = not written here, so an event list's [properties]
    # (then the default) applies; a create parameter of the same name comes first.
    cb_status_mode: Literal["false", "subscribe_notify", "notify"] | None = Field(
        None, alias="_enable_status_notification"
    )
    cb_status_type: Literal["httpcb", "customhttp", "comet"] | None = Field(
        None, alias="_status_notification_type"
    )
    cb_status_target: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        None, alias="_status_notification_target"
    )
    cb_status_provider: Annotated[str, Field(max_length=200)] | None = Field(
        None, alias="_status_notification_provider"
    )
    cb_status_debug: bool | None = Field(None, alias="_status_notification_debug")
    cb_status_language: Annotated[str, Field(max_length=35)] | None = Field(
        None, alias="_status_notification_language"
    )
    cb_events_list: Annotated[str, Field(max_length=200)] = Field("", alias="_callback_events_list")
    cb_reminder: bool | None = Field(None, alias="_enable_notification_reminder")
    cb_reminder_buffer_s: Annotated[int, Field(ge=0, le=366 * 86400)] | None = Field(
        None, alias="_notification_reminder_buffer"
    )
    """The name of an ``[event_lists."<name>"]``; empty: the default list."""

    _cb_bools = field_validator(
        "cb_wait_for_agent",
        "cb_wait_for_user_confirm",
        "cb_provide_code",
        "cb_status_debug",
        "cb_reminder",
        mode="before",
    )(_parse_bool)

    @field_validator("cb_status_mode", mode="before")
    @classmethod
    def _cb_status_mode(cls, value: Any) -> Any:
        return "false" if value is False else value

    @field_validator("cb_mandatory_lookup_keys", mode="before")
    @classmethod
    def _cb_lookup_keys(cls, value: Any) -> tuple[str, ...]:
        if not isinstance(value, str | list | tuple):
            raise ValueError("must be a comma list or a list of keys")
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))

    @field_validator("cb_timezone")
    @classmethod
    def _cb_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name: Europe/Paris)") from None
        return value

    @field_validator("cb_open_hours")
    @classmethod
    def _cb_open_hours(cls, value: str | None) -> str | None:
        if value is not None:
            from chatpush.open_hours import parse_open_hours

            parse_open_hours(value)  # raises ValueError naming the fault
        return value

    # -- end of callback options ----------------------------------------------------------------

    _bools = field_validator(
        "flex_push_enabled",
        "flex_push_on_join",
        "push_notification_include_payload",
        "push_customer_notify_requestor",
        "push_customer_include_payload",
        mode="before",
    )(_parse_bool)

    @field_validator("push_device_id_secret", "push_device_id_previous_secret")
    @classmethod
    def _device_id_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        # The message never quotes the value: it is a secret.
        if secret is not None and not 32 <= len(secret.get_secret_value()) <= 1024:
            raise ValueError("must be 32 to 1024 characters (make one with `openssl rand -hex 32`)")
        return secret

    @field_validator("flex_push_resend_delays_s", mode="before")
    @classmethod
    def _delays(cls, value: Any) -> tuple[int, ...]:
        return parse_delays_s(value)

    @field_validator("flex_push_content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> tuple[str, ...]:
        if not isinstance(value, str | list | tuple):
            raise ValueError("must be a comma list or a list of keys")
        items = value.split(",") if isinstance(value, str) else list(value)
        keys = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
        unknown = [key for key in keys if key not in FLEX_PUSH_CONTENT_KEYS]
        if unknown:
            raise ValueError(
                f"unknown keys {unknown}; allowed: {', '.join(FLEX_PUSH_CONTENT_KEYS)}"
            )
        return keys

    @model_validator(mode="after")
    def _previous_secret_needs_a_secret(self) -> ServiceOptions:
        if self.push_device_id_previous_secret is not None and self.push_device_id_secret is None:
            raise ValueError(
                "push-device-id-previous-secret is set without push-device-id-secret: "
                "set the new secret too, or remove the previous one"
            )
        return self


# The device types and their aliases are the registered providers' (chatpush/device_types.py).


class ProviderSettings(_Strict):
    """The provider options of a node group or of one of its named providers (GMS names)."""

    customhttp_url: str | None = Field(None, alias="customhttp.url")
    customhttp_message: str | None = Field(None, alias="customhttp.message")
    """Replaces the notification's ``message`` when set (GMS behaviour)."""
    customhttp_signing_secret: SecretStr | None = Field(None, alias="customhttp.signing_secret")
    """Standard Webhooks secret (``whsec_`` + base64): signs every POST."""
    customhttp_authorization: SecretStr | None = Field(None, alias="customhttp.authorization")
    """Sent as the ``Authorization`` header of every POST."""
    debug_customhttp_url: str | None = Field(None, alias="debug.customhttp.url")
    debug_customhttp_message: str | None = Field(None, alias="debug.customhttp.message")
    debug_customhttp_signing_secret: SecretStr | None = Field(
        None, alias="debug.customhttp.signing_secret"
    )
    debug_customhttp_authorization: SecretStr | None = Field(
        None, alias="debug.customhttp.authorization"
    )
    fcm_title: str | None = Field(None, alias="fcm.title")
    """The title of what an Android phone shows (docs/mobile.md)."""
    fcm_body: str | None = Field(None, alias="fcm.body")
    apple_title: str | None = Field(None, alias="apple.title")
    apple_body: str | None = Field(None, alias="apple.alertMessage.body")
    _options: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def options(self) -> dict[str, str]:
        """The keys of other registered providers, ``<device type>.<key>`` (docs/providers.md)."""
        return self._options

    @model_validator(mode="wrap")
    @classmethod
    def _other_providers_keys(cls, data: Any, handler: Any) -> Any:
        """``<device type>.<key>`` of a registered device type without a field here: kept, as
        a string, in ``options`` for that device type's provider."""
        moved: dict[str, str] = {}
        if isinstance(data, dict):
            declared = {name for field in cls.model_fields.values() if (name := field.alias)}
            declared |= set(cls.model_fields)
            for key, value in data.items():
                prefix = key.partition(".")[0] if isinstance(key, str) else ""
                if key in declared or not prefix or device_types.canonical(prefix) != prefix:
                    continue
                if not isinstance(value, str):
                    raise ValueError(f"{key}: must be a string")
                moved[key] = value
            data = {key: value for key, value in data.items() if key not in moved}
        model = handler(data)
        if moved:
            model.__pydantic_private__["_options"] = moved
        return model

    @field_validator("customhttp_url", "debug_customhttp_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url

    @field_validator("customhttp_signing_secret", "debug_customhttp_signing_secret")
    @classmethod
    def _webhook_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        return check_webhook_secret(secret)


class GroupSettings(ProviderSettings):
    """A node group ("GMS cluster"): its delivery nodes and its provider settings."""

    default: bool = False
    nodes: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list)
    push_enabled: tuple[str, ...] = Field(("customhttp",), alias="pushEnabled")
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)

    @field_validator("push_enabled", mode="before")
    @classmethod
    def _enabled(cls, value: Any) -> tuple[str, ...]:
        if not isinstance(value, str | list | tuple):
            raise ValueError("must be a comma list or a list of device types")
        items = value.split(",") if isinstance(value, str) else list(value)
        types = []
        for item in items:
            name = str(item).strip().lower()
            if not name:
                continue
            device_type = device_types.canonical(name)
            if device_type is None:
                known = ", ".join(device_types.known())
                raise ValueError(f"unknown device type {item!r}; known: {known}")
            types.append(device_type)
        return tuple(dict.fromkeys(types))


class CometdSettings(_Strict):
    """The Bayeux server at ``/genesys/cometd`` (chatpush.cometd.CometdLimits)."""

    max_sessions: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000
    max_sessions_per_address: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Per client address (server.trusted_proxies decides which; IPv6: per /64). A NAT'd office
    shares one address: raise it (up to max_sessions) if many clients sit behind one."""
    max_ext_bytes: Annotated[int, Field(ge=256, le=65_536)] = 4_096
    """The handshake's ``ext`` (credentials) as JSON; a session keeps it for its life."""
    max_ext_depth: Annotated[int, Field(ge=2, le=64)] = 8
    max_queued_messages: Annotated[int, Field(ge=1, le=1_000_000)] = 1_000
    max_queued_bytes: Annotated[int, Field(ge=65_536, le=1024 * 1024 * 1024)] = 1_048_576
    """Per session, unacknowledged messages included; beyond it the session is removed."""
    max_total_queued_bytes: Annotated[int, Field(ge=65_536, le=64 * 1024**3)] = 268_435_456
    """Every session's queue together (at least max_queued_bytes); a message that would pass it
    removes the sessions with the largest queues first (reason ``total_queue_full``)."""
    max_message_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65_536
    max_subscriptions: Annotated[int, Field(ge=1, le=10_000)] = 100
    connect_timeout_s: Annotated[float, Field(gt=0, le=600)] = 25.0
    max_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    foreground_lease_s: Annotated[float, Field(ge=3, le=3600)] = 30.0
    """While a session follows a chat, its push waits; the instance renews this lease every third
    of it, so a chat whose instance died is pushed again at most this long after."""
    lean_long_polling: bool = True
    """Plain long-polling POSTs answered by the lean front (chatpush/cometd/front.py) instead of
    aiohttp's per-request machinery; anything else on the connection goes to aiohttp as before.
    False: every request through aiohttp (docs/cometd.md, "The lean long-polling front")."""


class DeliverySettings(_Strict):
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    total_timeout_s: Annotated[float, Field(gt=0, le=600)] = 15.0
    concurrency_per_node: Annotated[int, Field(ge=1, le=10_000)] = 64
    concurrency_per_receiver: Annotated[int, Field(ge=1, le=10_000)] = 32
    max_answer_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65_536
    """Custom HTTP: the most of a receiver's answer read; a longer answer is a failed send."""
    heartbeat_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    node_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 15.0
    lease_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """PostgreSQL: the longest the dispatcher sleeps without looking, should a NOTIFY be lost."""
    trail_retention_s: Annotated[int, Field(ge=0, le=366 * 86400)] = 7 * 86400
    sweep_interval_s: Annotated[int, Field(ge=1, le=86400)] = 60
    """How often the flex-push-timeout sweep and the trail purge run."""

    @model_validator(mode="after")
    def _timeouts(self) -> DeliverySettings:
        # Another instance judges a node by the heartbeat it last read, up to two intervals old.
        if self.node_timeout_s <= 2 * self.heartbeat_interval_s:
            raise ValueError(
                "delivery.node_timeout_s must be longer than twice heartbeat_interval_s, or live "
                "nodes are taken for dead between two heartbeats"
            )
        return self


class AdminSettings(_Strict):
    """The admin console at ``/admin/`` (docs/admin.md): off unless enabled; an operator logs in
    with an API key that has the ``admin`` scope."""

    enabled: bool = False
    session_idle_s: Annotated[int, Field(ge=60, le=7 * 86400)] = 1800
    """A session unused for this long is logged out."""
    session_max_s: Annotated[int, Field(ge=60, le=30 * 86400)] = 8 * 3600
    """A session ends this long after its login, however busy."""
    max_sessions: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Sessions kept in this instance's memory; past it the least recently used one ends."""
    login_attempts_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 10
    """Login attempts per client address (server.trusted_proxies decides which), refilled at
    this rate, up to ``login_burst`` at once."""
    login_burst: Annotated[int, Field(ge=1, le=10_000)] = 10


# -- callbacks (issue 17, docs/callbacks.md) ----------------------------------------------------


class CallbackSettings(_Strict):
    """``[callback]``: the GMS Callback API and the contact-centre side's API."""

    restrict_services: bool = False
    """When true, only services named under [services.*] (besides ``default``) take callbacks."""
    max_query_results: Annotated[int, Field(ge=1, le=10_000)] = 100
    open_queries: bool = False
    """Queries by properties without an API key (they show customer numbers: personal data)."""
    command_lease_s: Annotated[int, Field(ge=1, le=3600)] = 60
    max_wait_s: Annotated[int, Field(ge=0, le=25)] = 25
    """The longest a pull of commands waits for one (``wait_s`` above it waits this long): lower
    it behind a proxy that times requests out sooner."""
    completed_retention_s: Annotated[int, Field(ge=0, le=366 * 86400)] = 86400
    external_base_url: str | None = None
    """``$(ExtURLBase)`` and the records' ``_url`` (``https://gms.example.com/genesys``); else
    taken from the request (``<scheme>://<Host>/genesys``)."""
    max_open_callbacks: Annotated[int, Field(ge=1, le=100_000_000)] = 1_000_000
    """Callbacks not yet completed, at most; past it a create is refused (503)."""
    httpcb_allowed_prefixes: tuple[str, ...] = ()
    """An ``httpcb`` URL named in a request (a push key's device id, a create's
    ``_status_notification_target``) must start with one of these (``https://rx.example.com/``);
    none: every such URL is refused (400). URLs in this file are trusted."""
    cc_webhook_url: Annotated[str, Field(max_length=2048)] | None = None
    """Commands to the contact-centre side are POSTed here (signed, retried) instead of pulled;
    then ``GET /api/v1/callbacks/commands`` answers 409 (docs/callbacks.md §4.2)."""
    cc_webhook_signing_secret: SecretStr | None = None
    """Standard Webhooks secret (``whsec_`` + base64) signing every command POST."""
    cc_webhook_authorization: Annotated[SecretStr, Field(max_length=4096)] | None = None
    """The ``Authorization`` header value of every command POST (``Bearer ...``)."""
    cc_webhook_retry_delays_s: tuple[int, ...] = Field(
        (5, 15, 60, 300), alias="cc_webhook_retry_delay"
    )
    """Seconds before the 2nd, 3rd... try of a command the webhook did not take; the last
    repeats."""
    command_retention_s: Annotated[int, Field(ge=60, le=366 * 86400)] = 7 * 86400
    """How long a command the webhook does not take is tried, from when it was made; then it
    is dropped (logged and counted) and the callback's next command goes."""

    @field_validator("external_base_url")
    @classmethod
    def _base_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return None if url is None else url.rstrip("/")

    @field_validator("cc_webhook_url")
    @classmethod
    def _cc_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url

    @field_validator("cc_webhook_signing_secret")
    @classmethod
    def _cc_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        return check_webhook_secret(secret)

    @field_validator("cc_webhook_retry_delays_s", mode="before")
    @classmethod
    def _cc_delays(cls, value: Any) -> tuple[int, ...]:
        return parse_delays_s(value)


MAX_NOTIFICATION_EXPIRE_S = 2_592_000
"""The longest a Notification API subscription lives (30 days, docs/callbacks.md §6)."""
MIN_NOTIFICATION_EXPIRE_S = 30
"""A shorter ``expire`` (1-29 s) is taken as this."""


class NotificationSettings(_Strict):
    """``[notification]``: the Notification API subset (docs/callbacks.md §6)."""

    default_expire_s: Annotated[
        int, Field(ge=MIN_NOTIFICATION_EXPIRE_S, le=MAX_NOTIFICATION_EXPIRE_S)
    ] = 30
    """A subscription's life when its ``expire`` is absent or 0."""
    max_delivery_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    """Tries of each published copy (status events: the service's
    ``_max_notify_delivery_attempts``)."""
    max_subscriptions_per_subscriber: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Live subscriptions of one ``subscriberId``, at most (429 beyond)."""
    max_subscriptions: Annotated[int, Field(ge=1, le=100_000_000)] = 100_000
    """Live subscriptions in all, at most (429 beyond)."""
    max_pattern_subscriptions: Annotated[int, Field(ge=0, le=100_000)] = 1_000
    """Subscriptions whose filter holds a ``*`` (API-key callers only), at most: every event is
    matched against each of them (429 beyond)."""
    max_filter_chars: Annotated[int, Field(ge=64, le=1000)] = 400
    """The longest filter (and publish tag)."""


# -- end of callbacks -----------------------------------------------------------------------------
# -- agent alerts (issue 18; docs/agents.md) -----------------------------------------------------

AGENT_EVENT_TYPES = (
    "routing.queue.member.added",
    "routing.queue.member.removed",
    "routing.conversation.updated",
    "routing.conversation.deleted",
)
"""The routing events agent alerts act on (a ring, or a cancel of one)."""
AGENT_TEMPLATE_FIELDS = ("conversation_id", "user_id", "queue_id", "media_type", "timestamp")
"""What an alert's title and body templates may name, as ``{media_type}``."""


def _check_template(template: str) -> str:
    """A title or body template names only :data:`AGENT_TEMPLATE_FIELDS`, without format specs."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"not a template ({exc}): {template!r}") from None
    for _text, name, spec, conversion in parts:
        if name is not None and (name not in AGENT_TEMPLATE_FIELDS or spec or conversion):
            raise ValueError(
                "a template names only "
                + ", ".join("{" + field + "}" for field in AGENT_TEMPLATE_FIELDS)
                + f" (no format specs or conversions); got {template!r}"
            )
    return template


AgentTemplate = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_check_template)]


class AgentSettings(_Strict):
    """Agent alerts: ring mobile agents' phones on routing events, and stop ringing them."""

    max_devices_per_agent: Annotated[int, Field(ge=1, le=100)] = 10
    """Registered devices one agent may have; one more is a 409 until one is deleted."""
    max_events_per_batch: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Events one ``POST /api/v1/agent-events`` may carry."""
    event_types: tuple[str, ...] = AGENT_EVENT_TYPES
    """The routing events acted on (some of :data:`AGENT_EVENT_TYPES`); the others are counted
    and dropped."""
    media_types: tuple[Annotated[str, Field(min_length=1, max_length=32)], ...] = ()
    """The media types acted on (``voice``, ``chat``, ``callback``...); empty: every one."""
    dedup_window_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    """A second ring of one conversation for one agent within this long is suppressed."""
    ring_title: AgentTemplate = "Incoming {media_type}"
    ring_body: AgentTemplate = "Conversation {conversation_id}"
    cancel_title: AgentTemplate = "Call Cancelled"
    cancel_body: AgentTemplate = "The call has been transferred or abandoned."
    ring_max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Tries of one ring or cancel on a temporary failure (every try the same message id)."""
    ring_retry_delays_s: tuple[Annotated[float, Field(ge=0, le=60)], ...] = (0.5, 1.0)
    dead_on_http_401: bool = True
    """A device whose send is answered 401 leaves the registry, as the reference gateway does
    (beside APNs 410 and FCM UNREGISTERED, always)."""
    trail_retention_s: Annotated[int, Field(ge=0, le=366 * 86400)] = 7 * 86400
    """How long rings, the per-conversation trail and dedup marks are kept."""
    stream_url: str | None = None
    """The event stream's WebSocket URL (ws:// or wss://); unset: webhook intake only."""
    stream_token: SecretStr | None = None
    """The bearer token sent on the stream's WebSocket handshake."""
    stream_initial_backoff_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    stream_max_backoff_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    stream_lease_s: Annotated[float, Field(ge=3, le=3600)] = 15.0
    """One instance holds the stream; another takes it over this long after the holder died."""
    presence_url: str | None = None
    """Presence, optional (off when unset): an http(s) URL with ``{userId}``, answering as the
    contact centre's presence API does (docs/agents.md, "Presence")."""
    presence_token: SecretStr | None = None
    presence_timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.5
    """A presence lookup that takes longer lets the ring through."""
    presence_suppress: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = (
        "offline",
        "away",
        "onACall",
    )
    """Presence ids that suppress a ring."""

    @field_validator("event_types")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in AGENT_EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {list(AGENT_EVENT_TYPES)}")
        return value

    @model_validator(mode="after")
    def _stream(self) -> AgentSettings:
        if self.stream_url is not None and not self.stream_url.startswith(("ws://", "wss://")):
            raise ValueError("agents.stream_url must be a ws:// or wss:// URL")
        if self.presence_url is not None and (
            not self.presence_url.startswith(("http://", "https://"))
            or "{userId}" not in self.presence_url
        ):
            raise ValueError("agents.presence_url must be an http(s) URL with {userId} in it")
        if self.stream_max_backoff_s < self.stream_initial_backoff_s:
            raise ValueError(
                "agents.stream_max_backoff_s must be at least stream_initial_backoff_s"
            )
        return self


# -- end of agent alerts -------------------------------------------------------------------------


# -- callback texts (issue 17 §7.5; docs/callbacks.md "Texts") -----------------------------------

CALLBACK_TEXTS: dict[str, str] = {
    "push.title": "Callback",
    "push.CALLBACK_UPCOMING.body": "An agent will call you shortly.",
    "push.CALLBACK_READY.body": "An agent is ready for your call.",
    "push.CALLBACK_ATTEMPT_FAILED.body": "We could not reach you; we will try again.",
    "push.CALLBACK_FINAL_ATTEMPT_FAILED.body": "We could not reach you.",
    "push.CALLBACK_PURGED.body": "Your callback request has expired.",
    "push.CALLBACK_DIALOG.body": "Your callback needs your answer.",
    "dialog.scheduled.text": "Your callback is scheduled",
    "dialog.scheduled.ok_title": "Ok",
    "dialog.connect-outbound.text": "You will receive the call shortly",
    "dialog.connect-outbound.ok_title": "Ok",
    "dialog.wait-for-agent.text": "We will notify you when agent is available",
    "dialog.wait-for-agent.ok_title": "Ok",
    "dialog.menu.label": "Agent is available right now",
    "dialog.menu.group_name": "Are you ready?",
    "dialog.menu.connect": "Yes, I'm ready to talk",
    "dialog.menu.snooze": "No, try again in {minutes} minutes",
    "dialog.menu.cancel": "Cancel, my problem has been solved",
    "dialog.menu.tones": "You will hear tones immediately after call is connected. This is normal.",
    "dialog.start-chat.label": "Start Chat",
    "dialog.connect-inbound.label": "Connecting ...",
    "dialog.snooze.text": "We will try again in {minutes} minutes",
    "dialog.snooze.ok_title": "Ok",
    "dialog.cancel.text": "Your callback has been cancelled",
    "dialog.cancel.ok_title": "Ok",
}
"""Every text key of ``[texts.*]`` with its built-in English (the last step of a lookup). The
title's built-in is used only when the node group has no ``fcm.title`` / ``apple.title``."""
CALLBACK_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "dialog.menu.snooze": ("minutes",),
    "dialog.snooze.text": ("minutes",),
}
"""The ``{name}`` substitutions a text may use; a text of any other key has none."""
MAX_TEXT_LANGUAGES = 500
MAX_TEXT_CHARS = 1000
"""A text's length at most (a push body must fit APNs's 4 KB payload beside the callback's)."""
MAX_LANGUAGE_TAG_CHARS = 35
_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*", re.ASCII)


def language_tag(tag: str) -> str:
    """The form of a language tag texts are looked up by: lower case, ``_`` as ``-``."""
    return tag.strip().lower().replace("_", "-")


def _check_texts(tables: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """``[texts.default]`` and ``[texts."<language>"]``: known keys, BCP 47-like tags, bounded
    sizes, only the substitutions a key has. The tables come back keyed by :func:`language_tag`."""
    if len(tables) > MAX_TEXT_LANGUAGES:
        raise ValueError(f"at most {MAX_TEXT_LANGUAGES} languages, got {len(tables)}")
    checked: dict[str, dict[str, str]] = {}
    for language, table in tables.items():
        tag = language_tag(language)
        if tag != "default" and (
            len(tag) > MAX_LANGUAGE_TAG_CHARS or not _LANGUAGE_TAG.fullmatch(tag)
        ):
            raise ValueError(
                f"{language!r} is not a language tag (such as fr, fr-CA, pt-BR) or default"
            )
        if tag in checked:
            raise ValueError(f"{language!r}: the language is given twice")
        for key, text in table.items():
            where = f'texts."{language}": "{key}"'
            if key not in CALLBACK_TEXTS:
                known = ", ".join(CALLBACK_TEXTS)
                raise ValueError(f"{where}: unknown text key; known: {known}")
            if not text.strip() or len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"{where}: a text is 1 to {MAX_TEXT_CHARS} characters")
            allowed = CALLBACK_TEXT_FIELDS.get(key, ())
            try:
                parts = list(string.Formatter().parse(text))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc} (write a brace as {{{{ or }}}})") from None
            for _literal, name, spec, conversion in parts:
                if name is not None and (name not in allowed or spec or conversion):
                    names = ", ".join("{" + field + "}" for field in allowed) or "nothing"
                    raise ValueError(
                        f"{where}: may substitute {names} (write a brace as {{{{ or }}}})"
                    )
        checked[tag] = dict(table)
    return checked


CallbackTexts = Annotated[dict[str, dict[str, str]], AfterValidator(_check_texts)]


# -- end of callback texts -----------------------------------------------------------------------


MAX_CACHED_SERVICES = 1000
"""Resolved service options kept, at most: with unrestricted services a client names any service,
and this bounds what it can make the process remember."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATPUSH_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )
    _toml_path: ClassVar[Path | None] = None
    _environment: ClassVar[dict[str, Any] | None] = None

    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    cometd: CometdSettings = Field(default_factory=CometdSettings)
    mobile: MobileSettings = Field(default_factory=MobileSettings)
    services: dict[str, dict[str, Any]] = Field(default_factory=dict)
    groups: dict[str, GroupSettings] = Field(default_factory=dict)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    callback: CallbackSettings = Field(default_factory=CallbackSettings)  # issue 17
    notification: NotificationSettings = Field(default_factory=NotificationSettings)
    event_lists: dict[str, Any] = Field(default_factory=dict)  # issue 17: status event lists
    """``[event_lists."<name>"]``: read into ``chatpush.event_lists.EventList``s."""

    @field_validator("event_lists", mode="before")
    @classmethod
    def _event_lists(cls, value: Any) -> dict[str, Any]:
        from chatpush.event_lists import parse_list

        if not isinstance(value, dict):
            raise ValueError("a table of event lists")
        base_dir = cls._toml_path.parent if cls._toml_path is not None else None
        return {name: parse_list(name, raw, base_dir) for name, raw in value.items()}

    @model_validator(mode="after")
    def _known_event_lists(self) -> Settings:
        for name in self.services:
            wanted = self.service_options(name).cb_events_list
            if wanted and wanted not in self.event_lists:
                raise ValueError(
                    f"services.{name}._callback_events_list: no event list {wanted!r} "
                    f"(event_lists: {', '.join(self.event_lists) or 'none'})"
                )
        return self

    agents: AgentSettings = Field(default_factory=AgentSettings)
    texts: CallbackTexts = Field(default_factory=dict)
    """``[texts.default]``, ``[texts."<language>"]``: callback pushes' and dialogs' texts."""
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """``[provider_options.<device type>]``: a registered provider's own settings (its model)."""
    _service_options: dict[str, ServiceOptions] = PrivateAttr(default_factory=dict)
    """Resolved service options by service name: settings do not change once loaded, and the
    request path asks for them on every event (a validation costs ~30 µs)."""

    @model_validator(mode="after")
    def _validate_services(self) -> Settings:
        # Resolve every configured service now, so a bad option stops start-up, not a request.
        for name in self.services:
            self.service_options(name)
        defaults = [name for name, group in self.groups.items() if group.default]
        if len(defaults) > 1:
            raise ValueError(f"groups: only one group may be default, got {', '.join(defaults)}")
        owners: dict[str, str] = {}
        for name, group in self.groups.items():
            for node in group.nodes:
                if node in owners:
                    raise ValueError(f"groups.{name}.nodes: {node!r} is also in {owners[node]!r}")
                owners[node] = name
        for node in self.server.nodes or ():
            if node not in owners:
                raise ValueError(f"server.nodes: {node!r} is not a node of any group")
        for name in self.provider_options:
            if device_types.canonical(name) != name:
                known = ", ".join(device_types.known())
                raise ValueError(f"provider_options: unknown device type {name!r}; known: {known}")
        return self

    @property
    def hosted_nodes(self) -> list[str]:
        """The nodes this instance runs: ``server.nodes``, or every configured node."""
        every = [node for group in self.groups.values() for node in group.nodes]
        hosted = self.server.nodes
        return every if hosted is None else [node for node in every if node in hosted]

    @property
    def default_group(self) -> str | None:
        for name, group in self.groups.items():
            if group.default:
                return name
        return next(iter(self.groups), None) if len(self.groups) == 1 else None

    def service_options(self, service_name: str) -> ServiceOptions:
        """The options of ``service_name``: its overrides merged over ``services.default``."""
        options = self._service_options.get(service_name)
        if options is not None:
            return options
        merged = {**self.services.get("default", {}), **self.services.get(service_name, {})}
        try:
            options = ServiceOptions.model_validate(merged)
        except ValidationError as exc:
            raise _prefixed(exc, ("services", service_name)) from None
        if len(self._service_options) < MAX_CACHED_SERVICES:
            self._service_options[service_name] = options
        return options

    def serves(self, service_name: str) -> bool:
        if not self.chat.restrict_services:
            return True
        return service_name != "default" and service_name in self.services

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CHATPUSH_* variables are read by chatpush.environment (unknown names refused, list
        # values as JSON or comma lists), not by pydantic-settings' own source.
        environment = cls._environment
        if environment is None:
            environment = _read_environment(_toml_values(cls._toml_path))
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            InitSettingsSource(settings_cls, init_kwargs=environment),
        ]
        if cls._toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)


def _prefixed(exc: ValidationError, prefix: tuple[str, ...]) -> ConfigError:
    error = ConfigError(format_validation_error(exc, prefix))
    error.validation = (exc, prefix)  # type: ignore[attr-defined]  # for load_settings' message
    return error


def format_validation_error(
    exc: ValidationError,
    prefix: tuple[str, ...] = (),
    origins: dict[tuple[str, ...], str] | None = None,
) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in (*prefix, *error["loc"]))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        variable = _origin(origins or {}, tuple(str(part) for part in (*prefix, *error["loc"])))
        if variable is not None:
            key = f"{variable}: {key}" if key else variable
            if error["type"] in ("list_type", "tuple_type"):
                message += ' (JSON such as \'["a", "b"]\', or a comma-separated list: a,b)'
        # A model-level check has no location; its message names the keys itself.
        lines.append(f"{key}: {message}" if key else message)
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _origin(origins: dict[tuple[str, ...], str], loc: tuple[str, ...]) -> str | None:
    """The variable that set ``loc`` or a table holding it."""
    for length in range(len(loc), 0, -1):
        if loc[:length] in origins:
            return origins[loc[:length]]
    return None


def _toml_values(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _read_environment(file_values: dict[str, Any]) -> dict[str, Any]:
    environment = read_environment(os.environ, _schema(), file_values)
    if environment.problems:
        raise ConfigError("invalid environment:\n  " + "\n  ".join(environment.problems))
    return environment.values


def _schema() -> Schema:
    return Schema(Settings, GroupSettings, ProviderSettings, ServiceOptions)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; ``path`` falls back to ``CHATPUSH_CONFIG``, then to no file at all."""
    if path is None:
        path = os.environ.get("CHATPUSH_CONFIG") or None
    toml_path = Path(path) if path is not None else None
    file_values: dict[str, Any] = {}
    if toml_path is not None:
        if not toml_path.is_file():
            raise ConfigError(f"configuration file not found: {toml_path}")
        try:
            with toml_path.open("rb") as handle:
                file_values = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: not valid TOML: {exc}") from None
    environment = read_environment(os.environ, _schema(), file_values)
    if environment.problems:
        raise ConfigError("invalid environment:\n  " + "\n  ".join(environment.problems))
    previous = Settings._toml_path, Settings._environment
    Settings._toml_path, Settings._environment = toml_path, environment.values
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origins=environment.origins)) from None
    except ConfigError as exc:  # a service's options: name the variable that set a bad one
        validation = getattr(exc, "validation", None)
        if validation is None:
            raise
        found, prefix = validation
        message = format_validation_error(found, prefix, origins=environment.origins)
        raise ConfigError(message) from None
    finally:
        Settings._toml_path, Settings._environment = previous
