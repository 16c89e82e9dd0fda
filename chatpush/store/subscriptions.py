"""The ``subscriptions`` table: each chat's push subscription, its state and its pinned node.

The state is what ``push/rules.py: decide`` returned: this module only reads and writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection

from chatpush.store import sql
from chatpush.store.sql import Statement
from chatpush.store.states import State, SubscriptionRequest, Trigger
from chatpush.store.tables import Subscription

_subs = cast(Table, Subscription.__table__)


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    chat_id: str
    request: SubscriptionRequest
    state: State
    pinned_node: str | None
    created_at_ms: int


COLUMNS = (
    "chat_id, device_id, device_type, group_name, provider, debug, notify_requestor,"
    " include_payload, reliable, client_channel, status, ack_position, notifiable_last,"
    " out_position, out_attempt, out_final, out_held, wake_at_ms, foreground_until_ms,"
    " pinned_node, created_at_ms"
)
"""The columns of a subscription row, in the order ``record`` reads them."""


def record(values: Sequence[Any]) -> SubscriptionRecord:
    """A subscription from a row of ``COLUMNS``."""
    (
        chat_id,
        device_id,
        device_type,
        group_name,
        provider,
        debug,
        notify_requestor,
        include_payload,
        reliable,
        client_channel,
        status,
        ack_position,
        notifiable_last,
        out_position,
        out_attempt,
        out_final,
        out_held,
        wake_at_ms,
        foreground_until_ms,
        pinned_node,
        created_at_ms,
    ) = values
    outstanding = None
    if out_position is not None:
        outstanding = Trigger(
            position=out_position,
            attempt=out_attempt or 0,
            final=bool(out_final),
            held=bool(out_held),
        )
    return SubscriptionRecord(
        chat_id=chat_id,
        request=SubscriptionRequest(
            device_id=device_id,
            device_type=device_type,
            group_name=group_name,
            provider=provider,
            debug=bool(debug),
            notify_requestor=bool(notify_requestor),
            include_payload=bool(include_payload),
            reliable=bool(reliable),
            client_channel=client_channel,
        ),
        state=State(
            status=status,
            ack_position=ack_position,
            notifiable_last=notifiable_last,
            outstanding=outstanding,
            wake_at_ms=wake_at_ms,
            foreground_until_ms=foreground_until_ms,
        ),
        pinned_node=pinned_node,
        created_at_ms=created_at_ms,
    )


_STATE_COLUMNS = (
    "status",
    "ack_position",
    "notifiable_last",
    "out_position",
    "out_attempt",
    "out_final",
    "out_held",
    "wake_at_ms",
    "foreground_until_ms",
)


def state_values(state: State) -> dict[str, Any]:
    trigger = state.outstanding
    return {
        "status": state.status,
        "ack_position": state.ack_position,
        "notifiable_last": state.notifiable_last,
        "out_position": trigger.position if trigger else None,
        "out_attempt": trigger.attempt if trigger else None,
        "out_final": trigger.final if trigger else False,
        "out_held": trigger.held if trigger else False,
        "wake_at_ms": state.wake_at_ms,
        "foreground_until_ms": state.foreground_until_ms,
    }


def insert_subscription(
    conn: Connection, chat_id: str, request: SubscriptionRequest, state: State, now_ms: int
) -> None:
    conn.execute(
        insert(_subs).values(
            chat_id=chat_id,
            device_id=request.device_id,
            device_type=request.device_type,
            group_name=request.group_name,
            provider=request.provider,
            debug=request.debug,
            notify_requestor=request.notify_requestor,
            include_payload=request.include_payload,
            reliable=request.reliable,
            client_channel=request.client_channel,
            pinned_node=None,
            created_at_ms=now_ms,
            **state_values(state),
        )
    )


_GET_SUBSCRIPTION = Statement(
    f"SELECT {COLUMNS} FROM subscriptions WHERE chat_id = :chat_id",
    postgres_lock="FOR UPDATE",
)

_GET_SUBSCRIPTION_UNLOCKED = Statement(
    f"SELECT {COLUMNS} FROM subscriptions WHERE chat_id = :chat_id"
)


def get_subscription(
    conn: Connection, chat_id: str, *, lock: bool = False
) -> SubscriptionRecord | None:
    """``lock``: hold the row until the commit (PostgreSQL; SQLite has one writer anyway)."""
    statement = _GET_SUBSCRIPTION if lock else _GET_SUBSCRIPTION_UNLOCKED
    found = sql.row(conn, statement, {"chat_id": chat_id})
    return record(found) if found is not None else None


_DUE_SUBSCRIPTIONS = Statement(
    f"SELECT {COLUMNS} FROM subscriptions WHERE wake_at_ms <= :now_ms"
    " ORDER BY wake_at_ms LIMIT :limit",
    postgres_lock="FOR UPDATE SKIP LOCKED",
)


def due_subscriptions(conn: Connection, now_ms: int, limit: int) -> list[SubscriptionRecord]:
    """Subscriptions whose timer is due, locked; on PostgreSQL those another instance is firing
    right now are skipped (SKIP LOCKED), so each timer fires once."""
    found = sql.rows(conn, _DUE_SUBSCRIPTIONS, {"now_ms": now_ms, "limit": limit})
    return [record(values) for values in found]


_SAVE_STATE = Statement(
    "UPDATE subscriptions SET "
    + ", ".join(f"{name} = :{name}" for name in _STATE_COLUMNS)
    + " WHERE chat_id = :key_chat_id"
)


def save_states(conn: Connection, states: Sequence[tuple[str, State]]) -> None:
    """``save_state`` for many subscriptions, in one statement."""
    sql.run_many(
        conn,
        _SAVE_STATE,
        ({"key_chat_id": chat_id, **state_values(state)} for chat_id, state in states),
    )


def lock_subscriptions(conn: Connection, chat_ids: Sequence[str]) -> list[SubscriptionRecord]:
    """These chats' subscriptions, locked until the commit in chat order (one lock order for
    every instance)."""
    chats, params = sql.in_list("chat", sorted(chat_ids))
    statement = f"SELECT {COLUMNS} FROM subscriptions WHERE chat_id IN {chats}"
    statement += " ORDER BY chat_id" + ("" if conn.dialect.name == "sqlite" else " FOR UPDATE")
    return [record(values) for values in sql.rows(conn, statement, params)]


def subscriptions_for(conn: Connection, chat_ids: Sequence[str]) -> dict[str, SubscriptionRecord]:
    chats, params = sql.in_list("chat", chat_ids)
    statement = f"SELECT {COLUMNS} FROM subscriptions WHERE chat_id IN {chats}"
    found = (record(values) for values in sql.rows(conn, statement, params))
    return {subscription.chat_id: subscription for subscription in found}


_OF_DEVICE = Statement(
    f"SELECT {COLUMNS} FROM subscriptions"
    " WHERE device_type = :device_type AND device_id = :device_id ORDER BY chat_id",
    postgres_lock="FOR UPDATE",
)


def of_device(conn: Connection, device_type: str, device_id: str) -> list[SubscriptionRecord]:
    """Every subscription sending to this device token, locked in chat order."""
    found = sql.rows(conn, _OF_DEVICE, {"device_type": device_type, "device_id": device_id})
    return [record(values) for values in found]


_PIN = Statement("UPDATE subscriptions SET pinned_node = :node WHERE chat_id = :chat_id")


def pin_many(conn: Connection, pins: Sequence[tuple[str, str]]) -> None:
    """Pin each chat to its node, in chat order (the lock order of every writer)."""
    sql.run_many(conn, _PIN, ({"chat_id": chat_id, "node": node} for chat_id, node in sorted(pins)))


def pinned_chats(conn: Connection) -> dict[str, list[str]]:
    rows = conn.execute(
        select(_subs.c.pinned_node, _subs.c.chat_id).where(_subs.c.pinned_node.is_not(None))
    )
    pinned: dict[str, list[str]] = {}
    for node, chat_id in rows:
        pinned.setdefault(node, []).append(chat_id)
    return pinned
