"""Agent alerts' HTTP edge (docs/agents.md): the device registry, the webhook intake, "answered
on this device", and a conversation's rings and trail. Parse, authorize (routes.py), call
:class:`chatpush.agents.service.AgentAlerts`, answer."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chatpush.agents.service import AgentAlerts
from chatpush.agents.stream import EventStream
from chatpush.api.chat_server import json_body
from chatpush.errors import BadRequest, Code
from chatpush.store.agents import Device, Ring, TrailEntry

AGENTS = web.AppKey("agents", AgentAlerts)
AGENT_STREAM = web.AppKey("agent_stream", EventStream)
"""Present when ``agents.stream_url`` is set (and there is an outbox)."""
MAX_ID = 2**63 - 1


def device_wire(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "userId": device.user_id,
        "platform": device.device_type,
        "token": device.token,
        "topic": device.topic,
        "group": device.group_name,
        "provider": device.provider,
        "createdAt": device.created_at_ms,
    }


def ring_wire(ring: Ring) -> dict[str, Any]:
    return {
        "userId": ring.user_id,
        "deviceId": ring.device_id,
        "platform": ring.device_type,
        "messageId": ring.message_id,
        "rungAt": ring.rung_at_ms,
        "endedAt": ring.cancelled_at_ms,
    }


def trail_wire(row_id: int, entry: TrailEntry) -> dict[str, Any]:
    return {
        "id": row_id,
        "at": entry.at_ms,
        "userId": entry.user_id,
        "action": entry.action,
        "deviceId": entry.device_id,
        "platform": entry.device_type,
        "reason": entry.reason,
        "messageId": entry.message_id,
    }


async def register_device(request: web.Request) -> web.Response:
    registered = await request.app[AGENTS].register(
        request.match_info["user_id"], await json_body(request)
    )
    assert registered.device is not None
    body = {**device_wire(registered.device), "replaced": registered.replaced}
    return web.json_response(body, status=201)


async def list_devices(request: web.Request) -> web.Response:
    devices = await request.app[AGENTS].devices(request.match_info["user_id"])
    return web.json_response({"devices": [device_wire(device) for device in devices]})


async def delete_device(request: web.Request) -> web.Response:
    device_id = request.match_info["device_id"]
    await request.app[AGENTS].delete(request.match_info["user_id"], device_id)
    return web.json_response({"id": device_id, "deleted": True})


async def agent_events(request: web.Request) -> web.Response:
    body = await json_body(request)
    batch = body if isinstance(body, list) else [body]
    service = request.app[AGENTS]
    intake = await service.accept(service.parse(batch))
    return web.json_response(intake.wire())


async def answered(request: web.Request) -> web.Response:
    cancelled = await request.app[AGENTS].answered(
        request.match_info["user_id"],
        request.match_info["conversation_id"],
        await json_body(request),
    )
    return web.json_response({"cancelled": cancelled})


async def read_conversation(request: web.Request) -> web.Response:
    raw_after = request.query.get("after") or "0"
    if not (raw_after.isascii() and raw_after.isdigit() and len(raw_after) <= 19) or (
        int(raw_after) > MAX_ID
    ):
        raise BadRequest(Code.INVALID_PARAMETER, f"after must be an integer from 0 to {MAX_ID}")
    conversation_id = request.match_info["conversation_id"]
    view = await request.app[AGENTS].conversation(conversation_id, int(raw_after))
    return web.json_response(
        {
            "conversationId": conversation_id,
            "rings": [ring_wire(ring) for ring in view.rings],
            "trail": [trail_wire(row_id, entry) for row_id, entry in view.trail],
        }
    )
