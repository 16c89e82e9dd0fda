"""Two instances in one process on one PostgreSQL database, each hosting one node of a group.

Both share the fake clock, so nothing here waits for time to pass: a delivery that happens without
the clock moving was woken by the other instance's NOTIFY. Instance A hosts ``node-a``, instance B
``node-b``; with ``node-a`` drained, A hands its chats over to B's node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiocometd_noloop import Client as CometdClient
from aiocometd_noloop import ConnectionType

from chatpush.api.keys import DISPATCHER
from chatpush.config import ConfigError, Settings
from chatpush.testing import FakeClock
from tests.conftest import ChatDriver
from tests.integration._push_support import Client, api, push_form, settle, trail
from tests.receivers import Received, Receiver

RESEND_DELAY_S = 120
"""Longer than the lease (60 s, the default): a lease runs out before any resend is due."""
SIGNING_SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="


@dataclass
class Pair:
    a: Client
    b: Client
    clock: FakeClock
    receiver: Receiver
    settings: Callable[..., Settings]

    async def settle(self) -> None:
        await asyncio.gather(settle(self.a), settle(self.b))

    async def received(self, count: int, timeout_s: float = 5.0) -> list[Received]:
        """Wait (in real time, the fake clock standing still) for ``count`` POSTs."""
        async with asyncio.timeout(timeout_s):
            while len(self.receiver.received) < count:
                self.receiver.arrived.clear()
                await self.receiver.arrived.wait()
        return self.receiver.received

    async def arrivals(self, count: int, timeout_s: float = 5.0) -> list[tuple[str, str]]:
        await self.received(count, timeout_s)
        await self.settle()
        return self.receiver.triggers()


@pytest.fixture
def db_url(pg_url: str) -> str:
    """PostgreSQL only: several instances on one SQLite file is not a supported set-up."""
    return pg_url


@pytest.fixture
async def pair(
    make_settings: Callable[..., Settings], make_client: Any, clock: FakeClock
) -> AsyncIterator[Pair]:
    receiver = await Receiver().start()

    def settings(name: str, node: str | None = None) -> Settings:
        return make_settings(
            server={
                "instance_id": f"instance-{name}",
                "alias": name,
                "nodes": [node or f"node-{name}"],
            },
            groups={
                "g": {
                    "default": True,
                    "nodes": ["node-a", "node-b"],
                    "customhttp.url": receiver.url,
                    "customhttp.signing_secret": SIGNING_SECRET,
                }
            },
            services={"default": {"flex-push-resend-delay": RESEND_DELAY_S}},
        )

    b = await make_client(settings("b"))
    a = await make_client(settings("a"))  # started second: it sees node-b's heartbeat at once
    await api(a, "POST", "/nodes/node-a/drain")
    try:
        yield Pair(a, b, clock, receiver, settings)
    finally:
        await receiver.close()


async def test_a_chat_on_an_instance_without_a_live_node_is_sent_by_the_other(pair: Pair) -> None:
    chat = ChatDriver(pair.a)
    await chat.request_chat(**push_form(PushResend="true"))
    await chat.agent_joins()
    # A cannot send (its node is drained): it pins the chat to B's node and hands it over; B
    # learns of it by NOTIFY, since the clock does not move.
    assert await pair.arrivals(1) == [("2", "0")]
    rows = await trail(pair.a, chat.chat_id)
    assert [(row["node"], row["outcome"]) for row in rows] == [("node-b", "sent")]
    assert (await api(pair.b, "GET", f"/chats/{chat.chat_id}/subscription"))["pinnedNode"] == (
        "node-b"
    )


async def test_a_refresh_on_one_instance_stops_the_other_instances_resends(pair: Pair) -> None:
    acknowledged, ignored = ChatDriver(pair.a), ChatDriver(pair.a)
    for device, chat in (("acknowledged", acknowledged), ("ignored", ignored)):
        await chat.request_chat(**push_form(device, PushResend="true"))
        await chat.agent_joins()
    await pair.arrivals(2)
    # The app refreshes the first chat through instance A, though B sent its trigger.
    refreshed = await acknowledged.op("refresh", transcriptPosition="2")
    assert [event["index"] for event in refreshed["messages"]] == [2]

    pair.clock.advance(RESEND_DELAY_S + 1)
    triggers = await pair.arrivals(3)
    await asyncio.sleep(0.2)
    await pair.settle()
    # Only the ignored chat's trigger is resent, once, though both instances' timers woke.
    assert pair.receiver.triggers() == triggers == [("2", "0"), ("2", "0"), ("2", "1")]
    assert pair.receiver.received[2].body["deviceId"] == "ignored"
    sub = await api(pair.b, "GET", f"/chats/{acknowledged.chat_id}/subscription")
    assert sub["outstandingTrigger"] is None and sub["acknowledgedPosition"] == 2


async def test_an_instance_refuses_to_start_with_a_node_a_live_instance_hosts(
    pair: Pair, make_client: Any
) -> None:
    with pytest.raises(ConfigError, match="node 'node-b' is hosted by instance 'instance-b'"):
        await make_client(pair.settings("c", node="node-b"))
    # Once instance B's heartbeat is stale (it died), another instance may take its node over.
    await pair.b.close()
    pair.clock.advance(60)
    c = await make_client(pair.settings("c", node="node-b"))
    nodes = {node["name"]: node for node in (await api(c, "GET", "/nodes"))["nodes"]}
    assert nodes["node-b"]["available"] is True


async def test_a_dead_instances_leased_notification_is_sent_again_by_another(pair: Pair) -> None:
    await api(pair.a, "POST", "/nodes/node-a/undrain")
    await api(pair.b, "POST", "/nodes/node-b/drain")
    pair.receiver.mode = "hang"
    chat = ChatDriver(pair.a)
    await chat.request_chat(**push_form(PushResend="true"))
    await chat.agent_joins()
    async with asyncio.timeout(5):
        await pair.receiver.arrived.wait()
    # Instance A dies with the trigger in flight: its lease stays in the database.
    pair.a.app[DISPATCHER].stop_grace_s = 0.1
    await pair.a.close()
    pair.receiver.mode = "ok"
    await api(pair.b, "POST", "/nodes/node-b/undrain")

    pair.clock.advance(59)  # A's node is stale (15 s), but its lease (60 s) still holds
    await asyncio.sleep(0.2)
    await settle(pair.b)
    assert len(pair.receiver.received) == 1
    pair.clock.advance(2)
    [first, again] = [item.headers for item in await pair.received(2)]
    assert again["webhook-id"] == first["webhook-id"]  # the very same notification
    assert pair.receiver.triggers() == [("2", "0"), ("2", "0")]
    await settle(pair.b)
    rows = await trail(pair.b, chat.chat_id)
    assert [(row["node"], row["outcome"]) for row in rows] == [("node-b", "sent")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiocometd's aiohttp arguments
async def test_a_cometd_client_on_one_instance_follows_a_chat_written_on_the_other(
    pair: Pair,
) -> None:
    """The client's session lives on A; the agent writes through B. B's commits reach the client
    by NOTIFY (the clock stands still), and B, which sends the chat's pushes, holds them while
    A's client is in the foreground."""
    user_data = {
        key[len("userData[") : -1]: value
        for key, value in push_form(PushResend="true").items()
        if key.startswith("userData[")
    }
    url = str(pair.a.make_url("/genesys/cometd"))
    channel = "/service/chatV2/support"
    async with CometdClient(url, ConnectionType.LONG_POLLING, connection_timeout=0) as cometd:

        async def receive() -> dict[str, Any]:
            async with asyncio.timeout(5):
                message: dict[str, Any] = await cometd.receive()
            return message["data"]  # type: ignore[no-any-return]

        await cometd.publish(
            channel, {"operation": "requestChat", "nickname": "Ann", "userData": user_data}
        )
        started = await receive()
        on_b = ChatDriver(pair.b)
        on_b.chat_id, on_b.secure_key = started["chatId"], started["secureKey"]
        agent = await on_b.agent_joins()
        await on_b.agent_says(agent, "written on B")
        seen = [event for _ in range(2) for event in (await receive())["messages"]]
        assert [(event["index"], event.get("text")) for event in seen][-1] == (3, "written on B")
        await pair.settle()
        assert pair.receiver.triggers() == []
    # The client went to background on A (no position): B sends the trigger, woken by NOTIFY.
    assert await pair.arrivals(1) == [("2", "0")]
    rows = await trail(pair.a, on_b.chat_id)
    assert [(row["node"], row["outcome"]) for row in rows] == [("node-b", "sent")]
