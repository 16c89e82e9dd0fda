"""Aggregates for the scrape-time gauges of ``/metrics``: one statement per scrape."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from chatpush.store import sql
from chatpush.store.sql import Statement


@dataclass(frozen=True, slots=True)
class Backlog:
    outbox_due: int
    outbox_parked: int
    oldest_due_ms: int | None
    """When the oldest notification waiting to be delivered was enqueued (None: none waits)."""
    triggers_outstanding: int
    subscriptions_failing: int


_BACKLOG = Statement(
    "SELECT"
    " (SELECT count(*) FROM outbox WHERE due_at_ms IS NOT NULL),"
    " (SELECT count(*) FROM outbox WHERE due_at_ms IS NULL),"
    " (SELECT min(created_at_ms) FROM outbox WHERE due_at_ms IS NOT NULL),"
    " (SELECT count(*) FROM subscriptions"
    "   WHERE status = 'active' AND out_position IS NOT NULL),"
    " (SELECT count(*) FROM subscriptions WHERE status = 'failed')"
)


def backlog(conn: Connection) -> Backlog:
    found = sql.row(conn, _BACKLOG, {})
    assert found is not None
    due, parked, oldest, outstanding, failing = found
    return Backlog(int(due), int(parked), oldest, int(outstanding), int(failing))


_EVENT_TIME = Statement("SELECT utc_time_ms FROM events WHERE chat_id = :chat_id AND idx = :idx")


def event_time_ms(conn: Connection, chat_id: str, index: int) -> int | None:
    """When event ``index`` of the chat was added (None: there is no such event)."""
    found = sql.row(conn, _EVENT_TIME, {"chat_id": chat_id, "idx": index})
    return None if found is None else int(found[0])
