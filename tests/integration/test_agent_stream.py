"""The event-stream client against a real WebSocket server on 127.0.0.1 that refuses, drops and
floods (docs/agents.md): backoff timing on the fake clock, the bearer token, intake, the gap
logged, and one connection across instances (the lease, on PostgreSQL with two apps)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.agents.stream import Backoff, EventStream
from chatpush.api.agents import AGENT_STREAM, AGENTS
from chatpush.api.keys import DATABASE, METRICS
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.agents_support import EventSource, RecordingOutbox, added, eventually
from tests.conftest import API_KEY

Client = TestClient[web.Request, web.Application]
GROUPS = {"g1": {"default": True, "nodes": ["n1"], "customhttp.url": "http://127.0.0.1:9/"}}
STEPS_S = [1, 2, 4, 8, 16, 30, 30]


@pytest.fixture
async def source(clock: FakeClock) -> AsyncIterator[EventSource]:
    server = await EventSource(clock.now_ms).start()
    yield server
    await server.close()


def stream_settings(make_settings: Callable[..., Settings], url: str, **agents: Any) -> Settings:
    return make_settings(
        groups=GROUPS,
        agents={"stream_url": url, "stream_token": "s3cret-token", **agents},
    )


async def app_with_outbox(
    make_client: Callable[..., Any], settings: Settings
) -> tuple[Client, RecordingOutbox]:
    outbox = RecordingOutbox()
    client = await make_client(settings, agent_outbox=outbox)
    return client, outbox


def standalone(client: Client, settings: Settings, clock: FakeClock, name: str) -> EventStream:
    """A stream of its own on the app's database and service, with no jitter (exact timing)."""
    app = client.app
    return EventStream(
        settings.agents, clock, app[DATABASE], app[AGENTS], app[METRICS], name, rng=lambda: 0.0
    )


async def stop_app_stream(client: Client) -> None:
    stream = client.app[AGENT_STREAM]
    await stream.stop()
    await eventually(lambda: not stream.state.running)


async def register(client: Client, user: str = "agent-1", token: str = "desk-1") -> None:
    response = await client.post(
        f"/api/v1/agents/{user}/devices",
        json={"platform": "customhttp", "token": token},
        headers={"X-API-Key": API_KEY},
    )
    assert response.status == 201


def test_backoff_doubles_to_the_longest_wait_with_jitter_below_each_step() -> None:
    exact = Backoff(1.0, 30.0, lambda: 0.0)
    assert [exact.next_s() for _ in STEPS_S] == STEPS_S
    exact.reset()
    assert exact.next_s() == 1.0
    most = Backoff(1.0, 30.0, lambda: 1.0)
    assert [round(most.next_s(), 6) for _ in STEPS_S] == [0.8 * s for s in STEPS_S]


async def test_a_refusing_server_is_retried_1_2_4_8_16_30_30_seconds_apart(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    source: EventSource,
) -> None:
    source.mode = "refuse"
    settings = stream_settings(make_settings, source.url)
    client, _ = await app_with_outbox(make_client, settings)
    # The app's own stream (with jitter) holds the lease: stop it, then run an exact one.
    await stop_app_stream(client)
    source.attempts.clear()
    clock.advance(settings.agents.stream_lease_s)  # whatever the app's stream held ran out
    stream = standalone(client, settings, clock, "exact")
    task = asyncio.create_task(stream.run())
    try:
        await eventually(lambda: len(source.attempts) == 1)
        for n, step_s in enumerate(STEPS_S, start=1):
            await eventually(lambda n=n: len(stream.state.waits_s) == n)  # type: ignore[misc]
            clock.advance(step_s - 0.001)
            await asyncio.sleep(0.05)
            assert len(source.attempts) == n, f"retried before {step_s} s"
            clock.advance(0.001)
            await eventually(lambda n=n: len(source.attempts) == n + 1)  # type: ignore[misc]
        gaps = [b - a for a, b in zip(source.attempts, source.attempts[1:], strict=False)]
        assert gaps == [s * 1000 for s in STEPS_S]
        assert source.authorizations[-1] == "Bearer s3cret-token"
        metrics = client.app[METRICS]
        refused = metrics.value("chatpush_agent_stream_connections_total", outcome="refused")
        assert refused >= len(STEPS_S) + 1
    finally:
        await stream.stop()
        await task


async def test_a_server_that_drops_at_once_keeps_the_waits_growing_until_one_holds(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    source: EventSource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source.mode = "drop"
    settings = stream_settings(make_settings, source.url)
    client, _ = await app_with_outbox(make_client, settings)
    await stop_app_stream(client)
    clock.advance(settings.agents.stream_lease_s)
    stream = standalone(client, settings, clock, "exact")
    caplog.set_level(logging.INFO, logger="chatpush.agents.stream")
    task = asyncio.create_task(stream.run())
    try:
        for n, step_s in enumerate([1, 2, 4], start=1):
            await eventually(lambda n=n: len(stream.state.waits_s) == n)  # type: ignore[misc]
            clock.advance(step_s)
        await eventually(lambda: len(stream.state.waits_s) == 4)
        assert stream.state.waits_s == [1, 2, 4, 8]
        assert stream.state.connections == 4
        lost = [r for r in caplog.records if getattr(r, "action", "") == "agent_stream_lost"]
        assert len(lost) == 4
        # Now the server holds the connection; it stays up 30 s, is dropped: back to 1 s.
        source.mode = "accept"
        clock.advance(8)
        await source.connected.wait()
        await eventually(lambda: stream.state.connected)
        resumed = [r for r in caplog.records if getattr(r, "action", "") == "agent_stream_resumed"]
        assert resumed and resumed[-1].missed_s == 8.0  # type: ignore[attr-defined]
        assert "may have been missed" in resumed[-1].getMessage()
        clock.advance(30)
        await eventually(lambda: stream.state.connected)
        await source.drop_all()
        await eventually(lambda: len(stream.state.waits_s) == 5)
        assert stream.state.waits_s[-1] == 1
    finally:
        await stream.stop()
        await task


async def test_events_from_the_stream_ring_and_bad_ones_are_dropped(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    source: EventSource,
) -> None:
    settings = stream_settings(make_settings, source.url)
    client, outbox = await app_with_outbox(make_client, settings)
    await register(client)
    await source.connected.wait()
    assert source.authorizations == ["Bearer s3cret-token"]
    await source.send(
        added("c1"),
        "not json {",
        [added("c2"), {"eventType": "routing.queue.member.added", "data": 5}, added("c3")],
        {"eventType": "v2.users.presence"},
    )
    await eventually(lambda: len(outbox.pushes) == 3)
    assert sorted(p.key.split("/")[0] for _, p in outbox.pushes) == ["c1", "c2", "c3"]
    metrics = client.app[METRICS]
    await eventually(
        lambda: (
            metrics.value("chatpush_agent_events_total", event_type="other", outcome="unknown") == 1
        )
    )
    assert metrics.value("chatpush_agent_events_total", event_type="other", outcome="invalid") == 2
    assert source.most_open == 1


async def test_a_flood_is_taken_in_batches_and_every_event_acted_on(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    source: EventSource,
) -> None:
    settings = stream_settings(make_settings, source.url)
    client, outbox = await app_with_outbox(make_client, settings)
    await register(client)
    await source.connected.wait()
    count = 3000
    await source.send(*(added(f"conv-{n}") for n in range(count)))
    await eventually(lambda: len(outbox.pushes) == count, timeout_s=60)
    stream = client.app[AGENT_STREAM]
    assert stream.state.events == count
    assert stream.state.connected and source.most_open == 1
    # In batches: far fewer transactions (pokes: one per batch that rang) than events.
    assert outbox.pokes < count / 5


async def test_one_connection_across_instances(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    source: EventSource,
    db_url: str,
) -> None:
    """Two apps (two instances' engines, services and streams) on one database: one connects;
    when it stops, the other takes over once the lease has run out."""
    if db_url.startswith("sqlite"):
        pytest.skip("several instances share a database on PostgreSQL")
    groups = {"g1": {**GROUPS["g1"], "nodes": ["n1", "n2"]}}
    agents = {"stream_url": source.url, "stream_lease_s": 15}
    first, _ = await app_with_outbox(
        make_client,
        make_settings(groups=groups, agents=agents, server={"instance_id": "a", "nodes": ["n1"]}),
    )
    second, _ = await app_with_outbox(
        make_client,
        make_settings(groups=groups, agents=agents, server={"instance_id": "b", "nodes": ["n2"]}),
    )
    await source.connected.wait()
    streams = [first.app[AGENT_STREAM], second.app[AGENT_STREAM]]
    # Time passes: the holder renews, the other keeps finding the lease taken.
    for _ in range(12):
        clock.advance(5)
        await asyncio.sleep(0.05)
    assert source.most_open == 1 and len(source.attempts) == 1
    holder = next(s for s in streams if s.state.connected)
    other = next(s for s in streams if s is not holder)
    # The holder stops (and releases the lease): the other connects at its next look.
    await holder.stop()
    await eventually(lambda: not holder.state.running and not source.open)
    clock.advance(15)
    await eventually(lambda: other.state.connected)
    assert source.most_open == 1 and len(source.attempts) == 2


async def test_a_lease_left_by_a_dead_instance_is_taken_over_when_it_runs_out(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    source: EventSource,
    db_url: str,
    migrated_sqlite: Callable[[str], None],
) -> None:
    from chatpush.store import agents as store
    from chatpush.store.database import Database

    if db_url.startswith("sqlite"):
        migrated_sqlite(db_url)
    settings = stream_settings(make_settings, source.url, stream_lease_s=15)
    ghost = Database(settings.database)
    try:
        taken = await ghost.write(store.take_lease, "event-stream", "ghost", clock.now_ms(), 15_000)
        assert taken
    finally:
        await ghost.close()
    client, _ = await app_with_outbox(make_client, settings)
    stream = client.app[AGENT_STREAM]
    for _ in range(2):
        clock.advance(5)
        await asyncio.sleep(0.05)
    assert source.attempts == [] and not stream.state.connected
    clock.advance(5)  # 15 s: the ghost's lease has run out
    await eventually(lambda: stream.state.connected)
    assert len(source.attempts) == 1
