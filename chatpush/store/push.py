"""Subscriptions, the outbox, the delivery trail, nodes and generated secrets: the SQL of push."""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from chatpush.push import rules
from chatpush.push.rules import State, Trigger
from chatpush.push.subscription import SubscriptionRequest
from chatpush.store import sql
from chatpush.store.sql import Statement
from chatpush.store.tables import DeadToken, Delivery, Node, Outbox, Secret, Subscription

_subs = cast(Table, Subscription.__table__)
_outbox = cast(Table, Outbox.__table__)
_trail = cast(Table, Delivery.__table__)
_nodes = cast(Table, Node.__table__)
_secrets_table = cast(Table, Secret.__table__)
_dead = cast(Table, DeadToken.__table__)


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    chat_id: str
    request: SubscriptionRequest
    state: State
    pinned_node: str | None
    created_at_ms: int

    @property
    def view(self) -> rules.Subscription:
        """The subscription as ``rules.decide`` reads it."""
        request = self.request
        return rules.Subscription(
            self.state, request.reliable, request.notify_requestor, request.include_payload
        )


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    chat_id: str
    kind: str
    body: dict[str, Any]
    notify_position: int | None
    attempt: int | None
    message_id: str
    due_at_ms: int | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    chat_id: str
    at_ms: int
    node: str | None
    group_name: str | None
    device_type: str
    kind: str
    attempt: int | None
    notify_position: int | None
    outcome: str
    http_status: int | None = None
    error: str | None = None
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    group_name: str
    instance_id: str
    heartbeat_at_ms: int
    drained: bool


_SUBSCRIPTION_COLUMNS = (
    "chat_id, device_id, device_type, group_name, provider, debug, notify_requestor,"
    " include_payload, reliable, client_channel, status, ack_position, notifiable_last,"
    " out_position, out_attempt, out_final, out_pending, wake_at_ms, foreground_until_ms,"
    " pinned_node, created_at_ms"
)
"""The columns of a subscription row, in the order ``_subscription`` reads them."""


def _subscription(values: Sequence[Any]) -> SubscriptionRecord:
    """A subscription from a row of ``_SUBSCRIPTION_COLUMNS``."""
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
        out_pending,
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
            pending=bool(out_pending),
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
    "out_pending",
    "wake_at_ms",
    "foreground_until_ms",
)


def _state_values(state: State) -> dict[str, Any]:
    trigger = state.outstanding
    return {
        "status": state.status,
        "ack_position": state.ack_position,
        "notifiable_last": state.notifiable_last,
        "out_position": trigger.position if trigger else None,
        "out_attempt": trigger.attempt if trigger else None,
        "out_final": trigger.final if trigger else False,
        "out_pending": trigger.pending if trigger else False,
        "wake_at_ms": state.wake_at_ms,
        "foreground_until_ms": state.foreground_until_ms,
    }


# -- subscriptions ----------------------------------------------------------------------------


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
            **_state_values(state),
        )
    )


_GET_SUBSCRIPTION = Statement(
    f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE chat_id = :chat_id",
    postgres_lock="FOR UPDATE",
)
_GET_SUBSCRIPTION_UNLOCKED = Statement(
    f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE chat_id = :chat_id"
)


def get_subscription(
    conn: Connection, chat_id: str, *, lock: bool = False
) -> SubscriptionRecord | None:
    """``lock``: hold the row until the commit (PostgreSQL; SQLite has one writer anyway)."""
    statement = _GET_SUBSCRIPTION if lock else _GET_SUBSCRIPTION_UNLOCKED
    found = sql.row(conn, statement, {"chat_id": chat_id})
    return _subscription(found) if found is not None else None


def save_state(conn: Connection, chat_id: str, state: State) -> None:
    save_states(conn, [(chat_id, state)])


_DUE_SUBSCRIPTIONS = Statement(
    f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE wake_at_ms <= :now_ms"
    " ORDER BY wake_at_ms LIMIT :limit",
    postgres_lock="FOR UPDATE SKIP LOCKED",
)


def due_subscriptions(conn: Connection, now_ms: int, limit: int) -> list[SubscriptionRecord]:
    """Subscriptions whose timer is due, locked; on PostgreSQL those another instance is firing
    right now are skipped (SKIP LOCKED), so each timer fires once."""
    found = sql.rows(conn, _DUE_SUBSCRIPTIONS, {"now_ms": now_ms, "limit": limit})
    return [_subscription(values) for values in found]


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
        ({"key_chat_id": chat_id, **_state_values(state)} for chat_id, state in states),
    )


def lock_subscriptions(conn: Connection, chat_ids: Sequence[str]) -> list[SubscriptionRecord]:
    """These chats' subscriptions, locked until the commit in chat order (one lock order for
    every instance)."""
    chats, params = sql.in_list("chat", sorted(chat_ids))
    statement = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE chat_id IN {chats}"
    statement += " ORDER BY chat_id" + ("" if conn.dialect.name == "sqlite" else " FOR UPDATE")
    return [_subscription(values) for values in sql.rows(conn, statement, params)]


def pin(conn: Connection, chat_id: str, node: str | None) -> None:
    sql.run(conn, _PIN, {"chat_id": chat_id, "node": node})


def pinned_chats(conn: Connection) -> dict[str, list[str]]:
    rows = conn.execute(
        select(_subs.c.pinned_node, _subs.c.chat_id).where(_subs.c.pinned_node.is_not(None))
    )
    pinned: dict[str, list[str]] = {}
    for node, chat_id in rows:
        pinned.setdefault(node, []).append(chat_id)
    return pinned


# -- outbox -----------------------------------------------------------------------------------

WORK_CHANNEL = "chatpush_work"
"""PostgreSQL: the LISTEN/NOTIFY channel on which a commit that made work wakes every dispatcher."""


def notify_work(conn: Connection) -> None:
    """Wake the other instances' dispatchers when this transaction commits (PostgreSQL only:
    NOTIFY is transactional, so they never look before the work is visible)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {WORK_CHANNEL}")


@dataclass(frozen=True, slots=True)
class NewNotification:
    chat_id: str
    kind: str
    body: dict[str, Any]
    notify_position: int | None = None
    attempt: int | None = None


_ENQUEUE = Statement(
    "INSERT INTO outbox (chat_id, kind, body, notify_position, attempt, message_id, due_at_ms,"
    " lease_until_ms, claimed_by, created_at_ms) VALUES (:chat_id, :kind, :body,"
    " :notify_position, :attempt, :message_id, :now_ms, NULL, NULL, :now_ms)"
)


def enqueue_many(conn: Connection, notifications: Sequence[NewNotification], now_ms: int) -> None:
    sql.run_many(
        conn,
        _ENQUEUE,
        (
            {
                "chat_id": n.chat_id,
                "kind": n.kind,
                "body": sql.to_json(n.body),
                "notify_position": n.notify_position,
                "attempt": n.attempt,
                "message_id": "msg_" + _secrets.token_hex(12),
                "now_ms": now_ms,
            }
            for n in notifications
        ),
    )


_DROP_UNSENT_TRIGGERS = Statement(
    "DELETE FROM outbox WHERE chat_id = :chat_id AND kind = 'trigger'"
    " AND (lease_until_ms IS NULL OR lease_until_ms < :now_ms)"
)


def drop_unsent_triggers_of(conn: Connection, chat_ids: Sequence[str], now_ms: int) -> None:
    """The unsent triggers of these chats (none leased, or a lease ran out) are superseded."""
    sql.run_many(
        conn,
        _DROP_UNSENT_TRIGGERS,
        ({"chat_id": chat_id, "now_ms": now_ms} for chat_id in chat_ids),
    )


_DROP_OUTBOX = Statement("DELETE FROM outbox WHERE chat_id = :chat_id")


def drop_outbox_of(conn: Connection, chat_ids: Sequence[str]) -> None:
    """Nothing waiting for these chats is sent (their subscriptions ended)."""
    sql.run_many(conn, _DROP_OUTBOX, ({"chat_id": chat_id} for chat_id in chat_ids))


_UNPARK = Statement(
    "UPDATE outbox SET due_at_ms = :now_ms WHERE chat_id = :chat_id AND due_at_ms IS NULL"
)


def unpark(conn: Connection, chat_id: str, now_ms: int) -> int:
    """New activity in a chat: its notifications parked for want of a node are due again."""
    return sql.run(conn, _UNPARK, {"chat_id": chat_id, "now_ms": now_ms})


_OUTBOX_COLUMNS = (
    "id, chat_id, kind, body, notify_position, attempt, message_id, due_at_ms, created_at_ms"
)
"""The columns of an outbox row, in the order of OutboxRecord's fields."""


def _outbox_record(values: Sequence[Any]) -> OutboxRecord:
    """A notification from a row of ``_OUTBOX_COLUMNS``."""
    id_, chat_id, kind, body, notify_position, attempt, message_id, due_at_ms, created = values
    return OutboxRecord(
        id=id_,
        chat_id=chat_id,
        kind=kind,
        body=sql.from_json(body),
        notify_position=notify_position,
        attempt=attempt,
        message_id=message_id,
        due_at_ms=due_at_ms,
        created_at_ms=created,
    )


def claim_heads(
    conn: Connection,
    now_ms: int,
    lease_ms: int,
    claimer: str,
    limit: int,
    exclude_chats: Sequence[str] = (),
    others_nodes: Sequence[str] = (),
) -> list[OutboxRecord]:
    """Lease the oldest due notification of each chat whose earlier ones are all delivered.

    Only a chat's head is ever claimed, so one chat's notifications go out one at a time, in order.
    Chats pinned to ``others_nodes`` (available nodes of other instances) are left to them. On
    PostgreSQL the candidates are locked with SKIP LOCKED, so concurrent claimers take disjoint
    rows; the lease, committed at once, keeps them taken while they are sent (no lock is held
    across the network).
    """
    excluded, params = sql.in_list("exclude", exclude_chats)
    others, others_params = sql.in_list("node", others_nodes)
    conditions = [
        "candidate.due_at_ms <= :now_ms",
        "(candidate.lease_until_ms IS NULL OR candidate.lease_until_ms < :now_ms)",
        "NOT EXISTS (SELECT 1 FROM outbox AS earlier"
        " WHERE earlier.chat_id = candidate.chat_id AND earlier.id < candidate.id)",
    ]
    if exclude_chats:
        conditions.append(f"candidate.chat_id NOT IN {excluded}")
    if others_nodes:
        conditions.append(
            "NOT EXISTS (SELECT 1 FROM subscriptions WHERE subscriptions.chat_id ="
            f" candidate.chat_id AND subscriptions.pinned_node IN {others})"
        )
    lock = "" if conn.dialect.name == "sqlite" else " FOR UPDATE OF candidate SKIP LOCKED"
    statement = (
        "UPDATE outbox SET lease_until_ms = :until_ms, claimed_by = :claimer WHERE id IN"
        " (SELECT candidate.id FROM outbox AS candidate WHERE "
        + " AND ".join(conditions)
        + f" ORDER BY candidate.id LIMIT :limit{lock})"
        f" RETURNING {_OUTBOX_COLUMNS}"
    )
    params.update(others_params)
    params.update(now_ms=now_ms, until_ms=now_ms + lease_ms, claimer=claimer, limit=limit)
    found = sql.rows(conn, statement, params)
    return sorted((_outbox_record(values) for values in found), key=lambda record: record.id)


def deadlines(conn: Connection) -> tuple[int | None, int | None]:
    """(earliest resend wake-up, earliest time a notification falls due or a lease runs out)."""
    row = (
        conn.execute(
            select(
                select(func.min(_subs.c.wake_at_ms)).scalar_subquery(),
                select(func.min(_outbox.c.due_at_ms))
                .where(_outbox.c.lease_until_ms.is_(None))
                .scalar_subquery(),
                select(func.min(_outbox.c.lease_until_ms)).scalar_subquery(),
            )
        )
    ).one()
    wake, due, lease = (int(value) if value is not None else None for value in row)
    candidates = [value for value in (due, lease) if value is not None]
    return wake, min(candidates) if candidates else None


def subscriptions_for(conn: Connection, chat_ids: Sequence[str]) -> dict[str, SubscriptionRecord]:
    chats, params = sql.in_list("chat", chat_ids)
    statement = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE chat_id IN {chats}"
    found = (_subscription(values) for values in sql.rows(conn, statement, params))
    return {subscription.chat_id: subscription for subscription in found}


_PIN = Statement("UPDATE subscriptions SET pinned_node = :node WHERE chat_id = :chat_id")
_INSERT_TRAIL = Statement(
    "INSERT INTO deliveries (chat_id, at_ms, node, group_name, device_type, kind, attempt,"
    " notify_position, outcome, http_status, error, latency_ms) VALUES (:chat_id, :at_ms,"
    " :node, :group_name, :device_type, :kind, :attempt, :notify_position, :outcome,"
    " :http_status, :error, :latency_ms)"
)
_PARK = Statement(
    "UPDATE outbox SET due_at_ms = NULL, lease_until_ms = NULL, claimed_by = NULL"
    " WHERE chat_id = :chat_id AND id >= :outbox_id"
)


def complete(
    conn: Connection,
    *,
    finished: Sequence[int],
    parked: Sequence[tuple[str, int]],
    trail: Sequence[DeliveryRecord],
    pins: Sequence[tuple[str, str]],
    handed_over: Sequence[int] = (),
    dead_tokens: Sequence[tuple[str, str, int]] = (),
) -> None:
    """Record a batch of finished attempts in one transaction (group commit).

    ``handed_over``: notifications whose chat was pinned to another instance's node; their lease
    is released so that instance claims them. Subscriptions are locked before outbox rows, in
    chat order, as the request transactions do: concurrent writers cannot deadlock.
    """
    sql.run_many(conn, _PIN, ({"chat_id": chat_id, "node": node} for chat_id, node in sorted(pins)))
    if handed_over:
        ids, params = sql.in_list("id", handed_over)
        sql.run(
            conn,
            f"UPDATE outbox SET lease_until_ms = NULL, claimed_by = NULL WHERE id IN {ids}",
            params,
        )
        notify_work(conn)
    sql.run_many(
        conn,
        _INSERT_TRAIL,
        (
            {
                "chat_id": r.chat_id,
                "at_ms": r.at_ms,
                "node": r.node,
                "group_name": r.group_name,
                "device_type": r.device_type,
                "kind": r.kind,
                "attempt": r.attempt,
                "notify_position": r.notify_position,
                "outcome": r.outcome,
                "http_status": r.http_status,
                "error": r.error,
                "latency_ms": r.latency_ms,
            }
            for r in trail
        ),
    )
    if finished:
        ids, params = sql.in_list("id", finished)
        sql.run(conn, f"DELETE FROM outbox WHERE id IN {ids}", params)
    sql.run_many(
        conn, _PARK, ({"chat_id": chat_id, "outbox_id": outbox_id} for chat_id, outbox_id in parked)
    )
    for device_type, device_id, at_ms in dead_tokens:
        reject_device(conn, device_type, device_id, at_ms)


_SUBSCRIPTIONS_OF_DEVICE = Statement(
    f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"
    " WHERE device_type = :device_type AND device_id = :device_id ORDER BY chat_id",
    postgres_lock="FOR UPDATE",
)


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
    found = sql.rows(
        conn, _SUBSCRIPTIONS_OF_DEVICE, {"device_type": device_type, "device_id": device_id}
    )
    states: list[tuple[str, State]] = []
    dropped: list[str] = []
    for subscription in map(_subscription, found):
        decision = rules.decide(subscription.view, [rules.TokenRejected()], at_ms, None)
        if decision.state != subscription.state:
            states.append((subscription.chat_id, decision.state))
        if decision.drop_outbox:
            dropped.append(subscription.chat_id)
    save_states(conn, states)
    drop_outbox_of(conn, dropped)


def is_dead(conn: Connection, device_type: str, device_id: str) -> bool:
    row = conn.execute(
        select(_dead.c.at_ms).where(
            _dead.c.device_type == device_type, _dead.c.device_id == device_id
        )
    ).first()
    return row is not None


def park(conn: Connection, chat_id: str, outbox_id: int) -> None:
    """No node: this notification and the chat's later ones wait for the chat's next activity."""
    sql.run(conn, _PARK, {"chat_id": chat_id, "outbox_id": outbox_id})


def pending_for_chat(conn: Connection, chat_id: str) -> list[OutboxRecord]:
    found = sql.rows(
        conn,
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE chat_id = :chat_id ORDER BY id",
        {"chat_id": chat_id},
    )
    return [_outbox_record(values) for values in found]


# -- delivery trail ---------------------------------------------------------------------------


def deliveries(
    conn: Connection, chat_id: str, after_id: int = 0, limit: int = 500
) -> list[tuple[int, DeliveryRecord]]:
    rows = conn.execute(
        select(_trail)
        .where(and_(_trail.c.chat_id == chat_id, _trail.c.id > after_id))
        .order_by(_trail.c.id)
        .limit(limit)
    )
    return [
        (
            row.id,
            DeliveryRecord(
                chat_id=row.chat_id,
                at_ms=row.at_ms,
                node=row.node,
                group_name=row.group_name,
                device_type=row.device_type,
                kind=row.kind,
                attempt=row.attempt,
                notify_position=row.notify_position,
                outcome=row.outcome,
                http_status=row.http_status,
                error=row.error,
                latency_ms=row.latency_ms,
            ),
        )
        for row in rows
    ]


def purge_trail(conn: Connection, before_ms: int) -> int:
    result = conn.execute(delete(_trail).where(_trail.c.at_ms < before_ms))
    return result.rowcount or 0


# -- nodes ------------------------------------------------------------------------------------


def register_node(
    conn: Connection, name: str, group_name: str, instance_id: str, now_ms: int
) -> None:
    updated = conn.execute(
        update(_nodes)
        .where(_nodes.c.name == name)
        .values(group_name=group_name, instance_id=instance_id, heartbeat_at_ms=now_ms)
    )
    if not updated.rowcount:
        conn.execute(
            insert(_nodes).values(
                name=name,
                group_name=group_name,
                instance_id=instance_id,
                heartbeat_at_ms=now_ms,
                drained=False,
            )
        )


def heartbeat(conn: Connection, names: Sequence[str], now_ms: int) -> None:
    conn.execute(
        update(_nodes).where(_nodes.c.name.in_(list(names))).values(heartbeat_at_ms=now_ms)
    )


def list_nodes(conn: Connection) -> list[NodeRecord]:
    rows = conn.execute(select(_nodes).order_by(_nodes.c.group_name, _nodes.c.name))
    return [
        NodeRecord(
            name=row.name,
            group_name=row.group_name,
            instance_id=row.instance_id,
            heartbeat_at_ms=row.heartbeat_at_ms,
            drained=bool(row.drained),
        )
        for row in rows
    ]


def set_drained(conn: Connection, name: str, drained: bool) -> bool:
    result = conn.execute(update(_nodes).where(_nodes.c.name == name).values(drained=drained))
    return bool(result.rowcount)


# -- generated secrets ------------------------------------------------------------------------


def read_secret(conn: Connection, name: str) -> bytes | None:
    value = conn.execute(
        select(_secrets_table.c.value).where(_secrets_table.c.name == name)
    ).scalar_one_or_none()
    return bytes.fromhex(value) if value is not None else None


def create_secret(conn: Connection, name: str) -> bytes:
    """Store a new random secret; a concurrent creator makes this fail with IntegrityError."""
    value = _secrets.token_hex(32)
    conn.execute(insert(_secrets_table).values(name=name, value=value))
    return bytes.fromhex(value)


def renew_leases(
    conn: Connection, outbox_ids: Sequence[int], claimer: str, until_ms: int
) -> list[int]:
    """Extend the leases ``claimer`` still holds; returns the ids it still held."""
    rows = conn.execute(
        update(_outbox)
        .where(and_(_outbox.c.id.in_(list(outbox_ids)), _outbox.c.claimed_by == claimer))
        .values(lease_until_ms=until_ms)
        .returning(_outbox.c.id)
    )
    return [int(outbox_id) for outbox_id in rows.scalars()]


def release_leases(conn: Connection, claimer: str | None) -> int:
    """At start-up: leases this instance held before it stopped (None: every lease) are void."""
    query = update(_outbox).where(_outbox.c.lease_until_ms.is_not(None))
    if claimer is not None:
        query = query.where(_outbox.c.claimed_by == claimer)
    result = conn.execute(query.values(lease_until_ms=None, claimed_by=None))
    return result.rowcount or 0
