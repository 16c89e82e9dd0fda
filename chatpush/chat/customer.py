"""The customer side: the ten Chat API v2 operations, and the client's foreground (CometD)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import Connection

from chatpush.chat.core import ChatCore, PushHooks
from chatpush.chat.model import (
    CUSTOMER_PARTICIPANT_ID,
    ChatRecord,
    NewEvent,
    PartyRecord,
    Reply,
    new_chat_id,
    new_secure_key,
    new_user_id,
)
from chatpush.errors import BadRequest, Code
from chatpush.store import chats as repo

MAX_EMAIL_CHARS = 320


class CustomerSide(ChatCore):
    """The customer's operations (Chat API v2, also over CometD), each one transaction."""

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

        def tx(conn: Connection, push: PushHooks) -> Reply:
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

        def tx(conn: Connection, push: PushHooks) -> Reply:
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

        def tx(conn: Connection, push: PushHooks) -> Reply:
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

        def tx(conn: Connection, push: PushHooks) -> Reply:
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
        (rule 1), without building a reply."""

        def tx(conn: Connection, push: PushHooks) -> None:
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

        def tx(conn: Connection, push: PushHooks) -> None:
            chat = repo.get_chat(conn, chat_id, lock=True)
            if chat is not None:
                push.foreground(chat, None)

        await self._run(tx)

    async def disconnect(self, service_name: str, chat_id: str, secure_key: str | None) -> Reply:
        def tx(conn: Connection, push: PushHooks) -> Reply:
            chat = self._authenticate(conn, service_name, chat_id, secure_key)
            if chat.ended:
                return self._reply(conn, push, chat, position=0, touch=False)
            now_ms = self._clock.now_ms()
            customer = self._customer(conn, chat)
            self._append(conn, push, chat, [NewEvent("ParticipantLeft", customer)], now_ms)
            chat = self._end(conn, push, chat, now_ms, customer_removed=False, by_customer=True)
            return self._reply(conn, push, chat, position=0)

        return await self._run(tx)

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
        def tx(conn: Connection, push: PushHooks) -> Reply:
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
            # Without transcriptPosition, send returns no events.
            return self._reply(conn, push, chat, position=0 if position is None else position)

        return await self._run(tx)
