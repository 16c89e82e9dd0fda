"""The ``outbox``: notifications waiting to be sent, their leases, and what wakes the dispatcher."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, update
from sqlalchemy.engine import Connection

from chatpush.store import sql
from chatpush.store.sql import Statement
from chatpush.store.tables import Outbox, Subscription

_subs = cast(Table, Subscription.__table__)
_outbox = cast(Table, Outbox.__table__)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    chat_id: str
    kind: str
    body: dict[str, Any]
    notify_position: int | None
    attempt: int | None
    message_id: str
    due_at_ms: int | None
    created_at_ms: int


WORK_CHANNEL = "chatpush_work"
"""PostgreSQL: the LISTEN/NOTIFY channel on which a commit that made work wakes every dispatcher."""


def notify_work(conn: Connection) -> None:
    """Wake the other instances' dispatchers when this transaction commits (PostgreSQL only:
    NOTIFY is transactional, so they never look before the work is visible)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {WORK_CHANNEL}")


@dataclass(frozen=True, slots=True)
class NewNotification:
    chat_id: str
    kind: str
    body: dict[str, Any]
    notify_position: int | None = None
    attempt: int | None = None


_ENQUEUE = Statement(
    "INSERT INTO outbox (chat_id, kind, body, notify_position, attempt, message_id, due_at_ms,"
    " lease_until_ms, claimed_by, created_at_ms) VALUES (:chat_id, :kind, :body,"
    " :notify_position, :attempt, :message_id, :now_ms, NULL, NULL, :now_ms)"
)


def enqueue_many(conn: Connection, notifications: Sequence[NewNotification], now_ms: int) -> None:
    sql.run_many(
        conn,
        _ENQUEUE,
        (
            {
                "chat_id": n.chat_id,
                "kind": n.kind,
                "body": sql.to_json(n.body),
                "notify_position": n.notify_position,
                "attempt": n.attempt,
                "message_id": "msg_" + secrets.token_hex(12),
                "now_ms": now_ms,
            }
            for n in notifications
        ),
    )


_DROP_UNSENT_TRIGGERS = Statement(
    "DELETE FROM outbox WHERE chat_id = :chat_id AND kind = 'trigger'"
    " AND (lease_until_ms IS NULL OR lease_until_ms < :now_ms)"
)


def drop_unsent_triggers_of(conn: Connection, chat_ids: Sequence[str], now_ms: int) -> None:
    """The unsent triggers of these chats (none leased, or a lease ran out) are superseded."""
    sql.run_many(
        conn,
        _DROP_UNSENT_TRIGGERS,
        ({"chat_id": chat_id, "now_ms": now_ms} for chat_id in chat_ids),
    )


_DROP_OUTBOX = Statement("DELETE FROM outbox WHERE chat_id = :chat_id")


def drop_outbox_of(conn: Connection, chat_ids: Sequence[str]) -> None:
    """Nothing waiting for these chats is sent (their subscriptions ended)."""
    sql.run_many(conn, _DROP_OUTBOX, ({"chat_id": chat_id} for chat_id in chat_ids))


_UNPARK = Statement(
    "UPDATE outbox SET due_at_ms = :now_ms WHERE chat_id = :chat_id AND due_at_ms IS NULL"
)


def unpark(conn: Connection, chat_id: str, now_ms: int) -> int:
    """New activity in a chat: its notifications parked for want of a node are due again."""
    return sql.run(conn, _UNPARK, {"chat_id": chat_id, "now_ms": now_ms})


_OUTBOX_COLUMNS = (
    "id, chat_id, kind, body, notify_position, attempt, message_id, due_at_ms, created_at_ms"
)
"""The columns of an outbox row, in the order of OutboxRecord's fields."""


def _outbox_record(values: Sequence[Any]) -> OutboxRecord:
    """A notification from a row of ``_OUTBOX_COLUMNS``."""
    id_, chat_id, kind, body, notify_position, attempt, message_id, due_at_ms, created = values
    return OutboxRecord(
        id=id_,
        chat_id=chat_id,
        kind=kind,
        body=sql.from_json(body),
        notify_position=notify_position,
        attempt=attempt,
        message_id=message_id,
        due_at_ms=due_at_ms,
        created_at_ms=created,
    )


def claim_heads(
    conn: Connection,
    now_ms: int,
    lease_ms: int,
    claimer: str,
    limit: int,
    exclude_chats: Sequence[str] = (),
    others_nodes: Sequence[str] = (),
) -> list[OutboxRecord]:
    """Lease the oldest due notification of each chat whose earlier ones are all delivered.

    Only a chat's head is ever claimed, so one chat's notifications go out one at a time, in order.
    Chats pinned to ``others_nodes`` (available nodes of other instances) are left to them. On
    PostgreSQL the candidates are locked with SKIP LOCKED, so concurrent claimers take disjoint
    rows; the lease, committed at once, keeps them taken while they are sent (no lock is held
    across the network).
    """
    excluded, params = sql.in_list("exclude", exclude_chats)
    others, others_params = sql.in_list("node", others_nodes)
    conditions = [
        "candidate.due_at_ms <= :now_ms",
        "(candidate.lease_until_ms IS NULL OR candidate.lease_until_ms < :now_ms)",
        "NOT EXISTS (SELECT 1 FROM outbox AS earlier"
        " WHERE earlier.chat_id = candidate.chat_id AND earlier.id < candidate.id)",
    ]
    if exclude_chats:
        conditions.append(f"candidate.chat_id NOT IN {excluded}")
    if others_nodes:
        conditions.append(
            "NOT EXISTS (SELECT 1 FROM subscriptions WHERE subscriptions.chat_id ="
            f" candidate.chat_id AND subscriptions.pinned_node IN {others})"
        )
    lock = "" if conn.dialect.name == "sqlite" else " FOR UPDATE OF candidate SKIP LOCKED"
    statement = (
        "UPDATE outbox SET lease_until_ms = :until_ms, claimed_by = :claimer WHERE id IN"
        " (SELECT candidate.id FROM outbox AS candidate WHERE "
        + " AND ".join(conditions)
        + f" ORDER BY candidate.id LIMIT :limit{lock})"
        f" RETURNING {_OUTBOX_COLUMNS}"
    )
    params.update(others_params)
    params.update(now_ms=now_ms, until_ms=now_ms + lease_ms, claimer=claimer, limit=limit)
    found = sql.rows(conn, statement, params)
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
    " WHERE chat_id = :chat_id AND id >= :outbox_id"
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


def pending_for_chat(conn: Connection, chat_id: str) -> list[OutboxRecord]:
    found = sql.rows(
        conn,
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE chat_id = :chat_id ORDER BY id",
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
