"""Chat API v2 over REST: POST forms in, the envelope out (docs/chat-api.md, chat_openapi.json)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources

from aiohttp import web

from chatpush.api.forms import Form, read_form
from chatpush.api.keys import CHATS
from chatpush.api.ratelimit import CHAT_CREATE_LIMIT
from chatpush.chat.model import Reply
from chatpush.chat.service import ChatService
from chatpush.errors import Code, NotFound
from chatpush.push.subscription import push_key_hints

log = logging.getLogger("chatpush.api")

Operation = Callable[[ChatService, str, str, str | None, Form], Awaitable[Reply]]


async def _send(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.send_message(
        service,
        chat_id,
        key,
        message=form.get("message"),
        message_type=form.get("messageType") or None,
        position=form.position(),
    )


async def _refresh(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.refresh(service, chat_id, key, form.position())


async def _start_typing(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.start_typing(service, chat_id, key, form.get("message"))


async def _stop_typing(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.stop_typing(service, chat_id, key, form.get("message"))


async def _disconnect(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.disconnect(service, chat_id, key)


async def _push_url(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.push_url(service, chat_id, key, form.get("pushUrl"))


async def _update_nickname(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.update_nickname(service, chat_id, key, form.get("nickname"))


async def _custom_notice(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.custom_notice(service, chat_id, key, form.get("message"))


async def _update_data(
    chats: ChatService, service: str, chat_id: str, key: str | None, form: Form
) -> Reply:
    return await chats.update_data(service, chat_id, key, form.user_data)


OPERATIONS: dict[str, Operation] = {
    "send": _send,
    "refresh": _refresh,
    "startTyping": _start_typing,
    "stopTyping": _stop_typing,
    "disconnect": _disconnect,
    "pushUrl": _push_url,
    "updateNickname": _update_nickname,
    "customNotice": _custom_notice,
    "updateData": _update_data,
}


async def request_chat_with(
    chats: ChatService,
    service: str,
    form: Form,
    *,
    live_until_ms: int | None = None,
    top_level: Iterable[str] | None = None,
) -> Reply:
    """Request Chat from its fields, over REST or CometD alike. ``top_level``: the names the
    client sent beside ``userData`` (default: the form's own), looked at for push keys."""
    reply = await chats.request_chat(
        service,
        nickname=form.get("nickname") or None,
        first_name=form.get("firstName") or None,
        last_name=form.get("lastName") or None,
        subject=form.get("subject") or None,
        email_address=form.get("emailAddress") or None,
        user_data=form.user_data,
        live_until_ms=live_until_ms,
    )
    hints = push_key_hints(form.user_data, form.values if top_level is None else top_level)
    if hints:
        reply.warnings = hints
        log.warning(
            "Request Chat of chat %s: %s",
            reply.chat.id,
            " | ".join(hints),
            extra={"action": "push_key_hint", "chat_id": reply.chat.id, "service": service},
        )
    return reply


async def request_chat(request: web.Request) -> web.Response:
    # Counted before the body is read: every attempt takes a token, a refused one reads nothing.
    request.app[CHAT_CREATE_LIMIT].check()
    form = await read_form(request)
    reply = await request_chat_with(request.app[CHATS], request.match_info["service"], form)
    return web.json_response(reply.to_wire())


async def chat_operation(request: web.Request) -> web.Response:
    operation = OPERATIONS.get(request.match_info["operation"])
    if operation is None:
        raise NotFound(
            Code.INVALID_PARAMETER, f"unknown operation {request.match_info['operation']!r}"
        )
    form = await read_form(request)
    reply = await operation(
        request.app[CHATS],
        request.match_info["service"],
        request.match_info["chat_id"],
        form.get("secureKey"),
        form,
    )
    return web.json_response(reply.to_wire())


_OPENAPI = resources.files("chatpush.api").joinpath("chat_openapi.json")


async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI description of the Chat API v2 (tests check live answers against it)."""
    return web.Response(body=_OPENAPI.read_bytes(), content_type="application/json")
