"""Fresh PostgreSQL databases for tests, on the real server of ``CHATPUSH_TEST_POSTGRES``.

The server defaults to ``postgresql://postgres@127.0.0.1:5432/postgres`` (what ``.ci/run``
starts). One database is migrated per test session and serves as the template of every test's
own database (``CREATE DATABASE … TEMPLATE``), which costs tens of milliseconds instead of a
whole Alembic run. There is no silent skip: an unreachable server fails the tests that need it,
unless ``CHATPUSH_TEST_POSTGRES=off`` says to leave PostgreSQL out on purpose.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from chatpush.store import migrate
from chatpush.store.tables import metadata

T = TypeVar("T")

ADMIN_URL = os.environ.get(
    "CHATPUSH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "chatpush_test_"


def enabled() -> bool:
    return ADMIN_URL.strip().lower() != "off"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a loop of its own, even when called from inside a running loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _url_for(database: str, driver: str = "postgresql+asyncpg") -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((driver, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(_url_for(urlsplit(ADMIN_URL).path.lstrip("/"), "postgresql"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _truncate(database: str) -> None:
    """Delete every row (DELETE, child tables first: on tables this small it is much cheaper
    than TRUNCATE, which replaces files)."""
    conn = await asyncpg.connect(_url_for(database, "postgresql"))
    try:
        await conn.execute(
            "; ".join(f'DELETE FROM "{table.name}"' for table in reversed(metadata.sorted_tables))
        )
    finally:
        await conn.close()


def admin(*statements: str) -> None:
    """Run statements on the server's admin database (roles, databases)."""
    _run(_admin(*statements))


def execute(url: str, *statements: str) -> None:
    """Run statements as the admin user on the database of ``url``."""

    async def run() -> None:
        name = urlsplit(url).path.lstrip("/")
        conn = await asyncpg.connect(_url_for(name, "postgresql"))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    _run(run())


class Postgres:
    """Creates migrated databases from one template and drops them again."""

    def __init__(self) -> None:
        self._template: str | None = None
        self._lock = threading.RLock()
        self._created: list[str] = []
        self._shared: str | None = None

    def _ensure_template(self) -> str:
        with self._lock:
            if self._template is None:
                name = f"{PREFIX}template_{os.getpid()}_{secrets.token_hex(3)}"
                try:
                    _run(_admin(f'CREATE DATABASE "{name}"'))
                except (OSError, asyncpg.PostgresError) as exc:
                    pytest.fail(
                        f"PostgreSQL at {ADMIN_URL} is not usable ({exc}); start it "
                        "(.ci/run does) or set CHATPUSH_TEST_POSTGRES=off to leave it out",
                        pytrace=False,
                    )
                self._created.append(name)
                migrate.upgrade(_url_for(name))
                self._template = name
            return self._template

    def create(self) -> str:
        """A new, migrated database; returns its ``postgresql+asyncpg://`` URL."""
        template = self._ensure_template()
        name = f"{PREFIX}{secrets.token_hex(6)}"
        _run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        self._created.append(name)
        return _url_for(name)

    def create_empty(self) -> str:
        """A new database with no tables at all (for the migration tests)."""
        name = f"{PREFIX}{secrets.token_hex(6)}"
        _run(_admin(f'CREATE DATABASE "{name}"'))
        self._created.append(name)
        return _url_for(name)

    def shared(self) -> str:
        """The session's one migrated database, emptied: cheaper than a new database per test.

        Only for tests whose app is closed at teardown (it must not write on afterwards)."""
        with self._lock:
            if self._shared is None:
                self._shared = self.create()
        name = urlsplit(self._shared).path.lstrip("/")
        _run(_truncate(name))
        return self._shared

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if name in self._created:
            self._created.remove(name)

    def close(self) -> None:
        if self._created:
            _run(_admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in self._created)))
            self._created.clear()
