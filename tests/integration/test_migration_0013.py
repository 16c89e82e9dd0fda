"""Revision 0013 indexes ``callbacks.state`` (a create counts the open callbacks) and adds
``outbox.expires_at_ms``, keeping the rows there are; going down removes both and keeps the rows.
Both stores; up, down and up again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Connection, inspect, text

from chatpush.store import migrate
from tests.integration.test_migrations import database_url, on_database  # noqa: F401

CALLBACK = (
    "INSERT INTO callbacks (id, service_name, state, desired_time_ms, expiration_ms,"
    " created_at_ms, updated_at_ms, attributes, last_seq, command_seq, upcoming, base_url,"
    " device_debug) VALUES ('CB1', 'samples', 'QUEUED', 1, 2, 1, 1, '{}', 0, 0, 'pending',"
    " 'http://x/genesys', false)"
)
OUTBOX = (
    "INSERT INTO outbox (source, key, kind, body, message_id, due_at_ms, created_at_ms,"
    " device_type, device_id, tries, max_attempts) VALUES ('callback', 'CB1', 'alert', '{}',"
    " 'msg_1', 5, 1, 'customhttp', 'd', 0, 1)"
)


def state_indexes(conn: Connection) -> list[list[str | None]]:
    return [
        list(index["column_names"])
        for index in inspect(conn).get_indexes("callbacks")
        if index["column_names"] == ["state"]
    ]


def outbox_columns(conn: Connection) -> set[str]:
    return {column["name"] for column in inspect(conn).get_columns("outbox")}


def test_the_state_index_and_the_expiry_column_come_and_go(database_url: str) -> None:  # noqa: F811
    migrate.upgrade(database_url, "0011")

    def seed(conn: Connection) -> None:
        conn.execute(text(CALLBACK))
        conn.execute(text(OUTBOX))
        conn.commit()

    on_database(database_url, seed)
    assert on_database(database_url, state_indexes) == []
    migrate.upgrade(database_url)
    assert on_database(database_url, state_indexes) == [["state"]]
    assert "expires_at_ms" in on_database(database_url, outbox_columns)
    queued = "SELECT key, message_id, expires_at_ms FROM outbox"
    rows = on_database(database_url, lambda c: [tuple(r) for r in c.execute(text(queued))])
    assert rows == [("CB1", "msg_1", None)]

    command.downgrade(migrate.alembic_config(database_url), "0011")
    assert on_database(database_url, state_indexes) == []
    assert "expires_at_ms" not in on_database(database_url, outbox_columns)
    kept = "SELECT (SELECT count(*) FROM callbacks), (SELECT count(*) FROM outbox)"
    assert on_database(database_url, lambda c: tuple(c.execute(text(kept)).one())) == (1, 1)
    migrate.upgrade(database_url)
    assert on_database(database_url, state_indexes) == [["state"]]
