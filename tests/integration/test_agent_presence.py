"""Presence, optional (docs/agents.md): a real presence server on 127.0.0.1 answering as the
contact centre's presence API; offline, away and onACall suppress a ring (logged, in the trail);
a source that fails or is slow lets the ring through; off by default."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from chatpush.config import Settings
from tests.agents_support import RecordingOutbox, added
from tests.conftest import API_KEY

GROUPS = {"g1": {"default": True, "nodes": ["n1"], "customhttp.url": "http://127.0.0.1:9/"}}


@dataclass
class PresenceServer:
    statuses: dict[str, str] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)
    asked: list[tuple[str, str | None]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        self.asked.append((user, request.headers.get("Authorization")))
        if user in self.slow:
            await asyncio.sleep(2)
        if user not in self.statuses:
            return web.json_response({"message": "not found"}, status=404)
        status = self.statuses[user]
        return web.json_response(
            {"currentPresence": {"presenceStatus": {"id": status, "name": status.title()}}}
        )

    async def start(self) -> PresenceServer:
        app = web.Application()
        app.router.add_get("/api/v2/users/{user}/presence", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/api/v2/users/{{userId}}/presence"
        return self


@pytest.fixture
async def presence() -> AsyncIterator[PresenceServer]:
    server = await PresenceServer().start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


async def start(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], **agents: Any
) -> tuple[Any, RecordingOutbox]:
    outbox = RecordingOutbox()
    client = await make_client(make_settings(groups=GROUPS, agents=agents), agent_outbox=outbox)
    for agent in ("agent-1", "agent-2", "agent-3", "agent-4"):
        response = await client.post(
            f"/api/v1/agents/{agent}/devices",
            json={"platform": "customhttp", "token": f"{agent}-desk"},
            headers={"X-API-Key": API_KEY},
        )
        assert response.status == 201
    return client, outbox


async def post(client: Any, *events: Any) -> Any:
    response = await client.post(
        "/api/v1/agent-events", json=list(events), headers={"X-API-Key": API_KEY}
    )
    assert response.status == 200
    return await response.json()


async def test_offline_away_and_on_a_call_suppress_a_ring(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    presence: PresenceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, outbox = await start(
        make_client, make_settings, presence_url=presence.url, presence_token="presence-token"
    )
    presence.statuses.update({"agent-1": "offline", "agent-2": "available", "agent-3": "onACall"})
    caplog.set_level(logging.INFO, logger="chatpush.agents")
    answer = await post(
        client,
        added("c1", "agent-1"),
        added("c2", "agent-2"),
        added("c3", "agent-3"),
        added("c4", "agent-4"),  # unknown to the presence source (404): rung
    )
    assert answer == {"accepted": 4, "rung": 2, "cancelled": 0, "suppressed": 2, "dropped": 0}
    assert sorted(p.key.split("/")[1] for _, p in outbox.pushes) == ["agent-2", "agent-4"]
    assert ("agent-1", "Bearer presence-token") in presence.asked
    audit = [r for r in caplog.records if getattr(r, "action", "") == "agent_ring_suppressed"]
    assert sorted(getattr(r, "reason", "") for r in audit) == [
        "presence:offline",
        "presence:onACall",
    ]
    response = await client.get("/api/v1/agent-conversations/c1", headers={"X-API-Key": API_KEY})
    [entry] = (await response.json())["trail"]
    assert (entry["action"], entry["reason"]) == ("suppressed", "presence:offline")
    # The agent becomes available: the next offer of the same conversation rings (no dedup mark
    # was left by the suppressed one).
    presence.statuses["agent-1"] = "available"
    assert (await post(client, added("c1", "agent-1")))["rung"] == 1


async def test_a_slow_or_failing_source_lets_the_ring_through(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    presence: PresenceServer,
) -> None:
    client, _ = await start(
        make_client, make_settings, presence_url=presence.url, presence_timeout_s=0.2
    )
    presence.statuses["agent-1"] = "offline"
    presence.slow.add("agent-1")
    assert (await post(client, added("c1", "agent-1")))["rung"] == 1
    presence.slow.clear()
    await presence.runner.cleanup()  # type: ignore[union-attr]
    assert (await post(client, added("c2", "agent-1")))["rung"] == 1


async def test_presence_is_off_by_default(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    presence: PresenceServer,
) -> None:
    client, _ = await start(make_client, make_settings)
    presence.statuses["agent-1"] = "offline"
    assert (await post(client, added("c1", "agent-1")))["rung"] == 1
    assert presence.asked == []
