"""Node groups and failover (CONTRACT §9), with the debug and named provider settings (§5).

Groups, from the default group's point of view: ``g1`` (default, two nodes) has a debug URL and a
named provider ``acme``; ``a-fcm`` sorts first among the others but does not enable customhttp, so
it must never be chosen; ``g2`` is the failover group for customhttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver
from tests.integration._push_support import (
    Client,
    Receivers,
    api,
    metric,
    push_form,
    settle,
    trail,
)
from tests.receivers import Received, Receiver

MakeClient = Callable[[Settings], Any]

NO_NODE = "could not send notification: no node found in group=g1"


@dataclass
class Setup:
    client: Client
    clock: FakeClock
    r: dict[str, Receiver]

    def chat(self) -> ChatDriver:
        return ChatDriver(self.client)

    async def settle(self) -> None:
        await settle(self.client)

    async def nodes(self) -> dict[str, dict[str, Any]]:
        body = await api(self.client, "GET", "/nodes")
        return {node["name"]: node for node in body["nodes"]}

    async def drain(self, *names: str) -> None:
        for name in names:
            assert await api(self.client, "POST", f"/nodes/{name}/drain") == {
                "name": name,
                "drained": True,
            }

    async def undrain(self, *names: str) -> None:
        for name in names:
            assert await api(self.client, "POST", f"/nodes/{name}/undrain") == {
                "name": name,
                "drained": False,
            }

    async def pinned(self, chat_id: str) -> str | None:
        sub = await api(self.client, "GET", f"/chats/{chat_id}/subscription")
        pinned: str | None = sub["pinnedNode"]
        return pinned

    def devices(self, name: str) -> list[str]:
        return [item.body["deviceId"] for item in self.r[name].received]


@pytest.fixture
async def setup(
    make_settings: Callable[..., Settings], make_client: MakeClient, clock: FakeClock
) -> AsyncIterator[Setup]:
    async with Receivers() as receivers:
        names = ["g1", "g1-debug", "acme", "acme-debug", "g2", "a-fcm"]
        r = {name: await receivers.start(delay_s=0.0) for name in names}
        settings = make_settings(
            groups={
                "g1": {
                    "default": True,
                    "nodes": ["n1a", "n1b"],
                    "customhttp.url": r["g1"].url,
                    "debug.customhttp.url": r["g1-debug"].url,
                    "providers": {
                        "acme": {
                            "customhttp.url": r["acme"].url,
                            "debug.customhttp.url": r["acme-debug"].url,
                        }
                    },
                },
                "a-fcm": {
                    "nodes": ["n-fcm"],
                    "pushEnabled": "fcm",
                    "customhttp.url": r["a-fcm"].url,
                },
                "g2": {"nodes": ["n2"], "customhttp.url": r["g2"].url},
            },
            services={"default": {"flex-push-resend-delay": 15}},
        )
        yield Setup(await make_client(settings), clock, r)
        assert r["a-fcm"].received == [], "a group that does not enable customhttp was used"


# -- which settings -------------------------------------------------------------------------


async def test_debug_and_named_provider_choose_the_url(setup: Setup) -> None:
    cases = {
        "plain": ({}, "g1"),
        "debug": ({"PushDebug": "true"}, "g1-debug"),
        "not-debug": ({"PushDebug": "false"}, "g1"),
        "acme": ({"PushProvider": "acme"}, "acme"),
        "acme-debug": ({"PushProvider": "acme", "PushDebug": "true"}, "acme-debug"),
        # g2 has no debug URL: its normal URL serves debug subscriptions.
        "g2-debug": ({"NodeGroup": "g2", "PushDebug": "true"}, "g2"),
    }
    for device, (keys, _) in cases.items():
        chat = setup.chat()
        await chat.request_chat(**push_form(device, **keys))
        await chat.agent_joins()
    await setup.settle()
    for device, (_, receiver) in cases.items():
        assert device in setup.devices(receiver), (device, receiver)
    received = sorted(device for name in setup.r for device in setup.devices(name))
    assert received == sorted(cases), "a notification went to more than one receiver"


# -- pinning and drain ----------------------------------------------------------------------


async def test_a_chat_stays_on_one_node_and_the_node_list_shows_it(setup: Setup) -> None:
    chats = [setup.chat() for _ in range(6)]
    for number, chat in enumerate(chats):
        await chat.request_chat(**push_form(f"dev-{number}"))
    for _ in range(3):
        for chat in chats:
            agent = await chat.agent_joins()
            await chat.agent_says(agent, "hi")
        await setup.settle()
    nodes = await setup.nodes()
    assert set(nodes) == {"n1a", "n1b", "n2", "n-fcm"}
    for chat in chats:
        rows = await trail(setup.client, chat.chat_id)
        assert len(rows) == 6 and {row["outcome"] for row in rows} == {"sent"}
        used = {row["node"] for row in rows}
        assert len(used) == 1, f"chat {chat.chat_id} went through {used}"
        [node] = used
        assert node in ("n1a", "n1b") and {row["nodeGroup"] for row in rows} == {"g1"}
        assert await setup.pinned(chat.chat_id) == node
        assert chat.chat_id in nodes[node]["pinnedChats"]
    listed = sorted(chat_id for node in nodes.values() for chat_id in node["pinnedChats"])
    assert listed == sorted(chat.chat_id for chat in chats)
    assert all(node["available"] and not node["drained"] for node in nodes.values())
    assert len(setup.r["g1"].received) == 36


async def test_draining_a_node_that_is_not_configured_is_404_on_both_stores(setup: Setup) -> None:
    """Any name (a NUL broke PostgreSQL's query: a 500) is refused alike; no node changes."""
    before = await setup.nodes()
    for name in ("n9", "%00", "n1a%00", "x" * 300, "%E2%80%AE"):
        for action in ("drain", "undrain"):
            response = await setup.client.post(
                f"/api/v1/nodes/{name}/{action}", headers={"X-API-Key": API_KEY}
            )
            assert response.status == 404, (name, action, await response.text())
    assert await setup.nodes() == before


async def test_draining_the_pinned_node_moves_the_chat_within_its_group(setup: Setup) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-1", PushIncludePayload="true"))
    agent = await chat.agent_joins()
    await setup.settle()
    first = await setup.pinned(chat.chat_id)
    assert first in ("n1a", "n1b")
    other = "n1b" if first == "n1a" else "n1a"
    await setup.drain(first)
    nodes = await setup.nodes()
    assert nodes[first]["drained"] and not nodes[first]["available"]
    await chat.agent_says(agent, "after the drain")
    await setup.settle()
    rows = await trail(setup.client, chat.chat_id)
    assert [(row["node"], row["nodeGroup"], row["outcome"]) for row in rows] == [
        (first, "g1", "sent"),
        (other, "g1", "sent"),
    ]
    assert [item.body["message"]["messages"][0]["index"] for item in setup.r["g1"].received] == [
        2,
        3,
    ]
    nodes = await setup.nodes()
    assert nodes[other]["pinnedChats"] == [chat.chat_id] and nodes[first]["pinnedChats"] == []
    # Undraining the old node does not move the chat back: it stays while its node is available.
    await setup.undrain(first)
    await chat.agent_says(agent, "after the undrain")
    await setup.settle()
    assert (await trail(setup.client, chat.chat_id))[-1]["node"] == other
    assert await metric(setup.client, "chatpush_node_failovers_total", node=other) == 1


async def test_whole_group_drained_fails_over_to_a_group_enabling_the_device_type(
    setup: Setup,
) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-1", PushProvider="acme"))
    agent = await chat.agent_joins()
    await setup.settle()
    await setup.drain("n1a", "n1b")
    await chat.agent_says(agent, "failover")
    await setup.settle()
    rows = await trail(setup.client, chat.chat_id)
    assert [(row["node"], row["nodeGroup"], row["outcome"]) for row in rows][-1] == (
        "n2",
        "g2",
        "sent",
    )
    # Delivered with g2's settings (its URL), not g1's nor acme's.
    assert setup.devices("acme") == ["dev-1"] and setup.devices("g2") == ["dev-1"]
    sub = await api(setup.client, "GET", f"/chats/{chat.chat_id}/subscription")
    assert sub["nodeGroup"] == "g1" and sub["pinnedNode"] == "n2"
    assert chat.chat_id in (await setup.nodes())["n2"]["pinnedChats"]


async def test_drain_and_undrain_of_an_unknown_node_are_404(setup: Setup) -> None:
    for action in ("drain", "undrain"):
        body = await api(setup.client, "POST", f"/nodes/nope/{action}", expect=404)
        assert "nope" in body["errors"][0]["advice"]
    assert set(await setup.nodes()) == {"n1a", "n1b", "n2", "n-fcm"}


# -- no node anywhere -----------------------------------------------------------------------


async def no_node_anywhere(
    setup: Setup, caplog: pytest.LogCaptureFixture, **keys: str
) -> tuple[ChatDriver, int]:
    """A chat whose first notification finds every customhttp node drained."""
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-1", **keys))
    await setup.drain("n1a", "n1b", "n2")
    with caplog.at_level(logging.WARNING, logger="chatpush.dispatch"):
        agent = await chat.agent_joins()
        await setup.settle()
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count(NO_NODE) == 1, messages
    rows = await trail(setup.client, chat.chat_id)
    assert [(row["outcome"], row["node"], row["notifyPosition"]) for row in rows] == [
        ("no_node", None, 2)
    ]
    assert all(not receiver.received for receiver in setup.r.values())
    sub = await api(setup.client, "GET", f"/chats/{chat.chat_id}/subscription")
    assert [row["parked"] for row in sub["queued"]] == [True]
    assert await metric(setup.client, "chatpush_no_node_total", group="g1") == 1
    # Undraining alone sends nothing: the notification waits for the chat's next activity.
    await setup.undrain("n1b")
    await setup.settle()
    assert not setup.r["g1"].received
    return chat, agent


async def test_no_node_then_the_next_agent_event_delivers_both(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    chat, agent = await no_node_anywhere(setup, caplog, PushIncludePayload="true")
    await chat.agent_says(agent, "next activity")
    await setup.settle()
    received = setup.r["g1"].received
    assert [item.body["message"]["messages"][0]["index"] for item in received] == [2, 3]
    rows = await trail(setup.client, chat.chat_id)
    assert [(row["outcome"], row["node"]) for row in rows] == [
        ("no_node", None),
        ("sent", "n1b"),
        ("sent", "n1b"),
    ]


async def test_no_node_then_a_refresh_delivers_it(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    chat, _ = await no_node_anywhere(setup, caplog)
    await chat.op("refresh")
    await setup.settle()
    assert [item.raw for item in setup.r["g1"].received] == [b'{"deviceId":"dev-1"}']
    rows = await trail(setup.client, chat.chat_id)
    assert [row["outcome"] for row in rows] == ["no_node", "sent"]


async def test_no_node_stays_parked_while_nothing_is_available(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-1", PushIncludePayload="true"))
    await setup.drain("n1a", "n1b", "n2")
    with caplog.at_level(logging.WARNING, logger="chatpush.dispatch"):
        agent = await chat.agent_joins()
        await setup.settle()
        await chat.agent_says(agent, "still nothing")
        await setup.settle()
    # Each activity tries again (and logs again); nothing is lost and nothing is sent.
    assert [record.getMessage() for record in caplog.records].count(NO_NODE) == 2
    sub = await api(setup.client, "GET", f"/chats/{chat.chat_id}/subscription")
    assert [(row["notifyPosition"], row["parked"]) for row in sub["queued"]] == [
        (2, True),
        (3, True),
    ]
    await setup.undrain("n2")  # only the failover group comes back
    await chat.op("refresh")
    await setup.settle()
    assert [item.body["message"]["messages"][0]["index"] for item in setup.r["g2"].received] == [
        2,
        3,
    ]


async def test_reliable_trigger_without_node_goes_out_at_the_next_resend(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-1", PushResend="true"))
    await setup.drain("n1a", "n1b", "n2")
    with caplog.at_level(logging.WARNING, logger="chatpush.dispatch"):
        await chat.agent_joins()
        await setup.settle()
    assert NO_NODE in [record.getMessage() for record in caplog.records]
    await setup.undrain("n1a")
    await setup.settle()
    assert setup.r["g1"].received == []
    setup.clock.advance(15)
    await setup.settle()
    assert setup.r["g1"].triggers() == [("2", "1")]
    rows = await trail(setup.client, chat.chat_id)
    assert [(row["outcome"], row["node"], row["notifyAttempt"]) for row in rows] == [
        ("no_node", None, 0),
        ("sent", "n1a", 1),
    ]


# -- order ---------------------------------------------------------------------------------


class CountingReceiver(Receiver):
    """Also counts requests in flight, per chat and in all, while each takes a random while."""

    def __init__(self) -> None:
        super().__init__()
        self.inflight: dict[str, int] = {}
        self.max_per_chat = 0
        self.max_total = 0
        self.random = random.Random(7)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        chat_id = json.loads(raw)["message"]["chatId"]
        self.inflight[chat_id] = self.inflight.get(chat_id, 0) + 1
        self.max_per_chat = max(self.max_per_chat, self.inflight[chat_id])
        self.max_total = max(self.max_total, sum(self.inflight.values()))
        try:
            self.received.append(Received(json.loads(raw), dict(request.headers), raw))
            await asyncio.sleep(self.random.uniform(0.001, 0.015))
            return web.Response(text="ok")
        finally:
            self.inflight[chat_id] -= 1


@pytest.fixture
async def counting(
    make_settings: Callable[..., Settings], make_client: MakeClient
) -> AsyncIterator[tuple[Client, CountingReceiver]]:
    receiver = CountingReceiver()
    await receiver.start()
    try:
        settings = make_settings(
            groups={
                "g1": {"default": True, "nodes": ["n1a", "n1b"], "customhttp.url": receiver.url}
            }
        )
        yield await make_client(settings), receiver
    finally:
        await receiver.close()


def indexes_by_chat(receiver: Receiver) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for item in receiver.received:
        message = item.body["message"]
        seen.setdefault(message["chatId"], []).append(message["messages"][0]["index"])
    return seen


async def test_one_chats_notifications_are_never_reordered(
    counting: tuple[Client, CountingReceiver],
) -> None:
    client, receiver = counting
    chats = [ChatDriver(client) for _ in range(6)]
    for number, chat in enumerate(chats):
        await chat.request_chat(**push_form(f"dev-{number}", PushIncludePayload="true"))

    async def burst(chat: ChatDriver) -> None:
        agent = await chat.agent_joins()
        for number in range(15):
            await chat.agent_says(agent, f"message {number}")

    await asyncio.gather(*(burst(chat) for chat in chats))
    await settle(client)
    assert indexes_by_chat(receiver) == {chat.chat_id: list(range(2, 18)) for chat in chats}
    # One at a time per chat (the next waits for the receiver's answer), chats in parallel.
    assert receiver.max_per_chat == 1
    assert receiver.max_total > 1


async def test_order_holds_across_a_drain_in_the_middle(
    counting: tuple[Client, CountingReceiver],
) -> None:
    client, receiver = counting
    chats = [ChatDriver(client) for _ in range(4)]
    for number, chat in enumerate(chats):
        await chat.request_chat(**push_form(f"dev-{number}", PushIncludePayload="true"))
    agents = [await chat.agent_joins() for chat in chats]

    async def burst(chat: ChatDriver, agent: int) -> None:
        for number in range(8):
            await chat.agent_says(agent, f"message {number}")

    pairs = list(zip(chats, agents, strict=True))
    await asyncio.gather(*(burst(chat, agent) for chat, agent in pairs))
    await api(client, "POST", "/nodes/n1a/drain")  # while deliveries are still under way
    await asyncio.gather(*(burst(chat, agent) for chat, agent in pairs))
    await settle(client)
    assert indexes_by_chat(receiver) == {chat.chat_id: list(range(2, 19)) for chat in chats}
    assert receiver.max_per_chat == 1
    for chat in chats:
        assert (await trail(client, chat.chat_id))[-1]["node"] == "n1b"


async def test_a_parked_trigger_acknowledged_by_a_refresh_is_not_sent(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-1", PushResend="true"))
    await setup.drain("n1a", "n1b", "n2")
    with caplog.at_level(logging.WARNING, logger="chatpush.dispatch"):
        await chat.agent_joins()
        await setup.settle()
    await setup.undrain("n1a")
    # The client reads index 2 by itself: the parked trigger pointing at 2 has nothing to say.
    await chat.op("refresh", transcriptPosition="2")
    await setup.settle()
    setup.clock.advance(60)
    await setup.settle()
    assert setup.r["g1"].received == []
    sub = await api(setup.client, "GET", f"/chats/{chat.chat_id}/subscription")
    assert sub["outstandingTrigger"] is None and sub["queued"] == []
