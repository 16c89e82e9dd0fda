"""Provider credentials at rest: one encrypted row per (node group, named provider, kind)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, insert, select, update
from sqlalchemy.engine import Connection, Row

from chatpush.store.tables import ProviderCredential

_creds = cast(Table, ProviderCredential.__table__)
DEFAULT_PROVIDER = ""
"""The ``provider`` column of a group's own credentials (no ``GCTI_GMS_PushProvider``)."""


@dataclass(frozen=True, slots=True)
class CredentialRow:
    group_name: str
    provider: str | None
    kind: str
    ciphertext: str
    updated_at_ms: int


def _where(group: str, provider: str | None, kind: str) -> list[ColumnElement[bool]]:
    return [
        _creds.c.group_name == group,
        _creds.c.provider == (provider or DEFAULT_PROVIDER),
        _creds.c.kind == kind,
    ]


def put(
    conn: Connection, group: str, provider: str | None, kind: str, ciphertext: str, now_ms: int
) -> None:
    changed = conn.execute(
        update(_creds)
        .where(*_where(group, provider, kind))
        .values(ciphertext=ciphertext, updated_at_ms=now_ms)
    ).rowcount
    if not changed:
        conn.execute(
            insert(_creds).values(
                group_name=group,
                provider=provider or DEFAULT_PROVIDER,
                kind=kind,
                ciphertext=ciphertext,
                updated_at_ms=now_ms,
            )
        )


def get(conn: Connection, group: str, provider: str | None, kind: str) -> CredentialRow | None:
    row = conn.execute(select(_creds).where(*_where(group, provider, kind))).first()
    return _row(row) if row is not None else None


def list_all(conn: Connection) -> list[CredentialRow]:
    rows = conn.execute(
        select(_creds).order_by(_creds.c.group_name, _creds.c.provider, _creds.c.kind)
    )
    return [_row(row) for row in rows]


def remove(conn: Connection, group: str, provider: str | None, kind: str) -> bool:
    result = conn.execute(delete(_creds).where(*_where(group, provider, kind)))
    return bool(result.rowcount)


def _row(row: Row[Any]) -> CredentialRow:
    return CredentialRow(
        group_name=row.group_name,
        provider=row.provider or None,
        kind=row.kind,
        ciphertext=row.ciphertext,
        updated_at_ms=row.updated_at_ms,
    )
