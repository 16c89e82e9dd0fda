"""Agent alerts: latency from a routing event sent to its rings queued durably, at a fixed rate.

Every agent has two devices (one ``ios``, one ``fcm``). The load generator POSTs one
``routing.queue.member.added`` per event (a new conversation each, agents in turn) to
``POST /api/v1/agent-events`` at a fixed offered rate (open loop: event k is sent at
start + k/rate). The app runs in this process on a fresh SQLite file (or ``--database``), with
an outbox that takes the rings as the delivery platform's ``enqueue`` does, inside the intake's
transaction, noting when.

Reported: the rate achieved, and p50/p90/p99/max of

- **sent -> rings queued**: from the POST to the intake transaction handing both rings over
  (before its commit);
- **sent -> answered**: the POST's answer, after the commit: both rings are durable then.

The issue's figure is *event accepted -> push sent* on the fake APNs and FCM (target p99 < 50
ms at 200 events/s): the send half needs the delivery platform's dispatcher, which this build
does not wire to agent alerts yet (docs/agents.md); these figures are the intake half. Run from
the repository root:

    .venv/bin/python -m benchmarks.agent_alerts                   # 200 events/s, 20 s
    .venv/bin/python -m benchmarks.agent_alerts --smoke           # a few seconds, for CI
    .venv/bin/python -m benchmarks.agent_alerts --rate 400 --duration 30 --agents 200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from sqlalchemy.engine import Connection

from benchmarks.rig import machine_line
from chatpush.agents.outbound import AgentPush
from chatpush.app import create_app
from chatpush.config import load_settings
from chatpush.store import migrate

API_KEY = "benchmark-agent-alerts-key"


class TimingOutbox:
    """Takes rings as the platform's enqueue does; notes when each conversation's were queued."""

    def __init__(self) -> None:
        self.queued_at: dict[str, float] = {}
        self.pushes = 0

    def enqueue(self, conn: Connection, pushes: Sequence[AgentPush], now_ms: int) -> list[str]:
        now = time.perf_counter()
        for push in pushes:
            self.queued_at.setdefault(push.key.split("/", 1)[0], now)
        self.pushes += len(pushes)
        return [f"m{self.pushes - n}" for n in range(len(pushes))]

    def poke(self) -> None:
        pass


def percentiles(values_ms: list[float]) -> str:
    if not values_ms:
        return "no samples"
    ordered = sorted(values_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return f"p50 {at(0.5):6.1f}  p90 {at(0.9):6.1f}  p99 {at(0.99):6.1f}  max {ordered[-1]:6.1f} ms"


def ring(conversation: str, agent: str) -> dict[str, Any]:
    return {
        "eventType": "routing.queue.member.added",
        "timestamp": "2026-12-04T21:00:00.000Z",
        "data": {
            "queueId": "bench-queue",
            "memberId": agent,
            "memberType": "user",
            "conversationId": conversation,
            "mediaType": "voice",
        },
    }


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database or f"sqlite+aiosqlite:///{Path(scratch) / 'agents.db'}"
        if args.database is None:
            await asyncio.to_thread(migrate.upgrade, url)
        settings = load_settings(
            None,
            database={"url": url},
            security={"api_keys": [API_KEY]},
            groups={"g1": {"default": True, "nodes": ["n1"], "pushEnabled": ["ios", "fcm"]}},
            logging={"level": "WARNING"},
        )
        outbox = TimingOutbox()
        app = create_app(settings, housekeeping=False, agent_outbox=outbox)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        headers = {"X-API-Key": API_KEY}
        try:
            async with ClientSession(timeout=ClientTimeout(total=30), headers=headers) as session:
                agents = [f"agent-{n}" for n in range(args.agents)]
                for agent in agents:
                    for platform, token in (("ios", f"{agent}-apns"), ("android", f"{agent}-fcm")):
                        async with session.post(
                            f"{base}/api/v1/agents/{agent}/devices",
                            json={"platform": platform, "token": token},
                        ) as response:
                            assert response.status == 201, await response.text()
                total = int(args.rate * args.duration)
                sent_at: dict[str, float] = {}
                answered_ms: list[float] = []
                refused = 0

                async def one(n: int) -> None:
                    nonlocal refused
                    conversation = f"bench-{n}"
                    sent_at[conversation] = time.perf_counter()
                    async with session.post(
                        f"{base}/api/v1/agent-events",
                        json=ring(conversation, agents[n % len(agents)]),
                    ) as response:
                        body = await response.json()
                        if response.status != 200 or body["rung"] != 2:
                            refused += 1
                            return
                    answered_ms.append((time.perf_counter() - sent_at[conversation]) * 1000)

                start = time.perf_counter()
                tasks = []
                for n in range(total):
                    await asyncio.sleep(max(0.0, start + n / args.rate - time.perf_counter()))
                    tasks.append(asyncio.create_task(one(n)))
                await asyncio.gather(*tasks)
                elapsed_s = time.perf_counter() - start
        finally:
            await runner.cleanup()
    queued_ms = [
        (outbox.queued_at[c] - sent) * 1000 for c, sent in sent_at.items() if c in outbox.queued_at
    ]
    print(machine_line())
    print(
        f"agent alerts: {total} events at {args.rate:g}/s offered, {total / elapsed_s:.1f}/s "
        f"achieved, {args.agents} agents x 2 devices, {outbox.pushes} rings queued, "
        f"{refused} refused; database {'SQLite' if args.database is None else args.database}"
    )
    print(f"  sent -> rings queued:   {percentiles(queued_ms)}")
    print(f"  sent -> answered (durable): {percentiles(answered_ms)}")
    print("  (rings -> sent on the fake APNs/FCM: needs the delivery platform; docs/agents.md)")
    return 0 if refused == 0 and outbox.pushes == 2 * total else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second offered")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--database", help="a migrated database URL (default: a new SQLite file)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rate, args.duration, args.agents = 50.0, 2.0, 5
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
