"""What the admin console reads of the store, and only reads: each function takes a connection of
``Database.read``. The console's writes go through the same services as the API's (the router's
drain, the vault, the push pipeline's redrive)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, func, select
from sqlalchemy.engine import Connection, Row

from chatpush.store.tables import Chat, Delivery, Outbox, Subscription

_chats = cast(Table, Chat.__table__)
_subs = cast(Table, Subscription.__table__)
_outbox = cast(Table, Outbox.__table__)
_trail = cast(Table, Delivery.__table__)

MINUTE_MS = 60_000
MAX_ROWS = 100

CHAT_STATES = ("active", "ended", "failed", "rejected", "done")
"""What the chat search filters on: the chat's own state (``active``, ``ended``) or its push
subscription's (``failed``: resends ran out; ``rejected``: dead token; ``done``)."""


@dataclass(frozen=True, slots=True)
class Minute:
    start_ms: int
    outcomes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


@dataclass(frozen=True, slots=True)
class TrailRow:
    id: int
    chat_id: str | None
    """The chat it belongs to (None: another source made it; see ``source`` and ``key``)."""
    at_ms: int
    node: str | None
    device_type: str
    kind: str
    attempt: int | None
    notify_position: int | None
    outcome: str
    http_status: int | None
    error: str | None
    latency_ms: int | None
    source: str = "chat"
    key: str = ""


@dataclass(frozen=True, slots=True)
class FoundChat:
    chat_id: str
    service_name: str
    created_at_ms: int
    ended_at_ms: int | None
    push_status: str | None
    device_type: str | None
    device_id: str | None


@dataclass(frozen=True, slots=True)
class Overview:
    minutes: list[Minute]
    failing: list[FoundChat]
    failing_count: int
    outbox_depth: int
    outbox_parked: int
    last_errors: list[TrailRow]


def overview(conn: Connection, now_ms: int, minutes: int = 10) -> Overview:
    start_ms = (now_ms // MINUTE_MS - minutes + 1) * MINUTE_MS
    counted: dict[int, dict[str, int]] = {}
    bucket = (_trail.c.at_ms - start_ms) // MINUTE_MS
    rows = conn.execute(
        select(bucket, _trail.c.outcome, func.count())
        .where(_trail.c.at_ms >= start_ms)
        .group_by(bucket, _trail.c.outcome)
    )
    for number, outcome, count in rows:
        counted.setdefault(int(number), {})[outcome] = int(count)
    per_minute = [
        Minute(start_ms + number * MINUTE_MS, counted.get(number, {})) for number in range(minutes)
    ]
    failing_count = conn.execute(
        select(func.count()).select_from(_subs).where(_subs.c.status == "failed")
    ).scalar_one()
    depth = conn.execute(select(func.count()).select_from(_outbox)).scalar_one()
    parked = conn.execute(
        select(func.count()).select_from(_outbox).where(_outbox.c.due_at_ms.is_(None))
    ).scalar_one()
    errors = conn.execute(
        select(_trail).where(_trail.c.outcome != "sent").order_by(_trail.c.id.desc()).limit(10)
    )
    return Overview(
        minutes=per_minute,
        failing=search_chats(conn, state="failed", limit=20),
        failing_count=int(failing_count),
        outbox_depth=int(depth),
        outbox_parked=int(parked),
        last_errors=[_trail_row(row) for row in errors],
    )


def search_chats(
    conn: Connection,
    *,
    chat_id: str | None = None,
    device_id: str | None = None,
    state: str | None = None,
    limit: int = MAX_ROWS,
) -> list[FoundChat]:
    """Chats by id (or its beginning), by device id, by state; newest first."""
    joined = _chats.outerjoin(_subs, _subs.c.chat_id == _chats.c.id)
    query = select(
        _chats.c.id,
        _chats.c.service_name,
        _chats.c.created_at_ms,
        _chats.c.ended_at_ms,
        _subs.c.status,
        _subs.c.device_type,
        _subs.c.device_id,
    ).select_from(joined)
    conditions = []
    if chat_id:
        conditions.append(_chats.c.id.startswith(chat_id.upper(), autoescape=True))
    if device_id:
        conditions.append(_subs.c.device_id == device_id)
    if state == "active":
        conditions.append(_chats.c.ended_at_ms.is_(None))
    elif state == "ended":
        conditions.append(_chats.c.ended_at_ms.is_not(None))
    elif state is not None:
        conditions.append(_subs.c.status == state)
    if conditions:
        query = query.where(and_(*conditions))
    query = query.order_by(_chats.c.created_at_ms.desc(), _chats.c.id).limit(limit)
    return [FoundChat(*row) for row in conn.execute(query)]


def trail_of(conn: Connection, chat_id: str, limit: int = 200) -> list[TrailRow]:
    """The chat's last ``limit`` delivery attempts, oldest first."""
    rows = conn.execute(
        select(_trail)
        .where(and_(_trail.c.source == "chat", _trail.c.key == chat_id))
        .order_by(_trail.c.id.desc())
        .limit(limit)
    )
    return [_trail_row(row) for row in reversed(list(rows))]


def pinned_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(_subs.c.pinned_node, func.count())
        .where(_subs.c.pinned_node.is_not(None))
        .group_by(_subs.c.pinned_node)
    )
    return {node: int(count) for node, count in rows}


def _trail_row(row: Row[Any]) -> TrailRow:
    return TrailRow(
        id=row.id,
        chat_id=row.key if row.source == "chat" else None,
        at_ms=row.at_ms,
        node=row.node,
        device_type=row.device_type,
        kind=row.kind,
        attempt=row.attempt,
        notify_position=row.notify_position,
        outcome=row.outcome,
        http_status=row.http_status,
        error=row.error,
        latency_ms=row.latency_ms,
        source=row.source,
        key=row.key,
    )
