"""What a create's count of open callbacks costs (``store.callbacks.count_open``, run in every
create's transaction against ``[callback] max_open_callbacks``), same run, on SQLite.

A migrated file holds ``--open`` callbacks not completed and ``--completed`` completed ones (kept
for ``completed_retention_s``, a day by default: a busy service's day of callbacks). The count
runs ``--repeat`` times in each of four ways, and the table gives the mean per count and its
ratio to the way before migration 0013 (``state != 'COMPLETED'``, no index on ``state``):

- ``IN, index``: what chatpush runs (the open states, looked up in ``ix_callbacks_state``);
- ``!=, index``: the old statement with the index there;
- ``IN, no index`` and ``!=, no index``: the index dropped (the latter is the baseline).

    .venv/bin/python -m benchmarks.open_callbacks                  # 200,000 completed, 2,000 open
    .venv/bin/python -m benchmarks.open_callbacks --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from chatpush.config import DatabaseSettings
from chatpush.store import callbacks as store
from chatpush.store import migrate
from chatpush.store.database import Database

INSERT = (
    "INSERT INTO callbacks (id, service_name, state, desired_time_ms, expiration_ms,"
    " created_at_ms, updated_at_ms, attributes, last_seq, command_seq, upcoming, base_url,"
    " device_debug) VALUES (:id, 's', :state, 1, 2, 1, 1, '{}', 0, 0, 'pending', 'x', false)"
)
OLD = "SELECT count(*) FROM callbacks WHERE state != 'COMPLETED'"


def old_count(conn: Connection) -> int:
    return int(conn.execute(text(OLD)).scalar_one())


async def mean_ms(db: Database, count: Callable[[Connection], int], repeat: int) -> float:
    await db.read(count)  # warm the page cache
    started = time.perf_counter()
    for _ in range(repeat):
        await db.read(count)
    return (time.perf_counter() - started) / repeat * 1000


async def measure(url: str, open_: int, completed: int, repeat: int) -> dict[str, float]:
    db = Database.from_settings(DatabaseSettings(url=url))
    try:

        def seed(conn: Connection) -> None:
            rows: list[dict[str, Any]] = [
                {"id": f"{n:032X}", "state": "QUEUED" if n < open_ else "COMPLETED"}
                for n in range(open_ + completed)
            ]
            conn.execute(text(INSERT), rows)

        await db.write(seed)
        assert await db.read(store.count_open) == open_ == await db.read(old_count)
        found = {
            "IN, index": await mean_ms(db, store.count_open, repeat),
            "!=, index": await mean_ms(db, old_count, repeat),
        }
        await db.write(lambda conn: conn.execute(text("DROP INDEX ix_callbacks_state")))
        found["IN, no index"] = await mean_ms(db, store.count_open, repeat)
        found["!=, no index"] = await mean_ms(db, old_count, repeat)
        return found
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--open", type=int, default=2_000)
    parser.add_argument("--completed", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a tiny run: the code path only")
    args = parser.parse_args()
    if args.smoke:
        args.open, args.completed, args.repeat = 20, 500, 3
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'open_callbacks.db'}"
        migrate.upgrade(url)  # before the event loop: Alembic's environment runs its own
        found = asyncio.run(measure(url, args.open, args.completed, args.repeat))
    base = found["!=, no index"]
    print(f"{args.open} open, {args.completed} completed callbacks; {args.repeat} counts each")
    print(f"{'count':<16} {'ms per count':>12} {'ratio':>7}")
    for name, value in found.items():
        print(f"{name:<16} {value:>12.3f} {value / base:>7.3f}")


if __name__ == "__main__":
    main()
