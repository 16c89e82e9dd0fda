"""The chat-server side API: JSON over HTTP for agents, bots and chat servers.

Every call but the OpenAPI document needs a key in ``X-API-Key`` with the scope of its route
(chatpush/api/access.py). The document itself is
``chatpush/api/openapi.json``; tests check that live responses match it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chatpush.api import access
from chatpush.api.keys import CHATS, KEYS
from chatpush.chat.model import EVENT_TYPES, ChatRecord, PartyRecord
from chatpush.errors import BadRequest, Code

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_LIST_LIMIT = 1000
MAX_TRANSCRIPT_PAGE = 1000
MAX_INT32 = 2**31 - 1
MAX_TIME_MS = 2**62

_ASCII_INT = re.compile(r"-?[0-9]{1,20}")

# Participants join and leave through the parties routes, never as plain events.
SERVER_EVENT_TYPES = tuple(
    kind for kind in EVENT_TYPES if kind not in ("ParticipantJoined", "ParticipantLeft")
)

M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    # strict: a JSON string is never taken for an integer (or true for 1), so the documented JSON
    # Schema (openapi.json) says exactly what is accepted.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class AddParty(_Body):
    type: Literal["Agent", "Supervisor", "External"]
    nickname: Annotated[str, Field(min_length=1)]


class AddEvent(_Body):
    participant_id: int = Field(alias="participantId", ge=1, le=MAX_INT32)
    # Checked by hand (add_event) for a clearer message; the enum is for the documented schema.
    type: str = Field(json_schema_extra={"enum": list(SERVER_EVENT_TYPES)})
    text: str | None = None
    message_type: str | None = Field(None, alias="messageType")
    user_data: dict[str, str] | None = Field(None, alias="userData")

    @field_validator("participant_id", mode="before")
    @classmethod
    def _integral_number(cls, value: Any) -> Any:
        # JSON Schema's integer is any number without a fractional part: 2.0 is the integer 2.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


def chat_summary(chat: ChatRecord) -> dict[str, Any]:
    return {
        "chatId": chat.id,
        "serviceName": chat.service_name,
        "status": "ended" if chat.ended else "active",
        "createdAt": chat.created_at_ms,
        "endedAt": chat.ended_at_ms,
        "lastClientRequestAt": chat.last_client_request_ms,
        "lastIndex": chat.last_index,
        "clientPosition": chat.client_position,
        "subject": chat.subject,
        "emailAddress": chat.email_address,
        "userData": chat.user_data,
    }


def party_wire(party: PartyRecord) -> dict[str, Any]:
    return {
        "participantId": party.participant_id,
        "type": party.type,
        "nickname": party.nickname,
        "joinedAt": party.joined_at_ms,
        "leftAt": party.left_at_ms,
    }


@web.middleware
async def api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a call whose key lacks the scope of its route (chatpush/api/access.py)."""
    access.authorize(request.app[KEYS], request)
    return await handler(request)


async def json_body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(Code.BODY_TOO_LARGE, "request body is too large") from None
    try:
        payload = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(Code.BAD_ENCODING, "body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(Code.INVALID_PARAMETER, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(Code.INVALID_PARAMETER, "body is nested too deeply") from None
    except ValueError:
        # json turns a number of more than 4,300 digits into this (Python's int_max_str_digits);
        # its message is not passed on, as it may quote the body.
        raise BadRequest(
            Code.INVALID_PARAMETER, "body holds a number with too many digits"
        ) from None
    _check_strings(payload)
    return payload


def _check_strings(payload: Any) -> None:
    """Refuse NUL characters and lone surrogates (``\\ud800``) anywhere: no database stores them."""
    pending = [payload]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise BadRequest(Code.BAD_ENCODING, "strings must not contain NUL characters")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(
                    Code.BAD_ENCODING, "strings must not contain lone surrogate escapes"
                ) from None


def _validated(model: type[M], payload: Any) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadRequest(Code.INVALID_PARAMETER, f"{where}: {first['msg']}") from None


def _int_param(
    request: web.Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
    if not _ASCII_INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequest(Code.INVALID_PARAMETER, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _path_int(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not _ASCII_INT.fullmatch(raw) or not 1 <= int(raw) <= MAX_INT32:
        raise BadRequest(Code.INVALID_PARAMETER, f"{name} must be an integer from 1 to {MAX_INT32}")
    return int(raw)


async def list_chats(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status not in (None, "active", "ended"):
        raise BadRequest(Code.INVALID_PARAMETER, "status must be active or ended")
    limit = _int_param(request, "limit", 100, 1, MAX_LIST_LIMIT)
    assert limit is not None
    chats = await request.app[CHATS].list_chats(
        service_name=request.query.get("service") or None,
        ended=None if status is None else status == "ended",
        created_after_ms=_int_param(request, "createdAfter", None, 0, MAX_TIME_MS),
        created_before_ms=_int_param(request, "createdBefore", None, 0, MAX_TIME_MS),
        after_id=request.query.get("after") or None,
        limit=limit,
    )
    body: dict[str, Any] = {"chats": [chat_summary(chat) for chat in chats]}
    body["next"] = chats[-1].id if len(chats) == limit else None
    return web.json_response(body)


async def read_chat(request: web.Request) -> web.Response:
    from_position = _int_param(request, "fromPosition", 1, 0, MAX_INT32)
    assert from_position is not None
    limit = _int_param(request, "limit", MAX_TRANSCRIPT_PAGE, 1, MAX_TRANSCRIPT_PAGE)
    state = await request.app[CHATS].read_chat(request.match_info["chat_id"], from_position, limit)
    events = state.events
    more = bool(events) and events[-1].index < state.chat.last_index
    return web.json_response(
        {
            "chat": chat_summary(state.chat),
            "parties": [party_wire(party) for party in state.parties],
            "transcript": [event.to_wire() for event in events],
            "nextPosition": events[-1].index + 1 if more else None,
        }
    )


async def add_party(request: web.Request) -> web.Response:
    body = _validated(AddParty, await json_body(request))
    party, event = await request.app[CHATS].add_party(
        request.match_info["chat_id"], party_type=body.type, nickname=body.nickname
    )
    return web.json_response({"party": party_wire(party), "event": event.to_wire()}, status=201)


async def remove_party(request: web.Request) -> web.Response:
    event = await request.app[CHATS].remove_party(
        request.match_info["chat_id"], _path_int(request, "participant_id")
    )
    return web.json_response({"event": event.to_wire()})


async def add_event(request: web.Request) -> web.Response:
    body = _validated(AddEvent, await json_body(request))
    if body.type not in EVENT_TYPES:
        raise BadRequest(
            Code.INVALID_PARAMETER, f"type: must be one of {', '.join(SERVER_EVENT_TYPES)}"
        )
    event = await request.app[CHATS].add_event(
        request.match_info["chat_id"],
        participant_id=body.participant_id,
        event_type=body.type,
        text=body.text,
        message_type=body.message_type,
        user_data=body.user_data,
    )
    return web.json_response({"event": event.to_wire()}, status=201)


async def end_chat(request: web.Request) -> web.Response:
    chat = await request.app[CHATS].end_chat(request.match_info["chat_id"])
    return web.json_response({"chat": chat_summary(chat)})


_OPENAPI = resources.files("chatpush.api").joinpath("openapi.json")


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=_OPENAPI.read_bytes(), content_type="application/json")
