"""What a notification source hands the platform, and what it may register.

A source (the chat pipeline, callbacks, agent alerts) builds :class:`NewNotification`\\ s and
queues them with :func:`enqueue` inside its own write transaction (``Database.write``): the rows
commit with the change that caused them. After the commit it wakes the dispatcher
(``Dispatcher.poke``). The dispatcher sends each (source, key)'s notifications one at a time, in
enqueue order; a source other than chat names its destination on each notification, and may
register :class:`SourceHooks` to learn how its sends ended (docs/architecture.md, "A new
notification source").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.engine import Connection

from chatpush import device_types
from chatpush.providers.envelope import Alert, Kind, Priority, Source
from chatpush.store import outbox

__all__ = [
    "MAX_KEY_CHARS",
    "Alert",
    "Destination",
    "Kind",
    "NewNotification",
    "Outcome",
    "Priority",
    "Source",
    "SourceHooks",
    "drop_pending",
    "enqueue",
]

MAX_KEY_CHARS = 200
"""The longest ordering key (the outbox's ``key`` column)."""
MAX_ATTEMPTS = 100
"""The most tries a notification may ask for (without ``expires_at_ms``)."""
MAX_ATTEMPTS_UNTIL_EXPIRY = 2**31 - 1
"""With ``expires_at_ms``, the time is the limit: as many tries as fit before it."""
MAX_DEVICE_ID_CHARS = 4096
"""The longest device id (a token, or an httpcb URL)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a notification of a source other than chat goes (a chat's: its subscription)."""

    device_type: str
    """A registered device type: customhttp, comet, fcm, ios (httpcb from callbacks)."""
    device_id: str
    """Token / device id / URL (httpcb)."""
    group_name: str = "default"
    """The node group (routing: pushEnabled, nodes, failover)."""
    provider: str | None = None
    """A named provider of the group."""
    debug: bool = False
    """The debug endpoint / APNs sandbox."""
    authorization: str | None = None
    """The ``Authorization`` header value of the request (httpcb: the subscription's)."""


@dataclass(frozen=True, slots=True)
class NewNotification:
    source: Source
    key: str
    """The ordering key (at most 200 characters): one notification in flight per (source,
    key), in enqueue order."""
    kind: Kind
    body: dict[str, Any]
    """The provider-neutral JSON content."""
    destination: Destination | None = None
    """Required for every source but ``chat`` (a chat's route by its subscription)."""
    position: int | None = None
    """Chat triggers only."""
    attempt: int | None = None
    """Chat triggers only."""
    alert: Alert | None = None
    renderings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Device type -> that provider's whole payload (APNs: the JSON payload; FCM: the message
    object without token/target; custom HTTP: the body; comet: the data published); absent: the
    provider's default rendering of body and alert (docs/providers.md)."""
    apns_push_type: str | None = None
    """E.g. ``alert`` / ``background`` (default ``alert`` when an alert is given)."""
    priority: Priority = "high"
    max_attempts: int = 1
    """Sources but chat: tries before it is dropped; every try has the SAME message id."""
    retry_delays_s: Sequence[float] = ()
    """Wait before try 2, 3, ...; the last one repeats."""
    expires_at_ms: int | None = None
    """Sources but chat: no try after this (a try that would come later is not made: the
    notification is dropped). With it, ``max_attempts`` may be up to
    ``MAX_ATTEMPTS_UNTIL_EXPIRY``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one try of a source's notification ended, as its :class:`SourceHooks` are told."""

    source: str
    key: str
    kind: str
    message_id: str
    destination: Destination
    result: Literal["sent", "failed", "rejected", "deferred"]
    """``rejected``: the device token is dead; ``deferred``: a provider's backoff holds it."""
    final: bool
    """No further try of this notification will be made."""
    http_status: int | None
    error: str | None


class SourceHooks(Protocol):
    def record(self, conn: Connection, outcomes: Sequence[Outcome], now_ms: int) -> None:
        """Called inside the transaction that records finished sends of this source (group
        commit). Count and log nothing here (on PostgreSQL it may run again)."""


def _row(notification: NewNotification, message_id: str) -> outbox.NewRow:
    n = notification
    if n.source == "chat":
        return outbox.NewRow(
            n.source, n.key, n.kind, n.body, message_id, n.position, n.attempt
        )  # the hot path: nothing else is stored for a chat's
    destination = n.destination
    if destination is None:
        raise ValueError(f"a notification of source {n.source!r} needs a destination")
    device_type = device_types.canonical(destination.device_type, internal=True)
    if device_type is None:
        raise ValueError(
            f"unknown device type {destination.device_type!r}: {device_types.describe()}"
        )
    if not 0 < len(destination.device_id) <= MAX_DEVICE_ID_CHARS:
        raise ValueError(f"a device id must have 1 to {MAX_DEVICE_ID_CHARS} characters")
    if not n.key or len(n.key) > MAX_KEY_CHARS:
        raise ValueError(f"a notification's key must have 1 to {MAX_KEY_CHARS} characters")
    most = MAX_ATTEMPTS if n.expires_at_ms is None else MAX_ATTEMPTS_UNTIL_EXPIRY
    if not 1 <= n.max_attempts <= most:
        raise ValueError(f"max_attempts must be 1 to {most}")
    if any(not 0 <= delay <= 86_400 for delay in n.retry_delays_s):
        raise ValueError("retry_delays_s must be 0 to 86400 seconds each")
    rendering: dict[str, Any] = {"priority": n.priority}
    if n.alert is not None:
        rendering["alert"] = {
            "title": n.alert.title,
            "body": n.alert.body,
            "category": n.alert.category,
            "sound": n.alert.sound,
        }
    if n.renderings:
        # Only the destination's device type is ever sent this row (its provider reads its own
        # rendering): the others are not stored, nor encoded, nor read back at every claim.
        own = n.renderings.get(device_type)
        rendering["renderings"] = (
            {device_type: dict(own)}
            if own is not None
            else {name: dict(value) for name, value in n.renderings.items()}
        )
    if n.apns_push_type is not None:
        rendering["apns_push_type"] = n.apns_push_type
    return outbox.NewRow(
        n.source,
        n.key,
        n.kind,
        n.body,
        message_id,
        n.position,
        n.attempt,
        device_type=device_type,
        device_id=destination.device_id,
        group_name=destination.group_name,
        provider=destination.provider,
        debug=destination.debug,
        authorization=destination.authorization,
        rendering=rendering,
        max_attempts=n.max_attempts,
        retry_delays_s=tuple(float(delay) for delay in n.retry_delays_s),
        expires_at_ms=n.expires_at_ms,
    )


def enqueue(conn: Connection, notifications: Sequence[NewNotification], now_ms: int) -> list[str]:
    """Inside the source's own write transaction (``Database.write``): the rows commit with the
    change that caused them. Returns the message ids (``webhook-id``), one per notification.
    ValueError (nothing queued) for a notification the platform cannot send: a source but chat
    without a destination or with an unknown device type (an alias is taken: ``android`` is
    ``fcm``), a key of no or over 200 characters, max_attempts outside 1..100 (without
    ``expires_at_ms``)."""
    ids = [outbox.new_message_id() for _ in notifications]
    rows = [_row(n, message_id) for n, message_id in zip(notifications, ids, strict=True)]
    outbox.enqueue_rows(conn, rows, now_ms)
    if any(n.source != "chat" for n in notifications):
        outbox.notify_work(conn)  # other instances' dispatchers (PostgreSQL); the chat's notify
    return ids


def drop_pending(conn: Connection, source: str, key_prefix: str) -> int:
    """Nothing waiting under these keys is sent (a callback purged, a ring superseded...): the
    notifications of ``source`` whose key starts with ``key_prefix``; how many."""
    return outbox.drop_pending(conn, source, key_prefix)


def alert_of(rendering: Mapping[str, Any] | None) -> Alert | None:
    """The alert stored with a notification."""
    stored = (rendering or {}).get("alert")
    if not isinstance(stored, Mapping):
        return None
    return Alert(
        str(stored["title"]), str(stored["body"]), stored.get("category"), stored.get("sound")
    )
