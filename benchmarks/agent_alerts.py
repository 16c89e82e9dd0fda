"""Agent alerts: from a routing event sent to the pushes at the fake APNs and FCM, at a fixed rate.

Every agent has two devices, one ``ios`` (the fake APNs of chatpush/testing/apns.py: HTTP/2 over
TLS) and one ``android`` (the fake FCM). The load generator POSTs one
``routing.queue.member.added`` per event (a new conversation each, agents in turn) to
``POST /api/v1/agent-events`` at a fixed offered rate (open loop: event k is sent at
start + k/rate). chatpush runs as ``chatpush serve`` in a process of its own on a fresh SQLite
file (or ``--database``); the fakes and the load generator run in this process, which notes when
each push arrives (the same monotonic clock for every time measured).

Reported: the rate achieved, and p50/p90/p99/max of

- **sent -> answered**: the POST's answer, after the commit (both rings durable);
- **sent -> APNs**, **sent -> FCM**: the push's arrival at each fake;
- **sent -> both devices rung**: the later of the two, per event: the issue's figure (target p99
  < 50 ms at 200 events/s).

The times start when the POST is sent, so they include the HTTP round trip: an upper bound of
"event accepted -> push sent". Run from the repository root:

    .venv/bin/python -m benchmarks.agent_alerts                   # 200 events/s, 20 s
    .venv/bin/python -m benchmarks.agent_alerts --smoke           # a few seconds, for CI
    .venv/bin/python -m benchmarks.agent_alerts --rate 400 --duration 30 --agents 200
    .venv/bin/python -m benchmarks.agent_alerts --rate 50 --profile /tmp/prof   # py-spy, collapsed
    .venv/bin/python -m benchmarks.agent_alerts --rate 100 --stalls  # what the stalls overlap
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from cryptography.fernet import Fernet

from benchmarks import stalls
from benchmarks.rig import Process, cpu_s, free_port, machine_line, python_command
from chatpush.clock import SystemClock
from chatpush.store import migrate
from chatpush.testing import FakeClock
from chatpush.testing.apns import FakeApns, self_signed
from chatpush.testing.fcm import FakeFcm

API_KEY = "benchmark-agent-alerts-key"


@dataclass
class TimedApns(FakeApns):
    arrived: dict[str, float] = field(default_factory=dict)

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        status, answer = super().answer(headers, body)
        payload = self.requests[-1]["payload"] or {}
        self.arrived.setdefault(str(payload.get("genesys_conversation_id")), time.perf_counter())
        return status, answer


@dataclass
class TimedFcm(FakeFcm):
    arrived: dict[str, float] = field(default_factory=dict)

    async def _send(self, request: web.Request) -> web.Response:
        count = len(self.sent)
        response = await super()._send(request)
        if len(self.sent) > count:
            conversation = self.sent[-1].get("data", {}).get("genesys_conversation_id")
            self.arrived.setdefault(str(conversation), time.perf_counter())
        return response


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


def write_config(path: Path, port: int, url: str, apns: FakeApns, fcm: FakeFcm, ca: Path) -> None:
    def q(value: str) -> str:
        return json.dumps(value)

    path.write_text(
        "\n".join(
            [
                "[server]",
                'host = "127.0.0.1"',
                f"port = {port}",
                "[database]",
                f"url = {q(url)}",
                "[security]",
                f"api_keys = [{q(API_KEY)}]",
                f"credentials_key = {q(Fernet.generate_key().decode())}",
                "[logging]",
                'level = "WARNING"',
                "[mobile]",
                f"fcm_api_url = {q(fcm.base_url)}",
                'apns_host = "127.0.0.1"',
                f"apns_port = {apns.port}",
                f"apns_ca_file = {q(str(ca))}",
                f"allowed_hosts = [{q(fcm.base_url)}, {q(f'127.0.0.1:{apns.port}')}]",
                "[groups.g1]",
                "default = true",
                'nodes = ["n1"]',
                'pushEnabled = ["ios", "fcm"]',
            ]
        )
        + "\n"
    )


async def run(args: argparse.Namespace) -> int:
    own_lag, own_gc = stalls.LoopLag(), stalls.GcWatch()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        url = args.database or f"sqlite+aiosqlite:///{folder / 'agents.db'}"
        if args.database is None:
            await asyncio.to_thread(migrate.upgrade, url)
        fake_clock = FakeClock(SystemClock().now_ms())
        certificate = self_signed(folder)
        apns = await TimedApns(fake_clock).start(*certificate)
        fcm = await TimedFcm(fake_clock).start()
        port = free_port()
        write_config(folder / "chatpush.toml", port, url, apns, fcm, certificate[0])
        base = f"http://127.0.0.1:{port}"
        command = ["--config", "chatpush.toml", "serve"]
        if args.stalls:
            command = [
                *python_command("benchmarks.launch", ["--stalls", str(folder / "stalls.json")]),
                "chatpush.cli",
                *command,
            ]
        else:
            command = python_command("chatpush.cli", command)
        chatpush = Process("chatpush", command, folder, base=base)
        chatpush.start()
        headers = {"X-API-Key": API_KEY}
        sent_at: dict[str, float] = {}
        answered_ms: list[float] = []
        refused = 0
        try:
            async with ClientSession(timeout=ClientTimeout(total=30), headers=headers) as session:
                await chatpush.wait_ready(session)
                for kind, body in (("fcm", fcm.credentials()), ("apns", apns.credentials())):
                    async with session.put(
                        f"{base}/api/v1/groups/g1/credentials/{kind}", json=body
                    ) as response:
                        assert response.status == 200, await response.text()
                agents = [f"agent-{n}" for n in range(args.agents)]
                for agent in agents:
                    for platform, token in (("ios", f"{agent}-apns"), ("android", f"{agent}-fcm")):
                        async with session.post(
                            f"{base}/api/v1/agents/{agent}/devices",
                            json={"platform": platform, "token": token},
                        ) as response:
                            assert response.status == 201, await response.text()
                total = int(args.rate * args.duration)

                async def one(n: int) -> None:
                    nonlocal refused
                    conversation = f"bench-{n}"
                    sent_at[conversation] = time.perf_counter()
                    event = ring(conversation, agents[n % len(agents)])
                    async with session.post(f"{base}/api/v1/agent-events", json=event) as response:
                        body = await response.json()
                        if response.status != 200 or body["rung"] != 2:
                            refused += 1
                            return
                    answered_ms.append((time.perf_counter() - sent_at[conversation]) * 1000)

                # Warm-up, not measured: the first rings open the connection to APNs, make the
                # provider tokens, fetch FCM's access token (once an hour in production).
                warm = [f"warm-{n}" for n in range(args.warmup)]
                for n, conversation in enumerate(warm):
                    await asyncio.sleep(max(0.0, n / args.rate - 0.0))
                    event = ring(conversation, agents[n % len(agents)])
                    async with session.post(f"{base}/api/v1/agent-events", json=event) as response:
                        assert response.status == 200, await response.text()
                deadline = time.perf_counter() + 30
                while time.perf_counter() < deadline and not all(  # noqa: ASYNC110
                    c in apns.arrived and c in fcm.arrived for c in warm
                ):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2 if warm else 0.0)
                apns.arrived.clear()
                fcm.arrived.clear()
                chatpush.profile(args.profile, "agent-alerts")
                if args.stalls:
                    own_lag.start()
                chatpush_cpu_s, own_cpu_s = cpu_s(chatpush.pid), time.process_time()
                start = time.perf_counter()
                tasks = []
                for n in range(total):
                    await asyncio.sleep(max(0.0, start + n / args.rate - time.perf_counter()))
                    tasks.append(asyncio.create_task(one(n)))
                await asyncio.gather(*tasks)
                elapsed_s = time.perf_counter() - start
                deadline = time.perf_counter() + 30
                while time.perf_counter() < deadline and (  # noqa: ASYNC110 (polling the fakes' records)
                    len(apns.arrived) < total - refused or len(fcm.arrived) < total - refused
                ):
                    await asyncio.sleep(0.05)
                chatpush_cpu_s = cpu_s(chatpush.pid) - chatpush_cpu_s
                own_cpu_s = time.process_time() - own_cpu_s
                measured = (start, time.perf_counter())
        finally:
            chatpush.stop()
            await apns.close()
            await fcm.close()
        probed = stalls.load(folder / "stalls.json") if args.stalls else None

    def after(arrived: dict[str, float]) -> list[float]:
        return [(arrived[c] - sent) * 1000 for c, sent in sent_at.items() if c in arrived]

    both = [
        (max(apns.arrived[c], fcm.arrived[c]) - sent) * 1000
        for c, sent in sent_at.items()
        if c in apns.arrived and c in fcm.arrived
    ]
    print(machine_line())
    print(
        f"agent alerts: {total} events at {args.rate:g}/s offered, {total / elapsed_s:.1f}/s "
        f"achieved, {args.agents} agents x 2 devices (APNs + FCM), {refused} refused, "
        f"{len(both)} with both devices rung; database "
        f"{'SQLite' if args.database is None else args.database}"
    )
    print(
        f"  CPU per event: chatpush {chatpush_cpu_s / total * 1000:.2f} ms (intake and both "
        f"sends), this process {own_cpu_s / total * 1000:.2f} ms (load, fake APNs and FCM)"
    )
    print(f"  sent -> answered (durable):   {percentiles(answered_ms)}")
    print(f"  sent -> APNs:                 {percentiles(after(apns.arrived))}")
    print(f"  sent -> FCM:                  {percentiles(after(fcm.arrived))}")
    print(f"  sent -> both devices rung:    {percentiles(both)}")
    for label, first in (("the first second", True), ("after the first second", False)):
        part = [
            (max(apns.arrived[c], fcm.arrived[c]) - sent) * 1000
            for c, sent in sent_at.items()
            if c in apns.arrived and c in fcm.arrived and (sent - measured[0] < 1.0) == first
        ]
        print(f"    {label + ':':28}{percentiles(part)}")
    missing = [c for c in sent_at if c not in apns.arrived or c not in fcm.arrived]
    if missing:
        lost = ", ".join(
            f"{c} ({'APNs' if c not in apns.arrived else ''}"
            f"{' and ' if c not in apns.arrived and c not in fcm.arrived else ''}"
            f"{'FCM' if c not in fcm.arrived else ''})"
            for c in missing[:10]
        )
        print(f"  NOT RUNG within 30 s of the last event: {len(missing)}: {lost}")
    print(
        f"  (fake APNs: {apns.connections} connections, {len(apns.tokens_seen)} provider tokens; "
        f"fake FCM: {fcm.token_requests} token requests; APNs answers "
        f"{sorted(Counter((r['status'], r['reason']) for r in apns.requests).items())})"
    )
    if probed is not None:
        stalls.report(probed, *measured)
        print(f"  this process's stalls: {stalls.own(own_lag, own_gc, *measured)}")
    return 0 if refused == 0 and len(both) == total else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second offered")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--database", help="a migrated database URL (default: a new SQLite file)")
    parser.add_argument(
        "--profile", type=Path, help="record chatpush with py-spy into this folder (collapsed)"
    )
    parser.add_argument(
        "--stalls",
        action="store_true",
        help="where the processes stall: loop lateness, collections, SQLite COMMITs "
        "(benchmarks/stalls.py)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="events sent (at --rate, one after the other) and rung before the measured phase",
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rate, args.duration, args.agents = 50.0, 2.0, 5
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
