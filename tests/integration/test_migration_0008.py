"""Revision 0008 keeps the rows it re-keys: a chat's queued notifications and its trail become
source ``chat`` with the chat id as key (values, message ids and order kept), and going down
again keeps a chat's rows and drops those of other sources. Both stores; up, down and up again."""

from __future__ import annotations

from sqlalchemy import Connection, text

from chatpush.store import migrate
from tests.integration.test_migration_0007 import CHAT
from tests.integration.test_migrations import database_url, on_database  # noqa: F401

OUTBOX = (
    "INSERT INTO outbox (chat_id, kind, body, notify_position, attempt, message_id, due_at_ms,"
    " created_at_ms) VALUES (:chat, :kind, '{}', :position, 0, :message, 5, 1)"
)
TRAIL = (
    "INSERT INTO deliveries (chat_id, at_ms, device_type, kind, outcome)"
    " VALUES (:chat, :at, 'customhttp', 'trigger', 'sent')"
)


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    return on_database(url, lambda conn: [tuple(row) for row in conn.execute(text(query))])


def test_a_chats_rows_are_rekeyed_and_kept(database_url: str) -> None:  # noqa: F811
    migrate.upgrade(database_url, "0007")

    def seed(conn: Connection) -> None:
        for chat in ("chat-a", "chat-b"):
            conn.execute(text(CHAT.format()), {"chat": chat})
        for chat, kind, position, message in (
            ("chat-a", "trigger", 2, "msg_1"),
            ("chat-b", "payload", 3, "msg_2"),
            ("chat-a", "bare", None, "msg_3"),
        ):
            conn.execute(
                text(OUTBOX),
                {"chat": chat, "kind": kind, "position": position, "message": message},
            )
        conn.execute(text(TRAIL), {"chat": "chat-a", "at": 7})
        conn.commit()

    on_database(database_url, seed)
    migrate.upgrade(database_url)
    queued = "SELECT source, key, kind, message_id, tries, max_attempts FROM outbox ORDER BY id"
    assert rows(database_url, queued) == [
        ("chat", "chat-a", "trigger", "msg_1", 0, 1),
        ("chat", "chat-b", "payload", "msg_2", 0, 1),
        ("chat", "chat-a", "bare", "msg_3", 0, 1),
    ]
    trail = "SELECT source, key, at_ms, message_id FROM deliveries"
    assert rows(database_url, trail) == [("chat", "chat-a", 7, None)]

    def another_source(conn: Connection) -> None:
        conn.execute(
            text(
                "INSERT INTO outbox (source, key, kind, body, message_id, due_at_ms,"
                " created_at_ms, device_type, device_id) VALUES ('callback', 'cb-1', 'alert',"
                " '{}', 'msg_9', 5, 1, 'customhttp', 'd')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (source, key, at_ms, device_type, kind, outcome)"
                " VALUES ('callback', 'cb-1', 8, 'customhttp', 'alert', 'sent')"
            )
        )
        conn.commit()

    on_database(database_url, another_source)
    from alembic import command

    command.downgrade(migrate.alembic_config(database_url), "0007")
    assert rows(database_url, "SELECT chat_id, message_id FROM outbox ORDER BY id") == [
        ("chat-a", "msg_1"),
        ("chat-b", "msg_2"),
        ("chat-a", "msg_3"),
    ]
    assert rows(database_url, "SELECT chat_id, at_ms FROM deliveries") == [("chat-a", 7)]
    migrate.upgrade(database_url)
    assert rows(database_url, queued)[0] == ("chat", "chat-a", "trigger", "msg_1", 0, 1)
