"""/metrics after real traffic: chats over REST and CometD, triggers delivered to a real receiver,
a receiver that fails until the resends run out, a notification parked for want of a node. The
text is read with prometheus-client's own parser, on both stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import chatpush
from chatpush.api.keys import CHATS, DISPATCHER
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver
from tests.integration._push_support import Client, Receivers, push_form

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
MakeClient = Callable[[Settings], Any]


async def scrape(client: Client) -> Samples:
    response = await client.get("/metrics", headers={"X-API-Key": API_KEY})
    assert response.status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample of ``name`` with exactly ``labels``; a missing one fails the test."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} is not in the scrape"
    return samples[key]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not true after {timeout_s} s"
        await asyncio.sleep(0.005)


async def test_a_scrape_after_real_traffic_tells_the_story(
    make_settings: Callable[..., Settings], make_client: MakeClient, clock: FakeClock
) -> None:
    async with Receivers() as receivers:
        ok = await receivers.start()
        broken = await receivers.start(mode="error")
        settings = make_settings(
            groups={
                "g1": {"default": True, "nodes": ["n1"], "customhttp.url": ok.url},
                "g2": {"nodes": ["n2"], "customhttp.url": broken.url},
            },
            services={"default": {"flex-push-resend-delay": 15, "flex-push-resend-attempts": 1}},
        )
        client = await make_client(settings)
        dispatcher = client.app[DISPATCHER]
        before = await scrape(client)
        assert value(before, "chatpush_build_info", version=chatpush.__version__) == 1
        assert value(before, "chatpush_outbox_due") == 0
        assert value(before, "chatpush_nodes_available", group="g1") == 1

        # A: its client is in the foreground for 30 s, so its first trigger waits 30 s.
        a = ChatDriver(client)
        await a.request_chat(**push_form("device-a", PushResend="true"))
        await client.app[CHATS].refresh(
            "support", a.chat_id, a.secure_key, None, live_until_ms=clock.now_ms() + 30_000
        )
        agent = await a.agent_joins()
        await dispatcher.settle()
        assert ok.triggers() == []
        clock.advance(30)
        await until(lambda: ok.triggers() == [("2", "0")])
        await a.op("refresh", transcriptPosition="2")

        # B: its group's receiver answers 500 to the trigger and to its one resend.
        b = ChatDriver(client)
        await b.request_chat(**push_form("device-b", PushResend="true", NodeGroup="g2"))
        await b.agent_joins()
        await dispatcher.settle()
        clock.advance(15)
        await dispatcher.settle()
        clock.advance(15)
        await dispatcher.settle()
        assert broken.triggers() == [("2", "0"), ("2", "1")]

        # C: every node drained; its trigger is parked.
        for node in ("n1", "n2"):
            await a.api("POST", f"/nodes/{node}/drain")
        c = ChatDriver(client)
        await c.request_chat(**push_form("device-c", PushResend="true"))
        await c.agent_joins()
        await dispatcher.settle()
        await a.agent_says(agent, "parked too")  # A's new trigger has no node either
        await dispatcher.settle()

        samples = await scrape(client)

    # Counters keep their names and labels.
    assert value(samples, "chatpush_deliveries_total", outcome="sent", node="n1",
                 device_type="customhttp") == 1  # fmt: skip
    assert value(samples, "chatpush_deliveries_total", outcome="failed", node="n2",
                 device_type="customhttp") == 2  # fmt: skip
    assert value(samples, "chatpush_triggers_resent_total") == 1
    assert value(samples, "chatpush_resend_exhausted_total") == 1
    assert value(samples, "chatpush_no_node_total", group="g1") == 2
    # Gauges, computed at the scrape.
    assert value(samples, "chatpush_metrics_database_ok") == 1
    assert value(samples, "chatpush_outbox_due") == 0
    assert value(samples, "chatpush_outbox_parked") == 2
    assert value(samples, "chatpush_outbox_oldest_age_seconds") == 0
    assert value(samples, "chatpush_reliable_triggers_outstanding") == 2  # A and C, parked
    assert value(samples, "chatpush_subscriptions_failing") == 1  # B
    assert value(samples, "chatpush_nodes", group="g1") == 1
    assert value(samples, "chatpush_nodes_available", group="g1") == 0
    assert value(samples, "chatpush_nodes_available", group="g2") == 0
    assert value(samples, "chatpush_cometd_sessions") == 0
    # Histograms: one observation per attempt, per first trigger, per request.
    delivery = "chatpush_delivery_duration_seconds_count"
    assert value(samples, delivery, device_type="customhttp") == 3
    delay = "chatpush_notification_delivery_delay_seconds_count"
    assert value(samples, delay, kind="trigger") == 3
    enqueue = "chatpush_trigger_enqueue_delay_seconds_bucket"
    assert value(samples, "chatpush_trigger_enqueue_delay_seconds_count") == 4  # A, B, C, A
    assert value(samples, enqueue, le="10.0") == 3  # B, C, A's second: in their event's commit
    assert value(samples, enqueue, le="30.0") == 4  # A's first waited 30 s for the foreground
    assert value(samples, "chatpush_trigger_enqueue_delay_seconds_sum") == 30
    requests = "chatpush_request_duration_seconds_count"
    assert value(samples, requests, route="chat_api") == 4  # three Request Chats, a refresh
    assert value(samples, requests, route="server_api") == 6  # three joins, a message, drains
    assert value(samples, requests, route="metrics") == 1  # the first scrape
    assert total(samples, "process_cpu_seconds_total") > 0


async def test_cometd_sessions_and_the_bayeux_servers_own_counts(
    make_settings: Callable[..., Settings], make_client: MakeClient
) -> None:
    client = await make_client(make_settings())
    handshake = [
        {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
    ]
    for _ in range(2):
        response = await client.post("/genesys/cometd", json=handshake)
        assert (await response.json())[0]["successful"] is True
    samples = await scrape(client)
    assert value(samples, "chatpush_cometd_sessions") == 2
    assert value(samples, "chatpush_cometd_handshakes_total") == 2
    assert value(samples, "chatpush_cometd_queued_bytes") == 0
    assert value(samples, "chatpush_request_duration_seconds_count", route="cometd") == 2


async def test_every_app_counts_on_its_own(
    make_settings: Callable[..., Settings], make_client: MakeClient
) -> None:
    first = await make_client(make_settings())
    second = await make_client(make_settings())
    await ChatDriver(first).request_chat()
    assert value(await scrape(first), "chatpush_request_duration_seconds_count",
                 route="chat_api") == 1  # fmt: skip
    assert total(await scrape(second), "chatpush_request_duration_seconds_count",
                 route="chat_api") == 0  # fmt: skip
