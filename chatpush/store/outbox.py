"""The ``outbox``: notifications waiting to be sent, their leases, and what wakes the dispatcher."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, update
from sqlalchemy.engine import Connection

from chatpush.store import sql
from chatpush.store.sql import Statement
from chatpush.store.tables import Outbox, Subscription

_subs = cast(Table, Subscription.__table__)
_outbox = cast(Table, Outbox.__table__)


CHAT = "chat"
"""The source of a chat's notifications: its rows route by the chat's subscription."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    source: str
    key: str
    kind: str
    body: dict[str, Any]
    notify_position: int | None
    attempt: int | None
    message_id: str
    due_at_ms: int | None
    created_at_ms: int
    device_type: str | None = None
    """The destination (None for a chat's rows, which route by the chat's subscription)."""
    device_id: str | None = None
    group_name: str | None = None
    provider: str | None = None
    debug: bool = False
    authorization: str | None = None
    rendering: dict[str, Any] | None = None
    """``alert``, ``renderings``, ``apns_push_type``, ``priority`` (None: none of them)."""
    tries: int = 0
    max_attempts: int = 1
    retry_delays_s: tuple[float, ...] = ()
    expires_at_ms: int | None = None
    """No try after this (None: ``max_attempts`` alone limits)."""

    @property
    def chat_id(self) -> str | None:
        """The chat it belongs to, if a chat made it."""
        return self.key if self.source == CHAT else None


WORK_CHANNEL = "chatpush_work"
"""PostgreSQL: the LISTEN/NOTIFY channel on which a commit that made work wakes every dispatcher."""


def notify_work(conn: Connection) -> None:
    """Wake the other instances' dispatchers when this transaction commits (PostgreSQL only:
    NOTIFY is transactional, so they never look before the work is visible)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {WORK_CHANNEL}")


@dataclass(frozen=True, slots=True)
class NewRow:
    """One notification to queue (``chatpush.delivery.enqueue`` makes these)."""

    source: str
    key: str
    kind: str
    body: dict[str, Any]
    message_id: str
    notify_position: int | None = None
    attempt: int | None = None
    device_type: str | None = None
    device_id: str | None = None
    group_name: str | None = None
    provider: str | None = None
    debug: bool | None = None
    authorization: str | None = None
    rendering: dict[str, Any] | None = None
    max_attempts: int = 1
    retry_delays_s: tuple[float, ...] = ()
    expires_at_ms: int | None = None


_ENQUEUE = Statement(
    "INSERT INTO outbox (source, key, kind, body, notify_position, attempt, message_id, due_at_ms,"
    " lease_until_ms, claimed_by, created_at_ms, tries, max_attempts) VALUES (:source, :key,"
    " :kind, :body, :notify_position, :attempt, :message_id, :now_ms, NULL, NULL, :now_ms, 0, 1)"
)
"""A row without a destination or retry bookkeeping of its own (a chat's): the hot path."""

_ENQUEUE_ROUTED = Statement(
    "INSERT INTO outbox (source, key, kind, body, notify_position, attempt, message_id, due_at_ms,"
    " lease_until_ms, claimed_by, created_at_ms, device_type, device_id, group_name, provider,"
    " debug, authorization_header, rendering, tries, max_attempts, retry_delays, expires_at_ms)"
    " VALUES (:source, :key, :kind, :body, :notify_position, :attempt, :message_id, :now_ms,"
    " NULL, NULL, :now_ms, :device_type, :device_id, :group_name, :provider, :debug,"
    " :authorization, :rendering, 0, :max_attempts, :retry_delays, :expires_at_ms)"
)


def new_message_id() -> str:
    """A notification's message id (``webhook-id``): the same on every try of it."""
    return "msg_" + secrets.token_hex(12)


def _row_values(n: NewRow, now_ms: int) -> dict[str, Any]:
    """The values every outbox row has (``_ENQUEUE``'s)."""
    return {
        "source": n.source,
        "key": n.key,
        "kind": n.kind,
        "body": sql.to_json(n.body),
        "notify_position": n.notify_position,
        "attempt": n.attempt,
        "message_id": n.message_id,
        "now_ms": now_ms,
    }


def enqueue_rows(conn: Connection, rows: Sequence[NewRow], now_ms: int) -> None:
    plain = [row for row in rows if row.device_type is None]
    routed = [row for row in rows if row.device_type is not None]
    sql.run_many(conn, _ENQUEUE, (_row_values(n, now_ms) for n in plain))
    sql.run_many(
        conn,
        _ENQUEUE_ROUTED,
        (
            {
                **_row_values(n, now_ms),
                "device_type": n.device_type,
                "device_id": n.device_id,
                "group_name": n.group_name,
                "provider": n.provider,
                "debug": n.debug,
                "authorization": n.authorization,
                "rendering": sql.to_json(n.rendering),
                "max_attempts": n.max_attempts,
                "retry_delays": sql.to_json(list(n.retry_delays_s)),
                "expires_at_ms": n.expires_at_ms,
            }
            for n in routed
        ),
    )


def drop_pending(conn: Connection, source: str, key_prefix: str) -> int:
    """Delete every notification of ``source`` whose key starts with ``key_prefix``."""
    return sql.run(
        conn,
        _DROP_PENDING,
        {"source": source, "prefix": key_prefix, "length": len(key_prefix)},
    )


_DROP_PENDING = Statement(
    # substr, not LIKE: SQLite's LIKE ignores case, and a key may hold % or _.
    "DELETE FROM outbox WHERE source = :source AND substr(key, 1, :length) = :prefix"
)


_DROP_UNSENT_TRIGGERS = Statement(
    "DELETE FROM outbox WHERE source = 'chat' AND key = :chat_id AND kind = 'trigger'"
    " AND (lease_until_ms IS NULL OR lease_until_ms < :now_ms)"
)


def drop_unsent_triggers_of(conn: Connection, chat_ids: Sequence[str], now_ms: int) -> None:
    """The unsent triggers of these chats (none leased, or a lease ran out) are superseded."""
    sql.run_many(
        conn,
        _DROP_UNSENT_TRIGGERS,
        ({"chat_id": chat_id, "now_ms": now_ms} for chat_id in chat_ids),
    )


_DROP_OUTBOX = Statement("DELETE FROM outbox WHERE source = 'chat' AND key = :chat_id")


def drop_outbox_of(conn: Connection, chat_ids: Sequence[str]) -> None:
    """Nothing waiting for these chats is sent (their subscriptions ended)."""
    sql.run_many(conn, _DROP_OUTBOX, ({"chat_id": chat_id} for chat_id in chat_ids))


_UNPARK = Statement(
    "UPDATE outbox SET due_at_ms = :now_ms"
    " WHERE source = 'chat' AND key = :chat_id AND due_at_ms IS NULL"
)


def unpark(conn: Connection, chat_id: str, now_ms: int) -> int:
    """New activity in a chat: its notifications parked for want of a node are due again."""
    return sql.run(conn, _UNPARK, {"chat_id": chat_id, "now_ms": now_ms})


_OUTBOX_COLUMNS = (
    "id, source, key, kind, body, notify_position, attempt, message_id, due_at_ms, created_at_ms,"
    " device_type, device_id, group_name, provider, debug, authorization_header, rendering, tries,"
    " max_attempts, retry_delays, expires_at_ms"
)
"""The columns of an outbox row, in the order of OutboxRecord's fields."""


def _outbox_record(values: Sequence[Any]) -> OutboxRecord:
    """A notification from a row of ``_OUTBOX_COLUMNS``."""
    id_, source, key, kind, body, notify_position, attempt, message_id, due, created = values[:10]
    if values[10] is None:  # a chat's row: no destination, no retry bookkeeping of its own
        return OutboxRecord(
            id_,
            source,
            key,
            kind,
            sql.from_json(body),
            notify_position,
            attempt,
            message_id,
            due,
            created,
            tries=values[17],
        )
    device_type, device_id, group, provider, debug, authorization, rendering = values[10:17]
    tries, max_attempts, delays, expires_at_ms = values[17:21]
    return OutboxRecord(
        id=id_,
        source=source,
        key=key,
        kind=kind,
        body=sql.from_json(body),
        notify_position=notify_position,
        attempt=attempt,
        message_id=message_id,
        due_at_ms=due,
        created_at_ms=created,
        device_type=device_type,
        device_id=device_id,
        group_name=group,
        provider=provider,
        debug=bool(debug),
        authorization=authorization,
        rendering=sql.from_json(rendering),
        tries=tries,
        max_attempts=max_attempts,
        retry_delays_s=tuple(float(d) for d in sql.from_json(delays) or ()),
        expires_at_ms=expires_at_ms,
    )


_HEADS = (
    "SELECT candidate.id, candidate.source, candidate.key FROM outbox AS candidate"
    " WHERE candidate.due_at_ms <= :now_ms"
    " AND (candidate.lease_until_ms IS NULL OR candidate.lease_until_ms < :now_ms)"
    " AND NOT EXISTS (SELECT 1 FROM outbox AS earlier WHERE earlier.source = candidate.source"
    " AND earlier.key = candidate.key AND earlier.id < candidate.id)"
)
"""The claimable heads: due, not leased (or the lease ran out), nothing earlier of their key."""
_HEADS_ORDER = " ORDER BY candidate.id LIMIT :limit"
_CLAIM_HEADS = Statement(_HEADS + _HEADS_ORDER)
_LEASE_FREE = "(lease_until_ms IS NULL OR lease_until_ms < :now_ms)"


def claim_heads(
    conn: Connection,
    now_ms: int,
    lease_ms: int,
    claimer: str,
    limit: int,
    exclude: Collection[tuple[str, str]] = (),
    others_nodes: Sequence[str] = (),
) -> list[OutboxRecord]:
    """Lease the oldest due notification of each (source, key) whose earlier ones are all
    delivered.

    Only a key's head is ever claimed, so one key's notifications go out one at a time, in order.
    ``exclude``: (source, key) pairs in flight here. Chats pinned to ``others_nodes`` (available
    nodes of other instances) are left to them. On PostgreSQL the candidates are locked with SKIP
    LOCKED, so concurrent claimers take disjoint rows; the lease, committed at once, keeps them
    taken while they are sent (no lock is held across the network).

    Two statements in the caller's transaction: the heads, then the lease of those not excluded.
    Each key has one head at most, so ``limit + len(exclude)`` heads hold ``limit`` claimable
    ones if there are. The exclusion is left to Python: as a list of parameters in the SQL (one
    per notification in flight, hundreds under load) it cost more than the rest of the claim.
    So only the lease locks (PostgreSQL: SKIP LOCKED, the lease re-checked on the row as it is
    then): a head this claimer excludes or leaves over its ``limit`` is never locked, and a
    concurrent claimer takes it.
    """
    params: dict[str, Any] = {"now_ms": now_ms, "limit": limit + len(exclude)}
    statement: Statement | str = _CLAIM_HEADS
    if others_nodes:
        others, others_params = sql.in_list("node", others_nodes)
        params.update(others_params)
        pinned = (
            " AND NOT EXISTS (SELECT 1 FROM subscriptions WHERE candidate.source = 'chat'"
            " AND subscriptions.chat_id = candidate.key"
            f" AND subscriptions.pinned_node IN {others})"
        )
        statement = _HEADS + pinned + _HEADS_ORDER
    heads = sql.rows(conn, statement, params)
    if exclude:
        excluded = exclude if isinstance(exclude, (set, frozenset, dict)) else set(exclude)
        heads = [head for head in heads if (head[1], head[2]) not in excluded]
    if not heads:
        return []
    ids, id_params = sql.in_list("id", [head[0] for head in heads[:limit]])
    if conn.dialect.name == "sqlite":  # one writer: the heads read are still free
        leased = f"id IN {ids}"
    else:
        leased = (
            f"id IN (SELECT id FROM outbox WHERE id IN {ids} AND {_LEASE_FREE}"
            " FOR UPDATE SKIP LOCKED)"
        )
    found = sql.rows(
        conn,
        f"UPDATE outbox SET lease_until_ms = :until_ms, claimed_by = :claimer WHERE {leased}"
        f" RETURNING {_OUTBOX_COLUMNS}",
        {**id_params, "now_ms": now_ms, "until_ms": now_ms + lease_ms, "claimer": claimer},
    )
    return sorted((_outbox_record(values) for values in found), key=lambda record: record.id)


_DEADLINES = Statement(
    "SELECT (SELECT min(wake_at_ms) FROM subscriptions),"
    " (SELECT min(due_at_ms) FROM outbox WHERE lease_until_ms IS NULL),"
    " (SELECT min(lease_until_ms) FROM outbox)"
)


def deadlines(conn: Connection) -> tuple[int | None, int | None]:
    """(earliest resend wake-up, earliest time a notification falls due or a lease runs out)."""
    found = sql.row(conn, _DEADLINES, {})
    assert found is not None
    wake, due, lease = (int(value) if value is not None else None for value in found)
    candidates = [value for value in (due, lease) if value is not None]
    return wake, min(candidates) if candidates else None


_PARK = Statement(
    "UPDATE outbox SET due_at_ms = NULL, lease_until_ms = NULL, claimed_by = NULL"
    " WHERE source = 'chat' AND key = :chat_id AND id >= :outbox_id"
)


def release(conn: Connection, outbox_ids: Sequence[int]) -> None:
    """Give up these leases: another instance claims the notifications."""
    if outbox_ids:
        ids, params = sql.in_list("id", outbox_ids)
        sql.run(
            conn,
            f"UPDATE outbox SET lease_until_ms = NULL, claimed_by = NULL WHERE id IN {ids}",
            params,
        )


def delete(conn: Connection, outbox_ids: Sequence[int]) -> None:
    """These notifications are done with (sent, failed for good, or their chat has none)."""
    if outbox_ids:
        ids, params = sql.in_list("id", outbox_ids)
        sql.run(conn, f"DELETE FROM outbox WHERE id IN {ids}", params)


_DEFER = Statement(
    "UPDATE outbox SET due_at_ms = :until_ms, lease_until_ms = NULL, claimed_by = NULL"
    " WHERE id = :outbox_id"
)


_RETRY = Statement(
    "UPDATE outbox SET due_at_ms = :due_ms, tries = :tries, lease_until_ms = NULL,"
    " claimed_by = NULL WHERE id = :outbox_id"
)


def retry_many(conn: Connection, retried: Sequence[tuple[int, int, int]]) -> None:
    """Tried and due again (outbox id, tries made so far, when): the same row, so the same
    message id; its key's later notifications wait behind it."""
    sql.run_many(
        conn,
        _RETRY,
        ({"outbox_id": i, "tries": tries, "due_ms": due_ms} for i, tries, due_ms in retried),
    )


def defer_many(conn: Connection, deferred: Sequence[tuple[int, int]]) -> None:
    """A backoff holds these notifications (outbox id, until): queued, due again at ``until``;
    their chats' later notifications wait behind them."""
    sql.run_many(
        conn, _DEFER, ({"outbox_id": outbox_id, "until_ms": until} for outbox_id, until in deferred)
    )


def park_many(conn: Connection, parked: Sequence[tuple[str, int]]) -> None:
    """No node: each of these notifications (chat id, outbox id) and its chat's later ones wait
    for the chat's next activity."""
    sql.run_many(
        conn, _PARK, ({"chat_id": chat_id, "outbox_id": outbox_id} for chat_id, outbox_id in parked)
    )


def pending(conn: Connection, source: str, key: str) -> list[OutboxRecord]:
    """What waits under (source, key), oldest first."""
    found = sql.rows(
        conn,
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE source = :source AND key = :key ORDER BY id",
        {"source": source, "key": key},
    )
    return [_outbox_record(values) for values in found]


def take_all(conn: Connection, source: str) -> list[OutboxRecord]:
    """Every notification of ``source``, oldest first, removed from the outbox."""
    found = sql.rows(
        conn,
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE source = :source ORDER BY id",
        {"source": source},
    )
    sql.run(conn, "DELETE FROM outbox WHERE source = :source", {"source": source})
    return [_outbox_record(values) for values in found]


def pending_for_chat(conn: Connection, chat_id: str) -> list[OutboxRecord]:
    found = sql.rows(
        conn,
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE source = 'chat' AND key = :chat_id"
        " ORDER BY id",
        {"chat_id": chat_id},
    )
    return [_outbox_record(values) for values in found]


def renew_leases(
    conn: Connection, outbox_ids: Sequence[int], claimer: str, until_ms: int
) -> list[int]:
    """Extend the leases ``claimer`` still holds; returns the ids it still held."""
    rows = conn.execute(
        update(_outbox)
        .where(and_(_outbox.c.id.in_(list(outbox_ids)), _outbox.c.claimed_by == claimer))
        .values(lease_until_ms=until_ms)
        .returning(_outbox.c.id)
    )
    return [int(outbox_id) for outbox_id in rows.scalars()]


def release_leases(conn: Connection, claimer: str | None) -> int:
    """At start-up: leases this instance held before it stopped (None: every lease) are void."""
    query = update(_outbox).where(_outbox.c.lease_until_ms.is_not(None))
    if claimer is not None:
        query = query.where(_outbox.c.claimed_by == claimer)
    result = conn.execute(query.values(lease_until_ms=None, claimed_by=None))
    return result.rowcount or 0
