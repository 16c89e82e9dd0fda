"""The load of the throughput, latency and instances benchmarks: targets, senders, HTTP clients.

A *target* is what the load generator drives, with its own acknowledging receiver
(benchmarks/receiver.py ``--refresh``, the same program for both): ``relay``
(benchmarks/null_relay.py, the baseline) or ``chatpush`` (``chatpush serve``: one instance on a
fresh SQLite file, or several sharing a PostgreSQL database, the receiver refreshing round robin
over them). The load generator, the target and the receiver are separate processes.

A *sender* is who writes the events:

- ``customer``: the chat's client, Chat API v2
  ``POST /genesys/2/chat/{service}/{chatId}/send`` with ``secureKey`` and ``message`` (200);
- ``agent``: the chat server, ``POST /api/v1/chats/{id}/events`` with the API key (201).

Either way the chats are made beforehand with Request Chat (``PUSH_USER_DATA``: reliable custom
HTTP push with PushResend, NotifyRequestor and IncludePayload), then an agent joins; every event
is then notified by a reliable trigger, acknowledged by the receiver's refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from benchmarks.rig import (
    API_KEY,
    HOST,
    LOOPS,
    SERVICE,
    Bench,
    Chat,
    CpuMeter,
    Process,
    Receiver,
    counters_delta,
    free_port,
    join_agent,
    push_user_data,
    request_chat,
)

TARGETS = ("relay", "chatpush")


def chat_user_data(number: int) -> dict[str, str]:
    """The subscription of benchmark chat ``number``: as the harness that measured the project."""
    return push_user_data(
        f"device-{number}", resend=True, notify_requestor=True, include_payload=True
    )


# -- senders ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sender:
    name: str
    accepted: int
    """The HTTP status of an accepted event."""
    headers: dict[str, str]

    def request(self, chat: Chat, n: int) -> tuple[str, bytes]:
        """The path and body of event ``n`` (a message numbered ``n``) in ``chat``."""
        if self.name == "agent":
            body = b'{"participantId":2,"type":"Message","text":"benchmark message %08d"}' % n
            return f"/api/v1/chats/{chat.chat_id}/events", body
        body = b"secureKey=%s&message=benchmark+message+%08d" % (chat.secure_key.encode(), n)
        return f"/genesys/2/chat/{SERVICE}/{chat.chat_id}/send", body


SENDERS = {
    "customer": Sender("customer", 200, {"Content-Type": "application/x-www-form-urlencoded"}),
    "agent": Sender("agent", 201, {"Content-Type": "application/json", "X-API-Key": API_KEY}),
}


# -- HTTP clients of the load generator -----------------------------------------------------------


class Poster(Protocol):
    """POSTs a body to a path of the target; returns (HTTP status, body)."""

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class AiohttpPoster:
    """One aiohttp ClientSession with keep-alive connections (at most ``limit``)."""

    def __init__(self, base: str, limit: int, headers: dict[str, str]) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            timeout=aiohttp.ClientTimeout(total=60),
            headers=headers,
            skip_auto_headers=("User-Agent",),
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self.session.post(self.base + path, data=body) as reply:
            return reply.status, await reply.read()

    async def close(self) -> None:
        await self.session.close()


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.usable = True

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        start = lower.find(b"\r\ncontent-length:")
        if start < 0:  # aiohttp's json_response always sets it; no chunked decoding here
            raise ConnectionError("response without Content-Length")
        end = lower.index(b"\r\n", start + 2)
        length = int(lower[start + 17 : end])
        payload = await self.reader.readexactly(length) if length else b""
        if b"\r\nconnection: close" in lower:
            self.close()
        return int(head[9:12]), payload

    def close(self) -> None:
        self.usable = False
        self.writer.close()


class RawPoster:
    """HTTP/1.1 keep-alive over plain asyncio streams: a pool of connections, one request on
    each at a time, requests written as prepared bytes. Several times cheaper than aiohttp's
    client, so the load generator takes less of the machine the targets share."""

    def __init__(self, base: str, limit: int, headers: dict[str, str]) -> None:
        host_port = base.removeprefix("http://")
        host, _, port = host_port.partition(":")
        self.host, self.port = host, int(port)
        lines = [f"Host: {host_port}", *(f"{k}: {v}" for k, v in headers.items())]
        self.head = ("".join(f"{line}\r\n" for line in lines)).encode()
        self.idle: list[_Connection] = []
        self.limit = limit
        self.all: list[_Connection] = []

    async def _connect(self) -> _Connection:
        conn = _Connection(*await asyncio.open_connection(self.host, self.port))
        self.all.append(conn)
        return conn

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reused = bool(self.idle)
        conn = self.idle.pop() if reused else await self._connect()
        length = b"Content-Length: %d\r\n\r\n" % len(body)
        data = b"".join((b"POST ", path.encode(), b" HTTP/1.1\r\n", self.head, length, body))
        try:
            result = await conn.request(data)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            conn.close()
            if not reused:
                raise
            # The server closed an idle keep-alive connection before reading the request (no
            # answer at all came back): send it once more on a fresh connection.
            conn = await self._connect()
            try:
                result = await conn.request(data)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        if conn.usable and len(self.idle) < self.limit:
            self.idle.append(conn)
        elif conn.usable:
            conn.close()
        return result

    async def close(self) -> None:
        for conn in self.all:
            if conn.usable:
                conn.close()
        self.idle.clear()
        self.all.clear()


CLIENTS = {"raw": RawPoster, "aiohttp": AiohttpPoster}


def make_poster(client: str, base: str, limit: int, sender: Sender) -> Poster:
    poster: Poster = CLIENTS[client](base, limit, sender.headers)
    return poster


# -- targets --------------------------------------------------------------------------------------


@dataclass
class Target:
    """A running target and its receiver; ``chats`` once set up."""

    kind: str
    servers: list[Process]
    bases: list[str]
    receiver: Receiver
    chats: list[Chat] = field(default_factory=list)

    def pids(self) -> dict[str, int]:
        """Every process of the target and its receiver, by name (for a ``CpuMeter``)."""
        return {p.name: p.pid for p in [*self.servers, self.receiver.process]}


class Phase:
    """A measured phase of a target: the CPU of its processes, of the load generator and of the
    rest of the machine (``cpu``), and what its instrumented servers counted, all together
    (``counters``: empty when none counts)."""

    def __init__(self, target: Target) -> None:
        self.servers = [server for server in target.servers if server.counters_file]
        self.pids = target.pids()
        self.cpu = CpuMeter()
        self.counters: dict[str, Any] = {}
        self._before: list[dict[str, Any]] = []

    async def start(self) -> None:
        self._before = [await server.counters() for server in self.servers]
        self.cpu.start(self.pids)

    async def stop(self) -> None:
        self.cpu.stop()
        for server, before in zip(self.servers, self._before, strict=True):
            for key, value in counters_delta(before, await server.counters()).items():
                zero = Counter() if isinstance(value, Counter) else 0
                self.counters[key] = self.counters.get(key, zero) + value


async def start_target(
    bench: Bench,
    kind: str,
    *,
    instances: int = 1,
    database_url: str | None = None,
    loop: str = "asyncio",
    instrument: bool = False,
) -> Target:
    """The receiver and the target (``instances`` chatpush processes on ``database_url``), both
    answering."""
    ports = [free_port() for _ in range(instances)]
    bases = [f"http://{HOST}:{port}" for port in ports]
    receiver = await bench.receiver(refresh=bases)
    if kind == "relay":
        servers = [bench.relay(receiver.url, port=ports[0], loop=loop)]
    else:
        servers = [
            bench.chatpush(
                receiver.url,
                port=port,
                database_url=database_url,
                instance=n,
                instances=instances,
                loop=loop,
                instrument=instrument,
            )
            for n, port in enumerate(ports, 1)
        ]
    for server in servers:
        server.start()
    for server in servers:
        await server.wait_ready(bench.http)
    return Target(kind, servers, bases, receiver)


async def set_up_chats(
    http: aiohttp.ClientSession,
    target: Target,
    count: int,
    concurrency: int = 8,
    user_data: Callable[[int], dict[str, str]] = chat_user_data,
) -> None:
    """chatpush: Request Chat (round robin over the instances, as a load balancer would) with
    ``user_data(n)``, then an agent joins. The relay needs no set-up: its chats start at index 0."""
    if target.kind == "relay":
        target.chats = [Chat(f"{n:016X}", secrets.token_hex(16)) for n in range(count)]
        return
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> Chat:
        base = target.bases[n % len(target.bases)]
        async with slots:
            chat = await request_chat(http, base, f"customer-{n}", user_data(n))
            await join_agent(http, base, chat)
            return chat

    target.chats = list(await asyncio.gather(*(one(n) for n in range(count))))


async def wait_drained(
    target: Target, *, min_triggers: int = 0, timeout_s: float = 120.0
) -> dict[str, int] | None:
    """Wait until the receiver has acknowledged every chat up to its last index, with no refresh
    in flight (and at least ``min_triggers`` triggers). None when ``timeout_s`` ran out."""
    expected = sum(chat.last_index for chat in target.chats)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = await target.receiver.stats()
        if (
            stats["acked_sum"] >= expected
            and stats["refresh_inflight"] == 0
            and stats["triggers"] >= min_triggers
        ):
            return stats
        for server in target.servers:
            if server.exited():
                raise RuntimeError(f"{server.name} exited:\n{server.tail()}")
        await asyncio.sleep(0.02)
    return None


async def drive(
    target: Target,
    sender: Sender,
    client: str,
    events: int,
    concurrency: int,
    *,
    first: int = 0,
    route: Callable[[int], int] = lambda n: 0,
    refusals: Counter[str] | None = None,
) -> int:
    """Closed loop: ``concurrency`` workers send ``events`` events round robin over the chats,
    event ``n`` to instance ``route(n)``. Returns how many were refused (not accepted), each
    counted in ``refusals`` by instance and answer."""
    posters = [make_poster(client, base, concurrency, sender) for base in target.bases]
    chats = target.chats
    numbers = iter(range(first, first + events))
    refused = 0

    async def worker() -> None:
        nonlocal refused
        for n in numbers:  # shared iterator: each n is taken by exactly one worker
            chat = chats[n % len(chats)]
            instance = route(n)
            status, answer = await posters[instance].post(*sender.request(chat, n))
            if status == sender.accepted:
                chat.last_index += 1
            else:
                refused += 1
                if refusals is not None:
                    text = answer[:200].decode(errors="replace")
                    refusals[f"instance-{instance + 1}: HTTP {status} {text}"] += 1

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        for poster in posters:
            await poster.close()
    return refused


# -- the command line ---------------------------------------------------------------------------


def add_options(
    parser: argparse.ArgumentParser, *, chats: int, timeout_s: float, targets: bool = True
) -> None:
    """The options of every load benchmark (``targets``: --targets and --loop too)."""
    parser.add_argument("--chats", type=int, default=chats, help="chats the events go round")
    if targets:
        parser.add_argument("--targets", default=",".join(TARGETS), help="relay,chatpush")
        parser.add_argument("--loop", choices=LOOPS, default="uvloop", help="both targets' loop")
    parser.add_argument("--client", choices=list(CLIENTS), default="raw", help="loadgen's HTTP")
    parser.add_argument("--timeout", type=float, default=timeout_s, help="seconds, per wait")
    parser.add_argument(
        "--instrument",
        action="store_true",
        help="run chatpush under benchmarks/launch.py --counters and print SQL per event",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run (a few seconds)")


def add_closed_loop_options(
    parser: argparse.ArgumentParser,
    *,
    events: int,
    warmup: int,
    concurrency: int,
    rounds: int,
    rounds_help: str,
    sender: str,
) -> None:
    """The options of a closed loop (``drive``): throughput and instances."""
    parser.add_argument("--events", type=int, default=events, help="measured events per run")
    parser.add_argument("--warmup", type=int, default=warmup, help="uncounted events first")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="events in flight")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    parser.add_argument("--sender", choices=list(SENDERS), default=sender, help="who sends")


def closed_loop_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The smoke size, then the checks, of ``add_closed_loop_options``'s."""
    if args.smoke:
        args.events, args.warmup, args.chats, args.concurrency = 100, 10, 8, 8
        args.rounds, args.timeout = 1, 30.0
    if min(args.events, args.chats, args.concurrency, args.rounds) < 1 or args.warmup < 0:
        parser.error("--events, --chats, --concurrency and --rounds must be positive")


def target_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--targets as a list; --loop uvloop only with uvloop installed."""
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for target in args.targets:
        if target not in TARGETS:
            parser.error(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        parser.error("--loop uvloop: uvloop is not installed (pip install uvloop)")
