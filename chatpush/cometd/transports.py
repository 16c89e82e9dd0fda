"""The two Bayeux transports on aiohttp: long-polling (``POST``) and websocket (``GET`` upgrade).

Long-polling: ``POST <path>`` and ``POST <path>/*`` (the JavaScript client appends
``/handshake``, ``/connect``...). The handler coroutine itself holds a connect. Replies are HTTP
200 ``application/json``, always a non-empty array; a body that cannot be read as Bayeux messages
(not JSON, not messages, too large) gets HTTP 400 with a one-element error array, so that no
client mistakes it for an answer. No cookie is ever set or required.

Websocket: ``GET <path>`` with ``Upgrade: websocket``; every frame is a batch and gets one reply
frame. Frames are read and answered in order, except that a connect which must wait is answered
when released (``BayeuxServer.hold``: a callback, no task while it waits), so a held connect
never delays other replies. (Keeping the other messages in
order keeps a client's chat operations in the order it sent them.) aiohttp pings every
``WEBSOCKET_HEARTBEAT_S`` so that sockets of vanished clients are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from chatpush.addresses import TrustedProxies
from chatpush.cometd import protocol
from chatpush.cometd.session import Exchange

log = logging.getLogger("chatpush.cometd")

WEBSOCKET_HEARTBEAT_S = 60.0
FRAME_HARD_LIMIT_FACTOR = 4
"""Frames up to this many times ``max_message_bytes`` get a 413 reply; longer ones close the
socket (aiohttp has to buffer a frame whole before we see it)."""
META_TAILS = ("connect", "handshake", "subscribe", "unsubscribe", "disconnect")
"""What clients append to the path (the JavaScript client's ``appendMessageTypeToURL``): a
request with one meta message goes to ``<path>/connect`` and so on."""
SHUTDOWN_GRACE_S = 1.0
"""How long a stop waits for released connects to be answered before closing the sockets."""


class Endpoint(Protocol):
    """What the transports need of the Bayeux server (``server.py``, which imports this module
    to mount them: the transports know the server only by this shape)."""

    client_address: Callable[[web.BaseRequest], str]
    proxies: TrustedProxies

    def hold(self, exchange: Exchange, answer: Callable[[], None]) -> None: ...

    def answers_at_once(self, messages: list[Any]) -> bool: ...

    async def process(
        self, messages: list[Any], transport: str, address: str | Callable[[], str]
    ) -> Exchange: ...

    async def wait(self, exchange: Exchange) -> None: ...

    def abandon(self, exchange: Exchange) -> None: ...

    def render(self, exchange: Exchange) -> str: ...

    def count_bad_request(self, error: str, transport: str) -> None: ...

    def release_held_connects(self) -> None: ...


def add_routes(
    app: web.Application, server: Endpoint, path: str, *, max_message_bytes: int
) -> None:
    transports = _Transports(server, max_message_bytes)
    base = path.rstrip("/")
    app.router.add_post(path, transports.long_polling)
    for tail in META_TAILS:  # plain routes: found by one look-up, no pattern to match
        app.router.add_post(f"{base}/{tail}", transports.long_polling)
    app.router.add_post(base + "/{tail:.*}", transports.long_polling)
    app.router.add_get(path, transports.websocket)
    app.on_shutdown.append(transports.close_sockets)


_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
"""What ``web.Response(text=..., content_type="application/json")`` sends, without parsing the
content type again for every reply."""


def _json(text: str, status: int = 200) -> web.Response:
    return web.Response(body=text.encode("utf-8"), status=status, headers=_JSON_HEADERS)


class _Socket:
    """One websocket: serialized sends, and its held connects (no task of their own: each is
    answered from a callback when released, by a task that lives only for the send)."""

    def __init__(self, server: Endpoint, ws: web.WebSocketResponse, address: str) -> None:
        self._server = server
        self.ws = ws
        self.address = address
        """The client's address, taken once at the upgrade."""
        self._send_lock = asyncio.Lock()
        self._held: dict[int, Exchange] = {}
        """Held connects by ``id`` (an exchange is not hashable)."""
        self._sending: set[asyncio.Task[None]] = set()

    async def send(self, text: str) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_str(text)

    def hold(self, exchange: Exchange) -> None:
        self._held[id(exchange)] = exchange
        self._server.hold(exchange, functools.partial(self._released, exchange))

    def _released(self, exchange: Exchange) -> None:
        self._held.pop(id(exchange), None)
        if self.ws.closed:  # the queue stays for the client's next connect
            return
        task = asyncio.create_task(
            self.send(self._server.render(exchange)), name="cometd-ws-connect"
        )
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def finish_held(self, timeout_s: float) -> None:
        """After the server released every held connect: let their answers be sent."""
        await asyncio.sleep(0)  # the release callbacks run first
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=timeout_s)

    async def abandon(self) -> None:
        """The socket closed: stop holding its connects (their queues stay for the client's
        next connect) and stop the answers being sent."""
        for exchange in self._held.values():
            self._server.abandon(exchange)
        self._held.clear()
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)


class _Transports:
    def __init__(self, server: Endpoint, max_message_bytes: int) -> None:
        self._server = server
        self._limit = max_message_bytes
        self._sockets: set[_Socket] = set()

    def _refuse(self, error: str, transport: str) -> str:
        self._server.count_bad_request(error, transport)
        return protocol.error_batch(error)

    async def long_polling(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        if body is None:
            return _json(self._refuse(protocol.MESSAGE_TOO_LARGE, protocol.LONG_POLLING), 400)
        try:
            messages = protocol.decode_batch(body)
        except protocol.BatchError as exc:
            return _json(self._refuse(exc.error, protocol.LONG_POLLING), 400)
        server = self._server
        exchange = await server.process(
            messages, protocol.LONG_POLLING, lambda: server.client_address(request)
        )
        if exchange.hold:
            await self._server.wait(exchange)
            if request.transport is None or request.transport.is_closing():
                # The client went away while we held its connect: keep its queue for its next
                # connect rather than draining it into a closed connection.
                return _json(protocol.error_batch("408::connection_closed"))
        return _json(self._server.render(exchange))

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None when it is longer than the limit (read no further than that)."""
        length = request.content_length
        if length is not None:
            if length > self._limit:
                return None
            try:
                return await request.content.readexactly(length)
            except asyncio.IncompleteReadError as exc:  # the client went away mid-body
                return exc.partial
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > self._limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=self._limit * FRAME_HARD_LIMIT_FACTOR, heartbeat=WEBSOCKET_HEARTBEAT_S
        )
        if not ws.can_prepare(request).ok:
            error = "400::websocket_upgrade_required"
            return _json(self._refuse(error, protocol.WEBSOCKET), 400)
        await ws.prepare(request)
        socket = _Socket(self._server, ws, self._server.client_address(request))
        self._sockets.add(socket)
        try:
            async for frame in ws:
                if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._frame(socket, frame.data)
                else:  # ERROR: a frame over the hard limit, or a protocol violation
                    break
        finally:
            self._sockets.discard(socket)
            await socket.abandon()
        return ws

    async def _frame(self, socket: _Socket, data: str | bytes) -> None:
        # A str of n characters is n to 4n bytes of UTF-8: encode only when it might be too long.
        if len(data) > self._limit // 4 and (
            len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
            > self._limit
        ):
            await socket.send(self._refuse(protocol.MESSAGE_TOO_LARGE, protocol.WEBSOCKET))
            return
        try:
            messages = protocol.decode_batch(data)
        except protocol.BatchError as exc:
            await socket.send(self._refuse(exc.error, protocol.WEBSOCKET))
            return
        exchange = await self._server.process(messages, protocol.WEBSOCKET, socket.address)
        if exchange.hold:
            socket.hold(exchange)
        else:
            await socket.send(self._server.render(exchange))

    async def close_sockets(self, app: web.Application) -> None:
        """On shutdown: let released connects be answered, then close every websocket."""
        self._server.release_held_connects()
        sockets = list(self._sockets)
        await asyncio.gather(*(socket.finish_held(SHUTDOWN_GRACE_S) for socket in sockets))
        for socket in sockets:
            with contextlib.suppress(ConnectionError):
                await socket.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
