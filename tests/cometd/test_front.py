"""The lean long-polling front (chatpush/cometd/front.py) over raw sockets: what it answers
itself, what it hands to aiohttp, keep-alive, pipelining and shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatpush.cometd import FRONT, Front, Session
from tests.cometd.conftest import LIMITS, PATH, Bayeux, FrontTestServer

Reply = list[dict[str, Any]]


@pytest.fixture
async def front(bayeux: Bayeux) -> AsyncIterator[FrontTestServer]:
    server = FrontTestServer(bayeux.app)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


class Raw:
    """One keep-alive connection, requests written and answers read by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: FrontTestServer) -> Raw:
        assert server.port is not None
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    def send(self, *requests: bytes) -> None:
        self.writer.write(b"".join(requests))

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def reply(self) -> Reply:
        status, headers, body = await self.answer()
        assert status == 200, body
        assert headers["content-type"] == "application/json; charset=utf-8"
        replies: Reply = json.loads(body)
        return replies

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    def close(self) -> None:
        self.writer.close()


def post(batch: Any, *, path: str = PATH, extra: str = "") -> bytes:
    body = json.dumps(batch).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


HANDSHAKE = [
    {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
]


def connect(client_id: str, message_id: str = "c", timeout_ms: int | None = None) -> Any:
    message: dict[str, Any] = {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
        "id": message_id,
    }
    if timeout_ms is not None:
        message["advice"] = {"timeout": timeout_ms}
    return [message]


def subscribe(client_id: str, channel: str) -> Any:
    return [{"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}]


async def session(raw: Raw, channel: str = "/chat/room") -> str:
    """Handshake, subscribe and the first connect (answered at once): a connect may be held."""
    raw.send(post(HANDSHAKE))
    [shake] = await raw.reply()
    client_id = str(shake["clientId"])
    raw.send(post(subscribe(client_id, channel)), post(connect(client_id, "c0", 0)))
    [subscribed] = await raw.reply()
    assert subscribed["successful"] is True
    [first] = await raw.reply()
    assert first["successful"] is True
    return client_id


async def test_long_polling_is_answered_without_aiohttp_and_held_connects_get_messages(
    front: FrontTestServer,
) -> None:
    listener, sender = await Raw.open(front), await Raw.open(front)
    client_id = await session(listener)
    other = await session(sender)
    listener.send(post(connect(client_id, "c1")))
    await asyncio.sleep(0.05)  # held: nothing to send yet
    sender.send(post([{"channel": "/chat/room", "clientId": other, "data": {"n": 1}}]))
    [published] = await sender.reply()
    assert published["successful"] is True
    message, connected = await listener.reply()
    assert message == {"channel": "/chat/room", "data": {"n": 1}}
    assert connected["id"] == "c1" and connected["successful"] is True
    assert front.runner is not None and front.runner.server is not None
    assert front.runner.server.requests_count == 0  # no request went through aiohttp
    listener.close()
    sender.close()


async def test_pipelined_requests_are_answered_in_order(front: FrontTestServer) -> None:
    raw = await Raw.open(front)
    client_id = await session(raw)
    # A held connect, then a subscribe written behind it: answered after the connect is.
    raw.send(post(connect(client_id, "held")), post(subscribe(client_id, "/chat/other")))
    await asyncio.sleep(0.1)
    other = await Raw.open(front)
    other_id = await session(other)
    other.send(post([{"channel": "/chat/room", "clientId": other_id, "data": 2}]))
    await other.reply()
    [_message, connected] = await raw.reply()
    assert connected["id"] == "held"
    [subscribed] = await raw.reply()
    assert subscribed["channel"] == "/meta/subscribe" and subscribed["successful"] is True
    raw.close()
    other.close()


async def test_other_requests_go_to_aiohttp_on_the_same_connection(
    front: FrontTestServer,
) -> None:
    raw = await Raw.open(front)
    await session(raw)
    raw.send(b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n")
    status, _headers, _body = await raw.answer()
    assert status == 404
    raw.send(post(HANDSHAKE))  # aiohttp's now, and still CometD
    [shake] = await raw.reply()
    assert shake["successful"] is True
    assert front.runner is not None and front.runner.server is not None
    assert front.runner.server.requests_count == 2
    raw.close()


async def test_a_chunked_body_and_a_body_sent_late_are_served(front: FrontTestServer) -> None:
    body = json.dumps(HANDSHAKE).encode()
    chunked = await Raw.open(front)
    chunked.send(
        f"POST {PATH} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    [shake] = await chunked.reply()
    assert shake["successful"] is True
    late = await Raw.open(front)
    request = post(HANDSHAKE)
    late.send(request[:-10])
    await asyncio.sleep(0.05)
    late.send(request[-10:])
    [shake] = await late.reply()
    assert shake["successful"] is True
    chunked.close()
    late.close()


async def test_connection_close_is_honoured_and_bad_bodies_are_400(
    front: FrontTestServer,
) -> None:
    raw = await Raw.open(front)
    raw.send(post("not a batch"))
    status, headers, body = await raw.answer()
    assert status == 400 and headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body)[0]["successful"] is False
    raw.send(post(HANDSHAKE, extra="Connection: close\r\n"))
    status, headers, _body = await raw.answer()
    assert status == 200 and headers["connection"] == "close"
    assert await raw.closed()


async def test_lean_answers_carry_the_headers_aiohttp_writes(
    front: FrontTestServer, bayeux: Bayeux
) -> None:
    lean = await Raw.open(front)
    lean.send(post(HANDSHAKE))
    _status, lean_headers, _body = await lean.answer()
    # The same request through aiohttp: chunked, so the front hands it over.
    body = json.dumps(HANDSHAKE).encode()
    plain = await Raw.open(front)
    plain.send(
        f"POST {PATH} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    _status, plain_headers, _body = await plain.answer()
    assert set(lean_headers) == set(plain_headers)
    for name in ("content-type", "server"):
        assert lean_headers[name] == plain_headers[name]
    lean.close()
    plain.close()


async def test_shutdown_answers_held_connects_then_closes(bayeux: Bayeux) -> None:
    server = FrontTestServer(bayeux.app)
    await server.start_server()
    raw = await Raw.open(server)
    client_id = await session(raw)
    raw.send(post(connect(client_id, "held")))
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(server.close())
    [connected] = await raw.reply()
    assert connected["id"] == "held" and connected["successful"] is True
    assert await raw.closed()
    await closing


async def test_with_cors_open_requests_with_origin_go_to_aiohttp(bayeux: Bayeux) -> None:
    bayeux.app[FRONT] = Front(bayeux.server, PATH, LIMITS.max_message_bytes, cors=True)
    server = FrontTestServer(bayeux.app)
    await server.start_server()
    try:
        lean = await Raw.open(server)
        lean.send(post(HANDSHAKE))
        _status, headers, _body = await lean.answer()
        assert headers["vary"] == "Origin"  # as aiohttp's CORS marks every answer on the path
        browser = await Raw.open(server)
        browser.send(post(HANDSHAKE, extra="Origin: https://shop.example.com\r\n"))
        [shake] = await browser.reply()
        assert shake["successful"] is True
        assert server.runner is not None and server.runner.server is not None
        assert server.runner.server.requests_count == 1  # the browser's, through aiohttp
        lean.close()
        browser.close()
    finally:
        await server.close()


async def test_service_handlers_run_in_a_task_and_see_the_answer(bayeux: Bayeux) -> None:
    async def timed(session: Session, message: dict[str, Any]) -> None:
        async with asyncio.timeout(1):  # needs a task (as a database driver's connect does)
            await asyncio.sleep(0)
        await session.deliver(message["channel"], {"timed": message["data"]})

    bayeux.server.on_service("/service/timed", timed)
    server = FrontTestServer(bayeux.app)
    await server.start_server()
    try:
        raw = await Raw.open(server)
        client_id = await session(raw)
        raw.send(post([{"channel": "/service/timed", "clientId": client_id, "data": 7}]))
        [published] = await raw.reply()
        assert published["successful"] is True
        raw.send(post(connect(client_id, "c1")))
        message, connected = await raw.reply()
        assert message == {"channel": "/service/timed", "data": {"timed": 7}}
        assert connected["successful"] is True
        raw.close()
    finally:
        await server.close()
