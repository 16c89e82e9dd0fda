"""Shared fixtures: a real database per test (SQLite file, or PostgreSQL), the real app, a fake
clock.

Every test's database is migrated, but Alembic runs once per test worker and store: an SQLite
test gets a copy of a file migrated at the start of the session (:func:`sqlite_template`), a
PostgreSQL test a database made from a migrated template (tests/postgres.py). The migration tests
(tests/integration/test_migrations.py) run the real upgrade.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import make_url

from chatpush.app import create_app
from chatpush.cometd import FrontRunner
from chatpush.config import DatabaseSettings, Settings, load_settings
from chatpush.store import migrate
from chatpush.testing import FakeClock
from tests import postgres as pg
from tests.receivers import Receiver

API_KEY = "test-api-key"

# Every test's chats come from 127.0.0.1, many to a test and with a clock that does not move: the
# per-address Request Chat limit is off unless a test sets it (tests/integration/test_limits.py).
# An environment variable, so that `chatpush serve` processes started by tests inherit it too.
os.environ.setdefault("CHATPUSH_CHAT__CHATS_PER_ADDRESS_PER_MINUTE", "0")

# In CI every hypothesis test (the property tests and the fuzzers) replays the same examples, so a
# run is repeatable and a red CI means a change broke something; locally each run explores anew.
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real custom HTTP receiver on 127.0.0.1, port 0."""
    receiver = await Receiver().start()
    yield receiver
    await receiver.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file at the head revision, made once per test worker: copying it costs a
    millisecond, an Alembic upgrade a good part of a second."""
    path = tmp_path_factory.mktemp("template") / "chatpush.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as conn:  # everything into the main file: it alone is copied
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    return path


def provide_sqlite(url: str, template: Path) -> None:
    """Make the SQLite file of ``url`` migrated, as ``chatpush migrate`` would: a copy of the
    template where there is no file yet, the real upgrade where there is one."""
    name = make_url(url).database or ""
    if name and name != ":memory:" and not name.startswith("file:") and not Path(name).exists():
        # Private (0600) like a file `chatpush migrate` creates: it holds secure keys.
        private = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(private, "wb") as copy, open(template, "rb") as original:
            shutil.copyfileobj(original, copy)
    elif not migrate.sqlite_at_head(DatabaseSettings(url=url)):
        migrate.upgrade(url)


@pytest.fixture
def migrated_sqlite(sqlite_template: Path) -> Callable[[str], None]:
    """``migrated_sqlite(url)``: the SQLite file of ``url`` at head (see :func:`provide_sqlite`)."""
    return lambda url: provide_sqlite(url, sqlite_template)


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.Postgres]:
    """Makes migrated PostgreSQL databases; drops them all at the end of the session. With
    ``CHATPUSH_TEST_POSTGRES=off`` every test that needs PostgreSQL is skipped, saying so."""
    if not pg.enabled():
        pytest.skip("PostgreSQL left out: CHATPUSH_TEST_POSTGRES=off")
    databases = pg.Postgres()
    yield databases
    databases.close()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'chatpush.db'}"


@pytest.fixture
def pg_url(postgres: pg.Postgres) -> str:
    """A migrated PostgreSQL database with no rows, for one test."""
    return postgres.shared()


@pytest.fixture
def pg_fresh_url(postgres: pg.Postgres) -> Iterator[str]:
    """A migrated PostgreSQL database of its own, for tests that run processes of their own."""
    url = postgres.create()
    yield url
    postgres.drop(url)


@pytest.fixture
def make_settings(db_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        overrides.setdefault("database", {"url": db_url})
        overrides.setdefault("security", {"api_keys": [API_KEY]})
        return load_settings(None, **overrides)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


class FrontTestServer(TestServer):
    """aiohttp's test server through ``FrontRunner``, as ``chatpush serve`` runs: plain CometD
    long-polling requests are answered by the lean front (chatpush/cometd/front.py) when the app
    has one, and every other connection is handed to aiohttp."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return FrontRunner(self.app, **kwargs)


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Any], clock: FakeClock, sqlite_template: Path
) -> Callable[..., Any]:
    """Start the real app on a migrated database, served as ``chatpush serve`` serves it
    (``FrontRunner``), and return an aiohttp test client."""

    async def make(settings: Settings, **app_args: Any) -> TestClient[web.Request, web.Application]:
        """``app_args``: more arguments of ``create_app`` (e.g. ``agent_outbox``)."""
        if settings.database.is_sqlite:  # the PostgreSQL test databases are migrated already
            await asyncio.to_thread(provide_sqlite, settings.database.url, sqlite_template)
        app = create_app(settings, clock=clock, housekeeping=False, **app_args)
        server = FrontTestServer(app)
        try:
            await server.start_server()
        except BaseException:
            # Start-up failed half-way (a test of a refused start): what had started, such as
            # the providers' HTTP sessions, is closed again, as `chatpush serve` does.
            await app.cleanup()
            await server.close()
            raise
        client: TestClient[web.Request, web.Application] = await aiohttp_client(server)
        return client

    return make


@pytest.fixture
async def client(
    make_client: Callable[..., Any], settings: Settings
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    yield await make_client(settings)


class ChatDriver:
    """Drives one chat through the REST API from both sides, as a widget and an agent would."""

    def __init__(self, client: TestClient[web.Request, web.Application], service: str = "support"):
        self.client = client
        self.service = service
        self.chat_id = ""
        self.secure_key = ""

    async def request_chat(self, **form: str) -> dict[str, Any]:
        form.setdefault("nickname", "Customer")
        response = await self.client.post(f"/genesys/2/chat/{self.service}", data=form)
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        self.chat_id, self.secure_key = body["chatId"], body["secureKey"]
        return body

    async def op(self, operation: str, expect: int = 200, **form: str) -> dict[str, Any]:
        form.setdefault("secureKey", self.secure_key)
        response = await self.client.post(
            f"/genesys/2/chat/{self.service}/{self.chat_id}/{operation}", data=form
        )
        body: dict[str, Any] = await response.json()
        assert response.status == expect, body
        return body

    async def api(
        self, method: str, path: str, expect: int = 200, json: Any = None
    ) -> dict[str, Any]:
        response = await self.client.request(
            method, f"/api/v1{path}", json=json, headers={"X-API-Key": API_KEY}
        )
        body: dict[str, Any] = await response.json()
        assert response.status == expect, body
        return body

    async def agent_joins(self, nickname: str = "Agent Smith") -> int:
        body = await self.api(
            "POST", f"/chats/{self.chat_id}/parties", 201, {"type": "Agent", "nickname": nickname}
        )
        return int(body["party"]["participantId"])

    async def agent_says(self, participant_id: int, text: str) -> dict[str, Any]:
        body = await self.api(
            "POST",
            f"/chats/{self.chat_id}/events",
            201,
            {"participantId": participant_id, "type": "Message", "text": text},
        )
        return dict(body["event"])


@pytest.fixture
def chat(client: TestClient[web.Request, web.Application]) -> ChatDriver:
    return ChatDriver(client)
