"""Chat sessions as both sides see them: the ten Chat API v2 operations and the chat-server side.

Each operation is one database transaction, a plain function run by ``Database.write``:
authenticate, append events, build the reply, and record what the customer has retrieved, all
committed together or not at all. Checks that need no database run before it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy.engine import Connection

from chatpush.chat.model import (
    CUSTOMER_PARTICIPANT_ID,
    EVENT_TYPES,
    PARTY_TYPES,
    ChatRecord,
    EventRecord,
    NewEvent,
    PartyRecord,
    Reply,
    keys_match,
    new_chat_id,
    new_secure_key,
    new_user_id,
)
from chatpush.clock import Clock
from chatpush.config import ChatSettings, Settings
from chatpush.errors import (
    BadRequest,
    ChatEnded,
    Code,
    Conflict,
    Forbidden,
    NotFound,
    TranscriptFull,
)
from chatpush.store import chats as repo
from chatpush.store.database import Database

log = logging.getLogger("chatpush.chat")
R = TypeVar("R")

# Printable, no slash, at most 200 characters (the column's size).
_SERVICE_NAME = re.compile(r"[^\x00-\x1f\x7f/]{1,200}")
_CHAT_ID = re.compile(r"[\x21-\x7e]{1,64}")
"""What could be a chat id: anything else (a NUL, say, which PostgreSQL refuses) is unknown."""
MAX_EMAIL_CHARS = 320


class PushTransaction(Protocol):
    """Told, inside the chat's transaction, what happened; ``flush`` runs just before the commit."""

    def chat_requested(self, chat: ChatRecord, user_data: Mapping[str, str]) -> None: ...

    def events_added(self, chat: ChatRecord, events: Sequence[EventRecord]) -> None: ...

    def transcript_retrieved(
        self, chat: ChatRecord, first: int | None, last: int | None, *, asked_from: int
    ) -> None:
        """A reply gave the client events ``first``..``last`` (None: none), asked for from
        position ``asked_from``; ``chat`` is the chat as the reply saw it."""

    def chat_ended(
        self, chat: ChatRecord, *, customer_removed: bool, by_customer: bool
    ) -> None: ...

    def foreground(self, chat: ChatRecord, until_ms: int | None) -> None: ...

    def flush(self) -> None: ...

    def committed(self) -> None: ...


class PushObserver(Protocol):
    """The push pipeline, as the chat service sees it."""

    def transaction(self, conn: Connection) -> PushTransaction: ...

    async def timed_out_chats(self) -> list[tuple[str, int]]:
        """(chat id, flex-push-timeout in s) of the push-subscribed chats to end for it."""
        ...


class _NoPush:
    """Stands in when push is not wired (tools, some tests): every hook does nothing."""

    def chat_requested(self, chat: ChatRecord, user_data: Mapping[str, str]) -> None:
        return None

    def events_added(self, chat: ChatRecord, events: Sequence[EventRecord]) -> None:
        return None

    def transcript_retrieved(
        self, chat: ChatRecord, first: int | None, last: int | None, *, asked_from: int
    ) -> None:
        return None

    def chat_ended(self, chat: ChatRecord, *, customer_removed: bool, by_customer: bool) -> None:
        return None

    def foreground(self, chat: ChatRecord, until_ms: int | None) -> None:
        return None

    def flush(self) -> None:
        return None

    def committed(self) -> None:
        return None


class _Changes:
    """Passes everything on to the push transaction and notes which chats got events or ended."""

    def __init__(self, push: PushTransaction, changed: set[str]) -> None:
        self._push = push
        self._changed = changed

    def chat_requested(self, chat: ChatRecord, user_data: Mapping[str, str]) -> None:
        self._push.chat_requested(chat, user_data)

    def events_added(self, chat: ChatRecord, events: Sequence[EventRecord]) -> None:
        self._changed.add(chat.id)
        self._push.events_added(chat, events)

    def transcript_retrieved(
        self, chat: ChatRecord, first: int | None, last: int | None, *, asked_from: int
    ) -> None:
        self._push.transcript_retrieved(chat, first, last, asked_from=asked_from)

    def chat_ended(self, chat: ChatRecord, *, customer_removed: bool, by_customer: bool) -> None:
        self._changed.add(chat.id)
        self._push.chat_ended(chat, customer_removed=customer_removed, by_customer=by_customer)

    def foreground(self, chat: ChatRecord, until_ms: int | None) -> None:
        self._push.foreground(chat, until_ms)

    def flush(self) -> None:
        self._push.flush()

    def committed(self) -> None:
        self._push.committed()


@dataclass(frozen=True, slots=True)
class ChatState:
    """A chat as the chat-server side reads it."""

    chat: ChatRecord
    parties: list[PartyRecord]
    events: list[EventRecord]


class ChatService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        push: PushObserver | None = None,
        announce_as: str | None = None,
    ) -> None:
        """``announce_as``: on PostgreSQL, announce each commit that changes a chat to the other
        instances, with this instance's id as its origin (``chats.CHANGES_CHANNEL``)."""
        self._announce_as = announce_as
        self._db = db
        self._settings = settings
        self._limits: ChatSettings = settings.chat
        self._alias = settings.server.alias
        self._clock = clock
        self._push = push
        self._committed: list[Callable[[str], None]] = []

    def on_committed(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(chat_id)`` after every committed write that added events to a chat or
        ended it (both sides of the API). Synchronous and cheap: schedule any real work."""
        self._committed.append(callback)

    # -- customer side: Chat API v2 -------------------------------------------------------------

    async def request_chat(
        self,
        service_name: str,
        *,
        nickname: str | None,
        first_name: str | None,
        last_name: str | None,
        subject: str | None,
        email_address: str | None,
        user_data: Mapping[str, str],
        live_until_ms: int | None = None,
    ) -> Reply:
        """``live_until_ms``: the client follows the chat live (CometD) until then, renewed while
        it stays; its push subscription sends nothing meanwhile (see ``leave_foreground``)."""
        self._require_service(service_name)
        self._check_text("firstName", first_name, self._limits.max_nickname_chars)
        self._check_text("lastName", last_name, self._limits.max_nickname_chars)
        nickname = nickname.strip() if nickname else None
        if not nickname:
            if not (first_name and last_name):
                raise BadRequest(
                    Code.MISSING_PARAMETER, "nickname, or firstName and lastName, is required"
                )
            nickname = f"{first_name} {last_name}"
        self._check_text("nickname", nickname, self._limits.max_nickname_chars)
        self._check_text("subject", subject, self._limits.max_message_chars)
        self._check_text("emailAddress", email_address, MAX_EMAIL_CHARS)
        self._check_user_data(user_data)
        now_ms = self._clock.now_ms()
        chat = ChatRecord(
            id=new_chat_id(),
            service_name=service_name,
            secure_key=new_secure_key(),
            user_id=new_user_id(),
            subject=subject,
            email_address=email_address,
            user_data=dict(user_data),
            created_at_ms=now_ms,
            ended_at_ms=None,
            last_client_request_ms=now_ms,
            last_index=0,
            client_position=0,
            last_participant_id=CUSTOMER_PARTICIPANT_ID,
        )
        customer = PartyRecord(
            participant_id=CUSTOMER_PARTICIPANT_ID,
            type="Client",
            nickname=nickname,
            joined_at_ms=now_ms,
            first_name=first_name,
            last_name=last_name,
        )

        def tx(conn: Connection, push: PushTransaction) -> Reply:
            repo.insert_chat(conn, chat, customer)
            push.chat_requested(chat, user_data)
            if live_until_ms is not None:
                push.foreground(chat, live_until_ms)
            self._append(conn, push, chat, [NewEvent("ParticipantJoined", customer)], now_ms)
            return self._reply(conn, push, chat, position=None, touch=False)

        return await self._run(tx)

    async def refresh(
        self,
        service_name: str,
        chat_id: str,
        secure_key: str | None,
        position: int | None,
        *,
        live_until_ms: int | None = None,
    ) -> Reply:
        """``live_until_ms``: as for ``request_chat`` (CometD's ``requestNotifications``)."""

        def tx(conn: Connection, push: PushTransaction) -> Reply:
            chat = self._authenticate(conn, service_name, chat_id, secure_key)
            if live_until_ms is not None:
                push.foreground(chat, live_until_ms)
            return self._reply(conn, push, chat, position=position)

        return await self._run(tx)

    async def send_message(
        self,
        service_name: str,
        chat_id: str,
        secure_key: str | None,
        *,
        message: str | None,
        message_type: str | None,
        position: int | None,
    ) -> Reply:
        if message is None:
            raise BadRequest(Code.MISSING_PARAMETER, "message is required")
        self._check_text("message", message, self._limits.max_message_chars)
        self._check_text("messageType", message_type, 128)
        return await self._customer_event(
            service_name,
            chat_id,
            secure_key,
            "Message",
            text=message,
            message_type=message_type,
            position=position,
        )

    async def start_typing(
        self, service_name: str, chat_id: str, secure_key: str | None, message: str | None
    ) -> Reply:
        self._check_text("message", message, self._limits.max_message_chars)
        return await self._customer_event(
            service_name, chat_id, secure_key, "TypingStarted", text=message
        )

    async def stop_typing(
        self, service_name: str, chat_id: str, secure_key: str | None, message: str | None
    ) -> Reply:
        self._check_text("message", message, self._limits.max_message_chars)
        return await self._customer_event(
            service_name, chat_id, secure_key, "TypingStopped", text=message
        )

    async def push_url(
        self, service_name: str, chat_id: str, secure_key: str | None, url: str | None
    ) -> Reply:
        if not url:
            raise BadRequest(Code.MISSING_PARAMETER, "pushUrl is required")
        self._check_text("pushUrl", url, self._limits.max_message_chars)
        return await self._customer_event(service_name, chat_id, secure_key, "PushUrl", text=url)

    async def custom_notice(
        self, service_name: str, chat_id: str, secure_key: str | None, message: str | None
    ) -> Reply:
        if message is None:
            raise BadRequest(Code.MISSING_PARAMETER, "message is required")
        self._check_text("message", message, self._limits.max_message_chars)
        return await self._customer_event(
            service_name, chat_id, secure_key, "CustomNotice", text=message
        )

    async def update_nickname(
        self, service_name: str, chat_id: str, secure_key: str | None, nickname: str | None
    ) -> Reply:
        nickname = nickname.strip() if nickname else None
        if not nickname:
            raise BadRequest(Code.MISSING_PARAMETER, "nickname is required")
        self._check_text("nickname", nickname, self._limits.max_nickname_chars)

        def tx(conn: Connection, push: PushTransaction) -> Reply:
            chat = self._authenticate(conn, service_name, chat_id, secure_key)
            self._require_active(chat)
            self._require_room(chat)
            repo.update_party(conn, chat.id, CUSTOMER_PARTICIPANT_ID, nickname=nickname)
            customer = self._customer(conn, chat)
            self._append(conn, push, chat, [NewEvent("NicknameUpdated", customer, text=nickname)])
            return self._reply(conn, push, chat, position=0)

        return await self._run(tx)

    async def update_data(
        self, service_name: str, chat_id: str, secure_key: str | None, user_data: Mapping[str, str]
    ) -> Reply:
        if not user_data:
            raise BadRequest(Code.MISSING_PARAMETER, "at least one userData[KEY] is required")

        def tx(conn: Connection, push: PushTransaction) -> Reply:
            chat = self._authenticate(conn, service_name, chat_id, secure_key)
            self._require_active(chat)
            merged = {**chat.user_data, **user_data}
            self._check_user_data(merged)
            repo.update_chat(conn, chat.id, user_data=merged)
            return self._reply(conn, push, chat, position=0)

        return await self._run(tx)

    async def go_to_background(
        self,
        service_name: str,
        chat_id: str,
        secure_key: str | None,
        position: int | None,
        *,
        live_until_ms: int | None = None,
    ) -> None:
        """The client leaves the foreground (CometD's ``/meta/disconnect``): push may send again,
        unless ``live_until_ms`` says another of its sessions still follows the chat.
        With ``ext.transcriptPosition`` (``position``) it holds every event before it: record
        what a refresh returning them would, for client position and reliable delivery
        (CONTRACT §8.1), without building a reply."""

        def tx(conn: Connection, push: PushTransaction) -> None:
            chat = self._authenticate(conn, service_name, chat_id, secure_key)
            push.foreground(chat, live_until_ms)
            if position is None:
                return
            last = min(position - 1, chat.last_index)
            retrieved = last if last >= 1 else None
            current = repo.record_client_read(
                conn, chat.id, request_ms=self._clock.now_ms(), retrieved=retrieved
            )
            if retrieved is not None:
                push.transcript_retrieved(current, 1, retrieved, asked_from=1)

        await self._run(tx)

    async def leave_foreground(self, chat_id: str) -> None:
        """The chat's live client vanished without a word (its CometD session expired or was
        removed): push may send again, from what the client last acknowledged."""

        def tx(conn: Connection, push: PushTransaction) -> None:
            chat = repo.get_chat(conn, chat_id, lock=True)
            if chat is not None:
                push.foreground(chat, None)

        await self._run(tx)

    async def disconnect(self, service_name: str, chat_id: str, secure_key: str | None) -> Reply:
        def tx(conn: Connection, push: PushTransaction) -> Reply:
            chat = self._authenticate(conn, service_name, chat_id, secure_key)
            if chat.ended:
                return self._reply(conn, push, chat, position=0, touch=False)
            now_ms = self._clock.now_ms()
            customer = self._customer(conn, chat)
            self._append(conn, push, chat, [NewEvent("ParticipantLeft", customer)], now_ms)
            chat = self._end(conn, push, chat, now_ms, customer_removed=False, by_customer=True)
            return self._reply(conn, push, chat, position=0)

        return await self._run(tx)

    # -- chat-server side -------------------------------------------------------------------------

    async def add_party(
        self, chat_id: str, *, party_type: str, nickname: str
    ) -> tuple[PartyRecord, EventRecord]:
        if party_type not in PARTY_TYPES or party_type == "Client":
            raise BadRequest(
                Code.INVALID_PARAMETER, "type must be one of Agent, Supervisor, External"
            )
        self._check_text("nickname", nickname, self._limits.max_nickname_chars)

        def tx(conn: Connection, push: PushTransaction) -> tuple[PartyRecord, EventRecord]:
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

        def tx(conn: Connection, push: PushTransaction) -> EventRecord:
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
        """Remove a party; removing the customer ends the chat (CONTRACT §8.7)."""

        def tx(conn: Connection, push: PushTransaction) -> EventRecord:
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

        def tx(conn: Connection, push: PushTransaction) -> ChatRecord:
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

    async def purge_ended(self) -> int:
        """Delete chats whose retention after ending has run out; returns how many."""
        cutoff_ms = self._clock.now_ms() - self._limits.ended_chat_retention_s * 1000
        purged = 0
        while True:
            count = await self._db.write(repo.purge_ended, cutoff_ms)
            purged += count
            if count == 0:
                return purged

    async def expire_idle_push_chats(self) -> int:
        """End push-subscribed chats idle for longer than their service's flex-push-timeout
        (the push pipeline says which)."""
        if self._push is None:
            return 0
        expired = 0
        for chat_id, timeout_s in await self._push.timed_out_chats():
            try:
                await self.end_chat(chat_id)
            except NotFound:
                continue
            expired += 1
            log.info(
                "chat %s ended: no client request for %d s (flex-push-timeout)",
                chat_id,
                timeout_s,
                extra={"action": "chat_expired", "chat_id": chat_id},
            )
        return expired

    async def expire_idle_chats(self) -> int:
        """End chats without a push subscription and with no client request for longer than
        ``idle_chat_timeout_s``, through the normal end-chat path; returns how many."""
        timeout_s = self._limits.idle_chat_timeout_s
        if timeout_s == 0:
            return 0
        idle_before_ms = self._clock.now_ms() - timeout_s * 1000
        candidates = await self._db.read(repo.idle_unsubscribed_chats, idle_before_ms, 1000)
        expired = 0
        for chat_id in candidates:

            def tx(conn: Connection, push: PushTransaction, chat_id: str = chat_id) -> bool:
                chat = repo.get_chat(conn, chat_id, lock=True)
                # Looked at again under the lock: the client may have come back meanwhile.
                if chat is None or chat.ended or chat.last_client_request_ms >= idle_before_ms:
                    return False
                now_ms = self._clock.now_ms()
                self._end(conn, push, chat, now_ms, customer_removed=False, by_customer=False)
                return True

            if not await self._run(tx):
                continue
            expired += 1
            log.info(
                "chat %s ended: no client request for %d s (chat.idle_chat_timeout_s)",
                chat_id,
                timeout_s,
                extra={"action": "chat_idle_ended", "chat_id": chat_id},
            )
        return expired

    async def touch_live(self, chat_ids: Sequence[str]) -> None:
        """Chats followed live (CometD) count as requested now, for ``idle_chat_timeout_s``;
        chats with a push subscription are left alone (their flex-push-timeout is unchanged)."""
        now_ms = self._clock.now_ms()
        for start in range(0, len(chat_ids), 500):
            await self._db.write(repo.touch_unsubscribed, chat_ids[start : start + 500], now_ms)

    # -- shared steps ---------------------------------------------------------------------------

    def _require_service(self, service_name: str) -> None:
        if not _SERVICE_NAME.fullmatch(service_name) or not self._settings.serves(service_name):
            raise NotFound(Code.UNKNOWN_SERVICE, f"unknown service {service_name!r}")

    def _authenticate(
        self, conn: Connection, service_name: str, chat_id: str, secure_key: str | None
    ) -> ChatRecord:
        self._require_service(service_name)
        if not secure_key:
            raise Forbidden(Code.INVALID_SECURE_KEY, "secureKey is required")
        chat = repo.get_chat(conn, chat_id, lock=True) if _CHAT_ID.fullmatch(chat_id) else None
        if chat is None or chat.service_name != service_name:
            raise NotFound(Code.UNKNOWN_CHAT, f"unknown chat {chat_id!r}")
        if not keys_match(chat.secure_key, secure_key):
            raise Forbidden(Code.INVALID_SECURE_KEY, "secureKey does not match this chat")
        return chat

    def _server_chat(self, conn: Connection, chat_id: str, *, lock: bool = True) -> ChatRecord:
        valid = _CHAT_ID.fullmatch(chat_id)
        chat = repo.get_chat(conn, chat_id, lock=lock) if valid else None
        if chat is None:
            raise NotFound(Code.UNKNOWN_CHAT, f"unknown chat {chat_id!r}")
        return chat

    @staticmethod
    def _require_active(chat: ChatRecord) -> None:
        if chat.ended:
            raise ChatEnded()

    def _require_room(self, chat: ChatRecord, count: int = 1) -> None:
        """Refuse new events past ``max_events_per_chat`` (ending a chat is never refused)."""
        if chat.last_index + count > self._limits.max_events_per_chat:
            raise TranscriptFull(self._limits.max_events_per_chat)

    def _customer(self, conn: Connection, chat: ChatRecord) -> PartyRecord:
        customer = repo.get_party(conn, chat.id, CUSTOMER_PARTICIPANT_ID)
        assert customer is not None, "every chat has its customer party"
        return customer

    async def _customer_event(
        self,
        service_name: str,
        chat_id: str,
        secure_key: str | None,
        event_type: str,
        *,
        text: str | None = None,
        message_type: str | None = None,
        position: int | None = 0,
    ) -> Reply:
        def tx(conn: Connection, push: PushTransaction) -> Reply:
            chat = self._authenticate(conn, service_name, chat_id, secure_key)
            self._require_active(chat)
            self._require_room(chat)
            customer = self._customer(conn, chat)
            self._append(
                conn,
                push,
                chat,
                [NewEvent(event_type, customer, text=text, message_type=message_type)],
            )
            # Without transcriptPosition, send returns no events (CONTRACT §2).
            return self._reply(conn, push, chat, position=0 if position is None else position)

        return await self._run(tx)

    async def _run(self, body: Callable[[Connection, PushTransaction], R]) -> R:
        """Run ``body`` as one write transaction; the push pipeline decides inside it (flush,
        just before the commit) and hears of the commit afterwards."""
        push_observer = self._push
        observers = self._committed
        announce_as = self._announce_as

        def transaction(conn: Connection) -> tuple[R, PushTransaction, set[str]]:
            push: PushTransaction = (
                push_observer.transaction(conn) if push_observer is not None else _NoPush()
            )
            changed: set[str] = set()
            if observers or announce_as is not None:
                push = _Changes(push, changed)
            result = body(conn, push)
            push.flush()
            if announce_as is not None and changed:
                repo.announce_changes(conn, announce_as, changed)
            return result, push, changed

        result, push, changed = await self._db.write(transaction)
        push.committed()
        for chat_id in changed:
            for observer in observers:
                try:
                    observer(chat_id)
                except Exception:
                    log.exception("commit observer failed", extra={"action": "observer_failed"})
        return result

    def _append(
        self,
        conn: Connection,
        push: PushTransaction,
        chat: ChatRecord,
        events: Sequence[NewEvent],
        now_ms: int | None = None,
    ) -> list[EventRecord]:
        first = repo.reserve_indexes(conn, chat.id, len(events))
        records = repo.insert_events(
            conn, chat.id, first, events, self._clock.now_ms() if now_ms is None else now_ms
        )
        push.events_added(chat, records)
        return records

    def _end(
        self,
        conn: Connection,
        push: PushTransaction,
        chat: ChatRecord,
        now_ms: int,
        *,
        customer_removed: bool,
        by_customer: bool,
    ) -> ChatRecord:
        """End the chat; every agent-side party still present leaves it, with its event."""
        leaving = [
            NewEvent("ParticipantLeft", party)
            for party in repo.list_parties(conn, chat.id)
            if party.present and party.type != "Client"
        ]
        if leaving:
            self._append(conn, push, chat, leaving, now_ms)
        repo.leave_all(conn, chat.id, now_ms)
        repo.update_chat(conn, chat.id, ended_at_ms=now_ms)
        ended = repo.get_chat(conn, chat.id)
        assert ended is not None
        push.chat_ended(ended, customer_removed=customer_removed, by_customer=by_customer)
        return ended

    def _reply(
        self,
        conn: Connection,
        push: PushTransaction,
        chat: ChatRecord,
        *,
        position: int | None,
        touch: bool = True,
    ) -> Reply:
        """Build the envelope: events from ``position`` (None = all, 0 = none), nextPosition.

        At most ``max_refresh_events`` events and ``max_refresh_bytes`` of their wire JSON (but
        always at least one): the client continues from ``nextPosition``, and
        only what was returned counts as retrieved (so push keeps notifying the rest).
        Records, in the same statement, the time of the client's request (``touch``) and what it
        has now retrieved.
        """
        messages: list[EventRecord] = []
        if position != 0:
            first = 1 if position is None else position
            messages = repo.events_from(
                conn,
                chat.id,
                first,
                self._limits.max_refresh_events,
                self._limits.max_refresh_bytes,
            )
        current = repo.record_client_read(
            conn,
            chat.id,
            request_ms=self._clock.now_ms() if touch else None,
            retrieved=messages[-1].index if messages else None,
        )
        if position != 0:
            # Position 0 asks for nothing and so acknowledges nothing (CONTRACT §8.1).
            push.transcript_retrieved(
                current,
                messages[0].index if messages else None,
                messages[-1].index if messages else None,
                asked_from=position or 1,
            )
        return Reply(
            chat=current,
            alias=self._alias,
            messages=messages,
            next_position=messages[-1].index + 1 if messages else current.client_position + 1,
            chat_ended=current.ended,
        )

    def _check_text(self, name: str, value: str | None, max_chars: int) -> None:
        if value is not None and len(value) > max_chars:
            raise BadRequest(
                Code.INVALID_PARAMETER, f"{name} is longer than {max_chars} characters"
            )

    def _check_user_data(self, user_data: Mapping[str, str]) -> None:
        if len(user_data) > self._limits.max_user_data_keys:
            raise BadRequest(
                Code.INVALID_PARAMETER,
                f"userData has more than {self._limits.max_user_data_keys} keys",
            )
        for key, value in user_data.items():
            if not key or len(key) > 256:
                raise BadRequest(Code.INVALID_PARAMETER, "userData keys must be 1-256 characters")
            self._check_text(f"userData[{key}]", value, self._limits.max_user_data_value_chars)
