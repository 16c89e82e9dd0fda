"""The real Python client, aiocometd-noloop, over long-polling and over websocket.

The server runs on 127.0.0.1 with a FakeClock that only the expiry test moves, so a held connect
can only be released by what the test does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiocometd_noloop import Client, ConnectionType
from aiocometd_noloop.exceptions import ServerError
from aiocometd_noloop.extensions import Extension
from aiocometd_noloop.typing import Headers, Payload

from chatpush.cometd import RemovalReason, Session
from chatpush.testing import FakeClock
from tests.cometd.conftest import LIMITS, PATH, Bayeux, DroppingProxy, PausableProxy, until

CONNECTION_TYPES = [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET]
RECEIVE_TIMEOUT_S = 5.0

pytestmark = [
    pytest.mark.parametrize(
        "connection_type", CONNECTION_TYPES, ids=[c.value for c in CONNECTION_TYPES]
    ),
    # aiocometd-noloop passes aiohttp client arguments that aiohttp has since deprecated.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
def open_client(connection_type: ConnectionType) -> Callable[[str], Any]:
    @asynccontextmanager
    async def open_client(url: str) -> AsyncIterator[Client]:
        async with Client(url, connection_type, connection_timeout=0) as client:
            assert client.connection_type is connection_type
            yield client

    return open_client


async def receive(client: Client) -> dict[str, Any]:
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        message: dict[str, Any] = await client.receive()
        return message


def current_session(bayeux: Bayeux, client: Client) -> Session | None:
    """The server's session for the client's current clientId (peeking into the client)."""
    transport = client._transport
    if transport is None or transport.client_id is None:
        return None
    return bayeux.server.get_session(transport.client_id)


def session_of(bayeux: Bayeux, client: Client) -> Session:
    session = current_session(bayeux, client)
    assert session is not None
    return session


async def test_subscribe_publish_receive(
    url: str, bayeux: Bayeux, open_client: Callable[[str], Any]
) -> None:
    async with open_client(url) as alice, open_client(url) as bob:
        await alice.subscribe("/chat/room")
        await bob.subscribe("/chat/**")
        reply = await bob.publish("/chat/room", {"text": "hello"})
        assert reply["successful"] is True and "data" not in reply
        expected = {"channel": "/chat/room", "data": {"text": "hello"}}
        assert await receive(alice) == expected
        assert await receive(bob) == expected  # a publisher subscribed gets its own message
        assert await bayeux.server.publish("/chat/room/sub", "server side") == 1
        assert (await receive(bob))["data"] == "server side"
        await alice.unsubscribe("/chat/room")
        assert await bayeux.server.publish("/chat/room", "nobody") == 1  # bob only
        assert (await receive(bob))["data"] == "nobody"


async def test_service_request_is_answered_to_the_sender_only(
    url: str, bayeux: Bayeux, open_client: Callable[[str], Any]
) -> None:
    async with open_client(url) as alice, open_client(url) as bob:
        await bob.subscribe("/service/echo")  # accepted, and changes nothing
        reply = await alice.publish("/service/echo", {"question": 42})
        assert reply["successful"] is True
        answer = await receive(alice)
        assert answer == {"channel": "/service/echo", "data": {"echo": {"question": 42}}}
        await asyncio.sleep(0.1)
        assert not bob.has_pending_messages
        assert session_of(bayeux, bob).queued == 0


async def test_held_connect_is_released_promptly_by_a_message(
    url: str, bayeux: Bayeux, open_client: Callable[[str], Any]
) -> None:
    async with open_client(url) as alice:
        await alice.subscribe("/chat/room")
        session = session_of(bayeux, alice)
        for n in range(5):
            await until(lambda: session.connect_held)
            started = time.perf_counter()
            await bayeux.server.publish("/chat/room", n)
            assert (await receive(alice))["data"] == n
            elapsed_s = time.perf_counter() - started
            assert elapsed_s < 0.5, elapsed_s  # not T (the fake clock never moves)


async def test_authorizer_refuses_a_subscription(
    url: str, open_client: Callable[[str], Any]
) -> None:
    async with open_client(url) as alice:
        for channel in ("/private/alice", "/**"):
            with pytest.raises(ServerError) as refused:
                await alice.subscribe(channel)
            assert refused.value.error == "403::subscription_denied"
            assert channel not in alice.subscriptions
        await alice.subscribe("/chat/room")  # the session is still fine
        with pytest.raises(ServerError) as refused:
            await alice.publish("/elsewhere", 1)
        assert refused.value.error_code == 403


async def test_expired_session_makes_the_client_handshake_again(
    proxy: PausableProxy,
    bayeux: Bayeux,
    clock: FakeClock,
    open_client: Callable[[str], Any],
) -> None:
    url = f"http://127.0.0.1:{proxy.port}{PATH}"
    async with open_client(url) as alice:
        await alice.subscribe("/chat/room")
        first = session_of(bayeux, alice)
        await until(lambda: first.connect_held)
        proxy.pause()  # the network goes away
        clock.advance(ms=LIMITS.connect_timeout_ms)  # the held connect is answered (into the void)
        await until(lambda: not first.connect_held)
        clock.advance(ms=LIMITS.max_interval_ms)
        await until(lambda: first.removed is not None)
        assert first.removed is RemovalReason.EXPIRED
        proxy.resume()
        # The client's next connect gets 402, it handshakes again and re-subscribes by itself.
        await until(lambda: current_session(bayeux, alice) not in (None, first))
        second = session_of(bayeux, alice)
        await until(lambda: "/chat/room" in second.subscriptions)
        await bayeux.server.publish("/chat/room", "after the outage")
        assert (await receive(alice))["data"] == "after the outage"


class AckExtension(Extension):
    """CometD's acknowledge extension for aiocometd, which has none: ``ext.ack: true`` in the
    handshake, then each connect carries the number of the last batch received."""

    def __init__(self) -> None:
        self.enabled = False
        self.last_batch: int | None = None

    async def outgoing(self, payload: Payload, headers: Headers) -> None:
        for message in payload:
            if message.get("channel") == "/meta/handshake":
                message.setdefault("ext", {})["ack"] = True
                self.last_batch = None
            elif message.get("channel") == "/meta/connect" and self.last_batch is not None:
                message.setdefault("ext", {})["ack"] = self.last_batch

    async def incoming(self, payload: Payload, headers: Headers | None = None) -> None:
        for message in payload:
            ext = message.get("ext") or {}
            if message.get("channel") == "/meta/handshake":
                self.enabled = ext.get("ack") is True
            elif message.get("channel") == "/meta/connect" and isinstance(ext.get("ack"), int):
                self.last_batch = ext["ack"]


async def test_the_ack_extension_redelivers_what_a_dropped_connect_response_carried(
    connection_type: ConnectionType,
    bayeux: Bayeux,
    aiohttp_server: Callable[..., Any],
) -> None:
    server = await aiohttp_server(bayeux.app)
    proxy = await DroppingProxy(server.port, marker=b"lost-once").start()
    ack = AckExtension()
    url = f"http://127.0.0.1:{proxy.port}{PATH}"
    try:
        async with Client(url, connection_type, connection_timeout=0, extensions=[ack]) as alice:
            await alice.subscribe("/chat/room")
            assert ack.enabled
            session = session_of(bayeux, alice)
            await until(lambda: session.connect_held)
            await bayeux.server.publish("/chat/room", "lost-once")
            assert (await receive(alice))["data"] == "lost-once"
            assert proxy.dropped == 1
            await bayeux.server.publish("/chat/room", "next")
            assert (await receive(alice))["data"] == "next"
            await asyncio.sleep(0.1)
            assert not alice.has_pending_messages  # nothing twice
    finally:
        await proxy.close()
