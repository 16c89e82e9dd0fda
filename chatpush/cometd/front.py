"""A lean front for CometD long-polling: plain ``POST`` requests to the Bayeux path answered
without aiohttp's per-request machinery, everything else handed to aiohttp unchanged.

Each connection starts with a small :class:`asyncio.Protocol` of ours. It reads requests and
answers the simple ones itself, in order, one at a time: ``POST`` of HTTP/1.1 to ``<path>`` or
``<path>/<meta>`` (``/connect``, ``/handshake``... as the JavaScript client appends them), a
``Content-Length`` within ``max_message_bytes`` with the whole body already received, and no
``Transfer-Encoding``, ``Content-Encoding``, ``Expect`` or ``Upgrade``. Such a request costs no
task, no timer, no request or response object: its body goes to the Bayeux server, the reply is
written as bytes, and a held connect is answered from a callback when it is released
(``BayeuxServer.hold``). Only a batch of connects and handshakes is processed so, outside any
task (``BayeuxServer.answers_at_once``: they await nothing); any other batch (a publish, a
subscribe, a service request) gets one task, as under aiohttp, since hooks may need one.

Anything else (another path or method, a websocket upgrade, a chunked or compressed body, a
body not all there yet, HTTP/1.0, a malformed head, a request with ``Origin`` when CORS is
open) makes the connection aiohttp's for the rest of its life: an aiohttp ``RequestHandler``
takes the socket with every byte not yet answered, and serves exactly as without the front
(routing, middlewares, limits, CORS, body timeouts, errors). A request is handed over only when
nothing is in flight, so pipelined requests are answered in order.

What the lean path keeps of aiohttp's: the same reply bytes (``Content-Type: application/json;
charset=utf-8``, ``Date``, ``Server``), keep-alive (``Connection: close`` honoured), the idle
keep-alive timeout, reading paused while a request is in flight and more than a request's worth
is buffered, held connects answered and connections closed on shutdown. The application adds
its own per-request needs with hooks (:class:`Front`): a duration observer (metrics) and a scope
for the client address.

Serve with :class:`FrontRunner` in place of ``web.AppRunner``: with no :data:`FRONT` in the
application it is an ``AppRunner``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler

from chatpush.cometd import protocol
from chatpush.cometd.session import Exchange
from chatpush.cometd.transports import META_TAILS, Endpoint

log = logging.getLogger("chatpush.cometd")

MAX_HEAD_BYTES = 16_384
"""A request head longer than this without its end goes to aiohttp (which refuses it)."""
IDLE_SWEEP_S = 30.0
"""How often idle keep-alive connections are looked at (one timer for all)."""
_HANDED_OFF_HEADERS = frozenset(
    (b"transfer-encoding", b"content-encoding", b"expect", b"upgrade", b"te", b"trailer")
)


@dataclass(frozen=True, slots=True)
class Front:
    """What the front serves: ``server`` at ``path``. ``observe`` gets each lean request's
    duration in seconds; ``request_scope`` is called with a function giving the client's address
    in the context the request is processed in (set a context variable there). ``cors``: CORS is
    open on ``path``, so requests carrying ``Origin`` go to aiohttp (its CORS answers) and the
    lean answers carry ``Vary: Origin``, as aiohttp's do there."""

    server: Endpoint
    path: str
    max_message_bytes: int
    observe: Callable[[float], None] | None = None
    request_scope: Callable[[Callable[[], str]], object] | None = None
    cors: bool = False


FRONT = web.AppKey("cometd_front", Front)
"""Set by the application that wants the front (``BayeuxServer.add_routes(front=True)``)."""


class FrontRunner(web.AppRunner):
    """``web.AppRunner`` whose server puts the front of the application's :data:`FRONT`, if
    any, before aiohttp on every connection."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        front = self.app.get(FRONT)
        if front is None:
            return server
        return FrontServer(front, server)


_KEEPALIVE_DEFAULT_S: float = (
    inspect.signature(RequestHandler).parameters["keepalive_timeout"].default
)


class FrontServer(web.Server):
    """aiohttp's server for its own connections, the front's protocol for new ones."""

    def __init__(self, front: Front, inner: web.Server) -> None:
        kwargs: dict[str, Any] = inner._kwargs
        super().__init__(
            inner.request_handler,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            loop=inner._loop,
            **kwargs,
        )
        self.front = front
        self.closing = False
        self.keepalive_timeout_s = float(kwargs.get("keepalive_timeout", _KEEPALIVE_DEFAULT_S))
        self.lean: dict[_LongPolling, float] = {}
        """Open lean connections, by when each last went idle (loop time; oldest first)."""
        self._sweeper: asyncio.TimerHandle | None = None
        path = front.path.rstrip("/").encode("ascii")
        tails = [path + b"/" + tail.encode("ascii") for tail in META_TAILS]
        self.targets = frozenset([front.path.encode("ascii"), path + b"/", *tails])
        """The request targets the lean path answers (the exact strings: no query, no escape)."""
        self.date = ""
        self.date_s = 0
        vary = "Vary: Origin\r\n" if front.cors else ""
        self.server_header = f"\r\nServer: {SERVER_SOFTWARE}\r\n{vary}".encode()

    def __call__(self) -> _LongPolling:  # type: ignore[override]
        return _LongPolling(self)

    def handler(self) -> RequestHandler:
        """An aiohttp request handler, for a connection handed over."""
        return super().__call__()

    def opened(self, connection: _LongPolling) -> None:
        self.lean[connection] = self._loop.time()
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(IDLE_SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        oldest_s = self._loop.time() - self.keepalive_timeout_s
        idle = []
        for connection, since_s in self.lean.items():
            if since_s > oldest_s:
                break
            idle.append(connection)
        for connection in idle:
            if connection.busy:  # in flight since: it goes idle again after its answer
                self.lean[connection] = self.lean.pop(connection)
            else:
                connection.close()
        if self.lean:
            self._sweeper = self._loop.call_later(IDLE_SWEEP_S, self._sweep)

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        """Held connects were released by the application's shutdown: let their answers be
        written, close idle lean connections, give busy ones ``timeout`` to answer."""
        self.closing = True
        await asyncio.sleep(0)
        deadline_s = self._loop.time() + (timeout or 0.0)
        while True:
            for connection in list(self.lean):
                if not connection.busy or connection.held is not None:
                    connection.close()
            if not self.lean or self._loop.time() >= deadline_s:
                break
            await asyncio.sleep(0.01)
        for connection in list(self.lean):
            connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)

    def head(self, status: bytes, length: int, keep_alive: bool) -> bytes:
        now_s = int(time.time())  # the Date header: wall time, as aiohttp writes it
        if now_s != self.date_s:
            self.date_s = now_s
            self.date = rfc822_formatted_time()
        return b"".join(
            (
                b"HTTP/1.1 ",
                status,
                b"\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ",
                str(length).encode(),
                b"\r\nDate: ",
                self.date.encode(),
                self.server_header,
                b"" if keep_alive else b"Connection: close\r\n",
                b"\r\n",
            )
        )


@dataclass(slots=True)
class _Head:
    length: int
    keep_alive: bool
    forwarded_for: list[str]


def _parse_head(server: FrontServer, head: bytes) -> _Head | None:
    """The head of a request the lean path answers, or None: aiohttp's."""
    lines = head.split(b"\r\n")
    if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        return None  # a bare CR or LF: let aiohttp's strict parser judge it
    method, _, rest = lines[0].partition(b" ")
    target, _, version = rest.partition(b" ")
    if method != b"POST" or version != b"HTTP/1.1" or target not in server.targets:
        return None
    length = -1
    keep_alive = True
    forwarded_for: list[str] = []
    cors = server.front.cors
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name[-1] in b" \t" or name[0] in b" \t":
            return None
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"content-length":
            if length >= 0 or not value.isdigit():
                return None
            length = int(value)
        elif name == b"connection":
            tokens = value.lower()
            if b"upgrade" in tokens:
                return None
            if b"close" in tokens:
                keep_alive = False
        elif name in _HANDED_OFF_HEADERS:
            return None
        elif name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))
        elif name == b"origin" and cors:
            return None
    if length < 0 or length > server.front.max_message_bytes:
        return None
    return _Head(length, keep_alive, forwarded_for)


class _LongPolling(asyncio.Protocol):
    """One connection while it is the front's (see the module's doc)."""

    __slots__ = (
        "_buffer",
        "_keep_alive",
        "_parsing",
        "_paused",
        "_server",
        "_started_s",
        "_transport",
        "busy",
        "held",
    )

    def __init__(self, server: FrontServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._paused = False
        self._parsing = False
        self._started_s = 0.0
        self._keep_alive = True
        self.busy = False
        """A request is being answered (its successors wait in the buffer)."""
        self.held: Exchange | None = None
        """The exchange whose connect is held."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.lean.pop(self, None)
        if self.held is not None:  # its queue stays for the client's next connect
            self._server.front.server.abandon(self.held)
            self.held = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        if not self.busy:
            self._next()
        elif not self._paused and len(self._buffer) > MAX_HEAD_BYTES + self._limit():
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True

    def _limit(self) -> int:
        return self._server.front.max_message_bytes

    def _next(self) -> None:
        """Answer the buffered requests, in order, while they are the lean path's."""
        self._parsing = True
        try:
            while self._buffer and not self.busy and self._transport is not None:
                buffer = self._buffer
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        self._hand_off()
                    return
                head = _parse_head(self._server, buffer[:end])
                body_end = end + 4 + (head.length if head is not None else 0)
                if head is None or len(buffer) < body_end:
                    self._hand_off()
                    return
                self._buffer = buffer[body_end:]
                self._request(buffer[end + 4 : body_end], head)
        finally:
            self._parsing = False

    def _hand_off(self) -> None:
        """The connection is aiohttp's from now on, with every byte not answered yet."""
        transport = self._transport
        assert transport is not None and not self.busy
        self._server.lean.pop(self, None)
        self._transport = None
        handler = self._server.handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._paused:
            transport.resume_reading()
        if self._buffer:
            buffer, self._buffer = self._buffer, b""
            handler.data_received(buffer)

    def _request(self, body: bytes, head: _Head) -> None:
        self.busy = True
        self._keep_alive = head.keep_alive
        self._started_s = time.perf_counter()
        endpoint = self._server.front.server
        try:
            messages = protocol.decode_batch(body)
        except protocol.BatchError as exc:
            endpoint.count_bad_request(exc.error, protocol.LONG_POLLING)
            self._respond(b"400 Bad Request", protocol.error_batch(exc.error))
            return
        transport = self._transport
        assert transport is not None
        forwarded_for = head.forwarded_for

        def address() -> str:  # only a handshake (or a rate limit) asks
            peer = transport.get_extra_info("peername")
            remote = peer[0] if isinstance(peer, tuple | list) and peer else None
            return endpoint.proxies.address_of(remote, lambda: forwarded_for)

        coro = endpoint.process(messages, protocol.LONG_POLLING, address)
        if endpoint.answers_at_once(messages):
            self._process(coro)
            return
        # Hooks may run (service handlers, authorizers): in a task of their own, as under
        # aiohttp (asyncio.timeout and current_task need one), with the request's scope.
        context = contextvars.copy_context()
        scope = self._server.front.request_scope
        if scope is not None:
            context.run(scope, address)
        task = asyncio.get_running_loop().create_task(coro, context=context)
        task.add_done_callback(self._finished)

    def _process(self, coro: Coroutine[Any, Any, Exchange]) -> None:
        """Run a batch that awaits nothing now, outside any task; should it wait after all,
        one task finishes it."""
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            self._processed(done.value)
            return
        except Exception:
            self._failed()
            return
        task = asyncio.get_running_loop().create_task(_finish(_Resumed(coro, waiting)))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Exchange]) -> None:
        if task.cancelled():  # the server is stopping
            self.close()
        elif task.exception() is not None:
            self._failed(task.exception())
        else:
            self._processed(task.result())

    def _failed(self, exc: BaseException | None = None) -> None:
        log.error(
            "cometd long-polling request failed",
            exc_info=exc or True,
            extra={"action": "cometd_request_failed"},
        )
        self._keep_alive = False
        self._respond(b"500 Internal Server Error", protocol.error_batch("500::internal_error"))

    def _processed(self, exchange: Exchange) -> None:
        endpoint = self._server.front.server
        if not exchange.hold:
            self._respond(b"200 OK", endpoint.render(exchange))
        elif self._transport is None:  # gone while a service handler ran
            endpoint.abandon(exchange)
        else:
            self.held = exchange
            endpoint.hold(exchange, self._released)

    def _released(self) -> None:
        exchange = self.held
        self.held = None
        if exchange is not None and self._transport is not None:
            self._respond(b"200 OK", self._server.front.server.render(exchange))

    def _respond(self, status: bytes, text: str) -> None:
        transport = self._transport
        if transport is None:
            return
        body = text.encode("utf-8")
        server = self._server
        keep_alive = self._keep_alive and not server.closing
        transport.write(server.head(status, len(body), keep_alive) + body)
        observe = server.front.observe
        if observe is not None:
            observe(time.perf_counter() - self._started_s)
        self.busy = False
        if not keep_alive:
            transport.close()
            return
        del server.lean[self]  # idle from now: to the end of the oldest-first table
        server.lean[self] = server._loop.time()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self._buffer and not self._parsing:
            self._next()


class _Resumed:
    """A coroutine already started (its first step done) as an awaitable, for a task to finish."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Exchange], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Exchange]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                sent = yield waiting
            except BaseException as exc:
                try:
                    waiting = coro.throw(exc)
                except StopIteration as done:
                    result: Exchange = done.value
                    return result
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration as done:
                    result = done.value
                    return result


async def _finish(resumed: _Resumed) -> Exchange:
    return await resumed
