"""A small aiohttp app with only the Bayeux server and a test echo service, on 127.0.0.1 port 0.

Channels of the test app: ``/service/echo`` answers ``{"echo": data}`` to the sender only;
``/chat/**`` may be published to by clients; ``/private/**`` (and any pattern that would cover it)
may not be subscribed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chatpush.addresses import TrustedProxies
from chatpush.cometd import (
    FRONT,
    BayeuxServer,
    CometdLimits,
    Front,
    RemovalReason,
    Session,
)
from chatpush.testing import FakeClock
from tests.conftest import FrontTestServer

PATH = "/genesys/cometd"
LIMITS = CometdLimits(
    max_sessions=50,
    max_queued_messages=20,
    max_message_bytes=8_192,
    max_subscriptions=5,
    connect_timeout_ms=25_000,
    max_interval_ms=30_000,
)
Client = TestClient[web.Request, web.Application]


@dataclass
class Bayeux:
    """The server under test and what its hooks saw."""

    server: BayeuxServer
    app: web.Application
    disconnects: list[tuple[Session, dict[str, Any]]] = field(default_factory=list)
    removed: list[tuple[Session, RemovalReason]] = field(default_factory=list)


def may_subscribe(session: Session, pattern: str) -> bool:
    # A pattern that would also match /private/... is refused like /private/... itself.
    return not (pattern.startswith("/private/") or pattern in ("/*", "/**", "/private/**"))


async def may_publish(session: Session, channel: str) -> bool:
    return channel.startswith("/chat/")


def make_bayeux(
    clock: FakeClock, limits: CometdLimits = LIMITS, *, trusted_proxies: tuple[str, ...] = ()
) -> Bayeux:
    """The test app; with ``trusted_proxies``, their ``X-Forwarded-For`` names the client."""
    app = web.Application()
    server = BayeuxServer(clock, limits, proxies=TrustedProxies(trusted_proxies))
    bayeux = Bayeux(server, app)

    async def echo(session: Session, message: dict[str, Any]) -> None:
        await session.deliver(message["channel"], {"echo": message["data"]})

    async def on_disconnect(session: Session, message: dict[str, Any]) -> None:
        bayeux.disconnects.append((session, message))

    server.on_service("/service/echo", echo)
    server.authorize_subscribe(may_subscribe)
    server.authorize_publish(may_publish)
    server.on_disconnect(on_disconnect)
    server.on_session_removed(lambda session, reason: bayeux.removed.append((session, reason)))
    server.add_routes(app, PATH)
    app[FRONT] = Front(server, PATH, limits.max_message_bytes)  # used by FrontRunner only
    return bayeux


@pytest.fixture
def bayeux(clock: FakeClock) -> Bayeux:
    return make_bayeux(clock)


@pytest.fixture(params=["lean", "aiohttp"])
async def http(
    request: pytest.FixtureRequest,
    bayeux: Bayeux,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    """A raw HTTP client on the test app, through the lean front and through aiohttp alone."""
    if request.param == "lean":
        return await aiohttp_client(FrontTestServer(bayeux.app))
    return await aiohttp_client(bayeux.app)


@pytest.fixture
async def url(bayeux: Bayeux) -> AsyncIterator[str]:
    """The endpoint of the test app on a real port, for the real CometD client, through the
    lean front (the websocket and anything it does not answer: aiohttp)."""
    server = FrontTestServer(bayeux.app)
    await server.start_server()
    try:
        yield str(server.make_url(PATH))
    finally:
        await server.close()


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """No test here may make the server (or aiohttp under it) log at ERROR."""
    caplog.set_level(logging.DEBUG, logger="chatpush.cometd")
    yield
    errors = [
        record.getMessage()
        for record in caplog.get_records("call")
        if record.levelno >= logging.ERROR and not _client_bug(record)
    ]
    assert not errors, errors


def _client_bug(record: logging.LogRecord) -> bool:
    """aiocometd-noloop 0.4.9 on close: done-callbacks of its tasks call ``result()`` on the
    cancelled tasks, and asyncio logs the CancelledError at ERROR. Client side, not ours."""
    if record.name != "asyncio" or not record.exc_info or record.exc_info[2] is None:
        return False
    frames = traceback.extract_tb(record.exc_info[2])
    return any("aiocometd_noloop" in frame.filename for frame in frames)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait (in real time) for a condition that another task or the network makes true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not true after {timeout_s} s"
        await asyncio.sleep(0.005)


class PausableProxy:
    """A TCP proxy whose traffic can be stopped and resumed: a network outage on demand."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> PausableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65_536):
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxy(
    bayeux: Bayeux, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[PausableProxy]:
    server = await aiohttp_server(bayeux.app)
    assert server.port is not None
    proxy = await PausableProxy(server.port).start()
    yield proxy
    await proxy.close()


class DroppingProxy:
    """A TCP proxy that loses one reply: the first time ``marker`` comes from the server, it
    closes the client's connection instead of passing it on (a connect response lost on the way,
    or a websocket cut as the frame passes). WebSocket compression is taken out of the upgrade
    request, so that the marker can be seen in the frames."""

    def __init__(self, upstream_port: int, marker: bytes) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.port = 0
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> DroppingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            await asyncio.gather(
                self._to_server(reader, up_writer),
                self._to_client(up_reader, writer, up_writer),
                return_exceptions=True,
            )
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65_536):
                if b"upgrade: websocket" in data.lower():
                    lines = data.split(b"\r\n")
                    kept = [
                        line
                        for line in lines
                        if not line.lower().startswith(b"sec-websocket-extensions:")
                    ]
                    data = b"\r\n".join(kept)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _to_client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
    ) -> None:
        try:
            while data := await reader.read(65_536):
                if not self.dropped and self.marker in data:
                    self.dropped += 1
                    writer.transport.abort()
                    upstream.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        """Cut every connection and let the pumps end by themselves (no task cancelled)."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.gather(*self._tasks, return_exceptions=True)
