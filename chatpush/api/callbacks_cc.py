"""The contact-centre side's callback API (docs/callbacks.md §4): commands by pull with leases and
acknowledgements, sequenced idempotent events, batched EWT updates, and a callback's state for
operators. ``/api/v1`` conventions: ``X-API-Key``, strict JSON, epoch ms, ``{"errors": [...]}``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chatpush.api.callbacks import CALLBACKS
from chatpush.api.chat_server import json_body
from chatpush.api.push import delivery_json
from chatpush.callbacks.errors import BadParameter
from chatpush.callbacks.service import MAX_PULL, MAX_WAIT_S

MAX_ACK_IDS = 1000


def _int_query(request: web.Request, name: str, low: int, high: int, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":  # empty is absent, as on the chat routes
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not low <= int(raw) <= high:
        raise BadParameter(f"{name} must be an integer from {low} to {high}")
    return int(raw)


async def read_callback(request: web.Request) -> web.Response:
    state = await request.app[CALLBACKS].describe(request.match_info["callback_id"])
    return web.json_response(state)


async def pull_commands(request: web.Request) -> web.Response:
    unknown = set(request.query) - {"service", "limit", "wait_s"}
    if unknown:
        raise BadParameter(f"unknown parameters: {', '.join(sorted(unknown))[:200]}")
    service = request.query.get("service") or None
    if service is not None and len(service) > 200:
        raise BadParameter("service is at most 200 characters")
    limit = _int_query(request, "limit", 1, MAX_PULL, 100)
    wait_s = _int_query(request, "wait_s", 0, MAX_WAIT_S, 0)
    commands = await request.app[CALLBACKS].pull(service, limit, wait_s)
    return web.json_response({"commands": commands})


async def ack_commands(request: web.Request) -> web.Response:
    body: Any = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"ids"} or not isinstance(body["ids"], list):
        raise BadParameter('the body must be {"ids": [...]}')
    ids = body["ids"]
    if len(ids) > MAX_ACK_IDS or not all(isinstance(each, str) and len(each) <= 64 for each in ids):
        raise BadParameter(f"ids: at most {MAX_ACK_IDS} command ids (strings)")
    found = await request.app[CALLBACKS].ack(ids)
    unknown = [each for each in dict.fromkeys(ids) if each not in set(found)]
    return web.json_response({"acknowledged": len(found), "unknown": unknown})


async def post_event(request: web.Request) -> web.Response:
    body: Any = await json_body(request)
    answer = await request.app[CALLBACKS].event(request.match_info["callback_id"], body)
    return web.json_response(
        {
            "callbackId": answer.callback_id,
            "seq": answer.seq,
            "duplicate": answer.duplicate,
            "state": answer.state,
            "reason": answer.reason,
        }
    )


async def post_ewt(request: web.Request) -> web.Response:
    body: Any = await json_body(request)
    applied, ignored = await request.app[CALLBACKS].ewt(body)
    return web.json_response({"applied": applied, "ignored": ignored})


MAX_ROW_ID = 2**63 - 1


async def read_deliveries(request: web.Request) -> web.Response:
    raw = request.query.get("after") or "0"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or int(raw) > MAX_ROW_ID:
        raise BadParameter(f"after must be an integer from 0 to {MAX_ROW_ID}")
    rows = await request.app[CALLBACKS].deliveries(request.match_info["callback_id"], int(raw))
    return web.json_response(
        {"deliveries": [delivery_json(row_id, record) for row_id, record in rows]}
    )
