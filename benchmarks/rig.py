"""The one rig every benchmark stands on: its processes, the receiver, chatpush and the null relay,
chats, CPU accounting, the machine and the printed tables.

``async with Bench() as bench:`` owns a work directory, an HTTP client session and every process it
starts (``bench.receiver``, ``bench.chatpush``, ``bench.relay``, ``bench.process``), and PostgreSQL
databases it creates (``bench.postgres_database``). On the way out it stops the processes, drops
the databases and removes the directory; the children also die with the benchmark (Linux
PR_SET_PDEATHSIG) should it be killed. Everything listens on 127.0.0.1 only.

A service process runs as ``python -m MODULE ...``, or under benchmarks/launch.py when it is to run
on uvloop (``loop="uvloop"``) or to count its SQL statements (``instrument=True``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
API_KEY = "bench-api-key"
API_HEADERS = {"X-API-Key": API_KEY}
SERVICE = "bench"
GROUP = "bench"
LOOPS = ("asyncio", "uvloop")
CLK_TCK = os.sysconf("SC_CLK_TCK")
POSTGRES_ADMIN_URL = os.environ.get(
    "CHATPUSH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""Where ``Bench.postgres_database`` creates its databases (the tests' server, as
tests/postgres.py)."""

_T0 = time.monotonic()


def progress(message: str) -> None:
    """A timestamped progress line on stderr (the results go to stdout)."""
    print(f"[{time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """A SIGTERM unwinds the benchmark like an error, so that ``Bench`` stops its processes."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- /proc ------------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kb(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in kB; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, over every core."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, (busy + idle + iowait) / CLK_TCK


class CpuMeter:
    """CPU seconds spent by named processes, by this process (the load generator) and by the rest
    of the machine ("others": neighbours on a shared machine, which the figures cannot control),
    over one span or several (``start``/``stop`` again, e.g. around a restart: new pids)."""

    def __init__(self) -> None:
        self.spent: defaultdict[str, float] = defaultdict(float)
        self.own_s = self.busy_s = self.total_s = self.wall_s = 0.0
        self._pids: dict[str, int] = {}
        self._start: tuple[float, float, float, float, dict[str, float]] | None = None

    def _read(self) -> tuple[float, float, float, float, dict[str, float]]:
        busy, total = machine_cpu_s()
        processes = {name: cpu_s(pid) for name, pid in self._pids.items()}
        return time.monotonic(), time.process_time(), busy, total, processes

    def start(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start = self._read()

    def stop(self) -> None:
        assert self._start is not None, "start() first"
        wall, own, busy, total, processes = self._read()
        wall0, own0, busy0, total0, processes0 = self._start
        self.wall_s += wall - wall0
        self.own_s += own - own0
        self.busy_s += busy - busy0
        self.total_s += total - total0
        for name, seconds in processes.items():
            self.spent[name] += seconds - processes0[name]
        self._start = None

    @property
    def others_s(self) -> float:
        return max(0.0, self.busy_s - self.own_s - sum(self.spent.values()))

    def percent(self, seconds: float) -> float:
        """As a percentage of one core over the spans."""
        return 100.0 * seconds / self.wall_s if self.wall_s else 0.0

    def share(self, seconds: float) -> str:
        return f"{self.percent(seconds):.0f}%" if self.wall_s else "n/a"


# -- processes --------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def python_command(
    module: str, args: Iterable[str], *, loop: str = "asyncio", counters: Path | None = None
) -> list[str]:
    """``python -m module args``, through benchmarks/launch.py for uvloop or counters."""
    if loop == "asyncio" and counters is None:
        return [sys.executable, "-m", module, *args]
    launch = [sys.executable, "-m", "benchmarks.launch", "--loop", loop]
    if counters is not None:
        launch += ["--counters", str(counters)]
    return [*launch, module, *args]


@dataclass
class Process:
    """A child process, its output in ``workdir/NAME.log``; ``start`` after ``stop`` restarts it."""

    name: str
    command: list[str]
    workdir: Path
    base: str = ""
    """Where it serves HTTP, ``http://127.0.0.1:PORT``."""
    ready_path: str = "/readyz"
    """Answers 200 once the process serves (``wait_ready``)."""
    counters_file: Path | None = None
    """Under benchmarks/launch.py --counters: where SIGUSR1 makes it write its counters."""
    popen: subprocess.Popen[Any] | None = None
    spy: subprocess.Popen[bytes] | None = None
    peak_rss_kb: list[int] = field(default_factory=list)
    """VmHWM of each run of the process, read just before it was stopped."""

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} not started"
        return self.popen.pid

    def exited(self) -> bool:
        return self.popen is not None and self.popen.poll() is not None

    def start(self) -> float:
        """Spawn it; returns the time of the spawn (epoch seconds)."""
        with open(self.log, "ab") as out:
            spawned = time.time()
            self.popen = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
                preexec_fn=_die_with_parent,
            )
        return spawned

    async def wait_ready(self, http: aiohttp.ClientSession, timeout_s: float = 60.0) -> float:
        """Wait until ``ready_path`` answers 200; returns when it first did (epoch seconds)."""
        url = self.base + self.ready_path
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.exited():
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return time.time()
            await asyncio.sleep(0.02)
        raise RuntimeError(f"{self.name} never answered {url}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; a py-spy recorder ends with it."""
        if self.popen is not None and self.popen.poll() is None:
            self.peak_rss_kb.append(peak_rss_kb(self.popen.pid))
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
            if self.popen.returncode not in (0, -signal.SIGTERM):
                progress(
                    f"warning: {self.name} exited with {self.popen.returncode}; see {self.log}"
                )
        if self.spy is not None:
            try:
                self.spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.spy.kill()
                self.spy.wait(timeout=10)
            self.spy = None

    async def counters(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """A snapshot of the counters of a process under benchmarks/launch.py --counters."""
        assert self.counters_file is not None, f"{self.name} does not count (instrument=True)"
        previous = -1
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(self.counters_file.read_text())["snapshot"]
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            with contextlib.suppress(OSError, ValueError):
                data: dict[str, Any] = json.loads(self.counters_file.read_text())
                if data["snapshot"] != previous:
                    return data
        raise RuntimeError(f"no counters from {self.name}")

    def profile(self, directory: Path | None, label: str) -> None:
        """With a ``directory``: record this process with py-spy until it exits, as collapsed
        stacks (one line per stack and its sample count, one thread per root frame) in
        ``directory/label.txt``."""
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        spy = str(Path(sys.executable).parent / "py-spy")
        options = ["--rate", "200", "--threads", "--nonblocking", "--format", "raw"]
        output = str(directory / f"{label}.txt")
        self.spy = subprocess.Popen(
            [spy, "record", "--pid", str(self.pid), *options, "--output", output],
            stdout=subprocess.DEVNULL,
            stderr=(directory / f"{label}.py-spy.log").open("wb"),
        )


# -- the receiver (benchmarks/receiver.py) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One push the receiver took, in arrival order."""

    seq: int
    at: float
    """Arrival, epoch seconds."""
    monotonic_ns: int
    """Arrival, CLOCK_MONOTONIC: the same clock in every process of the machine."""
    chat_id: str | None
    position: int | None
    """The event's index (payload bodies) or the trigger's notify-position."""
    attempt: int | None
    """notify-attempt of a trigger; None for other bodies."""


@dataclass
class Receiver:
    """The receiver process and its control routes."""

    process: Process
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"{self.process.base}/push"

    def _control(self, path: str) -> str:
        return f"{self.process.base}{path}"

    async def stats(self) -> dict[str, int]:
        """count (pushes recorded), triggers, resends, refreshes, refresh_failures,
        refresh_inflight, acked_sum (every chat's acknowledged position, summed), hung."""
        async with self.http.get(self._control("/stats")) as reply:
            return dict(await reply.json())

    async def count(self) -> int:
        return (await self.stats())["count"]

    async def control(self, *, mode: str | None = None, reset: bool = False) -> None:
        """``mode`` ok or hang; ``reset`` forgets the records and counters (not the chats'
        acknowledged positions)."""
        params = {"reset": "1" if reset else "0", **({"mode": mode} if mode else {})}
        async with self.http.post(self._control("/control"), params=params) as reply:
            reply.raise_for_status()

    async def records(self) -> list[Record]:
        out: list[Record] = []
        while True:  # pages of at most 50,000 records, so that no answer grows too large
            async with self.http.get(self._control("/records"), params={"since": len(out)}) as r:
                page = (await r.json())["records"]
            out += [Record(*row) for row in page]
            if len(page) < 50_000:
                return out

    async def bodies(self) -> list[str]:
        async with self.http.get(self._control("/bodies")) as reply:
            return list((await reply.json())["bodies"])


# -- chatpush ---------------------------------------------------------------------------------

CHATPUSH_CONFIG = """\
[server]
host = "{host}"
port = {port}
event_loop = "{event_loop}"
instance_id = "instance-{n}"
alias = "{n}"
nodes = ["node-{n}"]

[database]
url = "{database_url}"

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

[delivery]
{delivery}

[services.default]
flex-push-resend-delay = {resend_delay_s}
flex-push-resend-attempts = 3
flex-push-content = "session-id, user-id, secure-key"

[groups.{group}]
default = true
nodes = [{nodes}]
pushEnabled = "customhttp"
"customhttp.url" = "{receiver_url}"
"""
"""Instance ``n`` of ``instances`` (one, unless several share a PostgreSQL database): one node
group whose nodes are ``node-1`` ... ``node-N``, instance ``n`` hosting ``node-n``, delivering to
the receiver."""


# -- the bench --------------------------------------------------------------------------------


class Bench:
    """A work directory, an HTTP session and the processes of one benchmark run (see the module's
    docstring). ``workdir`` given: kept; else a temporary one, removed unless ``keep``."""

    def __init__(self, workdir: str | Path | None = None, *, keep: bool = False) -> None:
        self._given = Path(workdir) if workdir else None
        self._keep = keep or workdir is not None
        self._stack = contextlib.AsyncExitStack()
        self.processes: list[Process] = []

    async def __aenter__(self) -> Bench:
        if self._given is not None:
            self._given.mkdir(parents=True, exist_ok=True)
            self.workdir = self._given
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="chatpush-bench-"))
            if not self._keep:
                self._stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        self.http = await self._stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for process in reversed(self.processes):  # before their databases are dropped
                process.stop()
        finally:
            await self._stack.aclose()
        if self._keep and self._given is None:
            progress(f"kept {self.workdir}")

    def process(self, name: str, command: list[str], **kwargs: Any) -> Process:
        """A process stopped with the bench (not started yet)."""
        process = Process(name, command, self.workdir, **kwargs)
        self.processes.append(process)
        return process

    async def receiver(
        self, *, refresh: Iterable[str] = (), delay_ms: float = 0.0, keep_bodies: bool = False
    ) -> Receiver:
        """benchmarks/receiver.py, started and answering; ``refresh``: the base URLs it
        acknowledges each reliable trigger at (round robin), none: it acknowledges nothing."""
        port = free_port()
        args = ["--port", str(port), "--service", SERVICE, "--delay-ms", str(delay_ms)]
        for base in refresh:
            args += ["--refresh", base]
        if keep_bodies:
            args.append("--keep-bodies")
        process = self.process(
            "receiver",
            python_command("benchmarks.receiver", args),
            base=f"http://{HOST}:{port}",
            ready_path="/stats",
        )
        process.start()
        await process.wait_ready(self.http)
        return Receiver(process, self.http)

    def chatpush(
        self,
        receiver_url: str,
        *,
        port: int | None = None,
        database_url: str | None = None,
        instance: int = 1,
        instances: int = 1,
        resend_delay_s: int = 60,
        delivery: str = "",
        loop: str = "auto",
        instrument: bool = False,
    ) -> Process:
        """``chatpush serve`` (not started yet): SQLite in the work directory unless
        ``database_url``; ``delivery``: lines for its [delivery] table."""
        port = port or free_port()
        config = self.workdir / f"instance-{instance}.toml"
        config.write_text(
            CHATPUSH_CONFIG.format(
                host=HOST,
                port=port,
                n=instance,
                database_url=database_url or f"sqlite+aiosqlite:///{self.workdir / 'chatpush.db'}",
                api_key=API_KEY,
                delivery=delivery,
                resend_delay_s=resend_delay_s,
                group=GROUP,
                nodes=", ".join(f'"node-{k}"' for k in range(1, instances + 1)),
                receiver_url=receiver_url,
                event_loop=loop,
            )
        )
        counters = self.workdir / f"instance-{instance}.counters.json" if instrument else None
        return self.process(
            f"instance-{instance}",
            # chatpush picks its loop itself (server.event_loop above).
            python_command("chatpush.cli", ["--config", str(config), "serve"], counters=counters),
            base=f"http://{HOST}:{port}",
            counters_file=counters,
        )

    def relay(self, receiver_url: str, *, port: int, loop: str = "asyncio") -> Process:
        """benchmarks/null_relay.py (not started yet)."""
        return self.process(
            "relay",
            python_command(
                "benchmarks.null_relay",
                ["--port", str(port), "--receiver", receiver_url],
                loop=loop,
            ),
            base=f"http://{HOST}:{port}",
        )

    async def postgres_database(self, admin_url: str) -> str:
        """A fresh database, created through ``admin_url`` (a libpq URL of an existing database),
        migrated to head, dropped ``WITH (FORCE)`` with the bench: its SQLAlchemy URL."""
        import asyncpg  # type: ignore[import-untyped]

        from chatpush.store import migrate

        async def admin(statement: str) -> None:
            conn = await asyncpg.connect(admin_url, timeout=10)
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        name = f"chatpush_bench_{os.getpid()}_{secrets.token_hex(4)}"
        await admin(f'CREATE DATABASE "{name}"')
        self._stack.push_async_callback(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        parts = urlsplit(admin_url)
        url = urlunsplit(("postgresql+asyncpg", parts.netloc, "/" + name, parts.query, ""))
        await asyncio.to_thread(migrate.upgrade, url)
        return url


# -- chats ------------------------------------------------------------------------------------


@dataclass
class Chat:
    chat_id: str
    secure_key: str
    last_index: int = 0
    """The chat's last event index the benchmark knows of."""


def push_user_data(
    device_id: str,
    *,
    resend: bool = False,
    notify_requestor: bool = False,
    include_payload: bool = False,
) -> dict[str, str]:
    """Request Chat's userData (the GCTI_ keys of chatpush/push/subscription.py): custom HTTP."""
    user_data = {
        "GCTI_Chat_PushSubscribe": "true",
        "GCTI_GMS_PushDeviceId": device_id,
        "GCTI_GMS_PushDeviceType": "customhttp",
    }
    for key, wanted in (
        ("GCTI_GMS_PushResend", resend),
        ("GCTI_GMS_NotifyRequestor", notify_requestor),
        ("GCTI_GMS_PushIncludePayload", include_payload),
    ):
        if wanted:
            user_data[key] = "true"
    return user_data


async def expect(reply: aiohttp.ClientResponse, status: int) -> Any:
    """The JSON body of ``reply``, which must have ``status``."""
    if reply.status != status:
        raise RuntimeError(f"{reply.method} {reply.url}: HTTP {reply.status} {await reply.text()}")
    return await reply.json()


async def request_chat(
    http: aiohttp.ClientSession, base: str, nickname: str, user_data: Mapping[str, str]
) -> Chat:
    """Chat API v2 Request Chat, as the customer's client does it."""
    form = {"nickname": nickname, **{f"userData[{k}]": v for k, v in user_data.items()}}
    async with http.post(f"{base}/genesys/2/chat/{SERVICE}", data=form) as reply:
        body = await expect(reply, 200)
    return Chat(str(body["chatId"]), str(body["secureKey"]), int(body["nextPosition"]) - 1)


async def join_agent(http: aiohttp.ClientSession, base: str, chat: Chat) -> int:
    """An agent joins through the chat-server side API; returns its participant id."""
    party = {"type": "Agent", "nickname": "agent"}
    url = f"{base}/api/v1/chats/{chat.chat_id}/parties"
    async with http.post(url, json=party, headers=API_HEADERS) as reply:
        body = await expect(reply, 201)
    chat.last_index = int(body["event"]["index"])
    return int(body["party"]["participantId"])


async def agent_message(
    http: aiohttp.ClientSession, base: str, chat: Chat, participant: int, text: str
) -> None:
    event = {"participantId": participant, "type": "Message", "text": text}
    url = f"{base}/api/v1/chats/{chat.chat_id}/events"
    async with http.post(url, json=event, headers=API_HEADERS) as reply:
        chat.last_index = int((await expect(reply, 201))["event"]["index"])


def sqlite_rows(db_path: Path, sql: str, *params: Any) -> list[Any]:
    """The rows of a query on a running chatpush's SQLite file, opened read-only beside it."""
    uri = f"file:{db_path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


async def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Until ``await predicate()`` is true; a RuntimeError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# -- chatpush's counters (benchmarks/launch.py --counters) -------------------------------------


def counters_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the counters grew by between two snapshots (``Process.counters``)."""
    delta: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            old = before.get(key, {})
            delta[key] = Counter(
                {k: v - old.get(k, 0) for k, v in value.items() if v != old.get(k, 0)}
            )
        elif key != "snapshot":
            delta[key] = value - before.get(key, 0)
    return delta


def print_counters(delta: dict[str, Any], per: int, unit: str, where: str = "") -> None:
    """Per ``unit`` (``per`` of them, ``where``): SQL statements (by shape), commits, rollbacks and
    HTTP requests (by route)."""
    if per <= 0:
        return
    statements, transactions = delta["statements"], delta["transactions"]
    print(
        f"\nchatpush per {unit} ({per}{where and ', ' + where}):"
        f" {sum(statements.values()) / per:.2f} SQL statements,"
        f" {transactions.get('commit', 0) / per:.2f} commits,"
        f" {transactions.get('rollback', 0) / per:.2f} rollbacks"
    )
    rows = [[shape, str(n), f"{n / per:.3f}"] for shape, n in statements.most_common()]
    rows += [[f"HTTP {r}", str(n), f"{n / per:.3f}"] for r, n in delta["requests"].most_common()]
    print_table(["statement or request", "count", f"per {unit}"], rows)


# -- the machine and the report ---------------------------------------------------------------

_MACHINE: dict[str, str] = {}


def machine() -> dict[str, str]:
    """What the figures were measured on: read at the first call (the start of the run), but for
    the load average, read at each call."""
    if not _MACHINE:
        import sqlalchemy

        model = platform.processor() or "unknown"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        _MACHINE.update(
            cores=str(os.cpu_count()),
            cpu=model,
            python=platform.python_version(),
            sqlite=sqlite3.sqlite_version,
            aiohttp=aiohttp.__version__,
            sqlalchemy=sqlalchemy.__version__,
            date=time.strftime("%Y-%m-%d %H:%M %Z"),
            commit=_commit(),
        )
    return {**_MACHINE, "load average": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def machine_line() -> str:
    return "machine: " + ", ".join(f"{k} {v}" for k, v in machine().items())


def _commit() -> str:
    """The chatpush commit measured, ``+dirty`` when its working tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "chatpush"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(1, min(len(ordered), math.ceil(q / 100 * len(ordered)))) - 1]


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None
) -> None:
    """A Markdown table, so that it can go into docs/PERFORMANCE.md as printed."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    if title:
        print(f"\n{title}\n")
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print(flush=True)


def print_ratios(label: str, values: list[float], suffix: str = "", digits: int = 2) -> None:
    """One line: the ratios of the rounds and their median (``suffix`` after it, e.g. a target)."""
    listed = ", ".join(f"{x:.{digits}f}" for x in values)
    print(f"{label}{listed} (median {statistics.median(values):.{digits}f}{suffix})")


def add_service_options(parser: argparse.ArgumentParser, *, smoke: str, unit: str) -> None:
    """The options of the benchmarks that drive one ``chatpush serve`` (backlog, timers)."""
    parser.add_argument(
        "--delivery-toml",
        default="",
        help="extra lines for chatpush's [delivery] table, e.g. 'concurrency_per_receiver = 64'",
    )
    parser.add_argument("--smoke", action="store_true", help=f"tiny run for CI: {smoke}")
    parser.add_argument("--profile", type=Path, help="record chatpush with py-spy into this dir")
    parser.add_argument(
        "--instrument",
        action="store_true",
        help=f"run chatpush under benchmarks/launch.py --counters and count SQL per {unit}",
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--workdir", help="keep databases and logs here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
