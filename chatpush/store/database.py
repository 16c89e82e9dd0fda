"""The engine and its transactions: ``read()`` and ``write()`` yield a connection in a transaction.

SQLite has one writer. Within this process, writes queue on an asyncio lock instead of spinning
on SQLITE_BUSY, so a write transaction never has to upgrade a stale read snapshot;
``busy_timeout`` covers other processes (``chatpush migrate``, an operator's sqlite3 shell).
PostgreSQL needs no lock: the row locks its statements take order concurrent writers to a chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from chatpush.config import DatabaseSettings
from chatpush.errors import StorageUnavailable

SQLITE_BUSY_TIMEOUT_MS = 5000


def make_engine(settings: DatabaseSettings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.url,
            connect_args={"timeout": settings.connect_timeout_s},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    return create_async_engine(
        settings.url,
        pool_size=settings.pool_size,
        pool_pre_ping=True,
        connect_args={"timeout": settings.connect_timeout_s},
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


class Database:
    """Owns the engine; hands out transactions and maps driver failures to StorageUnavailable."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> Database:
        return cls(make_engine(settings))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            if _is_connection_failure(exc):
                raise StorageUnavailable() from exc
            raise

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self._transaction() as conn:
                yield conn
            return
        async with self._write_lock, self._transaction() as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            if _is_connection_failure(exc):
                raise StorageUnavailable() from exc
            raise

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, DBAPIError):
        # Integrity and programming errors are bugs or client-caused conflicts, not outages.
        return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)
    return False
