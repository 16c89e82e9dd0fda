"""What one chatpush-like write transaction costs through each way of reaching SQLite, same run.

Evidence for the bottleneck analysis of docs/PERFORMANCE.md: chatpush's per-event transaction
(``POST /api/v1/chats/{id}/events``) is 9 statements: read the chat and the party, take an index
(UPDATE ... RETURNING), insert the event, read the subscription, unpark, drop unsent triggers,
enqueue the trigger, save the subscription state. The same 9 statements on chatpush's schema
(``chatpush.store.tables``, WAL, synchronous=NORMAL), on a fresh file, go through:

- ``async-built``: SQLAlchemy's asyncio extension over aiosqlite, each statement built per call
  with ``select()``/``update()``... as chatpush/store does today (every DBAPI call is one round
  trip to aiosqlite's thread: cursor, execute, fetch, close);
- ``async-prebuilt``: the same driver, statements built once with ``bindparam()``;
- ``sync-1hop``: synchronous SQLAlchemy Core (pysqlite), statements built once, the whole
  transaction run by one call into a single database thread (``run_in_executor``);
- ``sqlite3-1hop``: the standard library's sqlite3 with SQL text, one call into that thread;
- ``sqlite3-inline``: the same, run on the event loop's own thread (no hop at all).

Variants are interleaved round by round; the table gives the median per transaction (wall and
CPU of the process, all threads) and each one's speed relative to ``async-built``. Run:

    .venv/bin/python -m benchmarks.db_access                  # 5 rounds x 400 transactions
    .venv/bin/python -m benchmarks.db_access --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from benchmarks.rig import print_table
from chatpush.store.tables import Chat, Event, Outbox, Party, Subscription, metadata

chats = cast(Table, Chat.__table__)
parties = cast(Table, Party.__table__)
events = cast(Table, Event.__table__)
subs = cast(Table, Subscription.__table__)
outbox = cast(Table, Outbox.__table__)

BODY = {"deviceId": "device", "message": {"messages": [{"userData": {"notify-position": "3"}}]}}


def _pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "busy_timeout=5000",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def seed(path: Path, chat_count: int) -> list[str]:
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", _pragmas)
    metadata.create_all(engine)
    ids = [f"{n:016X}" for n in range(chat_count)]
    with engine.begin() as conn:
        for chat_id in ids:
            conn.execute(
                insert(chats).values(
                    id=chat_id,
                    service_name="bench",
                    secure_key="k" * 32,
                    user_id="u" * 16,
                    user_data={},
                    created_at_ms=0,
                    last_client_request_ms=0,
                    last_index=2,
                    client_position=2,
                    last_participant_id=2,
                )
            )
            for participant in (1, 2):
                conn.execute(
                    insert(parties).values(
                        chat_id=chat_id,
                        participant_id=participant,
                        type="Client" if participant == 1 else "Agent",
                        nickname="n",
                        joined_at_ms=0,
                    )
                )
            conn.execute(
                insert(subs).values(
                    chat_id=chat_id,
                    device_id="device",
                    device_type="customhttp",
                    group_name="bench",
                    debug=False,
                    notify_requestor=True,
                    include_payload=False,
                    reliable=True,
                    status="active",
                    ack_position=2,
                    notifiable_last=2,
                    out_final=False,
                    created_at_ms=0,
                )
            )
    engine.dispose()
    return ids


# -- the transaction, four ways ----------------------------------------------------------------


def _state(now_ms: int) -> dict[str, Any]:
    return {
        "status": "active",
        "ack_position": 2,
        "notifiable_last": 3,
        "out_position": 3,
        "out_attempt": 0,
        "out_final": False,
        "wake_at_ms": now_ms + 60_000,
    }


def _event_row(chat_id: str, index: int, now_ms: int) -> dict[str, Any]:
    return {
        "chat_id": chat_id,
        "idx": index,
        "type": "Message",
        "participant_id": 2,
        "nickname": "n",
        "party_type": "Agent",
        "text": "benchmark message",
        "message_type": None,
        "user_data": None,
        "utc_time_ms": now_ms,
    }


def _outbox_row(chat_id: str, now_ms: int) -> dict[str, Any]:
    return {
        "source": "chat",
        "key": chat_id,
        "kind": "trigger",
        "body": BODY,
        "notify_position": 3,
        "attempt": 0,
        "message_id": "msg_0",
        "due_at_ms": now_ms,
        "lease_until_ms": None,
        "claimed_by": None,
        "created_at_ms": now_ms,
    }


async def async_built(conn: AsyncConnection, chat_id: str, now_ms: int) -> None:
    """As chatpush/store does it: a new statement object for every call."""
    (await conn.execute(select(chats).where(chats.c.id == chat_id))).first()
    (
        await conn.execute(
            select(parties).where(and_(parties.c.chat_id == chat_id, parties.c.participant_id == 2))
        )
    ).first()
    index = (
        await conn.execute(
            update(chats)
            .where(chats.c.id == chat_id)
            .values(last_index=chats.c.last_index + 1)
            .returning(chats.c.last_index)
        )
    ).scalar_one()
    await conn.execute(insert(events), [_event_row(chat_id, index, now_ms)])
    (await conn.execute(select(subs).where(subs.c.chat_id == chat_id))).first()
    await conn.execute(
        update(outbox)
        .where(
            and_(outbox.c.source == "chat", outbox.c.key == chat_id, outbox.c.due_at_ms.is_(None))
        )
        .values(due_at_ms=now_ms)
    )
    await conn.execute(
        delete(outbox).where(
            and_(
                outbox.c.source == "chat",
                outbox.c.key == chat_id,
                outbox.c.kind == "trigger",
                outbox.c.lease_until_ms.is_(None) | (outbox.c.lease_until_ms < now_ms),
            )
        )
    )
    await conn.execute(insert(outbox).values(**_outbox_row(chat_id, now_ms)))
    await conn.execute(update(subs).where(subs.c.chat_id == chat_id).values(**_state(now_ms)))


def _bound_state(now_ms: int) -> dict[str, Any]:
    return {f"b_{key}": value for key, value in _state(now_ms).items()}


class Prebuilt:
    """The same statements, built once with bound parameters."""

    get_chat = select(chats).where(chats.c.id == bindparam("b_chat"))
    get_party = select(parties).where(
        and_(parties.c.chat_id == bindparam("b_chat"), parties.c.participant_id == 2)
    )
    reserve = (
        update(chats)
        .where(chats.c.id == bindparam("b_chat"))
        .values(last_index=chats.c.last_index + 1)
        .returning(chats.c.last_index)
    )
    add_event = insert(events)
    get_sub = select(subs).where(subs.c.chat_id == bindparam("b_chat"))
    unpark = (
        update(outbox)
        .where(
            and_(
                outbox.c.source == "chat",
                outbox.c.key == bindparam("b_chat"),
                outbox.c.due_at_ms.is_(None),
            )
        )
        .values(due_at_ms=bindparam("b_now"))
    )
    drop = delete(outbox).where(
        and_(
            outbox.c.source == "chat",
            outbox.c.key == bindparam("b_chat"),
            outbox.c.kind == "trigger",
            outbox.c.lease_until_ms.is_(None) | (outbox.c.lease_until_ms < bindparam("b_now")),
        )
    )
    enqueue = insert(outbox)
    save = (
        update(subs)
        .where(subs.c.chat_id == bindparam("b_chat"))
        .values({key: bindparam(f"b_{key}") for key in _state(0)})
    )


async def async_prebuilt(conn: AsyncConnection, chat_id: str, now_ms: int) -> None:
    p, key = Prebuilt, {"b_chat": chat_id}
    (await conn.execute(p.get_chat, key)).first()
    (await conn.execute(p.get_party, key)).first()
    index = (await conn.execute(p.reserve, key)).scalar_one()
    await conn.execute(p.add_event, [_event_row(chat_id, index, now_ms)])
    (await conn.execute(p.get_sub, key)).first()
    await conn.execute(p.unpark, {"b_chat": chat_id, "b_now": now_ms})
    await conn.execute(p.drop, {"b_chat": chat_id, "b_now": now_ms})
    await conn.execute(p.enqueue, _outbox_row(chat_id, now_ms))
    await conn.execute(p.save, {"b_chat": chat_id, **_bound_state(now_ms)})


def sync_prebuilt(conn: Connection, chat_id: str, now_ms: int) -> None:
    p, key = Prebuilt, {"b_chat": chat_id}
    conn.execute(p.get_chat, key).first()
    conn.execute(p.get_party, key).first()
    index = conn.execute(p.reserve, key).scalar_one()
    conn.execute(p.add_event, [_event_row(chat_id, index, now_ms)])
    conn.execute(p.get_sub, key).first()
    conn.execute(p.unpark, {"b_chat": chat_id, "b_now": now_ms})
    conn.execute(p.drop, {"b_chat": chat_id, "b_now": now_ms})
    conn.execute(p.enqueue, _outbox_row(chat_id, now_ms))
    conn.execute(p.save, {"b_chat": chat_id, **_bound_state(now_ms)})


def raw_sqlite(db: sqlite3.Connection, chat_id: str, now_ms: int) -> None:
    db.execute("BEGIN")
    try:
        db.execute("SELECT * FROM chats WHERE id = ?", (chat_id,)).fetchone()
        db.execute(
            "SELECT * FROM parties WHERE chat_id = ? AND participant_id = 2", (chat_id,)
        ).fetchone()
        (index,) = db.execute(
            "UPDATE chats SET last_index = last_index + 1 WHERE id = ? RETURNING last_index",
            (chat_id,),
        ).fetchone()
        row = _event_row(chat_id, index, now_ms)
        db.execute(
            f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        db.execute("SELECT * FROM subscriptions WHERE chat_id = ?", (chat_id,)).fetchone()
        db.execute(
            "UPDATE outbox SET due_at_ms = ? WHERE source = 'chat' AND key = ?"
            " AND due_at_ms IS NULL",
            (now_ms, chat_id),
        )
        db.execute(
            "DELETE FROM outbox WHERE source = 'chat' AND key = ? AND kind = 'trigger'"
            " AND (lease_until_ms IS NULL OR lease_until_ms < ?)",
            (chat_id, now_ms),
        )
        row = _outbox_row(chat_id, now_ms)
        row["body"] = json.dumps(row["body"])
        db.execute(
            f"INSERT INTO outbox ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        state = _state(now_ms)
        db.execute(
            f"UPDATE subscriptions SET {', '.join(f'{k} = ?' for k in state)} WHERE chat_id = ?",
            (*state.values(), chat_id),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


# -- the runner --------------------------------------------------------------------------------

Variant = Callable[[str, int], Awaitable[None]]


async def make_variants(path: Path) -> tuple[dict[str, Variant], Callable[[], Awaitable[None]]]:
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    event.listen(async_engine.sync_engine, "connect", _pragmas)
    sync_engine: Engine = create_engine(f"sqlite:///{path}")
    event.listen(sync_engine, "connect", _pragmas)
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
    raw_threaded = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw_inline = sqlite3.connect(path, isolation_level=None)
    for connection in (raw_threaded, raw_inline):
        _pragmas(connection)
    loop = asyncio.get_running_loop()

    async def built(chat_id: str, now_ms: int) -> None:
        async with async_engine.begin() as conn:
            await async_built(conn, chat_id, now_ms)

    async def prebuilt(chat_id: str, now_ms: int) -> None:
        async with async_engine.begin() as conn:
            await async_prebuilt(conn, chat_id, now_ms)

    def sync_tx(chat_id: str, now_ms: int) -> None:
        with sync_engine.begin() as conn:
            sync_prebuilt(conn, chat_id, now_ms)

    async def sync_one_hop(chat_id: str, now_ms: int) -> None:
        await loop.run_in_executor(thread, sync_tx, chat_id, now_ms)

    async def raw_one_hop(chat_id: str, now_ms: int) -> None:
        await loop.run_in_executor(thread, raw_sqlite, raw_threaded, chat_id, now_ms)

    async def raw_on_loop(chat_id: str, now_ms: int) -> None:
        raw_sqlite(raw_inline, chat_id, now_ms)

    async def close() -> None:
        await async_engine.dispose()
        sync_engine.dispose()
        await loop.run_in_executor(thread, raw_threaded.close)
        thread.shutdown()
        raw_inline.close()

    variants: dict[str, Variant] = {
        "async-built": built,
        "async-prebuilt": prebuilt,
        "sync-1hop": sync_one_hop,
        "sqlite3-1hop": raw_one_hop,
        "sqlite3-inline": raw_on_loop,
    }
    return variants, close


async def amain(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="chatpush-db-") as workdir:
        path = Path(workdir) / "bench.db"
        ids = seed(path, args.chats)
        variants, close = await make_variants(path)
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        try:
            for run in variants.values():  # warm caches (statement compilation, pages)
                for n in range(20):
                    await run(ids[n % len(ids)], n)
            for _ in range(args.rounds):
                for name, run in variants.items():
                    started, started_cpu = time.perf_counter(), time.process_time()
                    for n in range(args.transactions):
                        await run(ids[n % len(ids)], 1_000_000 + n)
                    wall[name].append((time.perf_counter() - started) / args.transactions)
                    cpu[name].append((time.process_time() - started_cpu) / args.transactions)
        finally:
            await close()
    base = statistics.median(wall["async-built"])
    print()
    print(
        f"one 9-statement write transaction, {args.rounds} rounds x {args.transactions}, "
        "sequential; median per transaction"
    )
    rows = [
        [
            name,
            f"{1e6 * statistics.median(wall[name]):.0f}",
            f"{1e6 * statistics.median(cpu[name]):.0f}",
            f"{base / statistics.median(wall[name]):.1f}x",
        ]
        for name in variants
    ]
    print_table(["variant", "wall us/tx", "CPU us/tx", "speed vs async-built"], rows)
    print(flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=400, help="per variant and round")
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.transactions, args.chats = 1, 20, 10
    if min(args.rounds, args.transactions, args.chats) < 1:
        parser.error("--rounds, --transactions and --chats must be positive")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
