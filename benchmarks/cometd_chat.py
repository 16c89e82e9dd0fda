"""Chat over CometD in the full app: agent event → client arrival, and CPU per event (issue 15).

``chatpush serve`` (SQLite, its default event loop) and, in this process, N long-polling CometD
clients on ``/genesys/cometd``, each in a chat of its own: it handshakes, starts its chat with
``requestChat`` on ``/service/chatV2/bench`` and then keeps one ``/meta/connect`` outstanding on its
own keep-alive connection, sending the next one the moment a reply arrives (the HTTP/1.1 client of
benchmarks/cometd_load.py, not aiohttp's, so that the generator stays cheap). An agent joins every
chat through the chat-server side API and then writes R messages a second for D seconds, message
k to chat k mod N (``POST /api/v1/chats/{id}/events``, open loop: sent at start + k/R whatever the
earlier ones are doing). Each message's text is the monotonic time it was sent; a client that
receives it (in an envelope on ``/service/chatV2/bench``) notes now - then.

Reported: events sent and received (each once), p50 / p99 / max of agent event sent → client
arrival, the 201 of the events call (p99), chatpush's CPU over the window as a share of one core
and per event received, its peak RSS, and the generator's CPU (clients + agent, this process).
Run from the repository root:

    .venv/bin/python -m benchmarks.cometd_chat                   # 1,000 clients, 100 events/s, 15 s
    .venv/bin/python -m benchmarks.cometd_chat --smoke           # 20 clients, 20 events/s, 2 s (CI)
    .venv/bin/python -m benchmarks.cometd_chat --clients 2000 --rates 100,300

Exit status: 0 when every event sent arrived exactly once, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.cometd_load import HttpConnection, _open, _request
from benchmarks.load import start_target
from benchmarks.rig import (
    API_HEADERS,
    SERVICE,
    Bench,
    Chat,
    CpuMeter,
    join_agent,
    machine_line,
    peak_rss_kb,
    percentile,
    print_table,
    progress,
)

PATH = "/genesys/cometd"
CHANNEL = f"/service/chatV2/{SERVICE}"
SETUP_CONCURRENCY = 50
DRAIN_MAX_S = 30.0
COMETD_SETTINGS = """
[cometd]
max_sessions_per_address = 50000
max_sessions = 50000
"""
"""Every client comes from 127.0.0.1: the per-address session limit out of the way (appended to
the [delivery] table's lines of the bench's configuration, as a table of its own)."""


@dataclass
class Client:
    connection: HttpConnection
    client_id: str
    chat: Chat
    connect: bytes = b""


@dataclass
class Clients:
    port: int
    latencies_ms: list[float] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    connects: int = 0
    expected: int = 0
    """Messages sent: ``all_in`` is set once that many arrived."""
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def messages(self, body: bytes) -> list[dict[str, Any]]:
        """The envelopes on the chat channel in a reply (and checks the meta replies)."""
        envelopes = []
        for message in json.loads(body):
            if message.get("channel") == CHANNEL and "data" in message:
                envelopes.append(message["data"])
            elif message.get("successful") is False:
                raise RuntimeError(f"refused: {message}")
        return envelopes

    def note(self, envelopes: list[dict[str, Any]]) -> None:
        now_ns = time.monotonic_ns()
        for envelope in envelopes:
            for event in envelope.get("messages", ()):
                text = event.get("text", "")
                if event.get("type") == "Message" and text.startswith("k="):
                    number, _, sent_ns = text[2:].partition(";")
                    k = int(number)
                    if k in self.seen:
                        self.duplicates += 1
                        continue
                    self.seen.add(k)
                    self.latencies_ms.append((now_ns - int(sent_ns)) / 1e6)
                    if len(self.seen) == self.expected:
                        self.all_in.set()

    async def call(self, client: Client, messages: list[dict[str, Any]], tail: str) -> bytes:
        body = json.dumps(messages).encode()
        return await client.connection.call(_request(self.port, PATH + tail, body))

    async def start(self, index: int) -> Client:
        connection = await _open(self.port)
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "id": "1",
        }
        client = Client(connection, "", Chat("", ""))
        reply = json.loads(await self.call(client, [handshake], "/handshake"))
        client.client_id = reply[0]["clientId"]
        connect = {
            "channel": "/meta/connect",
            "clientId": client.client_id,
            "connectionType": "long-polling",
            "id": "2",
        }
        await self.call(client, [{**connect, "advice": {"timeout": 0}}], "/connect")
        start = {
            "channel": CHANNEL,
            "clientId": client.client_id,
            "id": "3",
            "data": {"operation": "requestChat", "nickname": f"customer-{index}"},
        }
        await self.call(client, [start], "")
        client.connect = _request(self.port, PATH + "/connect", json.dumps([connect]).encode())
        while not client.chat.chat_id:  # the envelope comes with the next connect reply
            for envelope in self.messages(await client.connection.call(client.connect)):
                if envelope.get("statusCode") != 0:
                    raise RuntimeError(f"requestChat failed: {envelope}")
                client.chat = Chat(str(envelope["chatId"]), str(envelope["secureKey"]))
        return client

    async def poll(self, client: Client) -> None:
        """One connect outstanding, the next sent the moment a reply arrives."""
        while True:
            self.connects += 1
            body = await client.connection.call(client.connect)
            self.note(self.messages(body))


@dataclass
class Result:
    clients: int
    rate: int
    sent: int
    received: int
    duplicates: int
    latencies_ms: list[float]
    call_ms: list[float]
    server_cpu_s: float
    generator_cpu_s: float
    wall_s: float
    machine_cpu: float
    rss_mb: float
    connects: int
    load: str


async def run(args: argparse.Namespace, rate: int) -> Result:
    async with Bench() as bench:
        target = await start_target(bench, "chatpush", loop="auto")
        server = target.servers[0]
        port = int(target.bases[0].rsplit(":", 1)[1])
        clients = Clients(port)
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def one(index: int) -> tuple[Client, int]:
            async with gate:
                client = await clients.start(index)
                participant = await join_agent(bench.http, target.bases[0], client.chat)
                return client, participant

        started = time.monotonic()
        ready = await asyncio.gather(*(one(i) for i in range(args.clients)))
        progress(f"{args.clients} chats over CometD ready in {time.monotonic() - started:.1f} s")
        pollers = [asyncio.create_task(clients.poll(client)) for client, _ in ready]
        await asyncio.sleep(1.0)  # the ParticipantJoined envelopes go out first
        clients.connects = 0
        load = os.getloadavg()
        cpu = CpuMeter()
        cpu.start({"server": server.pid})
        call_ms: list[float] = []
        total = int(rate * args.duration_s)
        clients.expected = total
        slots = asyncio.Semaphore(200)

        async def send(k: int) -> None:
            client, participant = ready[k % len(ready)]
            sent_ns = time.monotonic_ns()
            event = {"participantId": participant, "type": "Message", "text": f"k={k};{sent_ns}"}
            url = f"{target.bases[0]}/api/v1/chats/{client.chat.chat_id}/events"
            async with slots, bench.http.post(url, json=event, headers=API_HEADERS) as reply:
                if reply.status != 201:
                    raise RuntimeError(f"events call: HTTP {reply.status} {await reply.text()}")
                await reply.read()
            call_ms.append((time.monotonic_ns() - sent_ns) / 1e6)

        begin = time.monotonic()
        sends = []
        for k in range(total):
            delay = begin + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(asyncio.create_task(send(k)))
        await asyncio.gather(*sends)
        with contextlib.suppress(TimeoutError):  # late messages are late, not lost
            await asyncio.wait_for(clients.all_in.wait(), DRAIN_MAX_S)
        cpu.stop()
        rss_mb = peak_rss_kb(server.pid) / 1024
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        for client, _ in ready:
            if client.connection.transport is not None:
                client.connection.transport.close()
        return Result(
            clients=args.clients,
            rate=rate,
            sent=total,
            received=len(clients.seen),
            duplicates=clients.duplicates,
            latencies_ms=clients.latencies_ms,
            call_ms=call_ms,
            server_cpu_s=cpu.spent["server"],
            generator_cpu_s=cpu.own_s,
            wall_s=cpu.wall_s,
            machine_cpu=cpu.busy_s / cpu.wall_s,
            rss_mb=rss_mb,
            connects=clients.connects,
            load=" ".join(f"{value:.2f}" for value in load),
        )


def _settings_patch() -> None:
    """The bench's configuration, with the [cometd] table above after its [delivery] lines."""
    import benchmarks.rig as rig

    if COMETD_SETTINGS not in rig.CHATPUSH_CONFIG:
        rig.CHATPUSH_CONFIG = rig.CHATPUSH_CONFIG.replace(
            "[delivery]\n{delivery}\n", "[delivery]\n{delivery}\n" + COMETD_SETTINGS
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rates", default="100", help="agent events per second, comma-separated")
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--smoke", action="store_true", help="20 clients, 20 events/s, 2 s")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.rates, args.duration_s = 20, "20", 2.0
    _settings_patch()
    print(f"{machine_line()}; chatpush serve on its default loop (uvloop)")
    results = [asyncio.run(run(args, int(rate))) for rate in args.rates.split(",")]
    rows = []
    for r in results:
        rows.append(
            [
                str(r.clients),
                str(r.rate),
                str(r.sent),
                f"{100 * r.received / max(r.sent, 1):.2f}",
                str(r.duplicates),
                f"{percentile(r.latencies_ms, 50):.1f}",
                f"{percentile(r.latencies_ms, 99):.1f}",
                f"{max(r.latencies_ms, default=0):.0f}",
                f"{percentile(r.call_ms, 99):.1f}",
                f"{100 * r.server_cpu_s / r.wall_s:.0f}",
                f"{1e6 * r.server_cpu_s / max(r.received, 1):.0f}",
                f"{r.connects / max(r.received, 1):.2f}",
                f"{100 * r.generator_cpu_s / r.wall_s:.0f}",
                f"{100 * r.machine_cpu:.0f}",
                f"{r.rss_mb:.0f}",
                r.load,
            ]
        )
    print_table(
        [
            "clients",
            "events/s",
            "sent",
            "received %",
            "dup",
            "p50 ms",
            "p99 ms",
            "max ms",
            "events call p99 ms",
            "chatpush CPU %",
            "chatpush CPU µs/event",
            "connects/event",
            "generator CPU %",
            "machine CPU %",
            "RSS MB",
            "load before",
        ],
        rows,
        "Chat over CometD, agent event sent -> client arrival (CPU in % of one core)",
    )
    complete = all(r.received == r.sent and not r.duplicates for r in results)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
