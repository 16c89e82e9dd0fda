"""Callbacks, their properties and their commands to the contact-centre side: the SQL of the
callback domain (chatpush/callbacks/, docs/callbacks.md). Functions take a connection; the domain
runs them with ``Database.read`` / ``Database.write``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection, Row

from chatpush.store.callback_records import STATES, CallbackRecord, Device, State, format_time
from chatpush.store.tables import Callback, CallbackCommand, CallbackGuard, CallbackProperty

_callbacks = cast(Table, Callback.__table__)
_properties = cast(Table, CallbackProperty.__table__)
_commands = cast(Table, CallbackCommand.__table__)
_guards = cast(Table, CallbackGuard.__table__)

TimerKind = Literal["due", "ttl", "purge", "reminder"]

_COLUMNS: Mapping[str, str] = {
    "_id": "id",
    "_service_name": "service_name",
    "_callback_state": "state",
    "_callback_reason": "reason",
}
"""Record keys a query compares with a column (the others are properties, or computed)."""


def _record(row: Row[Any], properties: dict[str, str]) -> CallbackRecord:
    device = None
    if row.device_type is not None and row.device_id is not None:
        device = Device(
            row.device_type,
            row.device_id,
            row.device_provider,
            bool(row.device_debug),
            row.device_language,
        )
    return CallbackRecord(
        id=row.id,
        service_name=row.service_name,
        state=cast(State, row.state),
        reason=row.reason,
        desired_time_ms=row.desired_time_ms,
        expiration_ms=row.expiration_ms,
        created_at_ms=row.created_at_ms,
        updated_at_ms=row.updated_at_ms,
        base_url=row.base_url,
        properties=properties,
        attributes=dict(row.attributes or {}),
        completed_at_ms=row.completed_at_ms,
        last_seq=row.last_seq,
        command_seq=row.command_seq,
        ewt_s=row.ewt_s,
        position=row.position,
        total_waiting=row.total_waiting,
        ewt_at_ms=row.ewt_at_ms,
        upcoming=row.upcoming,
        access_number=row.access_number,
        access_code=row.access_code,
        device=device,
        due_at_ms=row.due_at_ms,
        ttl_at_ms=row.ttl_at_ms,
        reminder_at_ms=row.reminder_at_ms,
        purge_at_ms=row.purge_at_ms,
    )


def _properties_of(conn: Connection, ids: Sequence[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {callback_id: {} for callback_id in ids}
    if not ids:
        return found
    rows = conn.execute(
        select(_properties.c.callback_id, _properties.c.name, _properties.c.value)
        .where(_properties.c.callback_id.in_(list(ids)))
        .order_by(_properties.c.callback_id, _properties.c.position)
    )
    for callback_id, name, value in rows:
        found[callback_id][name] = value
    return found


def insert_callback(conn: Connection, record: CallbackRecord) -> None:
    device = record.device
    conn.execute(
        insert(_callbacks).values(
            id=record.id,
            service_name=record.service_name,
            state=record.state,
            reason=record.reason,
            desired_time_ms=record.desired_time_ms,
            expiration_ms=record.expiration_ms,
            created_at_ms=record.created_at_ms,
            updated_at_ms=record.updated_at_ms,
            completed_at_ms=record.completed_at_ms,
            attributes=record.attributes,
            last_seq=record.last_seq,
            command_seq=record.command_seq,
            upcoming=record.upcoming,
            base_url=record.base_url,
            device_type=device.type if device else None,
            device_id=device.id if device else None,
            device_provider=device.provider if device else None,
            device_debug=device.debug if device else False,
            device_language=device.language if device else None,
            due_at_ms=record.due_at_ms,
            ttl_at_ms=record.ttl_at_ms,
            reminder_at_ms=record.reminder_at_ms,
            purge_at_ms=record.purge_at_ms,
        )
    )
    set_properties(conn, record.id, record.properties, start=0)


def set_properties(
    conn: Connection, callback_id: str, properties: Mapping[str, str], start: int | None = None
) -> None:
    """Add or replace properties (a replaced one keeps its place; new ones go last)."""
    if not properties:
        return
    existing = _properties_of(conn, [callback_id])[callback_id] if start is None else {}
    position = len(existing) if start is None else start
    for name, value in properties.items():
        if name in existing:
            conn.execute(
                update(_properties)
                .where(_properties.c.callback_id == callback_id, _properties.c.name == name)
                .values(value=value)
            )
        else:
            conn.execute(
                insert(_properties).values(
                    callback_id=callback_id, name=name, value=value, position=position
                )
            )
            position += 1


def get_callback(
    conn: Connection, callback_id: str, *, lock: bool = False
) -> CallbackRecord | None:
    """``lock``: hold the callback's row to the commit (PostgreSQL): one callback's requests,
    CC events and timers run one after another, as on SQLite's single writer. FOR NO KEY UPDATE,
    as for chats: rows referring to it (properties, commands) need not wait."""
    statement = select(_callbacks).where(_callbacks.c.id == callback_id)
    if lock and conn.dialect.name != "sqlite":
        statement = statement.with_for_update(key_share=True)  # PostgreSQL: FOR NO KEY UPDATE
    row = conn.execute(statement).first()
    if row is None:
        return None
    return _record(row, _properties_of(conn, [callback_id])[callback_id])


def get_callbacks(conn: Connection, ids: Sequence[str]) -> list[CallbackRecord]:
    if not ids:
        return []
    rows = conn.execute(select(_callbacks).where(_callbacks.c.id.in_(list(ids)))).all()
    properties = _properties_of(conn, [row.id for row in rows])
    return [_record(row, properties[row.id]) for row in rows]


def update_callback(conn: Connection, callback_id: str, **values: Any) -> None:
    conn.execute(update(_callbacks).where(_callbacks.c.id == callback_id).values(**values))


OPEN_STATES: tuple[State, ...] = tuple(state for state in STATES if state != "COMPLETED")


def count_open(conn: Connection) -> int:
    """Callbacks not completed: read from the ``state`` index (migration 0013), by the open
    states (an ``IN``, which both databases look up in the index; ``!= 'COMPLETED'`` would walk
    every completed callback kept for ``completed_retention_s`` too)."""
    return int(
        conn.execute(
            select(func.count()).select_from(_callbacks).where(_callbacks.c.state.in_(OPEN_STATES))
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Condition:
    """``name=value`` (or ``name=!value``: absent or different) of a query (§3.4)."""

    name: str
    value: str
    negated: bool = False


def _time_of(text: str) -> int | None:
    """The ms of a time written exactly as a record shows it, else None (nothing matches)."""
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    ms = int(moment.timestamp() * 1000)
    return ms if format_time(ms) == text else None


def _matches(condition: Condition) -> ColumnElement[bool]:
    """SQL that is true where the record has ``condition.name`` equal to its value."""
    name, value = condition.name, condition.value
    column_name = _COLUMNS.get(name)
    if column_name is not None:
        column = _callbacks.c[column_name]
        if name == "_callback_reason":
            return and_(_callbacks.c.state == "COMPLETED", column == value)
        return column == value
    if name in ("_desired_time", "_expiration_time"):
        ms = _time_of(value)
        if ms is None:
            return false()
        column = (
            _callbacks.c.desired_time_ms if name == "_desired_time" else _callbacks.c.expiration_ms
        )
        return column == ms
    if name == "_url":
        return true()  # compared by the caller on the record itself (it is computed)
    return exists().where(
        _properties.c.callback_id == _callbacks.c.id,
        _properties.c.name == name,
        _properties.c.value == value,
    )


def query(
    conn: Connection,
    service_name: str | None,
    conditions: Sequence[Condition],
    operand: Literal["AND", "OR"],
    limit: int,
) -> list[CallbackRecord]:
    """Callbacks matching ``conditions`` (of ``service_name``; None: every service), by
    ``_desired_time`` then ``_id``, at most ``limit``."""
    clauses = []
    for condition in conditions:
        matched = _matches(condition)
        clauses.append(~matched if condition.negated else matched)
    statement = select(_callbacks)
    if service_name is not None:
        statement = statement.where(_callbacks.c.service_name == service_name)
    if clauses:
        statement = statement.where(and_(*clauses) if operand == "AND" else or_(*clauses))
    rows = conn.execute(
        statement.order_by(_callbacks.c.desired_time_ms, _callbacks.c.id).limit(limit)
    ).all()
    properties = _properties_of(conn, [row.id for row in rows])
    return [_record(row, properties[row.id]) for row in rows]


def desired_times_between(
    conn: Connection, service_name: str, start_ms: int, end_ms: int
) -> list[int]:
    """``_desired_time`` of the open scheduled callbacks of a service in [start, end): what takes
    the availability slots (an immediate callback, due when it was made, takes none)."""
    rows = conn.execute(
        select(_callbacks.c.desired_time_ms).where(
            _callbacks.c.service_name == service_name,
            _callbacks.c.state != "COMPLETED",
            _callbacks.c.desired_time_ms >= start_ms,
            _callbacks.c.desired_time_ms < end_ms,
            _callbacks.c.desired_time_ms > _callbacks.c.created_at_ms,
        )
    )
    return [int(value) for (value,) in rows]


# -- commands to the contact-centre side ----------------------------------------------------------


def insert_command(
    conn: Connection,
    *,
    command_id: str,
    callback_id: str,
    service_name: str,
    seq: int,
    body: dict[str, Any],
    now_ms: int,
) -> None:
    conn.execute(
        insert(_commands).values(
            command_id=command_id,
            callback_id=callback_id,
            service_name=service_name,
            seq=seq,
            body=body,
            created_at_ms=now_ms,
            lease_until_ms=None,
        )
    )


def claim_commands(
    conn: Connection, service_name: str | None, limit: int, now_ms: int, lease_ms: int
) -> list[dict[str, Any]]:
    """Lease the oldest unacknowledged command of each callback (whose lease, if any, ran out),
    oldest first: one callback's commands go one at a time, in order. PostgreSQL: SKIP LOCKED,
    so concurrent pullers take disjoint commands."""
    earlier = _commands.alias("earlier")
    statement = select(_commands.c.id, _commands.c.body).where(
        or_(_commands.c.lease_until_ms.is_(None), _commands.c.lease_until_ms <= now_ms),
        ~exists().where(
            earlier.c.callback_id == _commands.c.callback_id, earlier.c.id < _commands.c.id
        ),
    )
    if service_name is not None:
        statement = statement.where(_commands.c.service_name == service_name)
    statement = statement.order_by(_commands.c.id).limit(limit)
    if conn.dialect.name != "sqlite":
        statement = statement.with_for_update(skip_locked=True)
    rows = conn.execute(statement).all()
    if not rows:
        return []
    conn.execute(
        update(_commands)
        .where(_commands.c.id.in_([row.id for row in rows]))
        .values(lease_until_ms=now_ms + lease_ms)
    )
    return [dict(row.body) for row in rows]


def ack_commands(conn: Connection, command_ids: Iterable[str]) -> list[str]:
    """Delete the acknowledged commands; the ids that were found."""
    ids = list(dict.fromkeys(command_ids))
    if not ids:
        return []
    found = [
        value
        for (value,) in conn.execute(
            select(_commands.c.command_id).where(_commands.c.command_id.in_(ids))
        )
    ]
    conn.execute(delete(_commands).where(_commands.c.command_id.in_(found)))
    return found


def take_commands(conn: Connection) -> list[dict[str, Any]]:
    """Every unacknowledged command, oldest first, removed from the pull queue (they go to the
    webhook instead)."""
    rows = conn.execute(select(_commands.c.id, _commands.c.body).order_by(_commands.c.id)).all()
    if rows:
        conn.execute(delete(_commands).where(_commands.c.id.in_([row.id for row in rows])))
    return [dict(row.body) for row in rows]


def pending_commands(conn: Connection, callback_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(_commands.c.body, _commands.c.lease_until_ms)
        .where(_commands.c.callback_id == callback_id)
        .order_by(_commands.c.id)
    )
    return [{**dict(body), "leaseUntil": lease} for body, lease in rows]


# -- durable timers --------------------------------------------------------------------------------

_TIMER_COLUMNS: Mapping[TimerKind, str] = {
    "due": "due_at_ms",
    "ttl": "ttl_at_ms",
    "purge": "purge_at_ms",
    "reminder": "reminder_at_ms",
}


def next_timer(conn: Connection) -> int | None:
    """The earliest time any callback timer fires (None: none set)."""
    found = [
        conn.execute(select(func.min(_callbacks.c[column]))).scalar_one()
        for column in _TIMER_COLUMNS.values()
    ]
    times = [int(value) for value in found if value is not None]
    return min(times) if times else None


def timers_due(conn: Connection, now_ms: int, limit: int) -> list[tuple[int, TimerKind, str]]:
    """(time, timer, callback id) of the timers due by ``now_ms``, in time order."""
    due: list[tuple[int, TimerKind, str]] = []
    for kind, column_name in _TIMER_COLUMNS.items():
        column = _callbacks.c[column_name]
        rows = conn.execute(
            select(column, _callbacks.c.id)
            .where(column <= now_ms)
            .order_by(column, _callbacks.c.id)
            .limit(limit)
        )
        due.extend((int(at), kind, callback_id) for at, callback_id in rows)
    due.sort()
    return due[:limit]


def claim_timer(
    conn: Connection, callback_id: str, kind: TimerKind, now_ms: int
) -> CallbackRecord | None:
    """The callback, its row locked, if its ``kind`` timer is still due; None if it fired
    meanwhile, or another instance is firing it (PostgreSQL: SKIP LOCKED)."""
    column = _callbacks.c[_TIMER_COLUMNS[kind]]
    statement = select(_callbacks).where(_callbacks.c.id == callback_id, column <= now_ms)
    if conn.dialect.name != "sqlite":
        statement = statement.with_for_update(skip_locked=True, key_share=True)
    row = conn.execute(statement).first()
    if row is None:
        return None
    return _record(row, _properties_of(conn, [callback_id])[callback_id])


def take_guard(conn: Connection, callback_id: str, guard: str, now_ms: int) -> bool:
    """Write the once-only ``guard`` of a callback; False if it was written before (then what it
    guards must not go again). The callback's row is locked by the caller: no race."""
    found = conn.execute(
        select(_guards.c.guard).where(
            _guards.c.callback_id == callback_id, _guards.c.guard == guard
        )
    ).first()
    if found is not None:
        return False
    conn.execute(insert(_guards).values(callback_id=callback_id, guard=guard, at_ms=now_ms))
    return True


def guards_of(conn: Connection, callback_id: str) -> list[str]:
    rows = conn.execute(
        select(_guards.c.guard)
        .where(_guards.c.callback_id == callback_id)
        .order_by(_guards.c.at_ms)
    )
    return [guard for (guard,) in rows]


def end_device(conn: Connection, callback_id: str, device_type: str, device_id: str) -> bool:
    """End a callback's push subscription to a dead device token (the callback goes on)."""
    result = conn.execute(
        update(_callbacks)
        .where(
            _callbacks.c.id == callback_id,
            _callbacks.c.device_type == device_type,
            _callbacks.c.device_id == device_id,
        )
        .values(device_type=None, device_id=None, device_provider=None, device_language=None)
    )
    return bool(result.rowcount)


def delete_callback(conn: Connection, callback_id: str) -> None:
    conn.execute(delete(_guards).where(_guards.c.callback_id == callback_id))
    conn.execute(delete(_commands).where(_commands.c.callback_id == callback_id))
    conn.execute(delete(_properties).where(_properties.c.callback_id == callback_id))
    conn.execute(delete(_callbacks).where(_callbacks.c.id == callback_id))
