"""kill -9 during agent-alert fan-outs (docs/agents.md): every device of every accepted ring gets
its ring exactly once or again with the same webhook-id, and no accepted cancel is lost, each
arriving after its ring on its device.

``chatpush serve`` runs as a real process on a SQLite file; 20 agents have two custom HTTP
devices each, and a real receiver (slow enough that fan-outs are in flight) records every POST.
Rings, and cancels of half of them, are posted by eight clients; the process is killed with
SIGKILL mid-load and started again on the same file and port; the load carries on, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.agents_support import added, deleted, eventually
from tests.fault.support import API_KEY, Chatpush, _table, free_port

AGENTS = 20
EVENTS_PER_PHASE = 120
CLIENTS = 8


@dataclass
class Arrival:
    webhook_id: str
    device: str
    conversation: str
    action: str


@dataclass
class SlowReceiver:
    arrivals: list[Arrival] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.arrivals.append(
            Arrival(
                request.headers["webhook-id"],
                body["deviceId"],
                body["genesys_conversation_id"],
                body["action"],
            )
        )
        await asyncio.sleep(0.02)
        return web.Response(text="ok")

    async def start(self) -> SlowReceiver:
        app = web.Application()
        app.router.add_post("/push", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/push"
        return self


@dataclass
class Load:
    http: aiohttp.ClientSession
    base: str
    accepted_rings: list[tuple[str, str]] = field(default_factory=list)
    """(conversation, agent) of every ring answered 200."""
    accepted_cancels: list[str] = field(default_factory=list)
    next_n: int = 0

    async def post(self, payload: Any) -> bool:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.http.post(
                f"{self.base}/api/v1/agent-events", json=payload, headers={"X-API-Key": API_KEY}
            ) as response:
                return response.status == 200
        return False

    async def client(self, count: int) -> None:
        for _ in range(count):
            n, self.next_n = self.next_n, self.next_n + 1
            conversation, agent = f"conv-{n}", f"agent-{n % AGENTS}"
            if await self.post(added(conversation, agent)):
                self.accepted_rings.append((conversation, agent))
                if n % 2 == 0 and await self.post(deleted(conversation)):
                    self.accepted_cancels.append(conversation)

    async def run(self, events: int) -> None:
        await asyncio.gather(*(self.client(events // CLIENTS) for _ in range(CLIENTS)))


def config(path: Path, port: int, database: Path, receiver_url: str) -> Path:
    lines: list[str] = []
    _table(lines, "server", {"host": "127.0.0.1", "port": port, "shutdown_timeout_s": 2.0})
    _table(lines, "database", {"url": f"sqlite+aiosqlite:///{database}"})
    _table(lines, "security", {"api_keys": [API_KEY]})
    _table(lines, "logging", {"level": "WARNING", "format": "json"})
    _table(lines, "delivery", {"lease_s": 2.0})
    _table(lines, "agents", {"ring_max_attempts": 5, "ring_retry_delays_s": [0.2]})
    _table(
        lines,
        'groups."g1"',
        {"default": True, "nodes": ["n1"], "customhttp.url": receiver_url},
    )
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_kill9_during_fan_outs_loses_no_ring_and_no_cancel(
    tmp_path: Path, processes: list[Chatpush]
) -> None:
    receiver = await SlowReceiver().start()
    port = free_port()
    chatpush = Chatpush(
        config(tmp_path / "chatpush.toml", port, tmp_path / "chatpush.db", receiver.url),
        port,
        tmp_path,
    )
    processes.append(chatpush)
    chatpush.start()
    await chatpush.wait_ready()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            devices: dict[str, list[str]] = {}
            for n in range(AGENTS):
                agent = f"agent-{n}"
                devices[agent] = [f"{agent}-phone", f"{agent}-desk"]
                for token in devices[agent]:
                    async with http.post(
                        f"{chatpush.base}/api/v1/agents/{agent}/devices",
                        json={"platform": "customhttp", "token": token},
                        headers={"X-API-Key": API_KEY},
                    ) as response:
                        assert response.status == 201
            load = Load(http, chatpush.base)
            first = asyncio.create_task(load.run(EVENTS_PER_PHASE))
            await eventually(lambda: len(receiver.arrivals) >= 40)  # fan-outs in flight
            chatpush.kill()
            await first
            chatpush.start()
            await chatpush.wait_ready()
            await load.run(EVENTS_PER_PHASE)

            expected = {
                (conversation, device, "ring")
                for conversation, agent in load.accepted_rings
                for device in devices[agent]
            }
            agent_of = dict(load.accepted_rings)
            expected |= {
                (conversation, device, "cancel_ring")
                for conversation in load.accepted_cancels
                for device in devices[agent_of[conversation]]
            }
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                seen = {(a.conversation, a.device, a.action) for a in receiver.arrivals}
                if expected <= seen:
                    break
                await asyncio.sleep(0.1)
            seen = {(a.conversation, a.device, a.action) for a in receiver.arrivals}
            assert sorted(expected - seen)[:10] == []
            assert len(load.accepted_rings) > EVENTS_PER_PHASE // 2
            assert load.accepted_cancels

            # A repeat is a resend of the same notification (the same webhook-id), never a
            # second ring; and on each device a cancel comes after its ring.
            ids: dict[tuple[str, str, str], set[str]] = defaultdict(set)
            order: dict[tuple[str, str], list[str]] = defaultdict(list)
            for arrival in receiver.arrivals:
                ids[(arrival.conversation, arrival.device, arrival.action)].add(arrival.webhook_id)
                order[(arrival.conversation, arrival.device)].append(arrival.action)
            assert [k for k, v in ids.items() if len(v) > 1] == []
            for actions in order.values():
                if "cancel_ring" in actions:
                    assert actions.index("ring") < actions.index("cancel_ring"), actions
            assert chatpush.problems() == []
    finally:
        if receiver.runner is not None:
            await receiver.runner.cleanup()
