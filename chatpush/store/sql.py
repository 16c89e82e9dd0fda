"""Hot statements: SQL written once, run without SQLAlchemy's per-call machinery on SQLite.

SQLAlchemy Core builds a statement, its cache key, an execution context and a Result on every
call: 90-200 µs each, where SQLite itself spends 1-12 µs (docs/PERFORMANCE.md §7). Every chat
event runs about eighteen statements, so the statements of the request path and the dispatcher
are written here as SQL text with ``:name`` parameters, portable between both databases:

- SQLite: run on the ``sqlite3`` connection under the transaction's SQLAlchemy ``Connection``
  (the same connection, inside the same BEGIN … COMMIT and SAVEPOINTs);
- PostgreSQL: run as a ``text()`` built once; a round trip to the server costs more than
  SQLAlchemy's work there. Row locks (``FOR UPDATE``), which SQLite has no use for under its
  single writer, are added for PostgreSQL only.

Values cross as the drivers give them: JSON columns are written as JSON text (:func:`to_json`)
and read through :func:`from_json` (text on SQLite, already decoded by asyncpg on PostgreSQL);
booleans come back as 0/1 on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection

Params = Mapping[str, Any]


class Statement:
    """One SQL statement in its SQLite and PostgreSQL forms."""

    __slots__ = ("postgres", "sqlite")

    def __init__(self, sql: str, *, postgres_lock: str = "") -> None:
        """``postgres_lock``: a locking clause (``FOR UPDATE``, ...) appended on PostgreSQL."""
        self.sqlite = sql
        self.postgres: TextClause = text(f"{sql} {postgres_lock}" if postgres_lock else sql)


def in_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(:name_0, :name_1, ...)`` and its parameters, for ``column IN`` a list of values.

    Statements with such a list are SQL built per call (:class:`Statement` is for fixed SQL).
    An empty list gives ``(NULL)``, which matches nothing."""
    if not values:
        return "(NULL)", {}
    params = {f"{name}_{n}": value for n, value in enumerate(values)}
    return "(" + ", ".join(f":{key}" for key in params) + ")", params


def _sqlite(conn: Connection) -> Any:
    """The ``sqlite3`` connection under ``conn``, or None on PostgreSQL."""
    if conn.dialect.name != "sqlite":
        return None
    return conn.connection.driver_connection


def _execute(conn: Connection, statement: Statement | str, params: Params) -> Any:
    """A ``sqlite3`` cursor or a SQLAlchemy result: both fetch and count the same way. A ``str``
    is SQL built for this call (with an :func:`in_list`), the same on both databases."""
    raw = _sqlite(conn)
    if raw is not None:
        return raw.execute(statement if isinstance(statement, str) else statement.sqlite, params)
    clause = text(statement) if isinstance(statement, str) else statement.postgres
    return conn.execute(clause, dict(params))


def rows(conn: Connection, statement: Statement | str, params: Params) -> list[Sequence[Any]]:
    """Every row the statement returns, as tuples in the order of its columns."""
    return list(_execute(conn, statement, params).fetchall())


def row(conn: Connection, statement: Statement | str, params: Params) -> Sequence[Any] | None:
    """The first row the statement returns, or None."""
    result = _execute(conn, statement, params)
    found: Sequence[Any] | None = result.fetchone()
    result.close()  # the rest, if any, is not wanted (SQLAlchemy's first() did the same)
    return found


def run(conn: Connection, statement: Statement | str, params: Params) -> int:
    """Run a statement that returns no rows; the number of rows it changed."""
    return int(_execute(conn, statement, params).rowcount or 0)


def run_many(conn: Connection, statement: Statement, params: Iterable[Params]) -> None:
    """Run a statement that returns no rows once per parameter set (``executemany``)."""
    batch = [dict(p) for p in params]
    if not batch:
        return
    raw = _sqlite(conn)
    if raw is not None:
        raw.executemany(statement.sqlite, batch)
    else:
        conn.execute(statement.postgres, batch)


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def to_json(value: Any) -> str | None:
    """A JSON column's value as the drivers take it (None: SQL NULL)."""
    return None if value is None else _dumps(value)


def from_json(value: Any) -> Any:
    """A JSON column's value as the drivers give it: text on SQLite, decoded on PostgreSQL.
    Our JSON columns hold objects or null, never a bare string, so text is always undecoded."""
    return json.loads(value) if isinstance(value, str) else value
