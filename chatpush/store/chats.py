"""Chats, parties and transcript events: the SQL of the chat domain."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Table, and_, delete, insert, select, text, update
from sqlalchemy.engine import Connection, Row

from chatpush.store import sql
from chatpush.store.chat_records import ChatRecord, EventRecord, NewEvent, PartyRecord
from chatpush.store.sql import Statement
from chatpush.store.tables import Chat, Delivery, Event, Outbox, Party, Subscription

_chats = cast(Table, Chat.__table__)
_parties = cast(Table, Party.__table__)
_events = cast(Table, Event.__table__)
_subscriptions = cast(Table, Subscription.__table__)
_outbox = cast(Table, Outbox.__table__)
_trail = cast(Table, Delivery.__table__)


_CHAT_COLUMNS = (
    "id, service_name, secure_key, user_id, subject, email_address, user_data, created_at_ms,"
    " ended_at_ms, last_client_request_ms, last_index, client_position, last_participant_id"
)
"""The columns of a chat row, in the order of ChatRecord's fields (the hot statements)."""


def _chat_of(values: Sequence[Any]) -> ChatRecord:
    """A chat from a row of ``_CHAT_COLUMNS``."""
    (
        id_,
        service_name,
        secure_key,
        user_id,
        subject,
        email_address,
        user_data,
        created_at_ms,
        ended_at_ms,
        last_client_request_ms,
        last_index,
        client_position,
        last_participant_id,
    ) = values
    return ChatRecord(
        id=id_,
        service_name=service_name,
        secure_key=secure_key,
        user_id=user_id,
        subject=subject,
        email_address=email_address,
        user_data=dict(sql.from_json(user_data) or {}),
        created_at_ms=created_at_ms,
        ended_at_ms=ended_at_ms,
        last_client_request_ms=last_client_request_ms,
        last_index=last_index,
        client_position=client_position,
        last_participant_id=last_participant_id,
    )


def _party(row: Row[Any]) -> PartyRecord:
    return PartyRecord(
        participant_id=row.participant_id,
        type=row.type,
        nickname=row.nickname,
        joined_at_ms=row.joined_at_ms,
        left_at_ms=row.left_at_ms,
        first_name=row.first_name,
        last_name=row.last_name,
    )


def insert_chat(conn: Connection, chat: ChatRecord, customer: PartyRecord) -> None:
    conn.execute(
        insert(_chats).values(
            id=chat.id,
            service_name=chat.service_name,
            secure_key=chat.secure_key,
            user_id=chat.user_id,
            subject=chat.subject,
            email_address=chat.email_address,
            user_data=chat.user_data,
            created_at_ms=chat.created_at_ms,
            ended_at_ms=None,
            last_client_request_ms=chat.last_client_request_ms,
            last_index=chat.last_index,
            client_position=chat.client_position,
            last_participant_id=chat.last_participant_id,
        )
    )
    insert_party(conn, chat.id, customer)


_GET_CHAT = Statement(
    f"SELECT {_CHAT_COLUMNS} FROM chats WHERE id = :id", postgres_lock="FOR NO KEY UPDATE"
)
_GET_CHAT_UNLOCKED = Statement(f"SELECT {_CHAT_COLUMNS} FROM chats WHERE id = :id")


def get_chat(conn: Connection, chat_id: str, *, lock: bool = False) -> ChatRecord | None:
    """``lock``: hold the chat's row until the commit. On PostgreSQL every write transaction of a
    chat takes it first, so they run one after another as they do on SQLite (one writer).

    FOR NO KEY UPDATE, not FOR UPDATE: rows inserted elsewhere that refer to the chat (outbox,
    deliveries: foreign keys) take KEY SHARE locks on it, which FOR UPDATE would make wait, and
    the timer and delivery transactions that insert them hold subscription locks that a request
    transaction of the chat waits for: a deadlock."""
    found = sql.row(conn, _GET_CHAT if lock else _GET_CHAT_UNLOCKED, {"id": chat_id})
    return _chat_of(found) if found is not None else None


def get_chats(conn: Connection, chat_ids: Sequence[str]) -> dict[str, ChatRecord]:
    ids, params = sql.in_list("id", chat_ids)
    found = sql.rows(conn, f"SELECT {_CHAT_COLUMNS} FROM chats WHERE id IN {ids}", params)
    return {chat.id: chat for chat in map(_chat_of, found)}


_RECORD_CLIENT_READ = Statement(
    "UPDATE chats SET"
    " last_client_request_ms = COALESCE(:request_ms, last_client_request_ms),"
    " client_position = CASE WHEN client_position < :retrieved THEN :retrieved"
    " ELSE client_position END"
    f" WHERE id = :id RETURNING {_CHAT_COLUMNS}"
)


def record_client_read(
    conn: Connection, chat_id: str, *, request_ms: int | None, retrieved: int | None
) -> ChatRecord:
    """One statement for what every client reply records: the time of the request and the highest
    index retrieved; returns the chat as it now stands."""
    if request_ms is None and retrieved is None:
        chat = get_chat(conn, chat_id)
        assert chat is not None
        return chat
    found = sql.row(
        conn,
        _RECORD_CLIENT_READ,
        {"id": chat_id, "request_ms": request_ms, "retrieved": retrieved},
    )
    assert found is not None
    return _chat_of(found)


def update_chat(conn: Connection, chat_id: str, **values: Any) -> None:
    conn.execute(update(_chats).where(_chats.c.id == chat_id).values(**values))


_RESERVE_INDEXES = Statement(
    "UPDATE chats SET last_index = last_index + :count WHERE id = :id RETURNING last_index"
)
_INSERT_EVENT = Statement(
    "INSERT INTO events (chat_id, idx, type, participant_id, nickname, party_type, text,"
    " message_type, user_data, utc_time_ms) VALUES (:chat_id, :idx, :type, :participant_id,"
    " :nickname, :party_type, :text, :message_type, :user_data, :utc_time_ms)"
)


def reserve_indexes(conn: Connection, chat_id: str, count: int) -> int:
    """Take ``count`` consecutive transcript indexes; return the first one.

    The UPDATE row-locks the chat on PostgreSQL, so concurrent writers to one chat get dense,
    distinct indexes; on SQLite the single-writer lock does the same.
    """
    found = sql.row(conn, _RESERVE_INDEXES, {"id": chat_id, "count": count})
    assert found is not None, f"no chat {chat_id}"
    return int(found[0]) - count + 1


def insert_events(
    conn: Connection, chat_id: str, first_index: int, events: Sequence[NewEvent], now_ms: int
) -> list[EventRecord]:
    records = [
        EventRecord(
            index=first_index + offset,
            type=event.type,
            participant_id=event.party.participant_id,
            nickname=event.party.nickname,
            party_type=event.party.type,
            utc_time_ms=now_ms,
            text=event.text,
            message_type=event.message_type,
            user_data=event.user_data,
        )
        for offset, event in enumerate(events)
    ]
    sql.run_many(
        conn,
        _INSERT_EVENT,
        (
            {
                "chat_id": chat_id,
                "idx": record.index,
                "type": record.type,
                "participant_id": record.participant_id,
                "nickname": record.nickname,
                "party_type": record.party_type,
                "text": record.text,
                "message_type": record.message_type,
                "user_data": sql.to_json(record.user_data),
                "utc_time_ms": record.utc_time_ms,
            }
            for record in records
        ),
    )
    return records


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def wire_bytes(event: EventRecord) -> int:
    """The size of an event as a client receives it: its wire JSON in UTF-8."""
    text = _ENCODE(event.to_wire())
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


_EVENT_COLUMNS = (
    "idx, type, participant_id, nickname, party_type, utc_time_ms, text, message_type, user_data"
)
_EVENTS_FROM = Statement(
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE chat_id = :chat_id AND idx >= :first"
    " ORDER BY idx LIMIT :limit"
)
_ALL_EVENTS_FROM = Statement(
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE chat_id = :chat_id AND idx >= :first ORDER BY idx"
)


def _event_of(values: Sequence[Any]) -> EventRecord:
    """An event from a row of ``_EVENT_COLUMNS``."""
    index, type_, participant_id, nickname, party_type, utc_time_ms, text_, kind, data = values
    return EventRecord(
        index=index,
        type=type_,
        participant_id=participant_id,
        nickname=nickname,
        party_type=party_type,
        utc_time_ms=utc_time_ms,
        text=text_,
        message_type=kind,
        user_data=sql.from_json(data),
    )


def events_from(
    conn: Connection,
    chat_id: str,
    first_index: int,
    limit: int | None = None,
    max_bytes: int | None = None,
) -> list[EventRecord]:
    """Events from ``first_index`` in order: at most ``limit`` of them, and no more than
    ``max_bytes`` of :func:`wire_bytes` in all, except that the first is returned whatever its
    size (so that a reader following the next position always progresses)."""
    params = {"chat_id": chat_id, "first": first_index, "limit": limit}
    found = sql.rows(conn, _ALL_EVENTS_FROM if limit is None else _EVENTS_FROM, params)
    if max_bytes is None:
        return [_event_of(values) for values in found]
    events: list[EventRecord] = []
    total = 0
    for values in found:
        event = _event_of(values)
        total += wire_bytes(event)
        if events and total > max_bytes:
            break
        events.append(event)
    return events


def insert_party(conn: Connection, chat_id: str, party: PartyRecord) -> None:
    conn.execute(
        insert(_parties).values(
            chat_id=chat_id,
            participant_id=party.participant_id,
            type=party.type,
            nickname=party.nickname,
            first_name=party.first_name,
            last_name=party.last_name,
            joined_at_ms=party.joined_at_ms,
            left_at_ms=party.left_at_ms,
        )
    )


def next_participant_id(conn: Connection, chat_id: str) -> int:
    return int(
        (
            conn.execute(
                update(_chats)
                .where(_chats.c.id == chat_id)
                .values(last_participant_id=_chats.c.last_participant_id + 1)
                .returning(_chats.c.last_participant_id)
            )
        ).scalar_one()
    )


_GET_PARTY = Statement(
    "SELECT participant_id, type, nickname, joined_at_ms, left_at_ms, first_name, last_name"
    " FROM parties WHERE chat_id = :chat_id AND participant_id = :participant_id"
)


def get_party(conn: Connection, chat_id: str, participant_id: int) -> PartyRecord | None:
    found = sql.row(conn, _GET_PARTY, {"chat_id": chat_id, "participant_id": participant_id})
    return PartyRecord(*found) if found is not None else None


def list_parties(conn: Connection, chat_id: str) -> list[PartyRecord]:
    rows = conn.execute(
        select(_parties).where(_parties.c.chat_id == chat_id).order_by(_parties.c.participant_id)
    )
    return [_party(row) for row in rows]


def update_party(conn: Connection, chat_id: str, participant_id: int, **values: Any) -> None:
    conn.execute(
        update(_parties)
        .where(and_(_parties.c.chat_id == chat_id, _parties.c.participant_id == participant_id))
        .values(**values)
    )


def leave_all(conn: Connection, chat_id: str, now_ms: int) -> None:
    conn.execute(
        update(_parties)
        .where(and_(_parties.c.chat_id == chat_id, _parties.c.left_at_ms.is_(None)))
        .values(left_at_ms=now_ms)
    )


def list_chats(
    conn: Connection,
    *,
    service_name: str | None,
    ended: bool | None,
    created_after_ms: int | None,
    created_before_ms: int | None,
    after_id: str | None,
    limit: int,
) -> list[ChatRecord]:
    query = select(*(_chats.c[name] for name in _CHAT_COLUMNS.split(", ")))
    if service_name is not None:
        query = query.where(_chats.c.service_name == service_name)
    if ended is True:
        query = query.where(_chats.c.ended_at_ms.is_not(None))
    elif ended is False:
        query = query.where(_chats.c.ended_at_ms.is_(None))
    if created_after_ms is not None:
        query = query.where(_chats.c.created_at_ms >= created_after_ms)
    if created_before_ms is not None:
        query = query.where(_chats.c.created_at_ms < created_before_ms)
    if after_id is not None:
        query = query.where(_chats.c.id > after_id)
    query = query.order_by(_chats.c.id).limit(limit)
    return [_chat_of(row) for row in conn.execute(query)]


def purge_ended(conn: Connection, ended_before_ms: int, batch: int = 500) -> int:
    """Delete up to ``batch`` chats that ended before ``ended_before_ms``, with their rows."""
    ids = list(
        (
            conn.execute(
                select(_chats.c.id)
                .where(_chats.c.ended_at_ms < ended_before_ms)
                .order_by(_chats.c.ended_at_ms)
                .limit(batch)
            )
        ).scalars()
    )
    if not ids:
        return 0
    for keyed in (_outbox, _trail):  # keyed by (source, key): a chat's are source 'chat'
        conn.execute(delete(keyed).where(and_(keyed.c.source == "chat", keyed.c.key.in_(ids))))
    for table in (_subscriptions, _events):
        conn.execute(delete(table).where(table.c.chat_id.in_(ids)))
    conn.execute(delete(_parties).where(_parties.c.chat_id.in_(ids)))
    conn.execute(delete(_chats).where(_chats.c.id.in_(ids)))
    return len(ids)


def idle_subscribed_chats(
    conn: Connection, idle_before_ms: int, limit: int
) -> list[tuple[str, str, int]]:
    """Active push-subscribed chats with no client request since ``idle_before_ms``."""
    rows = conn.execute(
        select(_chats.c.id, _chats.c.service_name, _chats.c.last_client_request_ms)
        .join(_subscriptions, _subscriptions.c.chat_id == _chats.c.id)
        .where(
            and_(
                _chats.c.ended_at_ms.is_(None),
                _chats.c.last_client_request_ms < idle_before_ms,
            )
        )
        .order_by(_chats.c.last_client_request_ms)
        .limit(limit)
    )
    return [(row.id, row.service_name, row.last_client_request_ms) for row in rows]


def idle_unsubscribed_chats(conn: Connection, idle_before_ms: int, limit: int) -> list[str]:
    """Active chats without a push subscription and with no client request since
    ``idle_before_ms``, longest idle first."""
    subscribed = select(_subscriptions.c.chat_id).where(_subscriptions.c.chat_id == _chats.c.id)
    rows = conn.execute(
        select(_chats.c.id)
        .where(
            and_(
                _chats.c.ended_at_ms.is_(None),
                _chats.c.last_client_request_ms < idle_before_ms,
                ~subscribed.exists(),
            )
        )
        .order_by(_chats.c.last_client_request_ms)
        .limit(limit)
    )
    return [row.id for row in rows]


def touch_unsubscribed(conn: Connection, chat_ids: Sequence[str], now_ms: int) -> None:
    """Record a client request now for those of ``chat_ids`` without a push subscription."""
    subscribed = select(_subscriptions.c.chat_id).where(_subscriptions.c.chat_id == _chats.c.id)
    conn.execute(
        update(_chats)
        .where(and_(_chats.c.id.in_(list(chat_ids)), ~subscribed.exists()))
        .values(last_client_request_ms=now_ms)
    )


CHANGES_CHANNEL = "chatpush_chats"
"""PostgreSQL: the LISTEN/NOTIFY channel that announces chats changed (events added, ended), with
the payload ``"<origin instance> <chat id>"`` (a chat id holds no space)."""


def announce_changes(conn: Connection, origin: str, chat_ids: Iterable[str]) -> None:
    """NOTIFY the other instances, when this transaction commits, that these chats changed."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        [{"channel": CHANGES_CHANNEL, "payload": f"{origin} {chat_id}"} for chat_id in chat_ids],
    )
