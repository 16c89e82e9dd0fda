"""SQLite group commit: write transactions that queue up share one COMMIT, and each still
stands or falls alone (a real SQLite file, the real writer thread)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection

from chatpush.config import DatabaseSettings
from chatpush.store import sql
from chatpush.store.database import (
    SQLITE_CHECKPOINT_EVERY_COMMITS,
    SQLITE_MAX_BATCH,
    SQLITE_RESTART_EVERY_HANDOVERS,
    SQLITE_WAL_BACKSTOP_PAGES,
    Database,
)
from chatpush.store.sql import Statement


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = Database(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"))
    await database.write(
        lambda conn: conn.exec_driver_sql("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    )
    yield database
    await database.close()


def insert(conn: Connection, n: int) -> int:
    conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
    if n % 5 == 0:
        raise ValueError(f"refused {n}")  # after its write: the write must not stand
    return n


def hold_the_writer(conn: Connection) -> None:
    time.sleep(0.2)  # the writes below queue up meanwhile


async def held(db: Database) -> asyncio.Task[None]:
    """The writer thread busy with a write of its own, so that the next writes queue up."""
    task = asyncio.create_task(db.write(hold_the_writer))
    await asyncio.sleep(0.05)
    return task


async def rows(db: Database) -> list[int]:
    def read(conn: Connection) -> list[int]:
        return [row[0] for row in conn.exec_driver_sql("SELECT n FROM t ORDER BY n")]

    return await db.read(read)


async def test_queued_writes_share_commits_and_a_failing_one_is_rolled_back_alone(
    db: Database,
) -> None:
    commits: list[str] = []
    assert db._sync is not None
    db._sync.dispose()  # every connection from here on is traced

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(
            lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None
        )

    event.listen(db._sync, "connect", trace)
    count = 2 * SQLITE_MAX_BATCH + 10
    holding = await held(db)
    results = await asyncio.gather(
        *(db.write(insert, n) for n in range(1, count + 1)), return_exceptions=True
    )
    await holding
    for n, result in enumerate(results, start=1):
        if n % 5 == 0:
            assert isinstance(result, ValueError) and str(result) == f"refused {n}"
        else:
            assert result == n
    assert await rows(db) == [n for n in range(1, count + 1) if n % 5]
    # The holding write alone, then the queued ones in full batches.
    assert len(commits) == 1 + -(-count // SQLITE_MAX_BATCH)


async def test_a_write_alone_commits_and_one_that_raises_leaves_nothing(db: Database) -> None:
    assert await db.write(insert, 1) == 1
    with pytest.raises(ValueError):
        await db.write(insert, 5)
    assert await rows(db) == [1]


async def test_a_failing_commit_fails_every_write_of_its_batch(db: Database) -> None:
    """A write that breaks the transaction itself (not only its savepoint) takes its whole
    batch down: none of them is answered as done, and none of them stands."""

    def break_the_transaction(conn: Connection) -> None:
        conn.exec_driver_sql("ROLLBACK")  # the savepoints and the batch's transaction are gone

    holding = await held(db)
    results = await asyncio.gather(
        db.write(insert, 1),
        db.write(break_the_transaction),
        db.write(insert, 2),
        return_exceptions=True,
    )
    await holding  # its own commit came before
    assert all(isinstance(result, Exception) for result in results), results
    assert await rows(db) == []
    assert await db.write(insert, 3) == 3  # the writer carries on
    assert await rows(db) == [3]


async def test_a_read_sees_one_snapshot_through_sqlite3_and_sqlalchemy(
    db: Database, tmp_path: Path
) -> None:
    """Statements run on the sqlite3 connection (chatpush/store/sql.py) and through SQLAlchemy
    in one read see the same snapshot, whatever is committed in between."""
    count = Statement("SELECT count(*) FROM t")

    def read(conn: Connection) -> tuple[int, int, int]:
        [[before]] = sql.rows(conn, count, {})
        with sqlite3.connect(tmp_path / "g.db") as other:  # another process would do the same
            other.execute("INSERT INTO t VALUES (99)")
        [[raw_after]] = sql.rows(conn, count, {})
        sqlalchemy_after = conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one()
        return before, raw_after, sqlalchemy_after

    assert await db.read(read) == (0, 0, 0)
    assert await rows(db) == [99]  # committed all the same, seen by the next read


async def test_the_wal_is_copied_into_the_database_file_beside_the_writer(
    db: Database, tmp_path: Path
) -> None:
    """SQLite's own checkpoint would wait for 1,000 pages (and then run inside a COMMIT, the
    writer and its batch's callers waiting for the copy and its fsyncs); the checkpoint thread
    copies the WAL into the database file every SQLITE_CHECKPOINT_EVERY_COMMITS commits."""
    rounds = 5
    for round_ in range(rounds):
        for n in range(SQLITE_CHECKPOINT_EVERY_COMMITS):
            await db.write(insert_one, round_ * SQLITE_CHECKPOINT_EVERY_COMMITS + n + 1)
        # the checkpoint handed over on this round's commits has run
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: db._checkpointer.submit(lambda: None).result()
        )
    # one page a commit: all of it would still be in the WAL below the backstop
    assert rounds * SQLITE_CHECKPOINT_EVERY_COMMITS < SQLITE_WAL_BACKSTOP_PAGES
    in_file = sqlite3.connect(f"file:{tmp_path / 'g.db'}?immutable=1", uri=True)  # WAL unread
    try:
        [(copied,)] = in_file.execute("SELECT count(*) FROM t").fetchall()
    finally:
        in_file.close()
    assert (rounds - 1) * SQLITE_CHECKPOINT_EVERY_COMMITS <= copied
    assert len(await rows(db)) == rounds * SQLITE_CHECKPOINT_EVERY_COMMITS


async def test_the_wal_starts_over_long_before_its_backstop(db: Database, tmp_path: Path) -> None:
    """SQLite starts the WAL over only at a write that finds all of it copied; the writer copies
    what the checkpoint thread left, every few hand-overs, so the WAL file (never shrunk: it is
    written over from its start) stays at about that many commits' frames (800 without)."""
    rounds = 2 * SQLITE_RESTART_EVERY_HANDOVERS
    for round_ in range(rounds):
        for n in range(SQLITE_CHECKPOINT_EVERY_COMMITS):
            await db.write(insert_one, round_ * SQLITE_CHECKPOINT_EVERY_COMMITS + n + 1)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: db._checkpointer.submit(lambda: None).result()
        )
    frames = ((tmp_path / "g.db-wal").stat().st_size - 32) // (24 + 4096)  # one page a commit
    restart_frames = SQLITE_RESTART_EVERY_HANDOVERS * SQLITE_CHECKPOINT_EVERY_COMMITS
    assert rounds * SQLITE_CHECKPOINT_EVERY_COMMITS < SQLITE_WAL_BACKSTOP_PAGES
    # A restart waits while the thread is checkpointing (one more round at most), and a commit
    # now and then writes a second page (a b-tree page split): 700 at most, where the WAL
    # without the writer's restarts holds 800 or more.
    assert frames <= restart_frames + 2 * SQLITE_CHECKPOINT_EVERY_COMMITS, frames
    assert len(await rows(db)) == rounds * SQLITE_CHECKPOINT_EVERY_COMMITS


def insert_one(conn: Connection, n: int) -> None:
    conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
