"""The chat-server side: parties and events added by agents, chats ended, chats read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from chatpush.chat.core import ChatCore, PushHooks
from chatpush.chat.model import (
    EVENT_TYPES,
    PARTY_TYPES,
    ChatRecord,
    EventRecord,
    NewEvent,
    PartyRecord,
)
from chatpush.errors import BadRequest, Code, Conflict, NotFound
from chatpush.store import chats as repo


@dataclass(frozen=True, slots=True)
class ChatState:
    """A chat as the chat-server side reads it."""

    chat: ChatRecord
    parties: list[PartyRecord]
    events: list[EventRecord]


class ServerSide(ChatCore):
    """The chat-server side's operations (the agent's side of the chat), each one transaction."""

    async def add_party(
        self, chat_id: str, *, party_type: str, nickname: str
    ) -> tuple[PartyRecord, EventRecord]:
        if party_type not in PARTY_TYPES or party_type == "Client":
            raise BadRequest(
                Code.INVALID_PARAMETER, "type must be one of Agent, Supervisor, External"
            )
        self._check_text("nickname", nickname, self._limits.max_nickname_chars)

        def tx(conn: Connection, push: PushHooks) -> tuple[PartyRecord, EventRecord]:
            chat = self._server_chat(conn, chat_id)
            self._require_active(chat)
            self._require_room(chat)
            now_ms = self._clock.now_ms()
            party = PartyRecord(
                participant_id=repo.next_participant_id(conn, chat.id),
                type=party_type,
                nickname=nickname,
                joined_at_ms=now_ms,
            )
            repo.insert_party(conn, chat.id, party)
            [event] = self._append(conn, push, chat, [NewEvent("ParticipantJoined", party)], now_ms)
            return party, event

        return await self._run(tx)

    async def add_event(
        self,
        chat_id: str,
        *,
        participant_id: int,
        event_type: str,
        text: str | None,
        message_type: str | None,
        user_data: Mapping[str, str] | None,
    ) -> EventRecord:
        if event_type not in EVENT_TYPES:
            raise BadRequest(Code.INVALID_PARAMETER, f"unknown event type {event_type!r}")
        if event_type in ("ParticipantJoined", "ParticipantLeft"):
            raise BadRequest(
                Code.INVALID_PARAMETER,
                f"{event_type} is written by adding or removing a party, not as an event",
            )
        self._check_text("text", text, self._limits.max_message_chars)
        self._check_text("messageType", message_type, 128)
        if user_data:
            self._check_user_data(user_data)

        def tx(conn: Connection, push: PushHooks) -> EventRecord:
            chat = self._server_chat(conn, chat_id)
            self._require_active(chat)
            party = repo.get_party(conn, chat.id, participant_id)
            if party is None or party.type == "Client":
                raise NotFound(
                    Code.UNKNOWN_PARTY, f"no agent-side party {participant_id} in this chat"
                )
            if not party.present:
                raise Conflict(Code.CONFLICT, f"party {participant_id} has left the chat")
            self._require_room(chat)
            [event] = self._append(
                conn,
                push,
                chat,
                [
                    NewEvent(
                        event_type,
                        party,
                        text=text,
                        message_type=message_type,
                        user_data=dict(user_data) if user_data else None,
                    )
                ],
            )
            return event

        return await self._run(tx)

    async def remove_party(self, chat_id: str, participant_id: int) -> EventRecord:
        """Remove a party; removing the customer ends the chat (rule 7)."""

        def tx(conn: Connection, push: PushHooks) -> EventRecord:
            chat = self._server_chat(conn, chat_id)
            self._require_active(chat)
            party = repo.get_party(conn, chat.id, participant_id)
            if party is None:
                raise NotFound(Code.UNKNOWN_PARTY, f"no party {participant_id} in this chat")
            if not party.present:
                raise Conflict(Code.CONFLICT, f"party {participant_id} has already left")
            now_ms = self._clock.now_ms()
            repo.update_party(conn, chat.id, participant_id, left_at_ms=now_ms)
            [event] = self._append(conn, push, chat, [NewEvent("ParticipantLeft", party)], now_ms)
            if party.type == "Client":
                self._end(conn, push, chat, now_ms, customer_removed=True, by_customer=False)
            return event

        return await self._run(tx)

    async def end_chat(self, chat_id: str) -> ChatRecord:
        """End a chat: every agent-side party still present leaves, then the chat is ended."""

        def tx(conn: Connection, push: PushHooks) -> ChatRecord:
            chat = self._server_chat(conn, chat_id)
            if chat.ended:
                return chat
            now_ms = self._clock.now_ms()
            return self._end(conn, push, chat, now_ms, customer_removed=False, by_customer=False)

        return await self._run(tx)

    async def read_chat(
        self, chat_id: str, from_position: int = 1, limit: int | None = None
    ) -> ChatState:
        """The chat, its parties and up to ``limit`` events (default ``max_refresh_events``)
        from ``from_position``, within ``max_refresh_bytes`` (at least one event)."""
        limit = self._limits.max_refresh_events if limit is None else limit
        max_bytes = self._limits.max_refresh_bytes

        def tx(conn: Connection) -> ChatState:
            chat = self._server_chat(conn, chat_id, lock=False)
            return ChatState(
                chat=chat,
                parties=repo.list_parties(conn, chat.id),
                events=repo.events_from(conn, chat.id, max(from_position, 1), limit, max_bytes),
            )

        return await self._db.read(tx)

    async def list_chats(
        self,
        *,
        service_name: str | None = None,
        ended: bool | None = None,
        created_after_ms: int | None = None,
        created_before_ms: int | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> list[ChatRecord]:
        def tx(conn: Connection) -> list[ChatRecord]:
            return repo.list_chats(
                conn,
                service_name=service_name,
                ended=ended,
                created_after_ms=created_after_ms,
                created_before_ms=created_before_ms,
                after_id=after_id,
                limit=limit,
            )

        return await self._db.read(tx)
