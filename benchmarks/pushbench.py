"""Shared pieces of ``benchmarks/backlog.py`` and ``benchmarks/timers.py``.

- ``ChatpushProcess``: ``python -m chatpush.cli --config FILE serve`` as a subprocess on 127.0.0.1,
  with its log in the work directory, its peak RSS and CPU time read from ``/proc``, and a py-spy
  recorder attached for the measured phase when the benchmark runs with ``--profile DIR``.
- ``ReceiverProcess``: a recording custom HTTP receiver in its own process. Each POST is recorded
  as ``(seq, arrival time, chat id, index or notify-position, notify-attempt)`` in arrival order,
  then answered 200 after ``--delay-ms``. In ``hang`` mode it answers nothing (for 15 minutes at
  most) and records nothing. Control: ``GET /count``, ``GET /records?since=K``, ``GET /bodies``,
  ``POST /control?mode=ok|hang&reset=1``.

Run as a script, this module is that receiver:
``python benchmarks/pushbench.py receiver --port 9000 --delay-ms 5``.
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
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-api-key"
HANG_S = 900.0
"""A hanging receiver answers nothing for this long at most."""
RECEIVER_MAX_S = 3 * 3600.0
"""A receiver process ends by itself after this long, or as soon as its parent is gone."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


_T0 = time.monotonic()


def progress(message: str) -> None:
    """A timestamped progress line on stderr (the results go to stdout)."""
    print(f"[{time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_MACHINE: dict[str, str] = {}


def machine() -> dict[str, str]:
    """What the figures were measured on (read once: at the start of the run, by ``main``)."""
    if _MACHINE:
        return _MACHINE
    import sqlalchemy

    info = {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "aiohttp": aiohttp.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": _commit(),
    }
    _MACHINE.update(info)
    return info


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


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A Markdown table, so that it can go into docs/PERFORMANCE.md as printed."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print(flush=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark process dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def exit_on_sigterm() -> None:
    """A SIGTERM unwinds the benchmark like Ctrl-C, so that its ``finally`` blocks stop children."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a live process, in kB; empty once it is gone."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), in seconds."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return float("nan")


def machine_cpu_s() -> float:
    """CPU time the whole machine has spent busy since boot (all cores), in seconds."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuWindow:
    """CPU used between ``start()`` and ``stop()``: by chatpush, and by everything else.

    "others" is the machine's busy time minus chatpush, the receiver and this benchmark process:
    the neighbours on a shared machine, which the figures cannot control.
    """

    def __init__(self, receiver_pid: int) -> None:
        self.receiver_pid = receiver_pid
        self.chatpush_s = 0.0
        self.receiver_s = 0.0
        self.others_s = 0.0
        self.elapsed_s = 0.0
        self._start: tuple[float, float, float, float, float] | None = None

    def _now(self, chatpush_pid: int) -> tuple[float, float, float, float, float]:
        return (
            time.time(),
            machine_cpu_s(),
            cpu_seconds(chatpush_pid) if chatpush_pid else 0.0,
            cpu_seconds(self.receiver_pid),
            cpu_seconds(os.getpid()),
        )

    def start(self, chatpush_pid: int) -> None:
        self._start = self._now(chatpush_pid)

    def stop(self, chatpush_pid: int) -> None:
        """Add the time since ``start`` (a window may be several spans, e.g. across a restart)."""
        assert self._start is not None
        end = self._now(chatpush_pid)
        delta = [b - a for a, b in zip(self._start, end, strict=True)]
        self.elapsed_s += delta[0]
        self.chatpush_s += delta[2]
        self.receiver_s += delta[3]
        self.others_s += max(0.0, delta[1] - delta[2] - delta[3] - delta[4])
        self._start = None

    def share(self, seconds: float) -> str:
        return f"{100 * seconds / self.elapsed_s:.0f}%" if self.elapsed_s > 0 else "n/a"


def counters_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the instrumented process did between two snapshots."""
    shapes = {
        shape: after["statements"][shape] - before["statements"].get(shape, 0)
        for shape in after["statements"]
    }
    return {
        "statements": sum(shapes.values()),
        "by_statement": {k: v for k, v in sorted(shapes.items(), key=lambda kv: -kv[1]) if v},
        "commits": after["transactions"].get("commit", 0) - before["transactions"].get("commit", 0),
        "aiosqlite_hops": after["aiosqlite_hops"] - before["aiosqlite_hops"],
    }


def print_counters(delta: dict[str, Any], per: int, unit: str) -> None:
    """Per-unit statement, commit and thread-hop counts, and the commonest statements."""
    if per <= 0:
        return
    print(
        f"  per {unit}: {delta['statements'] / per:.2f} SQL statements, "
        f"{delta['commits'] / per:.2f} commits, {delta['aiosqlite_hops'] / per:.1f} aiosqlite "
        "thread hops"
    )
    for shape, count in list(delta["by_statement"].items())[:8]:
        print(f"    {count / per:6.3f}  {shape}")


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# -- chatpush ---------------------------------------------------------------------------------


def chatpush_config(
    *,
    port: int,
    db_path: Path,
    receiver_url: str,
    services: str = "",
    delivery: str = "",
) -> str:
    """One node group, one node (``node-1``), delivering to ``receiver_url``."""
    return f"""
[server]
host = "127.0.0.1"
port = {port}
instance_id = "bench"

[database]
url = "sqlite+aiosqlite:///{db_path}"

[security]
api_keys = ["{API_KEY}"]

[logging]
format = "json"

[chat]
# Benchmarks make hundreds of chats from one address and long transcripts: limits out of the way.
chats_per_address_per_minute = 0
max_events_per_chat = 1000000
max_refresh_events = 100000

[delivery]
{delivery}

[services.default]
{services}

[groups.bench]
default = true
nodes = ["node-1"]
pushEnabled = "customhttp"
"customhttp.url" = "{receiver_url}"
"""


@dataclass
class ChatpushProcess:
    """One ``chatpush serve`` process; ``start`` again after ``stop`` is a restart."""

    workdir: Path
    config: str
    port: int
    profile_dir: Path | None = None
    instrument: bool = False
    """Run under ``benchmarks/instrumented_serve.py``: SQL statements, commits, thread hops."""
    process: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    starts: int = 0
    peak_rss_kb: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> float:
        """Spawn it; returns the time of the spawn (epoch seconds)."""
        self.starts += 1
        config = self.workdir / "chatpush.toml"
        config.write_text(self.config)
        log = (self.workdir / "chatpush.log").open("ab")
        command = [sys.executable, "-m", "chatpush.cli", "--config", str(config), "serve"]
        if os.environ.get("CHATPUSH_BENCH_ENTRY"):  # experiments: a script standing in for the CLI
            command[1:3] = [os.environ["CHATPUSH_BENCH_ENTRY"]]
        if self.instrument:
            counters = ["--counters", str(self._counters), "--"]
            command[2:3] = ["benchmarks.instrumented_serve", *counters]
            self._counters.unlink(missing_ok=True)
        spawned = time.time()
        self.process = subprocess.Popen(
            command,
            cwd=self.workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return spawned

    @property
    def _counters(self) -> Path:
        return self.workdir / "counters.json"

    async def counters(self) -> dict[str, Any]:
        """A snapshot of the instrumented process's counters (SIGUSR1, then its JSON file)."""
        before = 0
        if self._counters.exists():
            before = json.loads(self._counters.read_text())["snapshot"]
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                data: dict[str, Any] = json.loads(self._counters.read_text())
                if data["snapshot"] > before:
                    return data
            await asyncio.sleep(0.02)
        raise RuntimeError("the instrumented chatpush wrote no counters")

    def profile(self, label: str) -> None:
        """Attach py-spy (when ``profile_dir`` is set) until this process exits.

        It writes collapsed stacks (``--format raw``: one line per stack and its sample count,
        one thread per root frame) to ``profile_dir/label.txt``.
        """
        if self.profile_dir is None:
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "200",
                "--threads",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(self.profile_dir / f"{label}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.profile_dir / f"{label}.py-spy.log").open("wb"),
        )

    async def wait_ready(self, http: aiohttp.ClientSession, timeout_s: float = 60.0) -> float:
        """Wait for ``/readyz``; returns the time it first answered 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"chatpush exited: see {self.workdir / 'chatpush.log'}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{self.base}/readyz") as reply:
                    if reply.status == 200:
                        return time.time()
            await asyncio.sleep(0.02)
        raise RuntimeError(f"chatpush not ready after {timeout_s} s")

    def sample(self) -> None:
        """Remember peak RSS and CPU time so far (call it just before ``stop``)."""
        if self.process is not None and self.process.poll() is None:
            self.peak_rss_kb.append(proc_status(self.process.pid).get("VmHWM", 0))
            self.cpu_s.append(cpu_seconds(self.process.pid))

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None:
            self.sample()
            stop_process(self.process, timeout_s)
            if self.process.returncode not in (0, -signal.SIGTERM):
                print(
                    f"warning: chatpush exited with {self.process.returncode}; "
                    f"see {self.workdir / 'chatpush.log'}",
                    file=sys.stderr,
                )
        if self.spy is not None:
            try:
                self.spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.spy.kill()
                self.spy.wait(timeout=10)
            self.spy = None


# -- the recording receiver -------------------------------------------------------------------


@dataclass
class ReceiverProcess:
    workdir: Path
    delay_ms: float = 0.0
    keep_bodies: bool = False
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ReceiverProcess:
        self.port = free_port()
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "receiver",
            "--port",
            str(self.port),
            "--delay-ms",
            str(self.delay_ms),
            "--parent",
            str(os.getpid()),
        ]
        if self.keep_bodies:
            command.append("--keep-bodies")
        log = (self.workdir / "receiver.log").open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        log.close()
        return self

    async def wait_ready(self, http: aiohttp.ClientSession, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self.count(http)
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("receiver did not start")

    def _control_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def count(self, http: aiohttp.ClientSession) -> int:
        async with http.get(self._control_url("/count")) as reply:
            return int((await reply.json())["count"])

    async def control(
        self, http: aiohttp.ClientSession, *, mode: str | None = None, reset: bool = False
    ) -> None:
        params = {"reset": "1" if reset else "0"}
        if mode is not None:
            params["mode"] = mode
        async with http.post(self._control_url("/control"), params=params) as reply:
            reply.raise_for_status()

    async def records(self, http: aiohttp.ClientSession) -> list[Record]:
        out: list[Record] = []
        while True:  # pages of at most 50,000 records, so that no answer grows too large
            async with http.get(self._control_url("/records"), params={"since": len(out)}) as r:
                page = (await r.json())["records"]
            out += [Record(*row) for row in page]
            if len(page) < 50_000:
                return out

    async def bodies(self, http: aiohttp.ClientSession) -> list[str]:
        async with http.get(self._control_url("/bodies")) as reply:
            return list((await reply.json())["bodies"])

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    at: float
    """Arrival, epoch seconds."""
    chat_id: str | None
    position: int | None
    """The event's index (payload bodies) or the trigger's notify-position."""
    attempt: int | None
    """notify-attempt of a trigger; None for other bodies."""


def parse_body(raw: bytes) -> tuple[str | None, int | None, int | None]:
    """(chat id, index or notify-position, notify-attempt) of a CONTRACT §7 body."""
    try:
        body = json.loads(raw)
        message = body.get("message") or {}
        first = (message.get("messages") or [{}])[0]
        user_data = first.get("userData") or {}
    except (ValueError, AttributeError, IndexError):
        return None, None, None
    chat_id = message.get("chatId")
    if chat_id in (None, "deprecated"):
        chat_id = user_data.get("session-id")
    if "notify-position" in user_data:
        return chat_id, int(user_data["notify-position"]), int(user_data["notify-attempt"])
    index = first.get("index")
    return chat_id, int(index) if index is not None else None, None


class _ReceiverState:
    def __init__(self, delay_ms: float, keep_bodies: bool) -> None:
        self.delay_s = delay_ms / 1000
        self.keep_bodies = keep_bodies
        self.mode = "ok"
        self.records: list[tuple[int, float, str | None, int | None, int | None]] = []
        self.bodies: list[str] = []
        self.hung = 0

    async def push(self, request: web.Request) -> web.Response:
        raw = await request.read()
        arrived = time.time()
        if self.mode == "hang":
            self.hung += 1
            await asyncio.sleep(HANG_S)
            return web.Response(status=503, text="hung")
        self.records.append((len(self.records), arrived, *parse_body(raw)))
        if self.keep_bodies:
            self.bodies.append(raw.decode())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(text="ok")

    async def count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": len(self.records), "hung": self.hung})

    async def records_page(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response({"records": self.records[since : since + 50_000]})

    async def bodies_all(self, request: web.Request) -> web.Response:
        return web.json_response({"bodies": self.bodies})

    async def control(self, request: web.Request) -> web.Response:
        if request.query.get("reset") == "1":
            self.records, self.bodies, self.hung = [], [], 0
        mode = request.query.get("mode")
        if mode in ("ok", "hang"):
            self.mode = mode
        return web.json_response({"mode": self.mode})


async def serve_receiver(port: int, delay_ms: float, keep_bodies: bool, parent: int) -> None:
    state = _ReceiverState(delay_ms, keep_bodies)
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/push", state.push)
    app.router.add_get("/count", state.count)
    app.router.add_get("/records", state.records_page)
    app.router.add_get("/bodies", state.bodies_all)
    app.router.add_post("/control", state.control)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    deadline = time.monotonic() + RECEIVER_MAX_S
    while not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(runner.cleanup(), 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    receiver = commands.add_parser("receiver", help="run the recording receiver")
    receiver.add_argument("--port", type=int, required=True)
    receiver.add_argument("--delay-ms", type=float, default=0.0)
    receiver.add_argument("--keep-bodies", action="store_true")
    receiver.add_argument("--parent", type=int, default=os.getppid())
    args = parser.parse_args()
    asyncio.run(serve_receiver(args.port, args.delay_ms, args.keep_bodies, args.parent))


if __name__ == "__main__":
    main()
