"""The rig shared by the throughput and latency benchmarks: processes, chats, load clients, CPU.

A *target* is what the load generator drives: ``relay`` (benchmarks/null_relay.py, the baseline)
or ``chatpush`` (``python -m chatpush.cli --config FILE serve`` on a fresh SQLite file in a
temporary directory, one node group whose ``customhttp.url`` is the receiver). Each target gets
its own receiver process (benchmarks/ack_receiver.py, the same program for both), so the load
generator, the target and the receiver are three processes sharing the machine. Every process is
stopped on the way out (and, on Linux, dies with the benchmark if that is killed). Only 127.0.0.1.

``running_cluster(n, admin_url)`` is the PostgreSQL variant: a fresh database (created through
``admin_url``, migrated by ``chatpush migrate``, dropped on the way out), ``n`` chatpush instances
on it, each hosting one node of the one group, and one receiver that refreshes round robin over
the instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
API_KEY = "bench-api-key"
SERVICE = "bench"
AGENT_ID = 2
TARGETS = ("relay", "chatpush")

RELIABLE_PUSH = {
    "userData[GCTI_Chat_PushSubscribe]": "true",
    "userData[GCTI_GMS_PushDeviceType]": "customhttp",
    "userData[GCTI_GMS_PushResend]": "true",
    "userData[GCTI_GMS_NotifyRequestor]": "true",
}
"""Request Chat's userData: reliable delivery, the customer's own events notified too."""

CHATPUSH_CONFIG = """\
[server]
host = "{host}"
port = {port}
[database]
url = "sqlite+aiosqlite:///{db}"
[security]
api_keys = ["{api_key}"]
[logging]
level = "INFO"
format = "json"
[chat]
# Benchmarks make hundreds of chats from one address and long transcripts: limits out of the way.
chats_per_address_per_minute = 0
max_events_per_chat = 1000000
max_refresh_events = 100000
[services.default]
# Long enough that a receiver which acknowledges promptly never sees a resend.
flex-push-resend-delay = 60
flex-push-resend-attempts = 3
flex-push-content = "session-id, user-id, secure-key"
[groups.bench]
default = true
nodes = ["node-1"]
pushEnabled = "customhttp"
"customhttp.url" = "http://{host}:{receiver_port}/push"
"""

CLUSTER_CONFIG = """\
[server]
host = "{host}"
port = {port}
instance_id = "instance-{n}"
alias = "{n}"
nodes = ["node-{n}"]
[database]
url = "{db_url}"
[security]
api_keys = ["{api_key}"]
[logging]
level = "INFO"
format = "json"
[chat]
# Benchmarks make hundreds of chats from one address and long transcripts: limits out of the way.
chats_per_address_per_minute = 0
max_events_per_chat = 1000000
max_refresh_events = 100000
[services.default]
flex-push-resend-delay = 60
flex-push-resend-attempts = 3
flex-push-content = "session-id, user-id, secure-key"
[groups.cluster]
default = true
nodes = [{nodes}]
pushEnabled = "customhttp"
"customhttp.url" = "http://{host}:{receiver_port}/push"
"""
"""``running_cluster``: instance ``n`` of several on one PostgreSQL database; the same group (one
node per instance) in every instance's file, its own ``[server]``."""

POSTGRES_ADMIN_URL = os.environ.get(
    "CHATPUSH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""Where ``running_cluster`` creates its databases (the tests' server, as tests/postgres.py)."""

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, over every core."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, (busy + idle + iowait) / CLK_TCK


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def cpu_s(self) -> float:
        return process_cpu_s(self.popen.pid)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def start_process(name: str, command: list[str], workdir: Path) -> Process:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Process(name, popen, log)


class ReceiverClient:
    """Talks to an ack_receiver process: its counters and its trigger arrival samples."""

    def __init__(self, session: ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def stats(self) -> dict[str, int]:
        async with self.session.get(f"{self.base}/stats") as reply:
            return dict(await reply.json())

    async def reset(self) -> None:
        async with self.session.post(f"{self.base}/reset") as reply:
            reply.raise_for_status()

    async def samples(self) -> list[tuple[str, int, int, int]]:
        async with self.session.get(f"{self.base}/samples") as reply:
            return [tuple(s) for s in (await reply.json())["samples"]]


@dataclass
class Rig:
    """One target and its receiver, running; ``chats`` and ``last_index`` once set up."""

    kind: str
    base: str
    server: Process
    receiver: Process
    receiver_url: str
    chats: list[str] = field(default_factory=list)
    last_index: dict[str, int] = field(default_factory=dict)
    counters_path: Path | None = None
    """With ``instrument``: where benchmarks/instrumented_serve.py writes its counters."""
    extra_servers: list[Process] = field(default_factory=list)
    """``running_cluster``: the instances after the first (``server``), on the same database."""
    bases: list[str] = field(default_factory=list)
    """``running_cluster``: every instance's base URL, ``base`` first."""
    database_url: str | None = None
    """``running_cluster``: the PostgreSQL database the instances share."""

    @property
    def servers(self) -> list[Process]:
        return [self.server, *self.extra_servers]

    def processes(self) -> list[Process]:
        return [*self.servers, self.receiver]

    async def counters(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The instrumented chatpush's counters so far (SQL statements, transactions, ...)."""
        assert self.counters_path is not None, "start the rig with instrument=True"
        return await process_counters(self.server, self.counters_path, timeout_s)


async def process_counters(process: Process, path: Path, timeout_s: float = 10.0) -> dict[str, Any]:
    """The counters so far of a chatpush under benchmarks/instrumented_serve.py: SIGUSR1 makes
    it write them to ``path``."""
    last = _read_counters(path)
    previous = -1 if last is None else last["snapshot"]
    os.kill(process.popen.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        data = _read_counters(path)
        if data is not None and data["snapshot"] != previous:
            return data
    raise RuntimeError(f"no counters from {process.name}")


def _read_counters(path: Path) -> dict[str, Any] | None:
    """The last snapshot instrumented_serve wrote (a small local file), if any."""
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class running_rig:
    """``async with running_rig("chatpush") as rig:`` starts the receiver and the target, waits
    until both answer, and stops both (and removes the temporary directory) on the way out."""

    def __init__(
        self,
        kind: str,
        *,
        record: bool = False,
        instrument: bool = False,
        relay_concurrency: int = 32,
    ) -> None:
        if kind not in TARGETS:
            raise ValueError(f"unknown target {kind!r}")
        self.kind = kind
        self.record = record
        self.instrument = instrument and kind == "chatpush"
        self.relay_concurrency = relay_concurrency
        self._stack = contextlib.ExitStack()

    async def __aenter__(self) -> Rig:
        try:
            return await self._start()
        except BaseException:
            self._stack.close()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    async def _start(self) -> Rig:
        workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="chatpush-")))
        port, receiver_port = free_port(), free_port()
        base, receiver_base = f"http://{HOST}:{port}", f"http://{HOST}:{receiver_port}"
        receiver_command = [
            sys.executable,
            "-m",
            "benchmarks.ack_receiver",
            "--port",
            str(receiver_port),
            "--target",
            base,
            "--service",
            SERVICE,
        ]
        if self.record:
            receiver_command.append("--record")
        receiver = start_process("receiver", receiver_command, workdir)
        self._stack.callback(receiver.stop)
        if self.kind == "relay":
            command = [
                sys.executable,
                "-m",
                "benchmarks.null_relay",
                "--port",
                str(port),
                "--receiver",
                f"{receiver_base}/push",
                "--concurrency",
                str(self.relay_concurrency),
            ]
        else:
            config = workdir / "bench.toml"
            config.write_text(
                CHATPUSH_CONFIG.format(
                    host=HOST,
                    port=port,
                    db=workdir / "chatpush.db",
                    api_key=API_KEY,
                    receiver_port=receiver_port,
                )
            )
            command = [sys.executable, "-m", "chatpush.cli", "--config", str(config), "serve"]
        counters = None
        if self.instrument:
            counters = workdir / "counters.json"
            command[1:3] = [
                "-m",
                "benchmarks.instrumented_serve",
                "--counters",
                str(counters),
                "--",
            ]
        server = start_process(self.kind, command, workdir)
        self._stack.callback(server.stop)
        await wait_until_up(f"{receiver_base}/stats", receiver)
        await wait_until_up(f"{base}/healthz", server)
        return Rig(self.kind, base, server, receiver, receiver_base, counters_path=counters)


class running_cluster:
    """``async with running_cluster(2, admin_url) as rig:`` creates a fresh PostgreSQL database
    through ``admin_url`` (a libpq URL of an existing database, e.g. ``postgres``), migrates it
    with ``chatpush migrate``, starts the receiver (refreshing round robin over the instances) and
    ``instances`` chatpush processes on the database, and waits until all answer. On the way out
    it stops every process and drops the database (``WITH (FORCE)``), whatever happened. With
    ``instrument``, each instance runs under benchmarks/instrumented_serve.py and writes its
    counters to ``cluster_counters_path(process)``."""

    def __init__(
        self, instances: int, admin_url: str, *, record: bool = False, instrument: bool = False
    ) -> None:
        if instances < 1:
            raise ValueError("at least one instance")
        self.instances = instances
        self.admin_url = admin_url
        self.record = record
        self.instrument = instrument
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Rig:
        try:
            return await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _admin(self, statement: str) -> None:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def _start(self) -> Rig:
        stack = self._stack
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatpush-")))
        name = f"chatpush_bench_{os.getpid()}_{secrets.token_hex(4)}"
        await self._admin(f'CREATE DATABASE "{name}"')
        stack.push_async_callback(self._admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        parts = urlsplit(self.admin_url)
        db_url = urlunsplit(("postgresql+asyncpg", parts.netloc, "/" + name, parts.query, ""))
        ports = [free_port() for _ in range(self.instances)]
        bases = [f"http://{HOST}:{port}" for port in ports]
        receiver_port = free_port()
        receiver_base = f"http://{HOST}:{receiver_port}"
        nodes = ", ".join(f'"node-{n}"' for n in range(1, self.instances + 1))
        configs = []
        for n, port in enumerate(ports, 1):
            config = workdir / f"instance-{n}.toml"
            config.write_text(
                CLUSTER_CONFIG.format(
                    host=HOST,
                    port=port,
                    n=n,
                    db_url=db_url,
                    api_key=API_KEY,
                    nodes=nodes,
                    receiver_port=receiver_port,
                )
            )
            configs.append(config)
        cli = [sys.executable, "-m", "chatpush.cli", "--config"]
        migrate = await asyncio.to_thread(
            subprocess.run,
            [*cli, str(configs[0]), "migrate"],
            cwd=workdir,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"chatpush migrate failed:\n{migrate.stdout}{migrate.stderr}")
        receiver_command = [
            sys.executable,
            "-m",
            "benchmarks.ack_receiver",
            "--port",
            str(receiver_port),
            "--service",
            SERVICE,
        ]
        for base in bases:
            receiver_command += ["--target", base]
        if self.record:
            receiver_command.append("--record")
        receiver = start_process("receiver", receiver_command, workdir)
        stack.callback(receiver.stop)
        servers = []
        for n, config in enumerate(configs, 1):
            command = [*cli, str(config), "serve"]
            if self.instrument:
                counters = cluster_counters_path(workdir / f"instance-{n}.log")
                command[1:3] = ["-m", "benchmarks.instrumented_serve", "--counters"]
                command[4:4] = [str(counters), "--"]
            server = start_process(f"instance-{n}", command, workdir)
            stack.callback(server.stop)
            servers.append(server)
        await wait_until_up(f"{receiver_base}/stats", receiver)
        for base, server in zip(bases, servers, strict=True):
            await wait_until_up(f"{base}/healthz", server)
        return Rig(
            "chatpush",
            bases[0],
            servers[0],
            receiver,
            receiver_base,
            extra_servers=servers[1:],
            bases=bases,
            database_url=db_url,
        )


def cluster_counters_path(log: Path) -> Path:
    """Where an instance of ``running_cluster(..., instrument=True)`` writes its counters."""
    return log.with_suffix(".counters.json")


async def wait_until_up(url: str, process: Process, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with ClientSession(timeout=ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
            with contextlib.suppress(ClientError, TimeoutError):
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{process.name} never answered {url}:\n{process.tail()}")


async def set_up_chats(rig: Rig, count: int, concurrency: int = 8) -> None:
    """chatpush: Request Chat with reliable push, then an agent joins (participant 2), whose
    ParticipantJoined is the chat's index 2. The relay needs no set-up: its chats start at 0."""
    if rig.kind == "relay":
        rig.chats = [f"{n:016X}" for n in range(count)]
        rig.last_index = dict.fromkeys(rig.chats, 0)
        return
    slots = asyncio.Semaphore(concurrency)
    headers = {"X-API-Key": API_KEY}
    bases = rig.bases or [rig.base]  # several instances: round robin, as a load balancer would

    async def one(session: ClientSession, n: int) -> str:
        base = bases[n % len(bases)]
        async with slots:
            form = {"nickname": f"customer-{n}", **RELIABLE_PUSH}
            form["userData[GCTI_GMS_PushDeviceId]"] = f"device-{n}"
            async with session.post(f"{base}/genesys/2/chat/{SERVICE}", data=form) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"Request Chat: HTTP {reply.status} {await reply.text()}")
                chat_id = str((await reply.json())["chatId"])
            async with session.post(
                f"{base}/api/v1/chats/{chat_id}/parties",
                json={"type": "Agent", "nickname": "agent"},
                headers=headers,
            ) as reply:
                if reply.status != 201:
                    raise RuntimeError(f"add party: HTTP {reply.status} {await reply.text()}")
            return chat_id

    async with ClientSession(timeout=ClientTimeout(total=60)) as session:
        rig.chats = list(await asyncio.gather(*(one(session, n) for n in range(count))))
    rig.last_index = dict.fromkeys(rig.chats, AGENT_ID)


async def wait_drained(
    receiver: ReceiverClient, rig: Rig, *, min_triggers: int = 0, timeout_s: float = 120.0
) -> dict[str, int] | None:
    """Wait until the receiver has acknowledged every chat up to its last index, with no refresh
    in flight (and, for the relay, one trigger per event). None when ``timeout_s`` ran out."""
    expected = sum(rig.last_index.values())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = await receiver.stats()
        if (
            stats["acked_sum"] >= expected
            and stats["refresh_inflight"] == 0
            and stats["triggers"] >= min_triggers
        ):
            return stats
        for server in rig.servers:
            if server.popen.poll() is not None:
                raise RuntimeError(f"{server.name} exited:\n{server.tail()}")
        await asyncio.sleep(0.02)
    return None


# -- load clients -------------------------------------------------------------------------------


class Poster(Protocol):
    """POSTs a JSON body to a path of the target; returns (HTTP status, body)."""

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class AiohttpPoster:
    """One aiohttp ClientSession with keep-alive connections (at most ``limit``)."""

    def __init__(self, base: str, limit: int) -> None:
        self.base = base
        self.session = ClientSession(
            connector=TCPConnector(limit=limit),
            timeout=ClientTimeout(total=60),
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
            skip_auto_headers=("User-Agent",),
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self.session.post(self.base + path, data=body) as reply:
            return reply.status, await reply.read()

    async def close(self) -> None:
        await self.session.close()


class _RawConnection:
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

    def __init__(self, base: str, limit: int) -> None:
        host_port = base.removeprefix("http://")
        host, _, port = host_port.partition(":")
        self.host, self.port = host, int(port)
        self.head = (
            f"Host: {host_port}\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.idle: list[_RawConnection] = []
        self.limit = limit
        self.all: list[_RawConnection] = []

    async def _connect(self) -> _RawConnection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        conn = _RawConnection(reader, writer)
        self.all.append(conn)
        return conn

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reused = bool(self.idle)
        conn = self.idle.pop() if reused else await self._connect()
        data = b"".join(
            (
                b"POST ",
                path.encode(),
                b" HTTP/1.1\r\n",
                self.head,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
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


def make_poster(client: str, base: str, limit: int) -> Poster:
    if client == "raw":
        return RawPoster(base, limit)
    if client == "aiohttp":
        return AiohttpPoster(base, limit)
    raise ValueError(f"unknown client {client!r}")


def event_body(n: int = 0) -> bytes:
    """An agent's message, as the chat-server side API takes it (about 70 bytes of JSON)."""
    return json.dumps(
        {"participantId": AGENT_ID, "type": "Message", "text": f"benchmark message {n:08d}"}
    ).encode()


def events_path(chat_id: str) -> str:
    return f"/api/v1/chats/{chat_id}/events"


# -- CPU accounting ----------------------------------------------------------------------------


@dataclass
class CpuSnapshot:
    wall_s: float
    own_s: float
    processes: dict[str, float]
    machine_busy_s: float
    machine_total_s: float


def cpu_snapshot(rig: Rig) -> CpuSnapshot:
    busy, total = machine_cpu_s()
    return CpuSnapshot(
        wall_s=time.monotonic(),
        own_s=time.process_time(),
        processes={p.name: p.cpu_s() for p in rig.processes()},
        machine_busy_s=busy,
        machine_total_s=total,
    )


@dataclass
class CpuUse:
    """CPU seconds spent between two snapshots, per process, and by the rest of the machine."""

    wall_s: float
    loadgen_s: float
    server_s: float
    receiver_s: float
    others_s: float
    machine_total_s: float

    def percent(self, seconds: float) -> float:
        """As a percentage of one core over the interval."""
        return 100.0 * seconds / self.wall_s if self.wall_s else 0.0


def cpu_use(rig: Rig, before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
    spent = {name: after.processes[name] - before.processes[name] for name in after.processes}
    loadgen = after.own_s - before.own_s
    busy = after.machine_busy_s - before.machine_busy_s
    ours = loadgen + sum(spent.values())
    return CpuUse(
        wall_s=after.wall_s - before.wall_s,
        loadgen_s=loadgen,
        server_s=spent[rig.server.name],
        receiver_s=spent[rig.receiver.name],
        others_s=max(0.0, busy - ours),
        machine_total_s=after.machine_total_s - before.machine_total_s,
    )


def machine_description() -> dict[str, Any]:
    import platform
    import sqlite3

    import aiohttp
    import sqlalchemy

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "aiohttp": aiohttp.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def print_ratios(label: str, values: list[float], suffix: str = "", digits: int = 2) -> None:
    """One line: the ratios of the rounds and their median (``suffix`` after it, e.g. a target)."""
    listed = ", ".join(f"{x:.{digits}f}" for x in values)
    print(f"{label}{listed} (median {statistics.median(values):.{digits}f}{suffix})")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """A SIGTERM unwinds like Ctrl-C, so every ``running_rig`` stops its processes."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- chatpush's own counters (benchmarks/instrumented_serve.py) --------------------------------


def counter_difference(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the counters of ``Rig.counters`` grew by between two snapshots."""
    difference: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            old = before.get(key, {})
            difference[key] = {k: v - old.get(k, 0) for k, v in value.items() if v != old.get(k, 0)}
        elif key != "snapshot":
            difference[key] = value - before.get(key, 0)
    return difference


def report_counters(counters: dict[str, Any], events: int, label: str) -> None:
    """Per event: SQL statements by shape, transactions, aiosqlite thread hops, HTTP requests."""
    if not events:
        return
    statements = counters["statements"]
    transactions = counters["transactions"]
    print()
    print(
        f"chatpush per event ({label}, {events} events):"
        f" {sum(statements.values()) / events:.1f} SQL statements,"
        f" {transactions.get('commit', 0) / events:.2f} commits,"
        f" {transactions.get('rollback', 0) / events:.2f} rollbacks,"
        f" {counters['aiosqlite_hops'] / events:.1f} aiosqlite thread hops"
    )
    rows = [
        [shape, str(count), f"{count / events:.2f}"]
        for shape, count in sorted(statements.items(), key=lambda item: -item[1])
    ]
    rows += [
        [f"HTTP {route}", str(count), f"{count / events:.2f}"]
        for route, count in sorted(counters["requests"].items(), key=lambda item: -item[1])
    ]
    print_table(["statement or request", "count", "per event"], rows)
