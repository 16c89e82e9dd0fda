"""Raw Bayeux over HTTP for the protocol tests: what a client library would send, by hand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.cometd.conftest import PATH

Client = TestClient[web.Request, web.Application]
Reply = list[dict[str, Any]]


async def post(
    http: Client,
    body: Any,
    *,
    path: str = PATH,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Reply:
    """POST a batch (or raw bytes); check the invariants every reply must keep."""
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {"Content-Type": "application/json", **(headers or {})}
    response = await http.post(path, data=data, headers=headers)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    assert "Set-Cookie" not in response.headers
    reply = await response.json()
    assert isinstance(reply, list) and reply, reply
    return reply


async def handshake(http: Client, **fields: Any) -> str:
    message = {
        "channel": "/meta/handshake",
        "id": "h",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling", "websocket"],
        **fields,
    }
    [reply] = await post(http, [message])
    assert reply["successful"] is True, reply
    return str(reply["clientId"])


def connect_message(client_id: str, message_id: str = "c", **fields: Any) -> dict[str, Any]:
    return {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
        "id": message_id,
        **fields,
    }


async def connect(http: Client, client_id: str, message_id: str = "c", **fields: Any) -> Reply:
    return await post(http, [connect_message(client_id, message_id, **fields)])


def start_connect(
    http: Client, client_id: str, message_id: str = "c", **fields: Any
) -> asyncio.Task[Reply]:
    """A connect that the server is expected to hold, as a task."""
    return asyncio.create_task(connect(http, client_id, message_id, **fields))


async def subscribe(
    http: Client, client_id: str, subscription: Any, message_id: str = "s"
) -> Reply:
    message = {
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": subscription,
        "id": message_id,
    }
    return await post(http, [message])


async def publish(
    http: Client, client_id: str, channel: str, data: Any, message_id: str = "p"
) -> Reply:
    message = {"channel": channel, "clientId": client_id, "data": data, "id": message_id}
    return await post(http, [message])


def events(reply: Reply) -> Reply:
    """The delivered messages of a reply (those with data and no successful flag)."""
    return [m for m in reply if "data" in m and "successful" not in m]


def meta(reply: Reply, channel: str) -> dict[str, Any]:
    [found] = [m for m in reply if m["channel"] == channel and "successful" in m]
    return found
