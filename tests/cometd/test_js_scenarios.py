"""Every CometD scenario of the issue with the official JavaScript client (cometd 9.0.0 +
cometd-nodejs-client 2.0.0 under Node, tests/cometd/js/driver.mjs), over both transports.

Against the bare Bayeux server (tests/cometd/conftest.py): handshake / subscribe / publish, a
held connect released by a message, and the acknowledge extension redelivering what a dropped
connect response carried. Against the full app: background → push → ``requestNotifications``
with nothing lost, and a bridge that takes triggers on ``/_genesys/push/*`` and acknowledges them
by refresh. The whole chat is tests/cometd/test_js_client.py; a restart of chatpush under a
connected client is tests/cometd/test_restart.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chatpush.api.keys import DISPATCHER
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.cometd.conftest import Bayeux, DroppingProxy, until
from tests.cometd.js_client import JsClient, needs_node, prepare_node_dir
from tests.conftest import API_KEY, ChatDriver
from tests.integration._push_support import push_form
from tests.receivers import Receiver

TRANSPORTS = ["long-polling", "websocket"]
CHAT = "/service/chatV2/support"
RELIABLE_USER_DATA = {
    "GCTI_Chat_PushSubscribe": "true",
    "GCTI_GMS_PushDeviceId": "device-1",
    "GCTI_GMS_PushDeviceType": "customhttp",
    "GCTI_GMS_PushResend": "true",
}
RESEND_DELAY_S = 15
# Past the first resend of an unacknowledged trigger, and below a CometD session's max interval
# (30 s), so that a connected client is not expired by the jump of the fake clock.
RESENDS_OVER_S = RESEND_DELAY_S + 5
AppClient = TestClient[web.Request, web.Application]

pytestmark = [needs_node]


@pytest.fixture(scope="session")
def node_dir() -> Path:
    return prepare_node_dir()


@pytest.fixture
async def js(node_dir: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[JsClient] = []

    async def start(url: str, transport: str, *, ack: bool = False) -> JsClient:
        client = await JsClient.start(node_dir, url, transport, ack=ack)
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close()


# -- the bare Bayeux server ------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_handshake_subscribe_publish_and_a_refusal(
    transport: str, url: str, bayeux: Bayeux, js: Callable[..., Any]
) -> None:
    alice, bob = await js(url, transport), await js(url, transport)
    for client in (alice, bob):
        assert (await client.handshake())["transport"] == transport
    alice.send("subscribe", channel="/chat/room")
    bob.send("subscribe", channel="/chat/**")
    for client in (alice, bob):
        assert (await client.expect("subscribe"))["successful"]
    await bob.publish("/chat/room", {"text": "hello"})
    for client in (alice, bob):  # the publisher is subscribed too
        assert await client.message("/chat/room") == {"text": "hello"}
    assert await bayeux.server.publish("/chat/room/sub", "server side") == 1
    assert await bob.message("/chat/room/sub") == "server side"
    alice.send("subscribe", channel="/private/alice")
    refused = await alice.expect("subscribe", lambda e: e["channel"] == "/private/alice")
    assert not refused["successful"] and refused["error"] == "403::subscription_denied"
    alice.send("publish", channel="/service/echo", data={"question": 42})
    alice.send("listen", channel="/service/echo")
    assert await alice.message("/service/echo") == {"echo": {"question": 42}}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_held_connect_is_released_by_a_message(
    transport: str, url: str, bayeux: Bayeux, js: Callable[..., Any]
) -> None:
    alice = await js(url, transport)
    client_id = (await alice.handshake())["clientId"]
    alice.send("subscribe", channel="/chat/room")
    assert (await alice.expect("subscribe"))["successful"]
    session = bayeux.server.get_session(client_id)
    assert session is not None
    for n in range(3):
        await until(lambda: session.connect_held)
        started = time.perf_counter()
        await bayeux.server.publish("/chat/room", n)
        assert await alice.message("/chat/room") == n
        # Not T: the fake clock never moves, so only the message can release it. The bound
        # covers the trip through Node and its stdout on a loaded machine, far below T = 25 s.
        assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_ack_extension_redelivers_what_a_dropped_connect_response_carried(
    transport: str,
    bayeux: Bayeux,
    aiohttp_server: Callable[..., Any],
    js: Callable[..., Any],
) -> None:
    server: TestServer = await aiohttp_server(bayeux.app)
    assert server.port is not None
    proxy = await DroppingProxy(server.port, marker=b"lost-once").start()
    try:
        url = f"http://127.0.0.1:{proxy.port}/genesys/cometd"
        alice = await js(url, transport, ack=True)
        assert (await alice.handshake())["ack"] is True
        alice.send("subscribe", channel="/chat/room")
        assert (await alice.expect("subscribe"))["successful"]
        client_id = alice.seen("handshake")[-1]["clientId"]
        session = bayeux.server.get_session(client_id)
        assert session is not None
        await until(lambda: session.connect_held)
        await bayeux.server.publish("/chat/room", "lost-once")
        assert await alice.message("/chat/room") == "lost-once"
        assert proxy.dropped == 1  # the first response carrying it never reached the client
        await bayeux.server.publish("/chat/room", "next")
        assert await alice.message("/chat/room") == "next"
        received = [e["data"] for e in alice.seen("message")]
        assert received == ["lost-once", "next"]  # each once, in order
    finally:
        await proxy.close()


# -- the full app: chat over CometD, push, bridge ----------------------------------------------


@pytest.fixture
async def app(
    make_settings: Callable[..., Settings], make_client: Callable[..., Any], receiver: Receiver
) -> AppClient:
    settings = make_settings(
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,comet",
                "customhttp.url": receiver.url,
            }
        },
        services={
            "default": {
                "flex-push-resend-delay": RESEND_DELAY_S,
                "flex-push-content": "session-id, user-id, secure-key",
            }
        },
    )
    client: AppClient = await make_client(settings)
    return client


def app_url(app: AppClient, path: str = "/genesys/cometd") -> str:
    return str(app.server.make_url(path))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_background_push_and_request_notifications_lose_nothing(
    transport: str, app: AppClient, receiver: Receiver, clock: FakeClock, js: Callable[..., Any]
) -> None:
    phone = await js(app_url(app), transport)
    await phone.handshake()
    phone.send("listen", channel=CHAT)
    await phone.publish(
        CHAT, {"operation": "requestChat", "nickname": "Ann", "userData": RELIABLE_USER_DATA}
    )
    started = await phone.message(CHAT)
    chat = ChatDriver(app)
    chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
    agent = await chat.agent_joins()
    joined = await phone.message(CHAT, lambda d: bool(d["messages"]))
    assert [e["index"] for e in joined["messages"]] == [2]

    # The app goes to background, having shown everything up to index 2. (What push does in
    # the foreground is not this test's business: only what arrives from here on counts.)
    phone.send("disconnect", ext={"transcriptPosition": joined["nextPosition"]})
    await phone.expect("disconnect")
    await app.app[DISPATCHER].settle()
    earlier = len(receiver.triggers())
    for text in ("Are you still there?", "I will wait"):
        await chat.agent_says(agent, text)
    await until(lambda: len(receiver.triggers()) > earlier)
    await app.app[DISPATCHER].settle()
    assert receiver.triggers()[earlier:] == [("3", "0")]  # notify-position = its position

    # Tapped: a new session (a new handshake) resumes from that position and gets both.
    back = await js(app_url(app), transport)
    assert (await back.handshake())["clientId"] != phone.seen("handshake")[0]["clientId"]
    back.send("listen", channel=CHAT)
    await back.publish(
        CHAT,
        {
            "operation": "requestNotifications",
            "chatId": chat.chat_id,
            "secureKey": chat.secure_key,
            "transcriptPosition": 3,
        },
    )
    resumed = await back.message(CHAT)
    assert [(e["index"], e.get("text")) for e in resumed["messages"]] == [
        (3, "Are you still there?"),
        (4, "I will wait"),
    ]
    # That acknowledged the trigger: past its first resend, nothing more is sent.
    sub = await chat.api("GET", f"/chats/{chat.chat_id}/subscription")
    assert sub["acknowledgedPosition"] == 4 and sub["outstandingTrigger"] is None
    clock.advance(RESENDS_OVER_S)
    await app.app[DISPATCHER].settle()
    assert len(receiver.triggers()) == earlier + 1
    await chat.agent_says(agent, "Welcome back")
    live = await back.message(CHAT, lambda d: bool(d["messages"]))
    assert [e.get("text") for e in live["messages"]] == ["Welcome back"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_bridge_takes_triggers_and_acknowledges_them(
    transport: str, app: AppClient, clock: FakeClock, js: Callable[..., Any]
) -> None:
    bridge = await js(app_url(app), transport)
    await bridge.handshake(apiKey=API_KEY)
    bridge.send("bridge", chatpush=app_url(app, ""), service="support")
    assert (await bridge.expect("subscribe"))["successful"]
    chat = ChatDriver(app)
    await chat.request_chat(**push_form("phone-9", PushDeviceType="comet", PushResend="true"))
    agent = await chat.agent_joins()
    acknowledged = await bridge.expect("acknowledged")
    assert acknowledged["status"] == 200 and acknowledged["position"] == "2"
    await until(lambda: bool(bridge.seen("message")))
    sub = await chat.api("GET", f"/chats/{chat.chat_id}/subscription")
    assert sub["acknowledgedPosition"] == 2 and sub["outstandingTrigger"] is None
    # The next event makes the next trigger, taken and acknowledged the same way; no resends.
    await chat.agent_says(agent, "one more")
    assert (await bridge.expect("acknowledged"))["position"] == "3"
    clock.advance(RESENDS_OVER_S)
    await app.app[DISPATCHER].settle()
    await asyncio.sleep(0.2)
    deliveries = (await chat.api("GET", f"/chats/{chat.chat_id}/deliveries"))["deliveries"]
    assert [(d["deviceType"], d["outcome"]) for d in deliveries] == [("comet", "sent")] * 2
    positions = [e["data"]["message"]["messages"][0]["userData"] for e in bridge.seen("message")]
    assert [(p["notify-position"], p["notify-attempt"]) for p in positions] == [
        ("2", "0"),
        ("3", "0"),
    ]
