"""Revision 0007 keeps the data it touches: the trigger flag renamed (out_pending -> out_held)
keeps every subscription's value, and the trail's rows recorded before it keep theirs with no
failure kind. Both stores; up, down and up again."""

from __future__ import annotations

from sqlalchemy import Connection, text

from chatpush.store import migrate
from tests.integration.test_migrations import database_url, on_database  # noqa: F401

CHAT = (
    "INSERT INTO chats (id, service_name, secure_key, user_id, user_data, created_at_ms,"
    " last_client_request_ms, last_index, client_position, last_participant_id)"
    " VALUES (:chat, 'default', 'k', 'u', '{{}}', 0, 0, 2, 0, 1)"
)
SUBSCRIPTION = (
    "INSERT INTO subscriptions (chat_id, device_id, device_type, group_name, debug,"
    " notify_requestor, include_payload, reliable, status, ack_position, notifiable_last,"
    " out_position, out_attempt, out_final, {flag}, created_at_ms) VALUES (:chat, 'd', 'fcm',"
    " 'g1', false, false, false, true, 'active', 1, 2, 2, 0, false, :held, 0)"
)


def flags(url: str, column: str) -> dict[str, bool]:
    def read(conn: Connection) -> dict[str, bool]:
        rows = conn.execute(text(f"SELECT chat_id, {column} FROM subscriptions"))
        return {chat_id: bool(value) for chat_id, value in rows}

    return on_database(url, read)


def test_the_renamed_trigger_flag_keeps_its_values(database_url: str) -> None:  # noqa: F811
    migrate.upgrade(database_url, "0006")

    def seed(conn: Connection) -> None:
        insert = text(SUBSCRIPTION.format(flag="out_pending"))
        for chat, held in (("held-chat", True), ("sent-chat", False)):
            conn.execute(text(CHAT.format()), {"chat": chat})
            conn.execute(insert, {"chat": chat, "held": held})
        conn.execute(
            text(
                "INSERT INTO deliveries (chat_id, at_ms, device_type, kind, outcome)"
                " VALUES ('sent-chat', 1, 'fcm', 'trigger', 'failed')"
            )
        )
        conn.commit()

    on_database(database_url, seed)
    migrate.upgrade(database_url)
    assert flags(database_url, "out_held") == {"held-chat": True, "sent-chat": False}

    def trail(conn: Connection) -> list[tuple[object, ...]]:
        return [
            tuple(row)
            for row in conn.execute(text("SELECT outcome, failure, retry_after_ms FROM deliveries"))
        ]

    assert on_database(database_url, trail) == [("failed", None, None)]

    from alembic import command

    command.downgrade(migrate.alembic_config(database_url), "0006")
    assert flags(database_url, "out_pending") == {"held-chat": True, "sent-chat": False}
    migrate.upgrade(database_url)
    assert flags(database_url, "out_held") == {"held-chat": True, "sent-chat": False}
