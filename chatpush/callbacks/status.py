"""Status notifications (docs/callbacks.md §5): which ``_cbe_on_*`` events go where, and the exact
body of each, as pure functions building the delivery platform's ``NewNotification``s.

The service (``service.py``) calls :func:`notifications` in the transaction of the change that
causes the events; the rows commit with it (§9.1)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from chatpush.callbacks.errors import BadParameter
from chatpush.callbacks.model import CallbackRecord
from chatpush.callbacks.notifications import check_httpcb_url, copy, tag_of, target_of
from chatpush.callbacks.pushes import key_of
from chatpush.config import ServiceOptions
from chatpush.delivery import NewNotification
from chatpush.event_lists import (
    MODES,
    REMINDER,
    REMINDER_PARAMS,
    STATUS_OPTIONS,
    TYPES,
    EventList,
    EventSpec,
    default_list,
)
from chatpush.store.notifications import SubscriptionRow

CREATE_PARAMS: Final = STATUS_OPTIONS
"""§5.1: the options a create parameter of the same name overrides for its callback."""
MAX_TARGET_CHARS: Final = 2048
OWN_SUBSCRIBER: Final = "chatpush"
"""The ``subscriberId`` of the subscriptions ``subscribe_notify`` makes."""


@dataclass(frozen=True, slots=True)
class StatusRoute:
    """The status settings in effect for one callback (§5.1) and its events (§5.2)."""

    mode: str
    type: str
    target: str | None
    provider: str | None
    debug: bool
    language: str | None
    events: Mapping[str, EventSpec]
    max_attempts: int
    target_from_request: bool
    reminder_buffer_s: int | None = None
    """Set: the reminder is on (§5.6), this many seconds before ``_desired_time``."""


def resolve(
    options: ServiceOptions, properties: Mapping[str, str], lists: Mapping[str, Any]
) -> StatusRoute:
    """Precedence (§5.1): create parameters, then the service's table (over ``default``'s), then
    the event list's ``[properties]``, then the defaults."""
    listed = lists.get(options.cb_events_list) if options.cb_events_list else None
    assert listed is None or isinstance(listed, EventList)
    written: Mapping[str, Any] = {
        "_enable_status_notification": options.cb_status_mode,
        "_status_notification_type": options.cb_status_type,
        "_status_notification_target": options.cb_status_target,
        "_status_notification_provider": options.cb_status_provider,
        "_status_notification_debug": options.cb_status_debug,
        "_status_notification_language": options.cb_status_language,
    }
    from_list = listed.properties if listed is not None else {}

    def pick(name: str, default: str) -> str:
        for source in (properties, written, from_list):
            value = source.get(name)
            if value is not None:
                return "true" if value is True else "false" if value is False else str(value)
        return default

    attempts = from_list.get("_status_notification_attempts")
    target = pick("_status_notification_target", "") or None
    reminder = options.cb_reminder
    if reminder is None:
        reminder = from_list.get("_enable_notification_reminder", "false").lower() == "true"
    buffer_s = options.cb_reminder_buffer_s
    if buffer_s is None:
        buffer_s = int(from_list.get("_notification_reminder_buffer", "300"))
    events = dict(listed.events) if listed is not None else default_list()
    if reminder and listed is None:
        events[REMINDER] = EventSpec(REMINDER_PARAMS)
    return StatusRoute(
        mode=pick("_enable_status_notification", "false"),
        type=pick("_status_notification_type", "httpcb"),
        target=target,
        provider=pick("_status_notification_provider", "") or None,
        debug=pick("_status_notification_debug", "false").lower() == "true",
        language=pick("_status_notification_language", "") or None,
        events=events,
        max_attempts=int(attempts) if attempts is not None else options.cb_max_notify_attempts,
        target_from_request="_status_notification_target" in properties,
        reminder_buffer_s=buffer_s if reminder else None,
    )


def reminder_at(route: StatusRoute, desired_time_ms: int, now_ms: int) -> int | None:
    """When a SCHEDULED callback's reminder goes (§5.6): ``_desired_time`` minus the buffer, if the
    reminder is on, notifications are not off, and that time is not past; else None."""
    if route.reminder_buffer_s is None or route.mode == "false" or REMINDER not in route.events:
        return None
    at_ms = desired_time_ms - route.reminder_buffer_s * 1000
    return at_ms if at_ms >= now_ms else None


def check_params(properties: Mapping[str, str]) -> None:
    """The §5.1 create parameters' values (BadParameter: 400)."""
    mode = properties.get("_enable_status_notification")
    if mode is not None and mode not in MODES:
        raise BadParameter(f"_enable_status_notification must be one of {', '.join(MODES)}")
    kind = properties.get("_status_notification_type")
    if kind is not None and kind not in TYPES:
        raise BadParameter(f"_status_notification_type must be one of {', '.join(TYPES)}")
    debug = properties.get("_status_notification_debug")
    if debug is not None and debug.strip().lower() not in ("true", "false"):
        raise BadParameter("_status_notification_debug must be true or false")
    target = properties.get("_status_notification_target")
    if target is not None and not 1 <= len(target) <= MAX_TARGET_CHARS:
        raise BadParameter(f"_status_notification_target is 1-{MAX_TARGET_CHARS} characters")


def check_route(route: StatusRoute, allowed_prefixes: Sequence[str]) -> None:
    """What a create may not ask for (400): ``subscribe_notify`` without a target; an ``httpcb``
    target named by the request that starts with none of ``[callback] httpcb_allowed_prefixes``."""
    if route.mode == "subscribe_notify" and route.target is None:
        raise BadParameter("_enable_status_notification=subscribe_notify needs a target")
    if route.mode != "false" and route.type == "httpcb" and route.target_from_request:
        assert route.target is not None
        check_httpcb_url(route.target, allowed_prefixes, "_status_notification_target")


def status_key(record: CallbackRecord, device_type: str, device_id: str) -> str:
    """One ordering key per callback and destination (§9.2): the callback's own key (a purge
    drops both by that prefix), then a digest of the destination."""
    digest = hashlib.sha256(f"{device_type}\n{device_id}".encode()).hexdigest()[:8]
    return f"{key_of(record)}.s{digest}"


def own_subscription(
    record: CallbackRecord, route: StatusRoute, now_ms: int
) -> SubscriptionRow | None:
    """The subscription ``subscribe_notify`` makes for a callback (§5.1): the type, target,
    provider, debug and language in effect, the callback's tag as filter; it ends with the
    callback (no expiry). None in another mode."""
    if route.mode != "subscribe_notify" or route.target is None:
        return None
    return SubscriptionRow(
        id=secrets.token_hex(16).upper(),
        subscriber_id=OWN_SUBSCRIBER,
        filter=tag_of(record.service_name, record.id),
        is_pattern=False,
        device_type=route.type,
        device_id=route.target,
        provider=route.provider,
        debug=route.debug,
        language=route.language,
        authorization=None,
        callback_id=record.id,
        created_at_ms=now_ms,
        expire_at_ms=None,
    )


def body(
    event_id: str,
    spec: EventSpec,
    record: CallbackRecord,
    timestamp_s: int,
    attributes: Mapping[str, Any],
    computed: Mapping[str, Any],
) -> dict[str, Any]:
    """§5.4: ``event_id``, ``timestamp`` (epoch seconds as a string), ``_callback_state``, each
    ``notify_params`` key that has a value, then ``notify_custom`` flat; the first write of a
    key wins. Values: the event's attributes, the callback's kept ones, the record, computed."""
    wire: dict[str, Any] = dict(record.wire())
    wire["_service_id"] = record.id

    def value_of(name: str) -> Any:
        for source in (attributes, record.attributes, wire):
            if source.get(name) is not None:
                return source[name]
        if name == "_v_queue":
            return value_of("_urs_virtual_queue")
        return computed.get(name)

    out: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": str(timestamp_s),
        "_callback_state": record.state,
    }
    for name in spec.params:
        if name in out:
            continue
        value = value_of(name)
        if value is not None:
            out[name] = value
    for name, value in spec.custom.items():
        out.setdefault(name, value)
    return out


def notifications(
    record: CallbackRecord,
    route: StatusRoute,
    events: Sequence[str],
    timestamp_s: int,
    subscriptions: Sequence[SubscriptionRow],
    *,
    group_name: str,
    retry_delays_s: Sequence[float],
    attributes: Mapping[str, Any] | None = None,
    computed: Mapping[str, Any] | None = None,
) -> list[NewNotification]:
    """The status notifications of ``events`` (in order): one per event and subscription whose
    filter matches the callback's tag (§5.4), the callback's own among them
    (``subscribe_notify``). None when notifications are off."""
    if route.mode == "false" or not subscriptions:
        return []
    made = []
    tag = tag_of(record.service_name, record.id)
    for event_id in events:
        spec = route.events.get(event_id)
        if spec is None:
            continue
        content = body(event_id, spec, record, timestamp_s, attributes or {}, computed or {})
        for subscription in subscriptions:
            made.append(
                copy(
                    content,
                    tag,
                    status_key(record, subscription.device_type, subscription.device_id),
                    target_of(subscription),
                    provider=subscription.provider,
                    authorization=subscription.authorization,
                    group_name=group_name,
                    max_attempts=route.max_attempts,
                    retry_delays_s=retry_delays_s,
                )
            )
    return made
