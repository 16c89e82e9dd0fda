"""The database: ``await db.write(fn, *args)`` runs ``fn(conn, *args)`` as one transaction.

Transactions are plain synchronous functions of a SQLAlchemy ``Connection``, so a whole
transaction costs one hand-over between the event loop and the database, not one per statement:

- SQLite (the embedded default): the standard ``sqlite3`` driver in threads of our own. One thread
  runs every write transaction, in order: SQLite has one writer, and queueing writes here never
  spins on SQLITE_BUSY. Write transactions that queue up while it works are committed together
  (group commit): one ``BEGIN IMMEDIATE`` … ``COMMIT`` for the batch, a SAVEPOINT around each
  function, so one that raises is rolled back alone; every caller is answered only after the
  COMMIT, so nothing answered is lost to a crash, and a COMMIT that fails fails the whole batch.
  Two more threads run reads, which WAL lets proceed beside the writer. ``busy_timeout`` covers
  other processes (``chatpush migrate``, an operator's sqlite3 shell). The WAL is copied into the
  database file by a thread of its own, handed it every ``SQLITE_CHECKPOINT_EVERY_COMMITS``
  COMMITs (a PASSIVE checkpoint: it waits for no one, and no one waits for it). SQLite's own
  automatic checkpoint would run inside the COMMIT that crosses 1,000 pages, holding the writer
  and every caller of its batch for the copy and its fsyncs (tens of milliseconds,
  docs/PERFORMANCE.md §10); it stays, at ``SQLITE_WAL_BACKSTOP_PAGES``, as the WAL's bound.
  SQLite starts the WAL over only at a write that finds all of it copied, and under a steady
  flow of writes one always lands while the checkpoint thread works; so every
  ``SQLITE_RESTART_EVERY_HANDOVERS`` hand-overs the writer, when nothing is queued, copies the
  rest itself (what was written while the thread worked), and the next write starts the WAL over.
- PostgreSQL: asyncpg through SQLAlchemy's async engine; ``run_sync`` runs the same function in a
  greenlet, each statement awaiting asyncpg without a thread. Row locks order concurrent writers
  (several instances share one database); a transaction that PostgreSQL chose as a deadlock
  victim, or could not serialize, runs again from the start, up to ``PG_RETRIES`` times.
  ``listen`` keeps a connection of its own on a LISTEN/NOTIFY channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chatpush.config import DatabaseSettings
from chatpush.errors import StorageUnavailable

SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_READ_THREADS = 2
SQLITE_MAX_BATCH = 64
"""The most write transactions one SQLite COMMIT carries (group commit)."""
SQLITE_CHECKPOINT_EVERY_COMMITS = 100
"""The writer hands the WAL to the checkpoint thread after this many COMMITs, unless it is still
at the last one (about SQLite's own 1,000-page threshold at the usual 5 to 15 pages a commit)."""
SQLITE_RESTART_EVERY_HANDOVERS = 5
"""After this many hand-overs, the writer, once nothing is queued, checkpoints what the thread
left (``Database._restart_wal``), so that SQLite starts the WAL over."""
SQLITE_WAL_BACKSTOP_PAGES = 10_000
"""SQLite's automatic checkpoint (in the COMMIT, on the writer) past this many WAL pages (40 MB
of 4 KiB pages): the WAL's bound; it copies only what the checkpoint thread has not."""
PG_RETRIES = 3
PG_RETRYABLE = {"40P01", "40001"}  # deadlock_detected, serialization_failure
LISTEN_RETRY_S = 1.0

log = logging.getLogger("chatpush.store")

P = ParamSpec("P")
T = TypeVar("T")
Transaction = Callable[Concatenate[Connection, P], T]


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file readable by its owner only (0600) before SQLite opens it; it holds
    every chat's secure key. SQLite gives the -wal and -shm files the database file's mode.

    An existing file keeps its mode (an operator may have chosen it), with a warning when its
    group or others may read or write it.
    """
    parsed = make_url(url)
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:") or "uri" in parsed.query:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    except OSError:
        return  # no such directory, no permission: SQLite's own error will say so
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "database file %s has mode %04o: others than its owner may read the secure keys "
            "in it; chmod 600 it",
            path,
            mode,
            extra={"action": "database_file_readable", "mode": f"{mode:04o}"},
        )


def make_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An async engine, for the tools that want one (Alembic's environment, ``chatpush check``)."""
    if settings.is_sqlite:
        _private_sqlite_file(settings.url)
        engine = create_async_engine(
            settings.url, connect_args={"timeout": settings.connect_timeout_s}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    return create_async_engine(
        settings.url,
        pool_size=settings.pool_size,
        max_overflow=0,  # pool_size is the instance's whole share of max_connections
        pool_timeout=settings.connect_timeout_s,
        pool_pre_ping=True,
        connect_args={"timeout": settings.connect_timeout_s},
    )


def _sqlite_engine(settings: DatabaseSettings) -> Engine:
    _private_sqlite_file(settings.url)
    url = make_url(settings.url).set(drivername="sqlite+pysqlite")
    engine = create_engine(
        url,
        connect_args={"timeout": settings.connect_timeout_s, "check_same_thread": False},
        pool_size=SQLITE_READ_THREADS + 2,  # the writer, the readers, the checkpoint thread
    )
    event.listen(engine, "connect", _sqlite_autocommit_driver)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "connect", _sqlite_checkpoint_backstop)
    return engine


def _sqlite_autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own transaction handling starts transactions late (not before a
    # SELECT); Database issues BEGIN itself, so a transaction sees one snapshot from its first
    # statement, whether it goes through SQLAlchemy or to the sqlite3 connection (store/sql.py).
    dbapi_connection.isolation_level = None


def _sqlite_checkpoint_backstop(dbapi_connection: Any, _record: Any) -> None:
    # Database's connections leave the WAL to its checkpoint thread (the module's docstring).
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_BACKSTOP_PAGES}")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


@dataclass(slots=True)
class _Write:
    """A write transaction waiting for the SQLite writer thread, and where its outcome goes."""

    run: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(outcomes: list[tuple[_Write, bool, Any]]) -> None:
    """On the caller's event loop: hand each transaction's value or exception to its caller."""
    for write, ok, value in outcomes:
        if write.future.done():  # the caller was cancelled meanwhile
            continue
        if ok:
            write.future.set_result(value)
        else:
            write.future.set_exception(value)


class Database:
    """Runs transaction functions and maps driver failures to StorageUnavailable."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.is_sqlite = settings.is_sqlite
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        if self.is_sqlite:
            self._sync = _sqlite_engine(settings)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="chatpush-db-write")
            self._queued: deque[_Write] = deque()
            self._queue_lock = threading.Lock()
            self._draining = False
            """The writer thread is draining the queue (one drain at a time)."""
            self._readers = ThreadPoolExecutor(
                SQLITE_READ_THREADS, thread_name_prefix="chatpush-db-read"
            )
            self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="chatpush-db-checkpoint")
            self._commits = 0
            """COMMITs since the WAL was last handed to the checkpoint thread (writer thread)."""
            self._handovers = 0
            """Hand-overs to the checkpoint thread since the writer's own last checkpoint."""
            self._checkpointing = threading.Event()
            """Set by the writer as it hands the WAL over, cleared when the checkpoint is done."""
        else:
            self._async = make_engine(settings)
        self._connect_timeout_s = settings.connect_timeout_s

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> Database:
        return cls(settings)

    async def write(self, fn: Transaction[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in one read-write transaction, committed when it returns."""
        try:
            if self._sync is not None:
                loop = asyncio.get_running_loop()
                write = _Write(lambda conn: fn(conn, *args, **kwargs), loop.create_future(), loop)
                with self._queue_lock:
                    self._queued.append(write)
                    start = not self._draining
                    self._draining = True
                if start:
                    self._writer.submit(self._drain)
                result: T = await write.future
                return result
            assert self._async is not None
            for attempt in range(1, PG_RETRIES + 1):
                try:
                    async with self._async.begin() as conn:
                        return await conn.run_sync(fn, *args, **kwargs)
                except DBAPIError as exc:
                    if attempt == PG_RETRIES or not _is_retryable(exc):
                        raise
                    log.info("transaction retried after %s", exc.orig.__class__.__name__)
            raise AssertionError("unreachable")
        except (
            OperationalError,
            DBAPIError,
            sqlite3.OperationalError,
            OSError,
            PoolTimeout,
        ) as exc:
            if _is_connection_failure(exc):
                raise StorageUnavailable() from exc
            raise

    def _drain(self) -> None:
        """The SQLite writer thread: commit what is queued, a batch at a time, until none is."""
        while True:
            with self._queue_lock:
                batch = [
                    self._queued.popleft() for _ in range(min(len(self._queued), SQLITE_MAX_BATCH))
                ]
                if not batch and not self._restart_due():
                    self._draining = False
                    return
            if not batch:
                self._restart_wal()  # nothing queued: nobody waits for it
                continue
            try:
                outcomes = self._commit(batch)
            except BaseException as exc:  # BEGIN or COMMIT failed: nothing of the batch stands
                outcomes = [(write, False, exc) for write in batch]
            else:
                self._commits += 1
                if (
                    self._commits >= SQLITE_CHECKPOINT_EVERY_COMMITS
                    and not self._checkpointing.is_set()
                ):
                    self._commits = 0
                    self._handovers += 1
                    self._checkpointing.set()
                    with contextlib.suppress(RuntimeError):  # closing: the last one checkpoints
                        self._checkpointer.submit(self._checkpoint)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Write, bool, Any]]] = {}
            for outcome in outcomes:
                by_loop.setdefault(outcome[0].loop, []).append(outcome)
            for loop, settled in by_loop.items():
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                    loop.call_soon_threadsafe(_settle, settled)

    def _restart_due(self) -> bool:
        """The WAL has been handed over ``SQLITE_RESTART_EVERY_HANDOVERS`` times since the writer
        last finished a checkpoint, and the checkpoint thread is done with it."""
        return (
            self._handovers >= SQLITE_RESTART_EVERY_HANDOVERS and not self._checkpointing.is_set()
        )

    def _restart_wal(self) -> None:
        """The writer thread, with nothing queued: a PASSIVE checkpoint of its own, which copies
        only what was written while the checkpoint thread worked. No write can land meanwhile
        (this is the only writer), so the next write finds the WAL all copied and SQLite starts
        it over, instead of it growing to the backstop and SQLite's checkpoint copying the rest
        inside a COMMIT."""
        assert self._sync is not None
        self._handovers = 0
        try:
            with self._sync.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # the backstop bounds the WAL
            log.warning(
                "WAL checkpoint failed: %s", exc, extra={"action": "sqlite_checkpoint_failed"}
            )

    def _checkpoint(self) -> None:
        """The checkpoint thread: copy what it can of the WAL into the database file, waiting
        for no reader or writer (a frame a reader still needs is copied next time)."""
        assert self._sync is not None
        try:
            with self._sync.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # the next one tries again; the backstop bounds the WAL
            log.warning(
                "WAL checkpoint failed: %s", exc, extra={"action": "sqlite_checkpoint_failed"}
            )
        finally:
            self._checkpointing.clear()

    def _commit(self, batch: list[_Write]) -> list[tuple[_Write, bool, Any]]:
        """One transaction for the whole batch; each function under a SAVEPOINT of its own (a
        single one needs none: its exception rolls the transaction back).

        BEGIN, SAVEPOINT and COMMIT go to the sqlite3 connection directly: SQLAlchemy's
        transaction objects cost more than the statements of a typical request. A function's
        own SQLAlchemy statements join the transaction (the driver does not begin one of its
        own), and the Connection's rollback at close finds nothing left to roll back."""
        assert self._sync is not None
        outcomes: list[tuple[_Write, bool, Any]] = []
        with self._sync.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("BEGIN IMMEDIATE")
            try:
                if len(batch) == 1:
                    [write] = batch
                    try:
                        value = write.run(conn)
                    except Exception as exc:
                        raw.execute("ROLLBACK")
                        return [(write, False, exc)]
                    outcomes.append((write, True, value))
                else:
                    for write in batch:
                        raw.execute("SAVEPOINT write")
                        try:
                            value = write.run(conn)
                        except Exception as exc:
                            raw.execute("ROLLBACK TO write")
                            outcomes.append((write, False, exc))
                        else:
                            outcomes.append((write, True, value))
                        raw.execute("RELEASE write")
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
        return outcomes

    async def listen(self, channel: str, on_notify: Callable[[str | None], None]) -> None:
        """PostgreSQL: call ``on_notify(payload)`` on every NOTIFY of ``channel``, until cancelled.

        A lost connection is opened again; ``on_notify(None)`` is called then, since notifications
        may have been missed while it was down."""
        assert self._async is not None, "LISTEN is a PostgreSQL feature"
        url = self._async.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connected = False
        while True:
            try:
                conn = await asyncpg.connect(url, timeout=self._connect_timeout_s)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                if connected:
                    log.warning("LISTEN connection lost, retrying: %s", exc)
                    connected = False
                await asyncio.sleep(LISTEN_RETRY_S)
                continue
            connected = True
            try:
                await _listen_until_lost(conn, channel, on_notify)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("LISTEN failed, retrying: %s", exc)
            finally:
                if not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(LISTEN_RETRY_S)

    async def read(self, fn: Transaction[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a transaction that is rolled back: for reads only."""
        try:
            if self._sync is not None:
                engine = self._sync

                def run() -> T:
                    with engine.connect() as conn:
                        # One snapshot for every statement of the read (rolled back: it wrote
                        # nothing), begun here as the writer does (Database._commit).
                        raw = conn.connection.driver_connection
                        assert raw is not None
                        raw.execute("BEGIN")
                        try:
                            return fn(conn, *args, **kwargs)
                        finally:
                            raw.execute("ROLLBACK")

                return await asyncio.get_running_loop().run_in_executor(self._readers, run)
            assert self._async is not None
            async with self._async.connect() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        except (
            OperationalError,
            DBAPIError,
            sqlite3.OperationalError,
            OSError,
            PoolTimeout,
        ) as exc:
            if _is_connection_failure(exc):
                raise StorageUnavailable() from exc
            raise

    async def ping(self) -> None:
        await self.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())

    async def drop_connections(self) -> None:
        """Close every pooled connection; the next transaction opens a new one."""
        if self._sync is not None:
            self._sync.dispose()
        if self._async is not None:
            await self._async.dispose()

    async def close(self) -> None:
        if self._sync is not None:
            loop = asyncio.get_running_loop()
            for pool in (self._writer, self._readers, self._checkpointer):
                await loop.run_in_executor(None, pool.shutdown)
            self._sync.dispose()
        if self._async is not None:
            await self._async.dispose()


async def _listen_until_lost(
    conn: asyncpg.Connection, channel: str, on_notify: Callable[[str | None], None]
) -> None:
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    await conn.add_listener(channel, lambda _conn, _pid, _channel, payload: on_notify(payload))
    on_notify(None)  # whatever was notified while no connection listened
    await lost.wait()


def _is_retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in PG_RETRYABLE


PG_UNAVAILABLE_CLASSES = ("08", "53", "57")
"""SQLSTATE classes of an unavailable server: connection exception, insufficient resources
(too many connections, disk full), operator intervention (shutting down)."""


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError | PoolTimeout):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        # From the sqlite3 connection itself (BEGIN/COMMIT and the hot statements, store/sql.py):
        # locked or busy past the busy timeout, I/O errors, a full disk, a file gone.
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if sqlstate[:2] in PG_UNAVAILABLE_CLASSES:
            return True
    if isinstance(exc, DBAPIError):
        # Integrity and programming errors are bugs or client-caused conflicts, not outages.
        return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)
    return False
