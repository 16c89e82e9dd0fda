"""The shared part of the chat service: its transaction runner and the steps both sides take.

Each operation is one database transaction, a plain function run by ``Database.write``:
authenticate, append events, build the reply, and record what the customer has retrieved, all
committed together or not at all. Checks that need no database run before it. The push pipeline
is told inside the transaction what happened (``PushHooks``), decides and persists just
before the commit (``flush``), and reports after it (``committed``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from sqlalchemy.engine import Connection

from chatpush.chat.model import (
    CUSTOMER_PARTICIPANT_ID,
    ChatRecord,
    EventRecord,
    NewEvent,
    PartyRecord,
    Reply,
    keys_match,
)
from chatpush.clock import Clock
from chatpush.config import ChatSettings, Settings
from chatpush.errors import BadRequest, ChatAlreadyEnded, Code, Forbidden, NotFound, TranscriptFull
from chatpush.store import chats as repo
from chatpush.store.database import Database

log = logging.getLogger("chatpush.chat")
R = TypeVar("R")

# Printable, no slash, at most 200 characters (the column's size).
_SERVICE_NAME = re.compile(r"[^\x00-\x1f\x7f/]{1,200}")
_CHAT_ID = re.compile(r"[\x21-\x7e]{1,64}")
"""What could be a chat id: anything else (a NUL, say, which PostgreSQL refuses) is unknown."""


class PushHooks(Protocol):
    """Told, inside the chat's transaction, what happened; ``flush`` runs just before the commit.

    The push pipeline's ``PipelineTransaction`` (``push/pipeline.py``) is the one in use."""

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

    def transaction(self, conn: Connection) -> PushHooks: ...

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

    def __init__(self, push: PushHooks, changed: set[str]) -> None:
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


class ChatCore:
    """State and steps shared by the customer side, the chat-server side and housekeeping."""

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
            raise ChatAlreadyEnded()

    def _require_room(self, chat: ChatRecord, count: int = 1) -> None:
        """Refuse new events past ``max_events_per_chat`` (ending a chat is never refused)."""
        if chat.last_index + count > self._limits.max_events_per_chat:
            raise TranscriptFull(self._limits.max_events_per_chat)

    def _customer(self, conn: Connection, chat: ChatRecord) -> PartyRecord:
        customer = repo.get_party(conn, chat.id, CUSTOMER_PARTICIPANT_ID)
        assert customer is not None, "every chat has its customer party"
        return customer

    async def _run(self, body: Callable[[Connection, PushHooks], R]) -> R:
        """Run ``body`` as one write transaction; the push pipeline decides inside it (flush,
        just before the commit) and hears of the commit afterwards."""
        push_observer = self._push
        observers = self._committed
        announce_as = self._announce_as

        def transaction(conn: Connection) -> tuple[R, PushHooks, set[str]]:
            push: PushHooks = (
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
        push: PushHooks,
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
        push: PushHooks,
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
        push: PushHooks,
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
            # Position 0 asks for nothing and so acknowledges nothing (rule 1).
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
