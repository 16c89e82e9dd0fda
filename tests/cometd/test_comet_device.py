"""Device type ``comet`` on the full app: notifications on ``/_genesys/push/{deviceId}``.

The real client (aiocometd-noloop) connects to the app's ``/genesys/cometd`` on a real port; the
app runs with a FakeClock, so resends happen only when a test moves it. The sample bridge
(``samples/cometd_bridge.py``) runs as a subprocess against the same server.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiocometd_noloop import Client, ConnectionType
from aiocometd_noloop.exceptions import ServerError
from aiocometd_noloop.extensions import Extension
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.api.keys import DISPATCHER
from chatpush.config import Settings
from chatpush.providers.base import Notification, Target
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver
from tests.integration._push_support import push_form

AppClient = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Any]
RECEIVE_TIMEOUT_S = 5.0
RESEND_DELAY_S = 15
BRIDGE = Path(__file__).resolve().parents[2] / "samples" / "cometd_bridge.py"

pytestmark = [
    # aiocometd-noloop passes aiohttp client arguments that aiohttp has since deprecated.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


class HandshakeExt(Extension):
    def __init__(self, ext: dict[str, Any]) -> None:
        self.ext = ext

    async def outgoing(self, payload: Any, headers: Any) -> None:
        for message in payload:
            if message.get("channel") == "/meta/handshake":
                message.setdefault("ext", {}).update(self.ext)

    async def incoming(self, payload: Any, headers: Any = None) -> None:
        return None


@pytest.fixture
async def app(
    make_settings: Callable[..., Settings], make_client: MakeClient, clock: FakeClock
) -> AppClient:
    settings = make_settings(
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,comet",
                "customhttp.url": "http://127.0.0.1:9/push",  # never called here
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


def cometd_url(app: AppClient) -> str:
    return str(app.server.make_url("/genesys/cometd"))


@asynccontextmanager
async def bayeux(app: AppClient, ext: dict[str, Any] | None = None) -> AsyncIterator[Client]:
    extensions = [HandshakeExt(ext)] if ext is not None else None
    async with Client(
        cometd_url(app), ConnectionType.LONG_POLLING, connection_timeout=0, extensions=extensions
    ) as client:
        yield client


async def receive(client: Client) -> dict[str, Any]:
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        message: dict[str, Any] = await client.receive()
        return message


async def comet_chat(app: AppClient, device_id: str, **keys: str) -> ChatDriver:
    chat = ChatDriver(app)
    await chat.request_chat(**push_form(device_id, PushDeviceType="comet", **keys))
    return chat


async def settle(app: AppClient) -> None:
    await app.app[DISPATCHER].settle()


def trigger_of(body: dict[str, Any]) -> tuple[str, str]:
    user_data = body["message"]["messages"][0]["userData"]
    return user_data["notify-position"], user_data["notify-attempt"]


async def test_authorized_bridge_and_chat_client_receive_the_trigger(app: AppClient) -> None:
    chat = await comet_chat(app, "phone-1", PushResend="true")
    ext = {"chatId": chat.chat_id, "secureKey": chat.secure_key}
    async with bayeux(app, {"apiKey": API_KEY}) as bridge, bayeux(app, ext) as own:
        await bridge.subscribe("/_genesys/push/*")
        await own.subscribe("/_genesys/push/phone-1")
        await chat.agent_joins()
        await settle(app)
        for client in (bridge, own):
            message = await receive(client)
            assert message["channel"] == "/_genesys/push/phone-1"
            body = message["data"]
            assert body["deviceId"] == "phone-1"
            assert body["message"]["messages"][0]["type"] == "PushUrl"
            assert trigger_of(body) == ("2", "0")
            assert body["message"]["messages"][0]["userData"]["session-id"] == chat.chat_id
    deliveries = (await chat.api("GET", f"/chats/{chat.chat_id}/deliveries"))["deliveries"]
    assert [(d["deviceType"], d["outcome"]) for d in deliveries] == [("comet", "sent")]


async def test_unauthorized_subscriptions_are_refused(app: AppClient) -> None:
    mine = await comet_chat(app, "phone-a")
    await comet_chat(app, "phone-b")
    mine_ext = {"chatId": mine.chat_id, "secureKey": mine.secure_key}
    cases: list[tuple[dict[str, Any] | None, list[str]]] = [
        (None, ["/_genesys/push/phone-a", "/_genesys/push/*"]),
        ({"apiKey": "wrong-key"}, ["/_genesys/push/phone-a", "/_genesys/push/*"]),
        ({"chatId": mine.chat_id, "secureKey": "wrong"}, ["/_genesys/push/phone-a"]),
        (
            mine_ext,
            ["/_genesys/push/phone-b", "/_genesys/push/*", "/_genesys/push/**", "/**"],
        ),
        (
            {"apiKey": API_KEY},
            ["/**", "/*", "/_genesys/**", "/_genesys/*", "/_genesys/push/**", "/chat/room"],
        ),
    ]
    for ext, patterns in cases:
        async with bayeux(app, ext) as client:
            for pattern in patterns:
                with pytest.raises(ServerError) as refused:
                    await client.subscribe(pattern)
                assert refused.value.error == "403::subscription_denied", (ext, pattern)
            with pytest.raises(ServerError) as refused:  # nobody may forge a notification
                await client.publish("/_genesys/push/phone-a", {"deviceId": "phone-a"})
            assert refused.value.error_code == 403
    async with bayeux(app, mine_ext) as own:
        await own.subscribe("/_genesys/push/phone-a")  # its own device only


async def test_another_chat_naming_the_same_device_reads_nothing_of_the_victims(
    app: AppClient, clock: FakeClock
) -> None:
    """The takeover: an attacker's own chat names the victim's device id, its client subscribes
    to that device channel with the attacker's own credentials, and must receive none of the
    victim's triggers (which carry the victim's chat id and secure key), before or after the
    attacker's chat ends; the victim's own client and a bridge still get them."""
    victim = await comet_chat(app, "victim-phone-42", PushResend="true")
    attacker = await comet_chat(app, "victim-phone-42", PushResend="true")
    attacker_ext = {"chatId": attacker.chat_id, "secureKey": attacker.secure_key}
    victim_ext = {"chatId": victim.chat_id, "secureKey": victim.secure_key}
    async with bayeux(app, attacker_ext) as spy, bayeux(app, victim_ext) as own:
        await spy.subscribe("/_genesys/push/victim-phone-42")
        await own.subscribe("/_genesys/push/victim-phone-42")
        await victim.agent_joins()
        await settle(app)
        message = await receive(own)
        assert message["data"]["message"]["messages"][0]["userData"]["session-id"] == (
            victim.chat_id
        )
        await attacker.agent_joins()
        await settle(app)
        own_notice = await receive(spy)  # its own chat's notification is its own to read
        assert own_notice["data"]["message"]["messages"][0]["userData"]["session-id"] == (
            attacker.chat_id
        )
        await attacker.op("disconnect")
        clock.advance(RESEND_DELAY_S)  # the victim's trigger is resent after that
        await settle(app)
        resent = (await receive(own))["data"]
        assert resent["message"]["messages"][0]["userData"]["session-id"] == victim.chat_id
        assert trigger_of(resent) == ("2", "1")
        with pytest.raises(TimeoutError):  # nothing of the victim's, ever
            async with asyncio.timeout(0.3):
                await spy.receive()
    async with bayeux(app, attacker_ext) as late:  # an ended chat grants no new subscription
        with pytest.raises(ServerError) as refused:
            await late.subscribe("/_genesys/push/victim-phone-42")
        assert refused.value.error == "403::subscription_denied"


async def test_trigger_without_subscriber_is_resent_until_a_bridge_takes_it(
    app: AppClient, clock: FakeClock
) -> None:
    chat = await comet_chat(app, "phone-late", PushResend="true")
    await chat.agent_joins()
    await settle(app)
    [failed] = (await chat.api("GET", f"/chats/{chat.chat_id}/deliveries"))["deliveries"]
    assert failed["outcome"] == "failed"
    assert "no CometD session subscribed" in failed["error"]
    async with bayeux(app, {"apiKey": API_KEY}) as bridge:
        await bridge.subscribe("/_genesys/push/phone-late")
        clock.advance(ms=RESEND_DELAY_S * 1000 - 1)
        await settle(app)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await bridge.receive()
        clock.advance(ms=1)
        await settle(app)
        message = await receive(bridge)
        assert message["channel"] == "/_genesys/push/phone-late"
        assert trigger_of(message["data"]) == ("2", "1")


async def test_unreliable_notification_without_subscriber_is_dropped(
    app: AppClient, clock: FakeClock
) -> None:
    chat = await comet_chat(app, "phone-gone", PushIncludePayload="true")
    await chat.agent_joins()
    await settle(app)
    deliveries = (await chat.api("GET", f"/chats/{chat.chat_id}/deliveries"))["deliveries"]
    assert [d["outcome"] for d in deliveries] == ["failed"]
    async with bayeux(app, {"apiKey": API_KEY}) as bridge:
        await bridge.subscribe("/_genesys/push/*")
        clock.advance(600)
        await settle(app)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await bridge.receive()


async def test_a_notification_of_no_chat_reaches_bridges_only(app: AppClient) -> None:
    """The comet provider decides who may read from the envelope's source, not its key: a
    notification that no chat made, even one whose key is a chat's id, goes to bridges and not
    to that chat's own client."""
    chat = await comet_chat(app, "phone-z")
    provider = app.app[DISPATCHER].providers["comet"]
    target = Target(url=None, message=None, signing_secret=None, authorization=None)
    ext = {"chatId": chat.chat_id, "secureKey": chat.secure_key}
    async with bayeux(app, {"apiKey": API_KEY}) as bridge, bayeux(app, ext) as own:
        await bridge.subscribe("/_genesys/push/*")
        await own.subscribe("/_genesys/push/phone-z")
        alert = Notification("test", chat.chat_id, "alert", "m-test", {"deviceId": "phone-z"})
        result = await provider.send(target, alert, now_s=0)
        assert result.outcome == "sent", result
        assert (await receive(bridge))["data"] == {"deviceId": "phone-z"}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await own.receive()
        # The same notification made by the chat is the chat client's to read.
        mine = Notification("chat", chat.chat_id, "bare", "m-chat", {"deviceId": "phone-z"})
        assert (await provider.send(target, mine, now_s=0)).outcome == "sent"
        for client in (own, bridge):
            assert (await receive(client))["data"] == {"deviceId": "phone-z"}


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_sample_bridge_receives_and_acknowledges(
    app: AppClient, clock: FakeClock, transport: str
) -> None:
    chatpush = str(app.server.make_url("/")).rstrip("/")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BRIDGE),
        "--chatpush",
        chatpush,
        "--api-key",
        API_KEY,
        "--service",
        "support",
        "--connection-type",
        transport,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output: list[str] = []

    async def line_with(text: str) -> str:
        async with asyncio.timeout(15):
            while True:
                raw = await process.stdout.readline()  # type: ignore[union-attr]
                assert raw, f"the bridge exited: {output}"
                output.append(raw.decode().rstrip())
                if text in output[-1]:
                    return output[-1]

    try:
        await line_with("bridge subscribed to /_genesys/push/*")
        chat = await comet_chat(app, "phone-bridge", PushResend="true")
        await chat.agent_joins()
        await settle(app)
        assert "notify-position 2, attempt 0" in await line_with("trigger for device phone-bridge")
        await line_with(f"acknowledged chat {chat.chat_id} up to 2")
        subscription = await chat.api("GET", f"/chats/{chat.chat_id}/subscription")
        assert subscription["outstandingTrigger"] is None
        assert subscription["acknowledgedPosition"] == 2
        # Acknowledged: past the first resend (and below the bridge session's max interval, so
        # that it stays connected), nothing is sent again.
        clock.advance(RESEND_DELAY_S + 5)
        await settle(app)
        deliveries = (await chat.api("GET", f"/chats/{chat.chat_id}/deliveries"))["deliveries"]
        assert [(d["deviceType"], d["outcome"]) for d in deliveries] == [("comet", "sent")]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
