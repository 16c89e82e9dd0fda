"""Chat API v2 over CometD: the REST operations on ``/service/chatV2/{service}`` (docs/chat-api.md).

A client publishes ``{"operation": ..., the REST fields}`` to ``/service/chatV2/{serviceName}``; the
operation runs through the same ``ChatService`` methods (and so the same validation) as REST, and
the envelope, or the error envelope, is delivered to the sender only on the same channel.

A session that ran ``requestChat`` or ``requestNotifications`` is *attached* to that chat: after
every committed write that adds events to it (either side of the API), the events from the
session's position are delivered to it as an envelope. Attachments live in memory (chat id →
sessions, and each session's chats in ``Session.attributes``); a chat without any costs one dict
look-up per commit.

While attached, the chat is in the *foreground*: its push subscription sends nothing. The lease
on that (``cometd.foreground_lease_s``) is renewed for every attached chat each third of it.
``/meta/disconnect`` is going to background: with ``ext.transcriptPosition`` it records that
position as a refresh would, and push starts again; a session that vanishes (expired, queue full)
gives its chats back to push too (docs/cometd.md, "Chat API v2 over CometD").

A reply carries at most ``chat.max_refresh_events`` events and ``chat.max_refresh_bytes`` of
them; an attached session then gets the rest as live envelopes of that size, in order. Those go
out with back-pressure: a session whose queue holds more than ``max_queued_bytes`` minus one
page's worst case (or half its ``max_queued_messages``) gets its next envelope once a connect
has taken its queue (``BayeuxServer.on_drained``), so a long transcript never overflows it.
``requestChat`` counts against the client address's Request Chat limit
(chatpush/api/ratelimit.py), as over REST.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from chatpush.api import chat_v2
from chatpush.api.forms import MAX_POSITION, Form
from chatpush.api.keys import CHATS, CLOCK, COMETD, INSTANCE_ID, PIPELINE, SETTINGS
from chatpush.api.ratelimit import CHAT_CREATE_LIMIT, ClientLimit
from chatpush.chat.model import Reply
from chatpush.chat.service import ChatService
from chatpush.clock import Clock
from chatpush.cometd import RemovalReason, Session
from chatpush.config import Settings
from chatpush.errors import BadRequest, ChatpushError, Code
from chatpush.push.pipeline import PushPipeline

log = logging.getLogger("chatpush.cometd.chat")

PREFIX = "/service/chatV2/"
ATTACHED = "chatV2"
"""The key of a session's attachments in ``Session.attributes``: chat id → ``Attachment``."""
MAX_CHATS_PER_SESSION = 16
ENVELOPE_CHARS = 4_096
"""Room for an envelope's own fields (ids, keys, nextPosition) and its events' nicknames."""


def page_queue_bytes(settings: Settings) -> int:
    """The most one envelope of events can take in a session's queue.

    A page holds ``chat.max_refresh_bytes`` of events' UTF-8 JSON, or one event alone when it is
    larger; one event is at most twice ``server.max_body_bytes`` as JSON (escapes such as
    ``\u0001`` double a body's ``%01``). A queue counts strings in memory, up to 4 bytes a
    character, and a character is at least one UTF-8 byte.
    """
    largest_event = 2 * settings.server.max_body_bytes
    return 4 * (max(settings.chat.max_refresh_bytes, largest_event) + ENVELOPE_CHARS)


# CometD operation → the REST handler of chat_v2 that runs it.
_OPERATIONS: dict[str, chat_v2.Operation] = {
    "sendMessage": chat_v2.OPERATIONS["send"],
    "startTyping": chat_v2.OPERATIONS["startTyping"],
    "stopTyping": chat_v2.OPERATIONS["stopTyping"],
    "disconnect": chat_v2.OPERATIONS["disconnect"],
    "pushUrl": chat_v2.OPERATIONS["pushUrl"],
    "updateNickname": chat_v2.OPERATIONS["updateNickname"],
    "customNotice": chat_v2.OPERATIONS["customNotice"],
    "updateData": chat_v2.OPERATIONS["updateData"],
}
OPERATION_NAMES = ("requestChat", "requestNotifications", *_OPERATIONS)

# Fields whose value must be a string (or, for convenience, an integer); other fields are ignored
# whatever they hold, as unknown form parameters are.
_STRING_FIELDS = frozenset(
    {
        "nickname",
        "firstName",
        "lastName",
        "subject",
        "emailAddress",
        "message",
        "text",
        "messageType",
        "transcriptPosition",
        "pushUrl",
        "secureKey",
        "chatId",
    }
)


@dataclass(slots=True)
class Attachment:
    """One session following one chat: where to deliver and the next index it has not seen."""

    channel: str
    service: str
    secure_key: str
    position: int
    waiting: bool = False
    """Events were held back because the session's queue was too full: sent once it drains."""


class ChatOverCometd:
    def __init__(
        self,
        chats: ChatService,
        pipeline: PushPipeline,
        clock: Clock,
        alias: str,
        foreground_lease_ms: int,
        instance_id: str,
        create_limit: ClientLimit,
        page_bytes: int,
    ) -> None:
        self._chats = chats
        self._page_bytes = page_bytes
        """Room a session's queue must have for the next envelope (``page_queue_bytes``)."""
        self._create_limit = create_limit
        self._instance_id = instance_id
        self._pipeline = pipeline
        self._clock = clock
        self._alias = alias
        self._lease_ms = foreground_lease_ms
        self._by_chat: dict[str, dict[Session, Attachment]] = {}
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    # -- hooks of the Bayeux server and the chat service ----------------------------------------

    async def handle(self, session: Session, message: dict[str, Any]) -> None:
        channel: str = message["channel"]
        service = channel[len(PREFIX) :]
        data = message.get("data")
        reply: Reply | None = None
        try:
            reply = await self._operate(session, channel, service, data)
            body = reply.to_wire()
        except ChatpushError as exc:
            body = self._error_envelope(exc, data)
        await session.deliver(channel, body)
        if reply is not None and reply.messages and reply.next_position <= reply.chat.last_index:
            # The reply held chat.max_refresh_events events: an attached session gets the rest of
            # the transcript at once as live envelopes, from the attachment's position.
            self.committed(reply.chat.id)

    async def going_to_background(self, session: Session, message: dict[str, Any]) -> None:
        """``/meta/disconnect``: record ``ext.transcriptPosition`` for each chat of the session.

        The session is removed right after (the removal listener detaches it); the chat's push
        subscription, if any, keeps notifying the device from the recorded position.
        """
        ext = message.get("ext")
        raw = ext.get("transcriptPosition") if isinstance(ext, dict) else None
        position = None
        try:
            position = _position(raw) if raw is not None else None
        except ChatpushError:
            log.debug("disconnect with a bad transcriptPosition %r", raw)
        attached: dict[str, Attachment] = session.attributes.get(ATTACHED, {})
        for chat_id, attachment in list(attached.items()):
            # Another session of this instance may still follow the chat: it stays in front.
            others = len(self._by_chat.get(chat_id, ())) > 1
            if others and position is None:
                continue
            try:
                await self._chats.go_to_background(
                    attachment.service,
                    chat_id,
                    attachment.secure_key,
                    position,
                    live_until_ms=self._lease_end() if others else None,
                )
            except ChatpushError as exc:
                log.info(
                    "going to background: position not recorded for chat %s: %s",
                    chat_id,
                    exc,
                    extra={"action": "cometd_background_failed", "chat_id": chat_id},
                )

    def session_removed(self, session: Session, reason: RemovalReason) -> None:
        for chat_id in session.attributes.pop(ATTACHED, {}):
            self._detach(session, chat_id)
            if reason is not RemovalReason.DISCONNECT and chat_id not in self._by_chat:
                self._spawn(self._leave_foreground(chat_id), f"cometd-background-{chat_id}")

    def drained(self, session: Session) -> None:
        """A connect took the session's queue: send what was held back for it."""
        attached: dict[str, Attachment] = session.attributes.get(ATTACHED, {})
        for chat_id, attachment in attached.items():
            if attachment.waiting:
                self.committed(chat_id)

    def committed(self, chat_id: str) -> None:
        """Called by ChatService after a commit that changed ``chat_id``."""
        if chat_id not in self._by_chat:
            return
        if chat_id in self._running:
            self._dirty.add(chat_id)
            return
        self._running.add(chat_id)
        self._spawn(self._pump(chat_id), f"cometd-chat-{chat_id}")

    def changed_elsewhere(self, announcement: str | None) -> None:
        """PostgreSQL: another instance committed a change to a chat (``"<origin> <chat id>"``),
        or (None) announcements may have been missed: look at every attached chat."""
        if announcement is None:
            for chat_id in list(self._by_chat):
                self.committed(chat_id)
            return
        origin, _, chat_id = announcement.rpartition(" ")
        if origin != self._instance_id:
            self.committed(chat_id)

    async def close(self, app: web.Application | None = None) -> None:
        tasks = [*self._tasks, *([self._renewer] if self._renewer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def attached_sessions(self, chat_id: str) -> int:
        return len(self._by_chat.get(chat_id, ()))

    # -- operations -------------------------------------------------------------------------------

    async def _operate(self, session: Session, channel: str, service: str, data: Any) -> Reply:
        if not isinstance(data, dict):
            raise BadRequest(Code.INVALID_PARAMETER, "data must be a JSON object")
        operation = data.get("operation")
        if not isinstance(operation, str) or not operation:
            raise BadRequest(Code.MISSING_PARAMETER, "operation is required")
        form = _form(data)
        if operation == "requestChat":
            self._create_limit.check()
            reply = await chat_v2.request_chat_with(
                self._chats, service, form, live_until_ms=self._lease_end(), top_level=data
            )
            self._attach(session, channel, service, reply)
            return reply
        run = _OPERATIONS.get(operation)
        if operation != "requestNotifications" and run is None:
            raise BadRequest(
                Code.INVALID_PARAMETER,
                f"unknown operation {operation[:64]!r}; one of {', '.join(OPERATION_NAMES)}",
            )
        chat_id = form.get("chatId")
        if not chat_id:
            raise BadRequest(Code.MISSING_PARAMETER, "chatId is required")
        key = form.get("secureKey")
        if run is None:  # requestNotifications: a refresh that (re)attaches the session
            reply = await self._chats.refresh(
                service, chat_id, key, form.position(), live_until_ms=self._lease_end()
            )
            self._attach(session, channel, service, reply)
            return reply
        return await run(self._chats, service, chat_id, key, form)

    def _error_envelope(self, exc: ChatpushError, data: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "statusCode": exc.status_code,
            "alias": self._alias,
            "chatEnded": exc.chat_ended,
            "messages": [],
            "errors": [{"code": entry.code, "advice": entry.advice} for entry in exc.errors],
        }
        chat_id = data.get("chatId") if isinstance(data, dict) else None
        if isinstance(chat_id, str) and chat_id:
            body["chatId"] = chat_id
        return body

    # -- attachments and live events --------------------------------------------------------------

    def _attach(self, session: Session, channel: str, service: str, reply: Reply) -> None:
        chat_id = reply.chat.id
        attached: dict[str, Attachment] = session.attributes.setdefault(ATTACHED, {})
        full = chat_id not in attached and len(attached) >= MAX_CHATS_PER_SESSION
        if session.removed is not None or reply.chat_ended or full:
            # The reply still goes out; live events for this chat do not, and push goes on.
            if chat_id not in self._by_chat:
                self._spawn(self._leave_foreground(chat_id), f"cometd-background-{chat_id}")
            return
        attachment = Attachment(channel, service, reply.chat.secure_key, reply.next_position)
        attached[chat_id] = attachment
        self._by_chat.setdefault(chat_id, {})[session] = attachment
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(), name="cometd-foreground")

    def _lease_end(self) -> int:
        return self._clock.now_ms() + self._lease_ms

    async def _renew(self) -> None:
        """Every third of the lease, keep the attached chats in the foreground a lease longer.

        The turns keep their timetable (each a third of a lease after the one before, not after
        the last renewal finished), so a slow database does not stretch the gaps between them.
        """
        never = asyncio.Event()
        interval_ms = self._lease_ms // 3
        due_ms = self._clock.now_ms() + interval_ms
        while True:
            await self._clock.sleep_until(due_ms, never)
            now_ms = self._clock.now_ms()
            due_ms += interval_ms
            if due_ms < now_ms:  # far behind (a suspended process): from now on
                due_ms = now_ms + interval_ms
            try:
                # A chat followed live is not idle (chat.idle_chat_timeout_s).
                await self._chats.touch_live(list(self._by_chat))
                await self._pipeline.renew_foreground(list(self._by_chat), self._lease_end())
            except Exception as exc:  # the database is away: the next turn tries again
                log.warning(
                    "foreground lease not renewed: %s",
                    exc,
                    extra={"action": "cometd_foreground_renewal_failed"},
                )

    async def _leave_foreground(self, chat_id: str) -> None:
        try:
            await self._chats.leave_foreground(chat_id)
        except Exception as exc:  # the lease runs out by itself
            log.warning(
                "chat %s not handed back to push: %s",
                chat_id,
                exc,
                extra={"action": "cometd_background_failed", "chat_id": chat_id},
            )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _detach(self, session: Session, chat_id: str) -> None:
        sessions = self._by_chat.get(chat_id)
        if sessions is None:
            return
        sessions.pop(session, None)
        if not sessions:
            del self._by_chat[chat_id]

    def _has_room(self, session: Session) -> bool:
        """Whether the session's queue takes one more envelope of events (back-pressure)."""
        return (
            session.queued_bytes + self._page_bytes <= session.max_queued_bytes
            and session.queued < max(session.max_queued_messages // 2, 1)
        )

    async def _pump(self, chat_id: str) -> None:
        """Deliver new events of ``chat_id`` to its sessions until no commit is left unread.

        A session whose queue has no room for another envelope is skipped (its position stays)
        and marked waiting; ``drained`` runs the pump again for it.
        """
        try:
            while True:
                self._dirty.discard(chat_id)
                sessions = self._by_chat.get(chat_id)
                if not sessions:
                    return
                ready = []
                for attachment_session, attachment in sessions.items():
                    attachment.waiting = not self._has_room(attachment_session)
                    if not attachment.waiting:
                        ready.append(attachment.position)
                if not ready:
                    return  # each waiting session runs the pump again once drained
                first = min(ready)
                state = await self._chats.read_chat(chat_id, first)
                if state.events and state.events[-1].index < state.chat.last_index:
                    self._dirty.add(chat_id)  # a page of max_refresh_events: read on after it
                for session, attachment in list(self._by_chat.get(chat_id, {}).items()):
                    if attachment.waiting or not self._has_room(session):
                        attachment.waiting = True
                        continue
                    if attachment.position < first:  # attached during the read
                        self._dirty.add(chat_id)
                        continue
                    events = [e for e in state.events if e.index >= attachment.position]
                    if not events and not state.chat.ended:
                        continue
                    if events:
                        attachment.position = events[-1].index + 1
                    reply = Reply(
                        chat=state.chat,
                        alias=self._alias,
                        messages=events,
                        next_position=attachment.position,
                        chat_ended=state.chat.ended,
                    )
                    await session.deliver(attachment.channel, reply.to_wire())
                # An ended chat stays attached: its final trigger waits for the session to go
                # to background (acknowledging it with its position) or to vanish.
                if chat_id not in self._dirty:
                    return
        except ChatpushError as exc:
            log.warning(
                "live events of chat %s not delivered: %s",
                chat_id,
                exc,
                extra={"action": "cometd_events_failed", "chat_id": chat_id},
            )
        finally:
            self._running.discard(chat_id)
            self._dirty.discard(chat_id)


def _position(raw: Any) -> int | None:
    if isinstance(raw, bool):
        raise BadRequest(Code.INVALID_PARAMETER, "transcriptPosition must be an integer")
    if isinstance(raw, int):
        raw = str(raw)
    if not isinstance(raw, str):
        raise BadRequest(Code.INVALID_PARAMETER, "transcriptPosition must be an integer")
    position = Form([("transcriptPosition", raw)]).position()
    assert position is None or 0 <= position <= MAX_POSITION
    return position


def _form(data: dict[str, Any]) -> Form:
    """The operation's fields as the REST form reader would have produced them."""
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        if key not in _STRING_FIELDS:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadRequest(Code.INVALID_PARAMETER, f"{key} must be a string")
        pairs.append((key, value))
    if "message" not in data and "text" in data:
        pairs.extend(("message", value) for key, value in list(pairs) if key == "text")
    user_data = data.get("userData")
    if user_data is not None and not (
        isinstance(user_data, dict) and all(isinstance(value, str) for value in user_data.values())
    ):
        raise BadRequest(Code.INVALID_PARAMETER, "userData must be a JSON object of strings")
    for key, value in [*pairs, *(user_data or {}).items()]:
        if "\x00" in key or "\x00" in value:
            raise BadRequest(Code.BAD_ENCODING, "values must not contain NUL characters")
    form = Form(pairs)
    form.user_data = dict(user_data or {})
    return form


CHAT_COMETD = web.AppKey("chat_cometd", ChatOverCometd)


def install(app: web.Application) -> None:
    """Plug the Chat API v2 into the app's Bayeux server and its chat service."""
    settings = app[SETTINGS]
    bridge = ChatOverCometd(
        app[CHATS],
        app[PIPELINE],
        app[CLOCK],
        settings.server.alias,
        int(settings.cometd.foreground_lease_s * 1000),
        app[INSTANCE_ID],
        app[CHAT_CREATE_LIMIT],
        page_queue_bytes(settings),
    )
    app[CHAT_COMETD] = bridge
    server = app[COMETD]
    server.on_service(PREFIX, bridge.handle)
    server.on_disconnect(bridge.going_to_background)
    server.on_session_removed(bridge.session_removed)
    server.on_drained(bridge.drained)
    app[CHATS].on_committed(bridge.committed)
    app.on_shutdown.append(bridge.close)  # before the database closes (cleanup)
