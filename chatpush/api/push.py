"""Push state for the chat-server side and operators: subscriptions, the delivery trail, nodes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chatpush.api.keys import DATABASE, METRICS, ROUTER
from chatpush.errors import BadRequest, Code, NotFound
from chatpush.store import chat_push, subscriptions
from chatpush.store.trail import DeliveryRecord

MAX_ID = 2**63 - 1


def subscription_wire(subscription: subscriptions.SubscriptionRecord) -> dict[str, Any]:
    request, state = subscription.request, subscription.state
    trigger = state.outstanding
    return {
        "deviceId": request.device_id,
        "deviceType": request.device_type,
        "nodeGroup": request.group_name,
        "provider": request.provider,
        "debug": request.debug,
        "notifyRequestor": request.notify_requestor,
        "includePayload": request.include_payload,
        "reliable": request.reliable,
        "clientChannel": request.client_channel,
        "status": state.status,
        "acknowledgedPosition": state.ack_position,
        "outstandingTrigger": (
            None
            if trigger is None
            else {
                "notifyPosition": trigger.position,
                "notifyAttempt": trigger.attempt,
                "chatEnded": trigger.final,
                "held": trigger.held,
            }
        ),
        "nextResendAt": state.wake_at_ms,
        "foregroundUntil": state.foreground_until_ms,
        "pinnedNode": subscription.pinned_node,
        "createdAt": subscription.created_at_ms,
    }


async def read_subscription(request: web.Request) -> web.Response:
    chat_id = request.match_info["chat_id"]
    found = await request.app[DATABASE].read(chat_push.subscription_of, chat_id)
    if found is None:
        raise NotFound(Code.UNKNOWN_CHAT, f"unknown chat {chat_id!r}")
    if found.subscription is None:
        raise NotFound(Code.UNKNOWN_CHAT, f"chat {chat_id!r} has no push subscription")
    body = subscription_wire(found.subscription)
    body["queued"] = [
        {
            "kind": row.kind,
            "notifyPosition": row.notify_position,
            "notifyAttempt": row.attempt,
            "parked": row.due_at_ms is None,
            "queuedAt": row.created_at_ms,
        }
        for row in found.queued
    ]
    return web.json_response(body)


async def read_deliveries(request: web.Request) -> web.Response:
    chat_id = request.match_info["chat_id"]
    raw_after = request.query.get("after") or "0"
    # At most 19 digits before int(): a string of more than 4,300 is a ValueError.
    if not (raw_after.isascii() and raw_after.isdigit() and len(raw_after) <= 19) or (
        int(raw_after) > MAX_ID
    ):
        raise BadRequest(Code.INVALID_PARAMETER, f"after must be an integer from 0 to {MAX_ID}")
    rows = await request.app[DATABASE].read(chat_push.deliveries_of, chat_id, int(raw_after))
    if rows is None:
        raise NotFound(Code.UNKNOWN_CHAT, f"unknown chat {chat_id!r}")
    return web.json_response(
        {"deliveries": [delivery_json(row_id, record) for row_id, record in rows]}
    )


async def list_nodes(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    await router.refresh()
    pinned = await request.app[DATABASE].read(subscriptions.pinned_chats)
    return web.json_response(
        {
            "nodes": [
                {
                    "name": node.name,
                    "nodeGroup": node.group_name,
                    "local": node.local,
                    "drained": node.drained,
                    "available": node.available,
                    "heartbeatAt": node.heartbeat_at_ms,
                    "pinnedChats": pinned.get(node.name, []),
                }
                for node in router.nodes()
            ]
        }
    )


async def _set_drained(request: web.Request, drained: bool) -> web.Response:
    name = request.match_info["node"]
    if not await request.app[ROUTER].set_drained(name, drained):
        raise NotFound(Code.INVALID_PARAMETER, f"unknown node {name!r}")
    return web.json_response({"name": name, "drained": drained})


async def drain_node(request: web.Request) -> web.Response:
    return await _set_drained(request, True)


async def undrain_node(request: web.Request) -> web.Response:
    return await _set_drained(request, False)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text format; the scrape-time gauges are computed now."""
    registry = request.app[METRICS]
    await registry.refresh()
    return web.Response(text=registry.render(), content_type="text/plain")


def delivery_json(row_id: int, record: DeliveryRecord) -> dict[str, Any]:
    """One row of a delivery trail as the API shows it (a chat's, a callback's)."""
    return {
        "id": row_id,
        "at": record.at_ms,
        "node": record.node,
        "nodeGroup": record.group_name,
        "deviceType": record.device_type,
        "kind": record.kind,
        "notifyAttempt": record.attempt,
        "notifyPosition": record.notify_position,
        "outcome": record.outcome,
        "httpStatus": record.http_status,
        "error": record.error,
        "latencyMs": record.latency_ms,
        "failure": record.failure,
        "retryAfterMs": record.retry_after_ms,
    }
