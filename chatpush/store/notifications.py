"""The Notification API's subscriptions and expiring publishes (docs/callbacks.md §6): the SQL.
Functions take a connection; the callback domain runs them in its own transactions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, insert, literal, or_, select, update
from sqlalchemy.engine import Connection, Row

from chatpush.store.tables import NotificationPublish, NotificationSubscription

_subscriptions = cast(Table, NotificationSubscription.__table__)
_publishes = cast(Table, NotificationPublish.__table__)
_IDS_PER_QUERY = 500
"""Ids in one ``IN (...)`` (SQLite's bound-parameter limit was 999)."""


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    id: str
    subscriber_id: str
    filter: str
    is_pattern: bool
    device_type: str
    device_id: str
    provider: str | None
    debug: bool
    language: str | None
    authorization: str | None
    callback_id: str | None
    created_at_ms: int
    expire_at_ms: int | None


def _row(row: Row[Any]) -> SubscriptionRow:
    return SubscriptionRow(
        id=row.id,
        subscriber_id=row.subscriber_id,
        filter=row.filter,
        is_pattern=bool(row.is_pattern),
        device_type=row.device_type,
        device_id=row.device_id,
        provider=row.provider,
        debug=bool(row.debug),
        language=row.language,
        authorization=row.authorization,
        callback_id=row.callback_id,
        created_at_ms=int(row.created_at_ms),
        expire_at_ms=None if row.expire_at_ms is None else int(row.expire_at_ms),
    )


def _live(now_ms: int) -> Any:
    column = _subscriptions.c.expire_at_ms
    return or_(column.is_(None), column > now_ms)


def insert_subscription(conn: Connection, row: SubscriptionRow) -> None:
    conn.execute(
        insert(_subscriptions).values(
            id=row.id,
            subscriber_id=row.subscriber_id,
            filter=row.filter,
            is_pattern=row.is_pattern,
            prefix=row.filter.split("*", 1)[0],
            device_type=row.device_type,
            device_id=row.device_id,
            provider=row.provider,
            debug=row.debug,
            language=row.language,
            authorization=row.authorization,
            callback_id=row.callback_id,
            created_at_ms=row.created_at_ms,
            expire_at_ms=row.expire_at_ms,
        )
    )


def find_same(
    conn: Connection,
    subscriber_id: str,
    filter_: str,
    device_type: str,
    device_id: str,
    now_ms: int,
) -> SubscriptionRow | None:
    """The live subscription a renewal renews (same subscriber, filter, type and device), its
    row locked on PostgreSQL."""
    c = _subscriptions.c
    statement = select(_subscriptions).where(
        c.subscriber_id == subscriber_id,
        c.filter == filter_,
        c.device_type == device_type,
        c.device_id == device_id,
        c.callback_id.is_(None),
        _live(now_ms),
    )
    if conn.dialect.name != "sqlite":
        statement = statement.with_for_update()
    found = conn.execute(statement).first()
    return None if found is None else _row(found)


def renew(
    conn: Connection,
    subscription_id: str,
    expire_at_ms: int,
    authorization: str | None,
    **more: Any,
) -> None:
    conn.execute(
        update(_subscriptions)
        .where(_subscriptions.c.id == subscription_id)
        .values(expire_at_ms=expire_at_ms, authorization=authorization, **more)
    )


def counts(conn: Connection, subscriber_id: str, now_ms: int) -> tuple[int, int, int]:
    """Live Notification API subscriptions (not those ``subscribe_notify`` made): of
    ``subscriber_id``, in all, with a pattern filter."""
    c = _subscriptions.c
    live = _live(now_ms)
    mine = conn.execute(
        select(func.count()).where(c.subscriber_id == subscriber_id, c.callback_id.is_(None), live)
    ).scalar_one()
    total = conn.execute(select(func.count()).where(c.callback_id.is_(None), live)).scalar_one()
    patterns = conn.execute(select(func.count()).where(c.is_pattern.is_(True), live)).scalar_one()
    return int(mine), int(total), int(patterns)


def get_subscription(conn: Connection, subscription_id: str, now_ms: int) -> SubscriptionRow | None:
    found = conn.execute(
        select(_subscriptions).where(_subscriptions.c.id == subscription_id, _live(now_ms))
    ).first()
    return None if found is None else _row(found)


def delete_subscription(conn: Connection, subscription_id: str) -> bool:
    result = conn.execute(delete(_subscriptions).where(_subscriptions.c.id == subscription_id))
    return bool(result.rowcount)


def matching(
    conn: Connection, tag: str, now_ms: int, pattern_matches: Callable[[str, str], bool]
) -> list[SubscriptionRow]:
    """The live subscriptions whose filter is ``tag`` exactly, and the live pattern ones
    ``pattern_matches(filter, tag)`` admits, oldest first. Every event reads the pattern ones:
    only (id, filter) of those whose literal start (``prefix``) the tag has."""
    c = _subscriptions.c
    live = _live(now_ms)
    starts = func.substr(literal(tag), 1, func.length(c.prefix)) == c.prefix
    patterns = conn.execute(select(c.id, c.filter).where(c.is_pattern.is_(True), live, starts))
    ids = [found for found, filter_ in patterns if pattern_matches(filter_, tag)]
    chosen = [and_(c.filter == tag, c.is_pattern.is_(False))]
    chosen += [c.id.in_(ids[at : at + _IDS_PER_QUERY]) for at in range(0, len(ids), _IDS_PER_QUERY)]
    found = {
        row.id: _row(row)
        for condition in chosen
        for row in conn.execute(select(_subscriptions).where(condition, live))
    }
    return sorted(found.values(), key=lambda row: (row.created_at_ms, row.id))


def delete_by_device(conn: Connection, device_type: str, device_id: str) -> int:
    """A dead device token ends every Notification API subscription to it."""
    c = _subscriptions.c
    result = conn.execute(
        delete(_subscriptions).where(
            c.device_type == device_type, c.device_id == device_id, c.callback_id.is_(None)
        )
    )
    return int(result.rowcount)


def delete_of_callback(conn: Connection, callback_id: str) -> int:
    """The subscription ``subscribe_notify`` made for a callback ends with it."""
    result = conn.execute(delete(_subscriptions).where(_subscriptions.c.callback_id == callback_id))
    return int(result.rowcount)


def delete_expired(conn: Connection, now_ms: int, limit: int) -> int:
    """Delete up to ``limit`` subscriptions expired by ``now_ms``; how many."""
    c = _subscriptions.c
    ids = [
        subscription_id
        for (subscription_id,) in conn.execute(
            select(c.id).where(c.expire_at_ms <= now_ms).order_by(c.expire_at_ms).limit(limit)
        )
    ]
    if not ids:
        return 0
    conn.execute(delete(_subscriptions).where(c.id.in_(ids), c.expire_at_ms <= now_ms))
    return len(ids)


def insert_publish(conn: Connection, event_id: str, expire_at_ms: int) -> None:
    conn.execute(insert(_publishes).values(id=event_id, expire_at_ms=expire_at_ms))


def expired_publishes(conn: Connection, now_ms: int, limit: int) -> list[str]:
    c = _publishes.c
    rows = conn.execute(
        select(c.id).where(c.expire_at_ms <= now_ms).order_by(c.expire_at_ms, c.id).limit(limit)
    )
    return [event_id for (event_id,) in rows]


def delete_publish(conn: Connection, event_id: str) -> bool:
    result = conn.execute(delete(_publishes).where(_publishes.c.id == event_id))
    return bool(result.rowcount)


def next_expiry(conn: Connection) -> int | None:
    """The earliest time a subscription or a publish expires (None: none)."""
    times = [
        conn.execute(select(func.min(_subscriptions.c.expire_at_ms))).scalar_one(),
        conn.execute(select(func.min(_publishes.c.expire_at_ms))).scalar_one(),
    ]
    found = [int(value) for value in times if value is not None]
    return min(found) if found else None
