"""Run a module as ``__main__`` on the event loop asked for, optionally counting chatpush's work.

    python -m benchmarks.launch [--loop uvloop] [--counters FILE] [--stalls FILE] MODULE [ARGS...]

``--loop uvloop`` installs uvloop's event loop policy first, so that every loop the module makes
(``asyncio.run``, aiohttp's ``web.run_app``) is a uvloop loop: this is how the benchmarks run
``benchmarks.null_relay`` on the loop chatpush runs on (chatpush picks its own with
``server.event_loop``, which the rig sets).

``--counters FILE``, a measuring tool for the bottleneck analysis of docs/PERFORMANCE.md, counts SQL
statements by shape, transactions and HTTP requests by route; it changes nothing in chatpush (it
attaches SQLAlchemy engine events and adds one aiohttp middleware to the app
``chatpush.app.create_app`` builds). On SIGUSR1 it
writes the counts so far to FILE as JSON; the benchmarks take a snapshot before and after the
measured phase (``--instrument``) and divide the difference by the events.

``--stalls FILE``: benchmarks/stalls.py's probes (the event loop's lateness, garbage collections,
SQLite COMMITs and the writer's batches), written to FILE as JSON when the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import runpy
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

statements: Counter[str] = Counter()
transactions: Counter[str] = Counter()
requests: Counter[str] = Counter()
snapshots = 0

_SPACE = re.compile(r"\s+")
_NAMES = re.compile(r"\b(FROM|INTO|UPDATE)\s+(\w+)", re.IGNORECASE)


def _shape(sql: str) -> str:
    """A statement's verb and tables, e.g. ``UPDATE outbox`` or ``SELECT chats``."""
    sql = _SPACE.sub(" ", sql).strip()
    verb = sql.split(" ", 1)[0].upper()
    tables = sorted({name.lower() for _, name in _NAMES.findall(sql)})
    return f"{verb} {','.join(tables)}".strip()


def _count(path: str) -> None:
    from aiohttp import web
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import chatpush.app

    def before_execute(
        conn: Any, cursor: Any, sql: str, params: Any, context: Any, executemany: bool
    ) -> None:
        if conn.dialect.name != "sqlite":  # SQLite's are counted by its trace callback
            statements[_shape(sql) + (" (executemany)" if executemany else "")] += 1

    def traced(sql: str) -> None:
        shape = _shape(sql)
        verb = shape.split(" ", 1)[0]
        if verb in ("COMMIT", "ROLLBACK"):
            transactions[verb.lower()] += 1  # SQLite: chatpush commits on the sqlite3 connection
        elif verb not in ("BEGIN", "PRAGMA"):
            statements[shape] += 1

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # chatpush runs its hot statements on the sqlite3 connection itself, past SQLAlchemy's
        # events: SQLite's trace callback sees every statement, whoever runs it.
        if hasattr(dbapi_connection, "set_trace_callback"):
            dbapi_connection.set_trace_callback(traced)

    event.listen(Engine, "before_cursor_execute", before_execute)
    event.listen(Engine, "connect", on_connect)
    for name in ("begin", "commit", "rollback"):
        event.listen(
            Engine,
            name,
            lambda conn, name=name: (
                None if conn.dialect.name == "sqlite" else transactions.update([name])
            ),
        )

    @web.middleware
    async def count_requests(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.resource
        requests[f"{request.method} {route.canonical if route else request.path}"] += 1
        return await handler(request)

    create_app = chatpush.app.create_app

    def instrumented_create_app(*args: Any, **kwargs: Any) -> web.Application:
        app = create_app(*args, **kwargs)
        app.middlewares.append(count_requests)
        return app

    chatpush.app.create_app = instrumented_create_app
    signal.signal(signal.SIGUSR1, lambda signum, frame: _dump(path))


def _dump(path: str) -> None:
    global snapshots
    snapshots += 1
    data = {
        "snapshot": snapshots,
        "statements": dict(statements),
        "transactions": dict(transactions),
        "requests": dict(requests),
    }
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--counters", metavar="FILE", help="JSON file written on SIGUSR1")
    parser.add_argument(
        "--stalls", metavar="FILE", help="benchmarks/stalls.py's probes, JSON written at exit"
    )
    parser.add_argument("module")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.counters:
        _count(args.counters)
    if args.stalls:
        from benchmarks import stalls

        stalls.install(args.stalls)
    sys.argv = [args.module, *args.args]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
