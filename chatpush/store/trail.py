"""The ``deliveries`` table (the trail of every attempt), and recording a batch of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, and_, delete, select
from sqlalchemy.engine import Connection

from chatpush.store import outbox, sql, subscriptions
from chatpush.store.sql import Statement
from chatpush.store.tables import Delivery

_trail = cast(Table, Delivery.__table__)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    source: str
    key: str
    at_ms: int
    node: str | None
    group_name: str | None
    device_type: str
    kind: str
    attempt: int | None
    notify_position: int | None
    outcome: str
    http_status: int | None = None
    error: str | None = None
    latency_ms: int | None = None
    failure: str | None = None
    """A failed send: ``permanent``, ``temporary``, or ``deferred`` (a backoff held it)."""
    retry_after_ms: int | None = None
    """The wait the service asked for before the next try (``Retry-After``)."""
    message_id: str | None = None
    """The ``webhook-id`` of the attempt (the same on every try of one notification)."""

    @property
    def chat_id(self) -> str | None:
        """The chat it belongs to, if a chat made it."""
        return self.key if self.source == "chat" else None


_INSERT_TRAIL = Statement(
    "INSERT INTO deliveries (source, key, message_id, at_ms, node, group_name, device_type, kind,"
    " attempt, notify_position, outcome, http_status, error, latency_ms, failure, retry_after_ms)"
    " VALUES (:source, :key, :message_id, :at_ms, :node, :group_name, :device_type, :kind,"
    " :attempt, :notify_position, :outcome, :http_status, :error, :latency_ms, :failure,"
    " :retry_after_ms)"
)


def complete(
    conn: Connection,
    *,
    finished: Sequence[int],
    parked: Sequence[tuple[str, int]],
    trail: Sequence[DeliveryRecord],
    pins: Sequence[tuple[str, str]],
    handed_over: Sequence[int] = (),
    deferred: Sequence[tuple[int, int]] = (),
    retried: Sequence[tuple[int, int, int]] = (),
) -> None:
    """Record a batch of finished attempts in one transaction (group commit).

    ``handed_over``: notifications whose chat was pinned to another instance's node; their lease
    is released so that instance claims them. ``deferred``: (outbox id, until) of notifications a
    backoff holds: they stay queued, due again then. ``retried``: (outbox id, tries made, when) of
    notifications tried and due again (the plain-retry rule, delivery/retry.py). Subscriptions
    are locked before outbox rows, in chat order, as the request transactions do: concurrent
    writers cannot deadlock.
    """
    subscriptions.pin_many(conn, pins)
    if handed_over:
        outbox.release(conn, handed_over)
        outbox.notify_work(conn)
    sql.run_many(
        conn,
        _INSERT_TRAIL,
        (
            {
                "source": r.source,
                "key": r.key,
                "message_id": r.message_id,
                "at_ms": r.at_ms,
                "node": r.node,
                "group_name": r.group_name,
                "device_type": r.device_type,
                "kind": r.kind,
                "attempt": r.attempt,
                "notify_position": r.notify_position,
                "outcome": r.outcome,
                "http_status": r.http_status,
                "error": r.error,
                "latency_ms": r.latency_ms,
                "failure": r.failure,
                "retry_after_ms": r.retry_after_ms,
            }
            for r in trail
        ),
    )
    outbox.delete(conn, finished)
    outbox.defer_many(conn, deferred)
    outbox.retry_many(conn, retried)
    outbox.park_many(conn, parked)


def deliveries(
    conn: Connection, chat_id: str, after_id: int = 0, limit: int = 500
) -> list[tuple[int, DeliveryRecord]]:
    """A chat's delivery records with an id above ``after_id``, oldest first."""
    return deliveries_of(conn, "chat", chat_id, after_id, limit)


def deliveries_of(
    conn: Connection, source: str, key: str, after_id: int = 0, limit: int = 500
) -> list[tuple[int, DeliveryRecord]]:
    """The delivery records of (source, key) with an id above ``after_id``, oldest first."""
    rows = conn.execute(
        select(_trail)
        .where(and_(_trail.c.source == source, _trail.c.key == key, _trail.c.id > after_id))
        .order_by(_trail.c.id)
        .limit(limit)
    )
    return [
        (
            row.id,
            DeliveryRecord(
                source=row.source,
                key=row.key,
                at_ms=row.at_ms,
                node=row.node,
                group_name=row.group_name,
                device_type=row.device_type,
                kind=row.kind,
                attempt=row.attempt,
                notify_position=row.notify_position,
                outcome=row.outcome,
                http_status=row.http_status,
                error=row.error,
                latency_ms=row.latency_ms,
                failure=row.failure,
                retry_after_ms=row.retry_after_ms,
                message_id=row.message_id,
            ),
        )
        for row in rows
    ]


def purge_trail(conn: Connection, before_ms: int) -> int:
    result = conn.execute(delete(_trail).where(_trail.c.at_ms < before_ms))
    return result.rowcount or 0
