"""The ``secrets`` table: random secrets generated once and shared by every instance."""

from __future__ import annotations

import secrets
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection

from chatpush.store.tables import Secret

_secrets_table = cast(Table, Secret.__table__)


def read_secret(conn: Connection, name: str) -> bytes | None:
    value = conn.execute(
        select(_secrets_table.c.value).where(_secrets_table.c.name == name)
    ).scalar_one_or_none()
    return bytes.fromhex(value) if value is not None else None


def create_secret(conn: Connection, name: str) -> bytes:
    """Store a new random secret; a concurrent creator makes this fail with IntegrityError."""
    value = secrets.token_hex(32)
    conn.execute(insert(_secrets_table).values(name=name, value=value))
    return bytes.fromhex(value)
