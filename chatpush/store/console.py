"""What the admin console reads of the store, and only reads: each function takes a connection of
``Database.read``. The console's writes go through the same services as the API's (the router's
drain, the vault, the push pipeline's redrive)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, func, or_, select
from sqlalchemy.engine import Connection, Row

from chatpush.store.tables import (
    AgentDevice,
    AgentTrail,
    Callback,
    CallbackCommand,
    CallbackGuard,
    Chat,
    Delivery,
    Outbox,
    Subscription,
)

_chats = cast(Table, Chat.__table__)
_subs = cast(Table, Subscription.__table__)
_outbox = cast(Table, Outbox.__table__)
_trail = cast(Table, Delivery.__table__)
_callbacks = cast(Table, Callback.__table__)
_commands = cast(Table, CallbackCommand.__table__)
_guards = cast(Table, CallbackGuard.__table__)
_devices = cast(Table, AgentDevice.__table__)
_agent_trail = cast(Table, AgentTrail.__table__)

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


# -- callbacks -------------------------------------------------------------------------------------

CALLBACK_PAGE = 50
"""Callbacks on one page of the list (then "Older")."""
CALLBACK_TRAIL_ROWS = 200
"""The newest delivery attempts of one callback's pushes and status notifications shown."""


@dataclass(frozen=True, slots=True)
class FoundCallback:
    id: str
    service_name: str
    state: str
    reason: str | None
    desired_time_ms: int
    created_at_ms: int
    updated_at_ms: int
    device_type: str | None


@dataclass(frozen=True, slots=True)
class CallbackPage:
    callbacks: list[FoundCallback]
    older: tuple[int, str] | None
    """The cursor of the next page (created_at_ms, id of this page's last); None: no more."""


def search_callbacks(
    conn: Connection,
    *,
    service_name: str | None = None,
    state: str | None = None,
    before: tuple[int, str] | None = None,
    limit: int = CALLBACK_PAGE,
) -> CallbackPage:
    """Callbacks newest first (by creation, then id), of one service and/or state (``open``:
    any but COMPLETED), older than the ``before`` cursor; at most ``limit``."""
    query = select(
        _callbacks.c.id,
        _callbacks.c.service_name,
        _callbacks.c.state,
        _callbacks.c.reason,
        _callbacks.c.desired_time_ms,
        _callbacks.c.created_at_ms,
        _callbacks.c.updated_at_ms,
        _callbacks.c.device_type,
    )
    conditions = []
    if service_name is not None:
        conditions.append(_callbacks.c.service_name == service_name)
    if state == "open":
        conditions.append(_callbacks.c.state != "COMPLETED")
    elif state is not None:
        conditions.append(_callbacks.c.state == state)
    if before is not None:
        at_ms, last_id = before
        conditions.append(
            or_(
                _callbacks.c.created_at_ms < at_ms,
                and_(_callbacks.c.created_at_ms == at_ms, _callbacks.c.id < last_id),
            )
        )
    if conditions:
        query = query.where(and_(*conditions))
    query = query.order_by(_callbacks.c.created_at_ms.desc(), _callbacks.c.id.desc())
    rows = [FoundCallback(*row) for row in conn.execute(query.limit(limit + 1))]
    page = rows[:limit]
    older = (page[-1].created_at_ms, page[-1].id) if len(rows) > limit else None
    return CallbackPage(page, older)


def open_callbacks_by_state(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(_callbacks.c.state, func.count())
        .where(_callbacks.c.state != "COMPLETED")
        .group_by(_callbacks.c.state)
    )
    return {state: int(count) for state, count in rows}


@dataclass(frozen=True, slots=True)
class CommandRow:
    command_id: str
    seq: int
    type: str
    created_at_ms: int
    lease_until_ms: int | None
    """None: never handed out yet; else leased (to then, or run out) and not acknowledged."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    key: str
    kind: str
    event: str | None
    """The push's ``event`` or the status notification's ``event_id`` (from the body)."""
    device_type: str | None
    due_at_ms: int | None
    tries: int
    max_attempts: int
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class CallbackTrail:
    commands: list[CommandRow]
    guards: list[tuple[str, int]]
    """The once-only pushes and reminders that went (guard, when), oldest first."""
    pending: list[OutboxRow]
    trail: list[TrailRow]


def _key_or_below(column: Any, key: str) -> ColumnElement[bool]:
    """``key`` itself or a key under it (``key.``...: a callback's status notifications)."""
    return or_(column == key, column.startswith(f"{key}.", autoescape=True))


def callback_trail(conn: Connection, callback_id: str, key: str) -> CallbackTrail:
    """What the contact-centre side has not acknowledged, and the pushes and status
    notifications of the callback (ordering key ``key`` and the keys under it)."""
    commands = [
        CommandRow(
            command_id=row.command_id,
            seq=row.seq,
            type=str(row.body.get("type", "")),
            created_at_ms=row.created_at_ms,
            lease_until_ms=row.lease_until_ms,
        )
        for row in conn.execute(
            select(_commands).where(_commands.c.callback_id == callback_id).order_by(_commands.c.id)
        )
    ]
    guards = [
        (guard, int(at_ms))
        for guard, at_ms in conn.execute(
            select(_guards.c.guard, _guards.c.at_ms)
            .where(_guards.c.callback_id == callback_id)
            .order_by(_guards.c.at_ms, _guards.c.guard)
        )
    ]
    pending = [
        OutboxRow(
            id=row.id,
            key=row.key,
            kind=row.kind,
            event=_event_of(row.body),
            device_type=row.device_type,
            due_at_ms=row.due_at_ms,
            tries=row.tries,
            max_attempts=row.max_attempts,
            created_at_ms=row.created_at_ms,
        )
        for row in conn.execute(
            select(_outbox)
            .where(_outbox.c.source == "callback", _key_or_below(_outbox.c.key, key))
            .order_by(_outbox.c.id)
            .limit(CALLBACK_TRAIL_ROWS)
        )
    ]
    rows = conn.execute(
        select(_trail)
        .where(_trail.c.source == "callback", _key_or_below(_trail.c.key, key))
        .order_by(_trail.c.id.desc())
        .limit(CALLBACK_TRAIL_ROWS)
    )
    return CallbackTrail(
        commands, guards, pending, [_trail_row(row) for row in reversed(list(rows))]
    )


def _event_of(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for name in ("event", "event_id"):
        value = body.get(name)
        if isinstance(value, str):
            return value
    return None


# -- agents ----------------------------------------------------------------------------------------

AGENT_PAGE = 50
"""Agents on one page of the list (then "Next")."""
RECENT_CONVERSATIONS = 20
TOKEN_HASH_CHARS = 12


def token_hash(token: str) -> str:
    """What the console shows of a device token: the start of its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:TOKEN_HASH_CHARS]


@dataclass(frozen=True, slots=True)
class AgentDeviceRow:
    """A registered device as the console shows it: no token, its hash."""

    id: str
    user_id: str
    platform: str
    token_hash: str
    topic: str | None
    group_name: str | None
    provider: str | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class AgentPage:
    agents: list[tuple[str, list[AgentDeviceRow]]]
    """(user id, devices oldest first), by user id."""
    next_after: str | None
    """The last user id of this page if more follow."""


def agents_with_devices(
    conn: Connection, *, prefix: str = "", after: str = "", limit: int = AGENT_PAGE
) -> AgentPage:
    """Agents with devices (user id beginning with ``prefix``, after ``after``), by user id."""
    conditions = [_devices.c.user_id > after]
    if prefix:
        conditions.append(_devices.c.user_id.startswith(prefix, autoescape=True))
    users = [
        user
        for (user,) in conn.execute(
            select(_devices.c.user_id)
            .where(*conditions)
            .group_by(_devices.c.user_id)
            .order_by(_devices.c.user_id)
            .limit(limit + 1)
        )
    ]
    page = users[:limit]
    found: dict[str, list[AgentDeviceRow]] = {user: [] for user in page}
    if page:
        rows = conn.execute(
            select(_devices)
            .where(_devices.c.user_id.in_(page))
            .order_by(_devices.c.user_id, _devices.c.created_at_ms, _devices.c.id)
        )
        for row in rows:
            found[row.user_id].append(device_row(row))
    return AgentPage(list(found.items()), page[-1] if len(users) > limit else None)


def device_row(row: Any) -> AgentDeviceRow:
    return AgentDeviceRow(
        id=row.id,
        user_id=row.user_id,
        platform=row.device_type,
        token_hash=token_hash(row.token),
        topic=row.topic,
        group_name=row.group_name,
        provider=row.provider,
        created_at_ms=row.created_at_ms,
    )


def device_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(_devices)).scalar_one())


def recent_conversations(
    conn: Connection, limit: int = RECENT_CONVERSATIONS
) -> list[tuple[str, int]]:
    """The conversations of the newest trail entries (id, last entry's time), newest first."""
    rows = conn.execute(
        select(_agent_trail.c.conversation_id, _agent_trail.c.at_ms)
        .order_by(_agent_trail.c.id.desc())
        .limit(limit * 10)
    )
    seen: dict[str, int] = {}
    for conversation_id, at_ms in rows:
        if conversation_id not in seen and len(seen) < limit:
            seen[conversation_id] = int(at_ms)
    return list(seen.items())
