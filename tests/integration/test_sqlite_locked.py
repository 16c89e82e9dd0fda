"""A SQLite file another process holds locked: clients get 503 "storage unavailable, retry
later" (statusCode 1, error code 200) once the busy timeout has passed, not a 500, and nothing
they asked is half done.

The hot statements and the transactions' BEGIN/COMMIT run on the sqlite3 connection itself
(chatpush/store/sql.py), whose errors are sqlite3's own, not SQLAlchemy's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatpush.config import Settings
from chatpush.store import database
from tests.conftest import API_KEY, ChatDriver


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: PostgreSQL's refusals are tests/integration/test_postgres_refusals.py."""
    return f"sqlite+aiosqlite:///{tmp_path / 'chatpush.db'}"


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock waited for 0.2 s, not 5: the same path, a shorter test."""
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 200)


@pytest.fixture
def locker(settings: Settings) -> Iterator[Callable[[], sqlite3.Connection]]:
    """Another process's connection holding the write lock (BEGIN IMMEDIATE) until closed."""
    held: list[sqlite3.Connection] = []

    def lock() -> sqlite3.Connection:
        path = settings.database.url.split("///", 1)[1]
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.append(conn)
        return conn

    yield lock
    for conn in held:
        conn.close()


async def test_a_locked_sqlite_file_gives_503_and_changes_nothing(
    short_busy_timeout: None,
    make_client: Callable[..., Any],
    settings: Settings,
    locker: Callable[[], sqlite3.Connection],
) -> None:
    client = await make_client(settings)
    chat = ChatDriver(client)
    await chat.request_chat()
    agent = await chat.agent_joins("Bob")
    before = await chat.op("refresh", transcriptPosition="1")
    conn = locker()

    response = await client.post("/genesys/2/chat/support", data={"nickname": "Eve"})
    body = await response.json()
    assert response.status == 503, body
    assert body["statusCode"] == 1
    assert body["errors"] == [{"code": 200, "advice": "storage is unavailable, retry later"}]
    await chat.op("send", 503, message="lost?")
    written = await client.post(
        f"/api/v1/chats/{chat.chat_id}/events",
        json={"participantId": agent, "type": "Message", "text": "lost?"},
        headers={"X-API-Key": API_KEY},
    )
    assert written.status == 503, await written.text()

    conn.close()  # the lock is gone: nothing of the refused requests is there
    after = await chat.op("refresh", transcriptPosition="1")
    assert after["messages"] == before["messages"]
    listed = await client.get("/api/v1/chats", headers={"X-API-Key": API_KEY})
    assert [c["chatId"] for c in (await listed.json())["chats"]] == [chat.chat_id]
