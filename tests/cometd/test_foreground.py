"""Push waits while the chat's client follows it over CometD (the app in the foreground), and
starts again when it leaves: by /meta/disconnect, by its session vanishing, or, should its
instance die, when the foreground lease runs out (CONTRACT §10; docs/cometd.md).

The full app on a real SQLite file, a real custom HTTP receiver, and a FakeClock that the tests
move: leases and resend timers run in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiocometd_noloop import Client, ConnectionType

from chatpush.api.chat_cometd import CHAT_COMETD
from chatpush.api.keys import CHATS, CLOCK, DISPATCHER
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.cometd.conftest import until
from tests.cometd.support import connect, events, handshake, publish
from tests.conftest import ChatDriver
from tests.receivers import Receiver

CHANNEL = "/service/chatV2/support"
LEASE_S = 30
RELIABLE_USER_DATA = {
    "GCTI_Chat_PushSubscribe": "true",
    "GCTI_GMS_PushDeviceId": "device-1",
    "GCTI_GMS_PushDeviceType": "customhttp",
    "GCTI_GMS_PushResend": "true",
}

MakeClient = Callable[[Settings], Any]


@pytest.fixture
async def app_client(
    make_settings: Callable[..., Settings], make_client: MakeClient, receiver: Receiver
) -> Any:
    settings = make_settings(
        groups={"g1": {"default": True, "nodes": ["n1"], "customhttp.url": receiver.url}},
        cometd={"foreground_lease_s": LEASE_S, "max_interval_s": 30.0},
    )
    return await make_client(settings)


async def start_chat_over_cometd(http: Any) -> tuple[str, ChatDriver]:
    """A raw Bayeux session that requests a reliable-push chat; it never connects again."""
    client_id = await handshake(http)
    data = {"operation": "requestChat", "nickname": "Ann", "userData": RELIABLE_USER_DATA}
    await publish(http, client_id, CHANNEL, data)
    [started] = [m["data"] for m in events(await connect(http, client_id))]
    chat = ChatDriver(http)
    chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
    return client_id, chat


async def subscription(chat: ChatDriver) -> dict[str, Any]:
    return await chat.api("GET", f"/chats/{chat.chat_id}/subscription")


async def test_a_vanished_session_hands_the_chat_back_to_push(
    app_client: Any, receiver: Receiver
) -> None:
    clock: FakeClock = app_client.app[CLOCK]
    _, chat = await start_chat_over_cometd(app_client)
    assert (await subscription(chat))["foregroundUntil"] == clock.now_ms() + LEASE_S * 1000
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "Still there?")
    await app_client.app[DISPATCHER].settle()
    assert receiver.triggers() == []
    held = (await subscription(chat))["outstandingTrigger"]
    assert held == {"notifyPosition": 2, "notifyAttempt": 0, "chatEnded": False, "held": True}

    # The phone lost its network: no connect for longer than max_interval, the session expires.
    clock.advance(31)
    await until(lambda: app_client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 0)
    await until(lambda: receiver.triggers() == [("2", "0")])
    sub = await subscription(chat)
    assert sub["foregroundUntil"] is None and sub["outstandingTrigger"]["held"] is False

    # The app comes back by REST: the refresh acknowledges the trigger, nothing more is sent.
    await chat.op("refresh", transcriptPosition="2")
    clock.advance(60)
    await app_client.app[DISPATCHER].settle()
    assert receiver.triggers() == [("2", "0")]


async def test_a_lease_nobody_renews_runs_out_and_push_starts(
    app_client: Any, receiver: Receiver
) -> None:
    """What another instance sees when the one holding the client's session dies."""
    clock: FakeClock = app_client.app[CLOCK]
    chat = ChatDriver(app_client)
    await chat.request_chat(**{f"userData[{k}]": v for k, v in RELIABLE_USER_DATA.items()})
    # The foreground as requestNotifications over CometD sets it, with no session to renew it.
    await app_client.app[CHATS].refresh(
        "support", chat.chat_id, chat.secure_key, None, live_until_ms=clock.now_ms() + 30_000
    )
    agent = await chat.agent_joins()
    await app_client.app[DISPATCHER].settle()
    clock.advance(29)
    await app_client.app[DISPATCHER].settle()
    assert receiver.triggers() == []
    clock.advance(1)
    await until(lambda: receiver.triggers() == [("2", "0")])
    # From then on, the ordinary resend timetable (15 s by default).
    await chat.agent_says(agent, "hello?")
    clock.advance(15)
    await until(lambda: receiver.triggers() == [("2", "0"), ("2", "1")])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiocometd's aiohttp arguments
async def test_a_connected_client_keeps_push_waiting_lease_after_lease(
    app_client: Any, receiver: Receiver
) -> None:
    clock: FakeClock = app_client.app[CLOCK]
    url = str(app_client.make_url("/genesys/cometd"))
    async with Client(url, ConnectionType.LONG_POLLING, connection_timeout=0) as cometd:
        await cometd.publish(
            CHANNEL, {"operation": "requestChat", "nickname": "Ann", "userData": RELIABLE_USER_DATA}
        )
        started = (await cometd.receive())["data"]
        chat = ChatDriver(app_client)
        chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
        agent = await chat.agent_joins()
        await chat.agent_says(agent, "I am checking")
        for _ in range(3 * LEASE_S // 10):  # three leases, renewed every third of one
            clock.advance(10)
            expected = clock.now_ms() + LEASE_S * 1000
            for _ in range(200):
                if (await subscription(chat))["foregroundUntil"] == expected:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the foreground lease was not renewed")
        await app_client.app[DISPATCHER].settle()
        assert receiver.triggers() == []
        assert app_client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 1
    # Gone to background without a position: push starts from what the client acknowledged.
    await until(lambda: receiver.triggers() == [("2", "0")])
