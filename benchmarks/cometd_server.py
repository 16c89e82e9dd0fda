"""chatpush's Bayeux server alone, for benchmarks/cometd.py: ``/cometd`` on 127.0.0.1:PORT.

The same settings as benchmarks/cometd_node_server.mjs gives the Node server: connects held up to
30 s, sessions kept 120 s without a connect, and client publishes to broadcast channels allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import resource
import signal
import sys
import time
from typing import Any

from aiohttp import web

from chatpush.cli import tune_collector
from chatpush.clock import SystemClock
from chatpush.cometd import FRONT, BayeuxServer, CometdLimits, Front, FrontRunner, Session

LIMITS = CometdLimits(
    max_sessions=50_000,
    max_sessions_per_address=50_000,  # every benchmark client comes from 127.0.0.1
    connect_timeout_ms=30_000,
    max_interval_ms=120_000,
)

FREEZE_EVERY_S = 5.0


def allow(session: Session, channel: str) -> bool:
    return True


class GcTimer:
    """Time spent in the cyclic garbage collector, by generation (reported with the stats)."""

    def __init__(self) -> None:
        self.spent_s = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self.full: list[tuple[float, float]] = []
        """Each full (generation 2) collection: when it ended (monotonic s) and how long."""
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            spent_s = time.perf_counter() - self._started
            self.spent_s[info["generation"]] += spent_s
            self.runs[info["generation"]] += 1
            if info["generation"] == 2:
                self.full.append((round(time.monotonic(), 2), round(spent_s, 3)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=0,
        help="the collector's first threshold (gc.set_threshold), for the profile's experiment; "
        "0: as `chatpush serve` runs (chatpush.cli.tune_collector)",
    )
    parser.add_argument(
        "--front",
        choices=("lean", "aiohttp"),
        default="lean",
        help="lean: plain long-polling POSTs answered by chatpush.cometd.front (as `chatpush "
        "serve` runs with cometd.lean_long_polling); aiohttp: every request through aiohttp",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="the experiment: gc.freeze() every 5 s, so the long-lived sessions and "
        "connections leave the collector's generations",
    )
    args = parser.parse_args()
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    else:
        tune_collector()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gc_timer = GcTimer()
    server = BayeuxServer(SystemClock(), LIMITS)
    server.authorize_publish(allow)
    app = web.Application()
    server.add_routes(app, "/cometd")

    async def report(app: web.Application) -> None:  # bad_requests > 0 would void the run
        stats = {f.name: getattr(server.stats, f.name) for f in dataclasses.fields(server.stats)}
        collector = {"gc_s": gc_timer.spent_s, "gc_runs": gc_timer.runs, "gc_full": gc_timer.full}
        print(json.dumps({"stats": stats, **collector}, default=str), file=sys.stderr, flush=True)

    app.on_cleanup.append(report)
    if args.front == "lean":
        app[FRONT] = Front(server, "/cometd", LIMITS.max_message_bytes)
    asyncio.run(serve(app, args.port, freeze=args.gc_freeze))


async def serve(app: web.Application, port: int, *, freeze: bool) -> None:
    """As ``web.run_app`` serves (no access log), through ``FrontRunner`` as `chatpush serve`,
    until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = FrontRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FREEZE_EVERY_S)
            if freeze:
                gc.freeze()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
