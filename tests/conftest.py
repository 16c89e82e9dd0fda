"""Shared fixtures: a real database per test (SQLite file, or PostgreSQL), the real app, a fake
clock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chatpush.app import create_app
from chatpush.config import Settings, load_settings
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
def postgres() -> Iterator[pg.Postgres]:
    """Makes migrated PostgreSQL databases; drops them all at the end of the session."""
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


@pytest.fixture
async def make_client(aiohttp_client: Callable[..., Any], clock: FakeClock) -> Callable[..., Any]:
    """Start the real app on a migrated database and return an aiohttp test client."""

    async def make(settings: Settings) -> TestClient[web.Request, web.Application]:
        if settings.database.is_sqlite:  # the PostgreSQL test databases are migrated already
            await asyncio.to_thread(migrate.upgrade, settings.database.url)
        app = create_app(settings, clock=clock, housekeeping=False)
        server = TestServer(app)
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
