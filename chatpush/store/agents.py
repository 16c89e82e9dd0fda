"""Agent alerts' rows: registered devices, rings, the dedup window, the per-conversation trail and
the event stream's lease (chatpush/agents/ decides; this module only reads and writes).

Every statement here is portable between SQLite and PostgreSQL. The two that several instances
race on are single conditional statements, so the database decides who wins:

- the dedup mark (:func:`claim_ring`): ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the last
  ring is older than the window; a row count of 1 means this caller rings;
- the stream lease (:func:`take_lease`): the same, where the lease is free, run out, or already
  ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection

from chatpush.store import sql
from chatpush.store.tables import AgentDedup, AgentDevice, AgentRing, AgentStreamLease, AgentTrail

_devices = cast(Table, AgentDevice.__table__)
_rings = cast(Table, AgentRing.__table__)
_dedup = cast(Table, AgentDedup.__table__)
_trail = cast(Table, AgentTrail.__table__)
_lease = cast(Table, AgentStreamLease.__table__)

MAX_TOKEN_CHARS = 256
"""As ``agent_devices.token`` stores it (and ``dead_tokens.device_id``)."""
MAX_TRAIL_PAGE = 500


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    user_id: str
    device_type: str
    token: str
    topic: str | None
    group_name: str | None
    provider: str | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Ring:
    """A device rung for a conversation, and where the ring went (cancels go there too, even
    after the device was deleted from the registry)."""

    conversation_id: str
    user_id: str
    device_id: str
    device_type: str
    token: str
    group_name: str | None
    provider: str | None
    message_id: str
    rung_at_ms: int
    cancelled_at_ms: int | None


@dataclass(frozen=True, slots=True)
class TrailEntry:
    conversation_id: str
    user_id: str
    action: str
    """``rung``, ``cancelled``, ``answered``, ``suppressed`` or ``dead_token``."""
    at_ms: int
    device_id: str | None = None
    device_type: str | None = None
    reason: str | None = None
    message_id: str | None = None


_DEVICE_COLUMNS = (
    _devices.c.id,
    _devices.c.user_id,
    _devices.c.device_type,
    _devices.c.token,
    _devices.c.topic,
    _devices.c.group_name,
    _devices.c.provider,
    _devices.c.created_at_ms,
)


def _device(row: Sequence[Any]) -> Device:
    return Device(*row)


def _ring(row: Sequence[Any]) -> Ring:
    return Ring(*row)


# -- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registered:
    device: Device | None
    """None: the agent has ``max_devices`` devices already (nothing was written)."""
    replaced: bool
    """The token was registered before (for this agent or another): that entry is replaced."""


def register_device(conn: Connection, new: Device, max_devices: int) -> Registered:
    """Add ``new`` to the registry; a device of the same type and token is replaced (moved to
    this agent if it was another's), keeping its id when it stays with the same agent.

    On PostgreSQL the agent's registrations take turns (a transaction-scoped advisory lock on
    the user id), so concurrent ones cannot together pass ``max_devices``."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": "agent:" + new.user_id}
        )
    old = conn.execute(
        select(*_DEVICE_COLUMNS).where(
            _devices.c.device_type == new.device_type, _devices.c.token == new.token
        )
    ).first()
    count, latest_ms = conn.execute(
        select(func.count(), func.max(_devices.c.created_at_ms)).where(
            _devices.c.user_id == new.user_id,
            or_(_devices.c.device_type != new.device_type, _devices.c.token != new.token),
        )
    ).one()
    if count >= max_devices:
        return Registered(None, old is not None)
    # An agent's devices are listed (and rung) in the order they registered: two registrations
    # within one millisecond are a millisecond apart.
    device = replace(new, created_at_ms=max(new.created_at_ms, (latest_ms or 0) + 1))
    new = device
    if old is not None:
        if old[1] == new.user_id:
            device = Device(
                old[0],
                new.user_id,
                new.device_type,
                new.token,
                new.topic,
                new.group_name,
                new.provider,
                new.created_at_ms,
            )
        conn.execute(delete(_devices).where(_devices.c.id == old[0]))
    conn.execute(
        insert(_devices).values(
            id=device.id,
            user_id=device.user_id,
            device_type=device.device_type,
            token=device.token,
            topic=device.topic,
            group_name=device.group_name,
            provider=device.provider,
            created_at_ms=device.created_at_ms,
        )
    )
    return Registered(device, old is not None)


_DEVICES_OF = sql.Statement(
    "SELECT id, user_id, device_type, token, topic, group_name, provider, created_at_ms"
    " FROM agent_devices WHERE user_id = :user_id ORDER BY created_at_ms, id"
)


def devices_of(conn: Connection, user_id: str) -> list[Device]:
    """An agent's devices, oldest first (on every ring: SQL written once, chatpush/store/sql.py)."""
    return [_device(row) for row in sql.rows(conn, _DEVICES_OF, {"user_id": user_id})]


def delete_device(conn: Connection, user_id: str, device_id: str) -> bool:
    result = conn.execute(
        delete(_devices).where(_devices.c.user_id == user_id, _devices.c.id == device_id)
    )
    return result.rowcount == 1


def remove_token(conn: Connection, device_type: str, token: str) -> list[Device]:
    """A provider reported this token dead: its registry entry (if any) goes; returned."""
    rows = conn.execute(
        select(*_DEVICE_COLUMNS).where(
            _devices.c.device_type == device_type, _devices.c.token == token
        )
    ).all()
    if rows:
        conn.execute(
            delete(_devices).where(_devices.c.device_type == device_type, _devices.c.token == token)
        )
    return [_device(row) for row in rows]


# -- the dedup window ----------------------------------------------------------------------------

_CLAIM_RING = sql.Statement(
    "INSERT INTO agent_dedup (conversation_id, user_id, rung_at_ms)"
    " VALUES (:conversation_id, :user_id, :now_ms)"
    " ON CONFLICT (conversation_id, user_id) DO UPDATE SET rung_at_ms = excluded.rung_at_ms"
    " WHERE agent_dedup.rung_at_ms <= :cutoff_ms"
)


def claim_ring(
    conn: Connection, conversation_id: str, user_id: str, now_ms: int, window_ms: int
) -> bool:
    """True: no ring of this conversation for this agent within ``window_ms`` (now marked);
    False: a duplicate, to be suppressed. One statement, so two instances cannot both win."""
    changed = sql.run(
        conn,
        _CLAIM_RING,
        {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "now_ms": now_ms,
            "cutoff_ms": now_ms - window_ms,
        },
    )
    return changed == 1


# -- rings ---------------------------------------------------------------------------------------

_RING_COLUMNS = (
    _rings.c.conversation_id,
    _rings.c.user_id,
    _rings.c.device_id,
    _rings.c.device_type,
    _rings.c.token,
    _rings.c.group_name,
    _rings.c.provider,
    _rings.c.message_id,
    _rings.c.rung_at_ms,
    _rings.c.cancelled_at_ms,
)


_UNRING = sql.Statement(
    "DELETE FROM agent_rings"
    " WHERE conversation_id = :conversation_id AND user_id = :user_id AND device_id = :device_id"
)
_SAVE_RING = sql.Statement(
    "INSERT INTO agent_rings (conversation_id, user_id, device_id, device_type, token,"
    " group_name, provider, message_id, rung_at_ms, cancelled_at_ms)"
    " VALUES (:conversation_id, :user_id, :device_id, :device_type, :token, :group_name,"
    " :provider, :message_id, :rung_at_ms, :cancelled_at_ms)"
)


def save_rings(conn: Connection, rings: Sequence[Ring]) -> None:
    """Record rings; a device rung again for the same conversation (after the dedup window)
    replaces its earlier ring."""
    sql.run_many(
        conn,
        _UNRING,
        (
            {"conversation_id": r.conversation_id, "user_id": r.user_id, "device_id": r.device_id}
            for r in rings
        ),
    )
    sql.run_many(
        conn,
        _SAVE_RING,
        (
            {
                "conversation_id": r.conversation_id,
                "user_id": r.user_id,
                "device_id": r.device_id,
                "device_type": r.device_type,
                "token": r.token,
                "group_name": r.group_name,
                "provider": r.provider,
                "message_id": r.message_id,
                "rung_at_ms": r.rung_at_ms,
                "cancelled_at_ms": r.cancelled_at_ms,
            }
            for r in rings
        ),
    )


def ringing(conn: Connection, conversation_id: str, user_id: str | None = None) -> list[Ring]:
    """The rings of a conversation not cancelled yet (of one agent, or of every agent)."""
    where = [_rings.c.conversation_id == conversation_id, _rings.c.cancelled_at_ms.is_(None)]
    if user_id is not None:
        where.append(_rings.c.user_id == user_id)
    query = select(*_RING_COLUMNS).where(*where).order_by(_rings.c.user_id, _rings.c.device_id)
    if conn.dialect.name == "postgresql":
        # Two cancels of one conversation (two instances) must not both send: the second waits
        # for the first's commit and then finds nothing left ringing.
        query = query.with_for_update()
    return [_ring(row) for row in conn.execute(query).all()]


def rings_of(conn: Connection, conversation_id: str) -> list[Ring]:
    query = (
        select(*_RING_COLUMNS)
        .where(_rings.c.conversation_id == conversation_id)
        .order_by(_rings.c.user_id, _rings.c.device_id)
    )
    return [_ring(row) for row in conn.execute(query).all()]


def end_rings(conn: Connection, rings: Sequence[Ring], now_ms: int) -> None:
    """These rings are over (cancelled or answered): no cancel goes to them again."""
    for ring in rings:
        conn.execute(
            update(_rings)
            .where(
                _rings.c.conversation_id == ring.conversation_id,
                _rings.c.user_id == ring.user_id,
                _rings.c.device_id == ring.device_id,
            )
            .values(cancelled_at_ms=now_ms)
        )


# -- the trail -----------------------------------------------------------------------------------


_ADD_TRAIL = sql.Statement(
    "INSERT INTO agent_trail (conversation_id, user_id, device_id, device_type, action, reason,"
    " message_id, at_ms) VALUES (:conversation_id, :user_id, :device_id, :device_type, :action,"
    " :reason, :message_id, :at_ms)"
)


def add_trail(conn: Connection, entries: Sequence[TrailEntry]) -> None:
    sql.run_many(
        conn,
        _ADD_TRAIL,
        (
            {
                "conversation_id": e.conversation_id,
                "user_id": e.user_id,
                "device_id": e.device_id,
                "device_type": e.device_type,
                "action": e.action,
                "reason": e.reason,
                "message_id": e.message_id,
                "at_ms": e.at_ms,
            }
            for e in entries
        ),
    )


def trail_of(
    conn: Connection, conversation_id: str, after_id: int = 0, limit: int = MAX_TRAIL_PAGE
) -> list[tuple[int, TrailEntry]]:
    rows = conn.execute(
        select(
            _trail.c.id,
            _trail.c.conversation_id,
            _trail.c.user_id,
            _trail.c.action,
            _trail.c.at_ms,
            _trail.c.device_id,
            _trail.c.device_type,
            _trail.c.reason,
            _trail.c.message_id,
        )
        .where(_trail.c.conversation_id == conversation_id, _trail.c.id > after_id)
        .order_by(_trail.c.id)
        .limit(limit)
    ).all()
    return [(row[0], TrailEntry(*row[1:])) for row in rows]


def purge(conn: Connection, before_ms: int, limit: int) -> tuple[int, bool]:
    """Forget rings, dedup marks and trail entries older than ``before_ms``, the oldest
    ``limit`` or so of each table (all of one millisecond go together): how many went, and
    whether older ones are left for another transaction."""
    removed, more = 0, False
    for table, at in (
        (_trail, _trail.c.at_ms),
        (_rings, _rings.c.rung_at_ms),
        (_dedup, _dedup.c.rung_at_ms),
    ):
        cut = conn.execute(
            select(at).where(at < before_ms).order_by(at).offset(limit).limit(1)
        ).scalar()
        if cut is None:
            removed += conn.execute(delete(table).where(at < before_ms)).rowcount
            continue
        more = True
        gone = conn.execute(delete(table).where(at < cut)).rowcount
        if not gone:  # more than ``limit`` in the oldest millisecond
            gone = conn.execute(delete(table).where(at <= cut)).rowcount
        removed += gone
    return int(removed), more


# -- the event stream's lease --------------------------------------------------------------------

_TAKE_LEASE = text(
    "INSERT INTO agent_stream_lease (name, holder, until_ms) VALUES (:name, :holder, :until_ms)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms"
    " WHERE agent_stream_lease.holder = :holder OR agent_stream_lease.until_ms <= :now_ms"
)


def take_lease(conn: Connection, name: str, holder: str, now_ms: int, lease_ms: int) -> bool:
    """Take or renew the lease ``name`` for ``holder`` until ``now_ms + lease_ms``; False while
    another holder's lease runs."""
    result = conn.execute(
        _TAKE_LEASE,
        {"name": name, "holder": holder, "until_ms": now_ms + lease_ms, "now_ms": now_ms},
    )
    return result.rowcount == 1


def release_lease(conn: Connection, name: str, holder: str) -> None:
    conn.execute(delete(_lease).where(and_(_lease.c.name == name, _lease.c.holder == holder)))


def lease_holder(conn: Connection, name: str, now_ms: int) -> str | None:
    row = conn.execute(
        select(_lease.c.holder).where(_lease.c.name == name, _lease.c.until_ms > now_ms)
    ).first()
    return None if row is None else str(row[0])
