"""CometD: chatpush's Bayeux server against the official CometD Node.js server, in one run.

Both servers get the same load from the same generator (benchmarks/cometd_load.py, raw HTTP/1.1
over asyncio, so that the generator is not what is measured): N long-polling clients, client i
subscribed to its own channel /bench/i, each re-polling the moment a reply arrives, and four
publisher sessions sending R messages a second, 10 per request with 64 bytes of padding each,
message k to /bench/(k mod N), for D seconds (``--generator due``: the earlier publisher, see
docs/PERFORMANCE.md §6.1). For each (N, R) point and each server:

- publish → receive latency p50 / p99 / max (from when the publish request was sent; with
  ``--generator due``, from when the message was due), and the publisher's worst lag behind
  schedule;
- the server's CPU per delivered message, and connects per delivered message;
- delivered %: messages received exactly once (duplicates and losses are counted apart);
- the server's peak RSS (VmHWM) and CPU, and the generator's CPU (subscribers + publisher), as a
  share of one core, so that a saturated generator shows.

(a) ``node``: cometd-nodejs-server 1.2.1 from the npm registry (benchmarks/cometd_node_server.mjs),
    installed at run time into ``$CHATPUSH_NPM_CACHE/bench`` (default ~/.cache/chatpush-npm).
(b) ``chatpush``: chatpush.cometd.BayeuxServer alone (benchmarks/cometd_server.py), its plain
    long-polling requests answered by the lean front (chatpush/cometd/front.py) as ``chatpush
    serve`` does; ``chatpush-aiohttp``: every request through aiohttp (the earlier path);
    ``chatpush-freeze``: with ``gc.freeze()`` every 5 s (an experiment); ``chatpush-pygc``: the
    collector at Python's default threshold.
(c) ``chatpush-ws``: the same chatpush server, its subscribers over WebSocket (one socket each,
    one /meta/connect outstanding; ``cometd_load subscribe --transport websocket``), the
    publishers unchanged (HTTP, 10 messages per request). cometd-nodejs-server 1.2.1 has no
    WebSocket, so this row is set against Node's long-polling at the same point and against
    chatpush's own long-polling in the same run.
Both hold connects up to 30 s, keep sessions 120 s, allow client publishes. Each server process
is started fresh for each point. Run from the repository root:

    .venv/bin/python -m benchmarks.cometd                        # 1k/5k/10k x 1,000 and 10k x 2,000
    .venv/bin/python -m benchmarks.cometd --smoke                # a few seconds, for CI
    .venv/bin/python -m benchmarks.cometd --points 10000x2000 --duration-s 20 --rounds 3

Exit status: 0 when every run completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks.rig import (
    ROOT,
    CpuMeter,
    Process,
    free_port,
    machine_line,
    peak_rss_kb,
    print_table,
    progress,
    python_command,
)

NODE_PACKAGE = "cometd-nodejs-server@1.2.1"
NODE_SCRIPT = Path(__file__).with_name("cometd_node_server.mjs")
SERVERS = ("node", "chatpush")
"""The default; ``--servers node,chatpush,chatpush-pygc`` adds chatpush with the garbage
collector's first threshold at Python's default (GC_EXPERIMENT_THRESHOLD) instead of the one
``chatpush serve`` sets (chatpush/cli.py: GC_FIRST_THRESHOLD; docs/PERFORMANCE.md §6.2);
``chatpush-aiohttp`` (every request through aiohttp) and ``chatpush-freeze`` (``gc.freeze()``)
likewise (§6.3); ``chatpush-ws``: chatpush with its subscribers over WebSocket (§6.4)."""
WEBSOCKET_KINDS = {"chatpush-ws": "chatpush"}
"""A server kind whose subscribers use WebSocket -> the server it runs."""
GC_EXPERIMENT_THRESHOLD = 700
DEFAULT_POINTS = "1000x1000,5000x1000,10000x1000,10000x2000"
DRAIN_S = 2.0
DRAIN_MAX_S = 60.0


@dataclass
class Point:
    clients: int
    rate: int


@dataclass
class Result:
    server: str
    point: Point
    report: dict[str, Any]
    sent: int
    rss_mb: float
    server_cpu: float
    generator_cpu: float
    machine_cpu: float

    server_cpu_s: float = 0.0
    load: str = ""
    """The machine's 1-minute load average when the measured window began (neighbours show)."""

    @property
    def cpu_us_per_message(self) -> float:
        """Server CPU per delivered message."""
        return 1e6 * self.server_cpu_s / max(self.report["received"], 1)

    @property
    def delivered_pct(self) -> float:
        return 100.0 * self.report["received"] / self.sent if self.sent else 0.0


def node_folder() -> Path:
    """A folder with cometd-nodejs-server in node_modules and the server script beside it."""
    cache = Path(os.environ.get("CHATPUSH_NPM_CACHE", Path.home() / ".cache" / "chatpush-npm"))
    folder = cache / "bench"
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("node and npm are needed for the Node server")
    if not (folder / "node_modules" / "cometd-nodejs-server").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        progress(f"installing {NODE_PACKAGE} into {folder}")
        subprocess.run(
            ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", NODE_PACKAGE],
            check=True,
            capture_output=True,
            timeout=300,
        )
    shutil.copy(NODE_SCRIPT, folder / NODE_SCRIPT.name)
    return folder


def start_server(kind: str, port: int, loop: str, workdir: Path) -> Process:
    """``loop`` is the event loop of chatpush's server (the Node server has its own)."""
    kind = WEBSOCKET_KINDS.get(kind, kind)
    if kind == "node":
        command = ["node", str(node_folder() / NODE_SCRIPT.name), str(port)]
    else:
        args = ["--port", str(port)]
        if kind == "chatpush-pygc":  # the profile's experiment: the collector at Python's default
            args += ["--gc-threshold", str(GC_EXPERIMENT_THRESHOLD)]
        if kind == "chatpush-aiohttp":  # every request through aiohttp, as before the front
            args += ["--front", "aiohttp"]
        if kind == "chatpush-freeze":  # the experiment: gc.freeze() once clients are set up
            args += ["--gc-freeze"]
        command = python_command("benchmarks.cometd_server", args, loop=loop)
    server = Process(kind, command, workdir)
    server.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if server.exited():
                raise RuntimeError(f"{kind} server exited:\n{server.tail()}") from None
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{kind} server did not listen on {port}")


def _generator(command: str, port: int, clients: int, loop: str, *extra: str) -> list[str]:
    args = [command, "--port", str(port), "--clients", str(clients), *extra]
    return python_command("benchmarks.cometd_load", args, loop=loop)


def _line(stream: IO[str]) -> dict[str, Any]:
    raw = stream.readline()
    if not raw:
        raise RuntimeError("the load generator ended without a word")
    line: dict[str, Any] = json.loads(raw)
    return line


def run_point(
    kind: str,
    point: Point,
    duration_s: float,
    loop: str,
    workdir: Path,
    style: str,
    server_loop: str = "uvloop",
) -> Result:
    """``loop``: the generator's event loop; ``server_loop``: chatpush's server's."""
    port = free_port()
    server = start_server(kind, port, server_loop, workdir)
    transport = "websocket" if kind in WEBSOCKET_KINDS else "long-polling"
    subscribers = subprocess.Popen(
        _generator("subscribe", port, point.clients, loop, "--transport", transport),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert subscribers.stdout is not None and subscribers.stdin is not None
        ready = _line(subscribers.stdout)
        progress(f"{kind}: {point.clients} clients ready in {ready['setup_s']:.1f} s")
        load = f"{os.getloadavg()[0]:.2f}"
        cpu = CpuMeter()
        cpu.start({"server": server.pid, "subscribers": subscribers.pid})
        publisher = subprocess.run(
            _generator(
                "publish",
                port,
                point.clients,
                loop,
                "--rate",
                str(point.rate),
                "--duration-s",
                str(duration_s),
                "--style",
                style,
            ),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=duration_s + 120,
        )
        if publisher.returncode != 0:
            raise RuntimeError(f"publisher failed: {publisher.stderr[-2000:]}")
        published = json.loads(publisher.stdout.strip().splitlines()[-1])
        # Late messages are late, not lost: wait while they keep coming (up to DRAIN_MAX_S).
        received, deadline = -1, time.monotonic() + DRAIN_MAX_S
        while time.monotonic() < deadline:
            time.sleep(DRAIN_S)
            subscribers.stdin.write("count\n")
            subscribers.stdin.flush()
            now_received = _line(subscribers.stdout)["received"]
            if now_received in (received, published["sent"]):
                break
            received = now_received
        cpu.stop()
        rss_mb = peak_rss_kb(server.pid) / 1024
        subscribers.stdin.write(f"stop {published['sent']}\n")
        subscribers.stdin.flush()
        report = _line(subscribers.stdout)
        report["refused"] = published["refused"]
        report["lag_max_ms"] = published["lag_max_ms"]
        report["requests"] = published["requests"]
    finally:
        Process("subscribers", [], workdir, popen=subscribers).stop(10)
        server.stop(10)
    return Result(
        server=kind,
        point=point,
        report=report,
        sent=published["sent"],
        rss_mb=rss_mb,
        server_cpu=cpu.spent["server"] / cpu.wall_s,
        generator_cpu=(cpu.spent["subscribers"] + published["cpu_s"]) / cpu.wall_s,
        machine_cpu=cpu.busy_s / cpu.wall_s,
        server_cpu_s=cpu.spent["server"],
        load=load,
    )


def parse_points(text: str) -> list[Point]:
    points = []
    for item in text.split(","):
        clients, _, rate = item.strip().partition("x")
        points.append(Point(int(clients), int(rate)))
    return points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", default=DEFAULT_POINTS, help="CLIENTSxRATE,... ")
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument(
        "--uvloop", action="store_true", help="uvloop for the generator too (and the server)"
    )
    parser.add_argument(
        "--server-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="chatpush's server's event loop: uvloop (default, as `chatpush serve` runs with "
        "server.event_loop = auto) or asyncio; the generator stays on asyncio unless --uvloop",
    )
    parser.add_argument("--smoke", action="store_true", help="50 clients x 100 msg/s for 2 s")
    parser.add_argument(
        "--generator",
        choices=("sessions", "due"),
        default="sessions",
        help="publisher: 'sessions' (10 per request, padded, latency from sending; default) or "
        "'due' (the earlier one: all that is due every 5 ms, latency from the due time)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.points, args.duration_s = "50x100", 2.0
    points = parse_points(args.points)
    servers = [name.strip() for name in args.servers.split(",")]
    loop = "uvloop" if args.uvloop else "asyncio"
    server_loop = "uvloop" if args.uvloop else args.server_loop
    print(
        f"{machine_line()}; generator loop: {loop}; chatpush server loop: {server_loop}; "
        f"generator: {args.generator}"
    )
    results: list[Result] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="chatpush-cometd-") as workdir:
        for round_number in range(1, args.rounds + 1):
            for point in points:
                for kind in servers:
                    progress(f"round {round_number}: {kind} {point.clients} x {point.rate}/s")
                    try:
                        run = run_point(
                            kind,
                            point,
                            args.duration_s,
                            loop,
                            Path(workdir),
                            args.generator,
                            server_loop,
                        )
                        results.append(run)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        progress(f"{kind} {point.clients} x {point.rate}: FAILED: {exc}")
                        failed = True
    rows = [
        [
            r.server,
            str(r.point.clients),
            str(r.point.rate),
            f"{r.report['p50_ms']:.1f}",
            f"{r.report['p99_ms']:.1f}",
            f"{r.report['max_ms']:.0f}",
            f"{r.delivered_pct:.2f}",
            str(r.report["duplicates"]),
            f"{r.rss_mb:.0f}",
            f"{100 * r.server_cpu:.0f}",
            f"{100 * r.generator_cpu:.0f}",
            f"{100 * r.machine_cpu:.0f}",
            f"{r.cpu_us_per_message:.0f}",
            f"{r.report['connects'] / max(r.report['received'], 1):.2f}",
            f"{r.report['lag_max_ms']:.0f}",
            r.load,
        ]
        for r in results
    ]
    print_table(
        [
            "server",
            "clients",
            "msg/s",
            "p50",
            "p99",
            "max",
            "delivered %",
            "dup",
            "RSS MB",
            "server CPU",
            "generator CPU",
            "machine CPU",
            "server CPU µs/msg",
            "connects/msg",
            "pub lag max ms",
            "load",
        ],
        rows,
        f"CometD (chatpush-ws: subscribers over WebSocket, else long-polling), "
        f"{args.duration_s:g} s per point (latency in ms, CPU in % of a core)",
    )
    for point in points:
        theirs = [r for r in results if r.point == point and r.server == "node"]
        for kind in [s for s in servers if s != "node"]:
            ours = [r for r in results if r.point == point and r.server == kind]
            for a, b in zip(ours, theirs, strict=False):  # one pair per round
                print(
                    f"{point.clients} x {point.rate}/s: p99 {kind} / node = "
                    f"{a.report['p99_ms'] / b.report['p99_ms']:.2f} (lower is better), "
                    f"CPU per message {kind} / node = "
                    f"{a.cpu_us_per_message / max(b.cpu_us_per_message, 1e-9):.2f}, "
                    f"peak RSS {kind} / node = {a.rss_mb / max(b.rss_mb, 1):.2f}"
                )
    for point in points:
        plain = [r for r in results if r.point == point and r.server == "chatpush"]
        for kind in [s for s in servers if s in WEBSOCKET_KINDS]:
            ours = [r for r in results if r.point == point and r.server == kind]
            for a, b in zip(ours, plain, strict=False):
                print(
                    f"{point.clients} x {point.rate}/s: p99 {kind} / chatpush = "
                    f"{a.report['p99_ms'] / b.report['p99_ms']:.2f}, CPU per message "
                    f"{kind} / chatpush = "
                    f"{a.cpu_us_per_message / max(b.cpu_us_per_message, 1e-9):.2f}, "
                    f"peak RSS {kind} / chatpush = {a.rss_mb / max(b.rss_mb, 1):.2f}"
                )
    incomplete = [r for r in results if r.report["missing"] or r.report["duplicates"]]
    for r in incomplete:
        print(f"{r.server} {r.point}: {r.report['missing']} missing, {r.report['duplicates']} dup")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
