"""``chatpush serve`` with counters: SQL statements, transactions, aiosqlite thread hops, requests.

A measuring tool for the bottleneck analysis of docs/PERFORMANCE.md; it changes nothing in chatpush
(it attaches SQLAlchemy engine events, wraps ``aiosqlite.Connection._execute`` and adds one aiohttp
middleware to the app ``chatpush.app.create_app`` builds). On SIGUSR1 it writes the counters so
far as JSON to ``--counters``; the benchmarks take one snapshot before and one after the measured
phase (``--instrument``) and divide the difference by the events. Run like ``chatpush``:

    python -m benchmarks.instrumented_serve --counters /tmp/c.json -- --config FILE serve
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite.core
from aiohttp import web
from sqlalchemy import event
from sqlalchemy.engine import Engine

statements: Counter[str] = Counter()
transactions: Counter[str] = Counter()
requests: Counter[str] = Counter()
hops = 0
snapshots = 0

_SPACE = re.compile(r"\s+")
_NAMES = re.compile(r"\b(FROM|INTO|UPDATE)\s+(\w+)", re.IGNORECASE)


def _shape(sql: str) -> str:
    """A statement's verb and tables, e.g. ``UPDATE outbox`` or ``SELECT chats``."""
    sql = _SPACE.sub(" ", sql).strip()
    verb = sql.split(" ", 1)[0].upper()
    tables = sorted({name.lower() for _, name in _NAMES.findall(sql)})
    return f"{verb} {','.join(tables)}".strip()


def _install() -> None:
    def before_execute(
        conn: Any, cursor: Any, sql: str, params: Any, context: Any, executemany: bool
    ) -> None:
        if conn.dialect.name != "sqlite":  # SQLite's are counted by its trace callback
            statements[_shape(sql) + (" (executemany)" if executemany else "")] += 1

    def traced(sql: str) -> None:
        shape = _shape(sql)
        if shape.split(" ", 1)[0] not in ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"):
            statements[shape] += 1

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # chatpush runs its hot statements on the sqlite3 connection itself, past SQLAlchemy's
        # events: SQLite's trace callback sees every statement, whoever runs it.
        if hasattr(dbapi_connection, "set_trace_callback"):
            dbapi_connection.set_trace_callback(traced)

    event.listen(Engine, "before_cursor_execute", before_execute)
    event.listen(Engine, "connect", on_connect)
    for name in ("begin", "commit", "rollback"):
        event.listen(Engine, name, lambda conn, name=name: transactions.update([name]))

    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        global hops
        hops += 1
        return await original(self, fn, *args, **kwargs)

    aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]

    import chatpush.app

    create_app = chatpush.app.create_app

    @web.middleware
    async def count_requests(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.resource
        requests[f"{request.method} {route.canonical if route else request.path}"] += 1
        return await handler(request)

    def instrumented_create_app(*args: Any, **kwargs: Any) -> web.Application:
        app = create_app(*args, **kwargs)
        app.middlewares.append(count_requests)
        return app

    chatpush.app.create_app = instrumented_create_app


def _dump(path: str) -> None:
    global snapshots
    snapshots += 1
    data = {
        "snapshot": snapshots,
        "statements": dict(statements),
        "transactions": dict(transactions),
        "aiosqlite_hops": hops,
        "requests": dict(requests),
    }
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", required=True, help="JSON file written on SIGUSR1")
    parser.add_argument("chatpush_args", nargs=argparse.REMAINDER, help="-- then chatpush's")
    args = parser.parse_args(argv)
    chatpush_args = [a for a in args.chatpush_args if a != "--"] if args.chatpush_args else []
    _install()
    signal.signal(signal.SIGUSR1, lambda signum, frame: _dump(args.counters))
    from chatpush.cli import main as chatpush_main

    return chatpush_main(chatpush_args)


if __name__ == "__main__":
    sys.exit(main())
