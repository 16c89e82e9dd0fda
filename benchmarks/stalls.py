"""Where a process stalls: a measuring tool for docs/PERFORMANCE.md §10 (agent alerts' p99).

Each probe notes events longer than a floor, on one monotonic clock (``time.perf_counter``):

- :class:`LoopLag`: the event loop's lateness, a task that asks to wake every ``tick_ms`` and
  notes each wake-up later than ``floor_ms`` (what every request waiting on the loop then waits);
- :class:`GcWatch`: each collection of the cyclic garbage collector, by generation;
- in chatpush (``benchmarks.launch --stalls FILE``, :func:`install`): every SQLite COMMIT (the
  WAL's automatic checkpoint runs inside the COMMIT that crosses ``wal_autocheckpoint`` pages) and
  every group-commit batch of the writer thread (``Database._commit``: its transactions and how
  long the thread held the batch).

``install`` changes nothing in chatpush's behaviour: it wraps ``Database._commit``, gives sqlite3
a Connection subclass that times ``execute("COMMIT")``, and starts the loop probe when
``chatpush.app.create_app`` is called. At exit it writes what it saw to FILE as JSON;
:func:`report` prints the stalls with what overlapped them.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Span = tuple[float, float]
"""(start, duration), seconds on ``time.perf_counter``."""


@dataclass
class LoopLag:
    """The event loop's lateness: a wake-up asked every ``tick_ms``, late by more than
    ``floor_ms``, noted as (when it was due, how late)."""

    tick_ms: float = 2.0
    floor_ms: float = 10.0
    late: list[Span] = field(default_factory=list)
    ticks: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stall-probe")

    async def _run(self) -> None:
        tick_s, floor_s = self.tick_ms / 1000, self.floor_ms / 1000
        while True:
            due = time.perf_counter() + tick_s
            await asyncio.sleep(tick_s)
            self.ticks += 1
            lag_s = time.perf_counter() - due
            if lag_s > floor_s:
                self.late.append((due, lag_s))


@dataclass
class GcWatch:
    """Each collection longer than ``floor_ms``: (start, duration) by generation; counts of all."""

    floor_ms: float = 1.0
    spans: dict[int, list[Span]] = field(default_factory=lambda: {0: [], 1: [], 2: []})
    runs: list[int] = field(default_factory=lambda: [0, 0, 0])
    spent_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _started: float = 0.0

    def __post_init__(self) -> None:
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        generation, spent = info["generation"], now - self._started
        self.runs[generation] += 1
        self.spent_s[generation] += spent
        if spent * 1000 > self.floor_ms:
            self.spans[generation].append((self._started, spent))


@dataclass
class WriterWatch:
    """The SQLite writer thread: each COMMIT and each group-commit batch."""

    commits: list[Span] = field(default_factory=list)
    batches: list[tuple[float, float, int]] = field(default_factory=list)
    """(start, duration, transactions)."""
    checkpoints: list[Span] = field(default_factory=list)
    """The checkpoint thread's runs (``Database._checkpoint``, where there is one)."""
    long_batches: list[tuple[float, float, list[str]]] = field(default_factory=list)
    """Batches over 50 ms: (start, duration, the name of each transaction's function)."""
    restarts: list[Span] = field(default_factory=list)
    """The writer's own checkpoints, nothing queued (``Database._restart_wal``)."""
    queued: list[tuple[float, float]] = field(default_factory=list)
    """Each notification of a source but chat as the dispatcher takes it up: (when, how long
    since it was enqueued, s: the intake's commit and the claim)."""
    sends: dict[str, list[Span]] = field(default_factory=dict)
    """Each mobile provider's sends, by provider class and method."""


def _summary(spans: list[Span]) -> dict[str, Any]:
    if not spans:
        return {"count": 0}
    ms = sorted(d * 1000 for _, d in spans)
    return {
        "count": len(ms),
        "total_ms": round(sum(ms), 1),
        "p50_ms": round(ms[len(ms) // 2], 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
        "max_ms": round(ms[-1], 2),
    }


def install(path: str) -> None:
    """In chatpush's process, before it starts: the probes, and their JSON written to ``path``
    at exit."""
    import chatpush.app
    from chatpush.store import database

    # Experiments (environment, this tool only): STALLS_SWITCH_INTERVAL_MS, STALLS_GC_THRESHOLD
    # (after `serve` set its own), STALLS_GC_FREEZE=1 (gc.freeze() once the app is made),
    # STALLS_MAX_BATCH (the writer's group-commit cap, database.SQLITE_MAX_BATCH).
    switch_ms = os.environ.get("STALLS_SWITCH_INTERVAL_MS")
    if switch_ms:
        sys.setswitchinterval(float(switch_ms) / 1000)
    gc_threshold = os.environ.get("STALLS_GC_THRESHOLD")
    if gc_threshold:
        set_threshold = gc.set_threshold
        gc.set_threshold = lambda *_: set_threshold(int(gc_threshold), 10, 10)  # type: ignore[assignment]
    max_batch = os.environ.get("STALLS_MAX_BATCH")
    if max_batch:
        database.SQLITE_MAX_BATCH = int(max_batch)
    gc_watch = GcWatch()
    lag = LoopLag()
    writer = WriterWatch()

    class TimedConnection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql != "COMMIT":
                return super().execute(sql, *args)
            start = time.perf_counter()
            try:
                return super().execute(sql, *args)
            finally:
                writer.commits.append((start, time.perf_counter() - start))

    connect = sqlite3.dbapi2.connect

    def timed_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", TimedConnection)
        return connect(*args, **kwargs)

    # SQLAlchemy's pysqlite dialect connects through sqlite3.dbapi2
    sqlite3.dbapi2.connect = timed_connect  # type: ignore[assignment]
    commit = database.Database._commit

    def timed_commit(self: database.Database, batch: list[Any]) -> Any:
        start = time.perf_counter()
        try:
            return commit(self, batch)
        finally:
            spent = time.perf_counter() - start
            writer.batches.append((start, spent, len(batch)))
            if spent > 0.05:
                writer.long_batches.append((start, spent, [_transaction(w.run) for w in batch]))

    database.Database._commit = timed_commit  # type: ignore[method-assign]
    for name, spans in (("_checkpoint", writer.checkpoints), ("_restart_wal", writer.restarts)):
        method = getattr(database.Database, name, None)
        if method is not None:
            setattr(database.Database, name, _timed(method, spans))
    from chatpush.delivery import dispatcher
    from chatpush.providers import mobile

    deliver_other = dispatcher.Dispatcher._deliver_other

    async def timed_deliver_other(self: Any, row: Any, lease: Any) -> None:
        writer.queued.append((time.perf_counter(), time.time() - row.created_at_ms / 1000))
        await deliver_other(self, row, lease)

    dispatcher.Dispatcher._deliver_other = timed_deliver_other  # type: ignore[method-assign]

    def timed(method: Any, label: str) -> Any:
        async def timed_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await method(self, *args, **kwargs)
            finally:
                spans = writer.sends.setdefault(f"{type(self).__name__}.{label}", [])
                spans.append((start, time.perf_counter() - start))

        return timed_method

    # send: from the dispatcher's call, the wait for one of the node's send slots included;
    # send_message: the request and its answer alone.
    from chatpush.providers.apns import ApnsProvider
    from chatpush.providers.fcm import FcmProvider

    mobile.MobileProvider.send = timed(mobile.MobileProvider.send, "send")  # type: ignore[method-assign]
    for provider in (ApnsProvider, FcmProvider):
        provider.send_message = timed(provider.send_message, "send_message")  # type: ignore[method-assign]
    create_app = chatpush.app.create_app

    def probed_create_app(*args: Any, **kwargs: Any) -> Any:
        lag.start()  # `chatpush serve` makes its app on the running loop
        app = create_app(*args, **kwargs)
        if os.environ.get("STALLS_GC_FREEZE"):
            gc.freeze()
        return app

    chatpush.app.create_app = probed_create_app

    def dump() -> None:
        data = {
            "lag": lag.late,
            "ticks": lag.ticks,
            "gc": {str(g): spans for g, spans in gc_watch.spans.items()},
            "gc_runs": gc_watch.runs,
            "gc_spent_s": gc_watch.spent_s,
            "gc_threshold": gc.get_threshold(),
            "switch_interval_ms": sys.getswitchinterval() * 1000,
            "commits": writer.commits,
            "batches": writer.batches,
            "checkpoints": writer.checkpoints,
            "restarts": writer.restarts,
            "long_batches": writer.long_batches,
            "queued": writer.queued,
            "sends": writer.sends,
        }
        Path(path).write_text(json.dumps(data))

    atexit.register(dump)


def _transaction(run: Any) -> str:
    """The function a queued write runs (``Database.write`` wraps it in a lambda)."""
    for cell in getattr(run, "__closure__", None) or ():
        name = getattr(cell.cell_contents, "__qualname__", None)
        if name is not None and callable(cell.cell_contents):
            return str(name)
    return "?"


def _timed(method: Any, spans: list[Span]) -> Any:
    def timed(self: Any) -> None:
        start = time.perf_counter()
        try:
            method(self)
        finally:
            spans.append((start, time.perf_counter() - start))

    return timed


def load(path: Path) -> dict[str, Any]:
    """What :func:`install`'s probes wrote."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def own(lag: LoopLag, gc_watch: GcWatch, since: float, until: float, floor_ms: float = 20.0) -> str:
    """One line of this process's own stalls (the load generator's and the fakes')."""
    lags = [(s, d) for s, d in lag.late if since <= s <= until and d * 1000 >= floor_ms]
    full = [(s, d) for s, d in gc_watch.spans[2] if since <= s <= until]
    return f"loop late >= {floor_ms:g} ms: {_summary(lags)}; gc generation 2: {_summary(full)}"


def report(data: dict[str, Any], since: float, until: float, floor_ms: float = 20.0) -> None:
    """Print what chatpush's probes saw between ``since`` and ``until`` (perf_counter seconds
    of the same machine: ``time.perf_counter`` is CLOCK_MONOTONIC, shared across processes)."""

    def within(spans: list[list[float]]) -> list[Span]:
        return [(s, d) for s, d, *_ in spans if since <= s <= until]

    lags = [(s, d) for s, d in within(data["lag"]) if d * 1000 >= floor_ms]
    gcs = {g: within(spans) for g, spans in data["gc"].items()}
    commits = within(data["commits"])
    batches = [(s, d, n) for s, d, n in data["batches"] if since <= s <= until]
    runs, spent = data["gc_runs"], data["gc_spent_s"]
    collections = ", ".join(
        f"gen{g} {n} x {spent[g] / n * 1000:.2f} ms" for g, n in enumerate(runs) if n
    )
    print(
        f"  chatpush stalls (measured phase; gc threshold {data['gc_threshold']}; whole run: "
        f"{collections}; switch interval {data.get('switch_interval_ms', 5.0):g} ms):"
    )
    print(f"    loop late >= {floor_ms:g} ms:  {_summary(lags)}")
    for g, spans in gcs.items():
        print(f"    gc generation {g} (> 1 ms):  {_summary(spans)}")
    print(f"    SQLite COMMIT:  {_summary(commits)}")
    checkpoints = within(data.get("checkpoints", []))
    if checkpoints:
        slow = [(s, d) for s, d in commits if d > 0.005]
        during = [
            (s, d) for s, d in slow if any(c <= s + d and s <= c + cd for c, cd in checkpoints)
        ]
        print(
            f"    checkpoint thread: {_summary(checkpoints)}; COMMITs over 5 ms: {len(slow)}, "
            f"{len(during)} of them during a checkpoint"
        )
    restarts = within(data.get("restarts", []))
    if restarts:
        print(f"    the writer's own checkpoints, nothing queued: {_summary(restarts)}")
    print(f"    writer batches: {_summary([(s, d) for s, d, _ in batches])}")
    long = [(d, names) for s, d, names in data.get("long_batches", []) if since <= s <= until]
    if long:
        from collections import Counter

        made = Counter(name for _, names in long for name in names)
        top = ", ".join(f"{name} {count}" for name, count in made.most_common(6))
        print(f"    batches over 50 ms: {len(long)}, their transactions: {top}")
    if batches:
        sizes = sorted(n for _, _, n in batches)
        print(f"      transactions per batch: p50 {sizes[len(sizes) // 2]}, max {sizes[-1]}")

    queued = within(data.get("queued", []))
    if queued:
        print(f"    enqueued -> taken up by the dispatcher: {_summary(queued)}")
    for name, spans in sorted(data.get("sends", {}).items()):
        print(f"    {name}: {_summary(within(spans))}")

    def overlapping(start: float, length: float, spans: list[Span]) -> list[str]:
        # a stall of the loop from (start - ... ) : the wake-up was due at start, came length later
        return [
            f"{d * 1000:.0f}"
            for s, d in spans
            if s < start + length and s + d > start - 0.002 and d * 1000 >= 2
        ]

    worst = sorted(lags, key=lambda span: -span[1])[:12]
    for start, length in sorted(worst):
        parts = [f"    +{start - since:6.2f} s late {length * 1000:5.0f} ms:"]
        for g, spans in gcs.items():
            hit = overlapping(start, length, spans)
            if hit:
                parts.append(f"gc{g} {'/'.join(hit)} ms")
        hit = overlapping(start, length, commits)
        if hit:
            parts.append(f"COMMIT {'/'.join(hit)} ms")
        hit = overlapping(start, length, [(s, d) for s, d, _ in batches])
        if hit:
            parts.append(f"batch {'/'.join(hit)} ms")
        print(" ".join(parts))
