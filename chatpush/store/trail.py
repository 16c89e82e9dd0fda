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
    chat_id: str
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


_INSERT_TRAIL = Statement(
    "INSERT INTO deliveries (chat_id, at_ms, node, group_name, device_type, kind, attempt,"
    " notify_position, outcome, http_status, error, latency_ms, failure, retry_after_ms)"
    " VALUES (:chat_id, :at_ms, :node, :group_name, :device_type, :kind, :attempt,"
    " :notify_position, :outcome, :http_status, :error, :latency_ms, :failure, :retry_after_ms)"
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
) -> None:
    """Record a batch of finished attempts in one transaction (group commit).

    ``handed_over``: notifications whose chat was pinned to another instance's node; their lease
    is released so that instance claims them. ``deferred``: (outbox id, until) of notifications a
    backoff holds: they stay queued, due again then. Subscriptions are locked before outbox rows, in
    chat order, as the request transactions do: concurrent writers cannot deadlock.
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
                "chat_id": r.chat_id,
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
    outbox.park_many(conn, parked)


def deliveries(
    conn: Connection, chat_id: str, after_id: int = 0, limit: int = 500
) -> list[tuple[int, DeliveryRecord]]:
    rows = conn.execute(
        select(_trail)
        .where(and_(_trail.c.chat_id == chat_id, _trail.c.id > after_id))
        .order_by(_trail.c.id)
        .limit(limit)
    )
    return [
        (
            row.id,
            DeliveryRecord(
                chat_id=row.chat_id,
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
            ),
        )
        for row in rows
    ]


def purge_trail(conn: Connection, before_ms: int) -> int:
    result = conn.execute(delete(_trail).where(_trail.c.at_ms < before_ms))
    return result.rowcount or 0
