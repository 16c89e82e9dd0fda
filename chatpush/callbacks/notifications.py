"""The Notification API subset (docs/callbacks.md §6), as pure functions: the glob filters, the
subscription and publish requests' rules, expiry, the ``Authorization`` header, and the copies
an event makes for the subscriptions its tag matches (the delivery platform's
``NewNotification``\\ s).

The service (``service.py``) runs them in the transaction of the change that causes the event;
the copies commit with it (§9.1)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.engine import Connection

from chatpush import device_types
from chatpush.callbacks.errors import BadParameter
from chatpush.callbacks.pushes import SOURCE
from chatpush.config import (
    CALLBACK_TEXTS,
    MAX_LANGUAGE_TAG_CHARS,
    MAX_NOTIFICATION_EXPIRE_S,
    MIN_NOTIFICATION_EXPIRE_S,
)
from chatpush.delivery import Destination, NewNotification
from chatpush.providers.envelope import TEXT_PLAIN
from chatpush.store import notifications as subscriptions
from chatpush.store.notifications import SubscriptionRow

MAX_SUBSCRIBER_CHARS: Final = 200
MAX_PROVIDER_CHARS: Final = 200
MAX_DEVICE_ID_CHARS: Final = 2048
MAX_AUTHORIZATION_CHARS: Final = 2048
TAG_PREFIX: Final = "callback."
PUBLISH_KEY_PREFIX: Final = "p."
"""The ordering keys of a publish's copies: ``p.<event id>.<n>`` (dropped by that prefix)."""
MEDIA_TYPES: Final = ("string", "localizestring")


# -- filters ---------------------------------------------------------------------------------


def glob_matches(pattern: str, tag: str) -> bool:
    """Whether ``pattern`` matches the whole ``tag``: ``*`` is any run of characters (dots too,
    none too); everything else is itself, case-sensitive. No regular expression: the parts
    between stars are found in order, leftmost first, so a long pattern cannot backtrack."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == tag
    first, *middle, last = parts
    if len(first) + len(last) > len(tag) or not tag.startswith(first) or not tag.endswith(last):
        return False
    at, end = len(first), len(tag) - len(last)
    for part in middle:
        found = tag.find(part, at, end)
        if found < 0:
            return False
        at = found + len(part)
    return True


def matches(filter_: str, is_pattern: bool, tag: str) -> bool:
    return glob_matches(filter_, tag) if is_pattern else filter_ == tag


def tag_of(service_name: str, callback_id: str) -> str:
    """The tag a callback's status events are published under (§5.1)."""
    return f"{TAG_PREFIX}{service_name}.{callback_id}"


def callback_of_tag(tag: str) -> tuple[str, str] | None:
    """(service name, callback id) of a callback's tag, or None."""
    if not tag.startswith(TAG_PREFIX) or "." not in tag[len(TAG_PREFIX) :]:
        return None
    service_name, callback_id = tag[len(TAG_PREFIX) :].rsplit(".", 1)
    return (service_name, callback_id) if service_name else None


# -- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where copies go: a subscription's ``notificationDetails`` (or a publish's)."""

    device_type: str
    device_id: str
    debug: bool
    language: str | None


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    subscriber_id: str
    provider: str | None
    filter: str
    target: Target
    authorization: str | None
    """The header value to send (``Basic <value>`` already made)."""
    expire_s: int


@dataclass(frozen=True, slots=True)
class PublishRequest:
    tag: str
    message: str | dict[str, Any]
    localize: bool
    expire_s: int | None
    target: Target | None
    provider: str | None


def _string(body: Mapping[str, Any], name: str, high: int, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise BadParameter(f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > high or not value.isprintable():
        raise BadParameter(f"{name} must be a string of 1-{high} printable characters")
    return value


def _expire(value: Any, name: str = "expire") -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadParameter(f"{name} must be a number of seconds (0 or more)")
    return value


def expiry_s(given: int | None, default_s: int) -> int:
    """§6: absent or 0 → the default; 1-29 → 30; at most 2,592,000 (longer is cut to it)."""
    if not given:
        return default_s
    return min(max(given, MIN_NOTIFICATION_EXPIRE_S), MAX_NOTIFICATION_EXPIRE_S)


def check_httpcb_url(url: str, allowed_prefixes: Sequence[str], name: str) -> None:
    """§6: an ``httpcb`` URL named by a request starts with one of ``[callback]
    httpcb_allowed_prefixes`` (BadParameter: 400); configured URLs are trusted."""
    if not url.startswith(("http://", "https://")):
        raise BadParameter(f"{name}: an httpcb target is an http(s) URL")
    if not any(url.startswith(prefix) for prefix in allowed_prefixes):
        raise BadParameter(
            f"{name}: this httpcb URL is not allowed here ([callback] httpcb_allowed_prefixes)"
        )


def authorization_header(value: str) -> str:
    """§6: a value without a space is sent as ``Basic <value>``, one with a space as it is."""
    return value if " " in value else f"Basic {value}"


def _target(details: Any, allowed_prefixes: Sequence[str]) -> Target:
    if not isinstance(details, dict):
        raise BadParameter("notificationDetails must be an object with deviceId and type")
    device_id = _string(details, "deviceId", MAX_DEVICE_ID_CHARS, required=True)
    kind = _string(details, "type", device_types.MAX_NAME_CHARS, required=True)
    assert device_id is not None and kind is not None
    device_type = device_types.canonical(kind.lower())
    if device_type is None:
        raise BadParameter(f"notificationDetails.type: one of {device_types.describe()}")
    if device_type == "httpcb":
        check_httpcb_url(device_id, allowed_prefixes, "notificationDetails.deviceId")
    properties = details.get("properties")
    properties = {} if properties is None else properties
    if not isinstance(properties, dict):
        raise BadParameter("notificationDetails.properties must be an object")
    debug = properties.get("debug", False)
    if isinstance(debug, str) and debug.strip().lower() in ("true", "false"):
        debug = debug.strip().lower() == "true"
    if not isinstance(debug, bool):
        raise BadParameter("notificationDetails.properties.debug must be true or false")
    language = _string(properties, "language", MAX_LANGUAGE_TAG_CHARS, required=False)
    return Target(device_type, device_id, debug, language)


def _body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise BadParameter("the body must be a JSON object")
    return body


def parse_subscribe(
    body: Any, *, default_expire_s: int, max_filter_chars: int, allowed_prefixes: Sequence[str]
) -> SubscribeRequest:
    """A subscription request (§6), or BadParameter (400). Members it does not know are left
    alone (GMS's clients send more)."""
    given = _body(body)
    subscriber = _string(given, "subscriberId", MAX_SUBSCRIBER_CHARS, required=True)
    filter_ = _string(given, "filter", max_filter_chars, required=True)
    provider = _string(given, "providerName", MAX_PROVIDER_CHARS, required=False)
    authorization = _string(given, "authorization", MAX_AUTHORIZATION_CHARS, required=False)
    if authorization is not None and not authorization.isascii():
        raise BadParameter("authorization must be ASCII (it is sent as a header)")
    target = _target(given.get("notificationDetails"), allowed_prefixes)
    assert subscriber is not None and filter_ is not None
    return SubscribeRequest(
        subscriber_id=subscriber,
        provider=provider,
        filter=filter_,
        target=target,
        authorization=None if authorization is None else authorization_header(authorization),
        expire_s=expiry_s(_expire(given.get("expire")), default_expire_s),
    )


def parse_publish(
    body: Any, *, max_tag_chars: int, allowed_prefixes: Sequence[str]
) -> PublishRequest:
    """A publish request (§6), or BadParameter (400)."""
    given = _body(body)
    tag = _string(given, "tag", max_tag_chars, required=True)
    assert tag is not None
    message: Any = given.get("message")
    if message is None:
        message = given.get("body")
    elif given.get("body") is not None:
        raise BadParameter("give message or body, not both")
    if message is None:
        message = ""
    if not isinstance(message, str | dict):
        raise BadParameter("message must be a string or an object")
    media = given.get("mediaType", given.get("mediatype"))
    media = "string" if media is None else media
    if media not in MEDIA_TYPES:
        raise BadParameter(f"mediaType must be one of {', '.join(MEDIA_TYPES)}")
    localize = media == "localizestring"
    if localize and (not isinstance(message, str) or message not in CALLBACK_TEXTS):
        raise BadParameter(
            "a localizestring message is a text key such as push.CALLBACK_UPCOMING.body"
        )
    expire = _expire(given.get("expire"))
    details = given.get("notificationDetails")
    target = None if details is None else _target(details, allowed_prefixes)
    provider = _string(given, "providerName", MAX_PROVIDER_CHARS, required=False)
    if expire is not None and expire > MAX_NOTIFICATION_EXPIRE_S:
        expire = MAX_NOTIFICATION_EXPIRE_S
    return PublishRequest(tag, message, localize, expire or None, target, provider)


# -- copies ---------------------------------------------------------------------------------------


def copy(
    content: str | Mapping[str, Any],
    tag: str,
    key: str,
    target: Target,
    *,
    provider: str | None,
    authorization: str | None,
    group_name: str,
    max_attempts: int,
    retry_delays_s: Sequence[float],
) -> NewNotification:
    """One copy of an event for one destination, rendered per type (§5.4): ``httpcb`` bare (a
    string as ``text/plain``), ``customhttp`` ``{"deviceId", "message"}``, ``comet`` ``{message,
    id, tag}``; FCM and APNs get the content without an alert."""
    body: dict[str, Any] = {"message": content} if isinstance(content, str) else dict(content)
    renderings: dict[str, Mapping[str, Any]] = {}
    if target.device_type == "comet":
        renderings["comet"] = {"message": content, "id": secrets.token_hex(16), "tag": tag}
    elif target.device_type == "httpcb" and isinstance(content, str):
        renderings["httpcb"] = {TEXT_PLAIN: content}
    elif target.device_type == "customhttp":
        renderings["customhttp"] = {"deviceId": target.device_id, "message": content}
    return NewNotification(
        source=SOURCE,
        key=key,
        kind="payload",
        body=body,
        destination=Destination(
            device_type=target.device_type,
            device_id=target.device_id,
            group_name=group_name,
            provider=provider,
            debug=target.debug,
            authorization=authorization if target.device_type in ("httpcb", "customhttp") else None,
        ),
        renderings=renderings,
        max_attempts=max_attempts,
        retry_delays_s=tuple(retry_delays_s),
    )


def target_of(subscription: SubscriptionRow) -> Target:
    return Target(
        subscription.device_type, subscription.device_id, subscription.debug, subscription.language
    )


def matching(conn: Connection, tag: str, now_ms: int) -> list[SubscriptionRow]:
    """The live subscriptions whose filter matches ``tag``, oldest first."""
    return subscriptions.matching(conn, tag, now_ms, glob_matches)
