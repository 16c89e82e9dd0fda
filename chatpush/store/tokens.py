"""The ``dead_tokens`` table: device tokens a provider reported dead, never sent to again."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection

from chatpush.push import rules
from chatpush.push.rules import State
from chatpush.store import outbox, subscriptions
from chatpush.store.tables import DeadToken

_dead = cast(Table, DeadToken.__table__)


def reject_device(conn: Connection, device_type: str, device_id: str, at_ms: int) -> None:
    """The provider reported this device token dead: remember it, and persist what
    ``rules.decide`` makes of that for every subscription sending to it."""
    known = conn.execute(
        select(_dead.c.device_id).where(
            _dead.c.device_type == device_type, _dead.c.device_id == device_id
        )
    ).first()
    if known is None:
        conn.execute(
            insert(_dead).values(device_type=device_type, device_id=device_id, at_ms=at_ms)
        )
    states: list[tuple[str, State]] = []
    dropped: list[str] = []
    for subscription in subscriptions.of_device(conn, device_type, device_id):
        decision = rules.decide(subscription.view, [rules.TokenRejected()], at_ms, None)
        if decision.state != subscription.state:
            states.append((subscription.chat_id, decision.state))
        if decision.drop_outbox:
            dropped.append(subscription.chat_id)
    subscriptions.save_states(conn, states)
    outbox.drop_outbox_of(conn, dropped)


def is_dead(conn: Connection, device_type: str, device_id: str) -> bool:
    row = conn.execute(
        select(_dead.c.at_ms).where(
            _dead.c.device_type == device_type, _dead.c.device_id == device_id
        )
    ).first()
    return row is not None
