"""The ``dead_tokens`` table: device tokens a provider reported dead, never sent to again."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection

from chatpush.store.tables import DeadToken

_dead = cast(Table, DeadToken.__table__)


def remember_dead(conn: Connection, device_type: str, device_id: str, at_ms: int) -> None:
    """The provider reported this device token dead: never send to it again (what that means for
    its subscriptions is ``rules.decide``'s, persisted by the push pipeline)."""
    known = conn.execute(
        select(_dead.c.device_id).where(
            _dead.c.device_type == device_type, _dead.c.device_id == device_id
        )
    ).first()
    if known is None:
        conn.execute(
            insert(_dead).values(device_type=device_type, device_id=device_id, at_ms=at_ms)
        )


def is_dead(conn: Connection, device_type: str, device_id: str) -> bool:
    row = conn.execute(
        select(_dead.c.at_ms).where(
            _dead.c.device_type == device_type, _dead.c.device_id == device_id
        )
    ).first()
    return row is not None
