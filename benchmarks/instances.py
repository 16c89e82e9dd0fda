"""Benchmark 5: throughput of 1 against 2 chatpush instances sharing one PostgreSQL database.

Each run makes a fresh PostgreSQL database (``CREATE DATABASE`` through ``--postgres``, migrated by
``chatpush migrate``, dropped ``WITH (FORCE)`` at the end of the run, whatever happened) and
starts 1 or 2 ``chatpush serve`` processes on it (benchmarks/pushrig.py ``running_cluster``):
every instance has the same group, ``[groups.cluster]`` with one node per instance, and hosts its
own node (``server.nodes``, ``instance_id``, ``alias``). The rest is benchmark 1's rig, unchanged:
the same closed-loop load generator (``--concurrency`` agent messages in flight through
``POST /api/v1/chats/{id}/events``, round robin over ``--chats`` chats created beforehand with
reliable push), the same acknowledging receiver (benchmarks/ack_receiver.py, which refreshes round
robin over the instances), the same measure: events accepted per second (201s) and end-to-end
events per second, until the receiver has acknowledged every chat up to its last event.

With two instances, the requests go to the instances in turn, as a round-robin load balancer
would: the chats are created alternately on each, and event n goes to instance (n + n // chats)
mod 2, so each chat's events alternate between the instances from one pass over the chats to the
next (no session affinity; ``--balance affinity`` sends all of a chat's requests to one instance).

Reported per run: events/s; CPU per event of each process (every instance, the PostgreSQL
backends of the run's database, PostgreSQL's own processes, the receiver, the load generator), the
rate that CPU would allow on idle cores ("CPU ceiling"), and the share of the machine's cores each
took; what the rest of the machine took meanwhile; refused events, duplicated triggers, and the
warnings, errors and transaction retries in the instances' logs; with ``--instrument``, SQL
statements per event (benchmarks/instrumented_serve.py). The figure of
merit is the ratio of the end-to-end rates, 2 instances ÷ 1 (target >= 1.6); ``--rounds N``
measures N pairs, in the order 1 2, 2 1, 1 2, ... and reports the median ratio. From the
repository root, with PostgreSQL running (scripts/postgres-up):

    .venv/bin/python -m benchmarks.instances                 # full size: 3 rounds, 3.5-4.5 min
    .venv/bin/python -m benchmarks.instances --smoke         # a few seconds, for CI

Exit status: 0 when every run completed with no refused event (warm-up included), no duplicated
trigger and no error in the instances' logs; 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientSession

from benchmarks.pushrig import (
    CLK_TCK,
    POSTGRES_ADMIN_URL,
    CpuSnapshot,
    ReceiverClient,
    Rig,
    cluster_counters_path,
    counter_difference,
    cpu_snapshot,
    event_body,
    events_path,
    machine_description,
    make_poster,
    print_ratios,
    print_table,
    process_counters,
    process_cpu_s,
    running_cluster,
    set_up_chats,
    terminate_on_sigterm,
    wait_drained,
)

TARGET_RATIO = 1.6
COUNTS = (1, 2)
SET_UP_CONCURRENCY = 32
"""Chats created at once (not measured: only the run's length)."""
PG_SAMPLE_S = 0.2
"""How often the PostgreSQL backends' CPU is read (a backend that exits keeps its last reading)."""


# -- PostgreSQL's CPU, from /proc --------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from /proc/PID/task/*/children; else a scan of /proc)."""
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as children:
                found += [int(c) for c in children.read().split()]
        return found
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with (
                contextlib.suppress(OSError, IndexError, ValueError),
                open(f"/proc/{entry}/stat") as stat,
            ):
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode(errors="replace")


AUX_TITLES = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
    "archiver",
    "stats collector",
    "walsender",
    "walreceiver",
)
"""PostgreSQL's own processes (their titles), which serve every database."""


@dataclass
class PostgresReading:
    database_s: float
    """The backends (and autovacuum workers) of the run's database."""
    server_s: float
    """The postmaster and PostgreSQL's own processes (checkpointer, WAL writer, ...)."""
    whole_s: float
    """Everything PostgreSQL ran: the above, other databases' backends, exited children."""


class PostgresCpu:
    """CPU seconds of the local PostgreSQL server, read from /proc like every other process.

    The whole server is counted exactly: the postmaster, its live children, and the children
    that exited (the postmaster's cutime/cstime). The backends of the run's database (their
    process title names it) are read every ``PG_SAMPLE_S`` by a background task, so that a pooled
    connection closed during the run keeps its CPU (all but its last fraction of a sampling
    period). Other databases' backends (other programs on the machine) are the rest. Disabled
    when the server is not in this machine's /proc."""

    def __init__(self, postmaster: int | None, database: str) -> None:
        self.postmaster = postmaster
        self.database = database
        self.seen: dict[int, float] = {}
        self.cost_s = 0.0
        """CPU this process spent sampling (to leave out of the load generator's)."""
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def attach(cls, admin_url: str, database: str) -> PostgresCpu:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
            # Read while the backend lives: its parent is the postmaster.
            with open(f"/proc/{backend}/stat") as stat:  # noqa: ASYNC230 - /proc: no disk
                postmaster: int | None = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            postmaster = None  # not this machine's PostgreSQL (or not Linux)
        finally:
            await conn.close()
        return cls(postmaster, database)

    @property
    def enabled(self) -> bool:
        return self.postmaster is not None

    def _ours(self, pid: int) -> bool:
        title = _safe_cmdline(pid).split()
        return self.database in title

    def sample(self) -> None:
        if self.postmaster is None:
            return
        started = time.process_time()
        for pid in _children(self.postmaster):
            if pid in self.seen or self._ours(pid):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    self.seen[pid] = process_cpu_s(pid)
        self.cost_s += time.process_time() - started

    def read(self) -> PostgresReading:
        self.sample()
        if self.postmaster is None:
            return PostgresReading(0.0, 0.0, 0.0)
        with open(f"/proc/{self.postmaster}/stat") as stat:
            fields = [int(v) for v in stat.read().rsplit(")", 1)[1].split()[11:15]]
        own = (fields[0] + fields[1]) / CLK_TCK  # utime stime
        whole = own + (fields[2] + fields[3]) / CLK_TCK  # + cutime cstime: exited children
        server = own
        for pid in _children(self.postmaster):
            with contextlib.suppress(OSError, IndexError, ValueError):
                spent = process_cpu_s(pid)
                whole += spent
                if pid not in self.seen and any(t in _safe_cmdline(pid) for t in AUX_TITLES):
                    server += spent
        return PostgresReading(sum(self.seen.values()), server, whole)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(PG_SAMPLE_S)

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _safe_cmdline(pid: int) -> str:
    try:
        return _cmdline(pid)
    except OSError:
        return ""


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Cpu:
    """CPU seconds over the measured phase, by process, and the interval's wall and machine."""

    wall_s: float
    machine_busy_s: float
    machine_total_s: float
    processes: dict[str, float]
    """instance-1, instance-2, ..., receiver, loadgen, postgres (db), postgres (server)."""
    postgres_other_s: float = 0.0
    """Other databases' PostgreSQL backends (other programs): part of ``others_s``."""

    @property
    def others_s(self) -> float:
        return max(0.0, self.machine_busy_s - sum(self.processes.values()))

    @property
    def idle_s(self) -> float:
        return max(0.0, self.machine_total_s - self.machine_busy_s)


@dataclass
class Result:
    instances: int
    round: int
    events: int
    refused: int
    refusals: Counter[str]
    """Events not answered 201 (warm-up included), by instance and answer."""
    accept_s: float
    end_to_end_s: float
    completed: bool
    triggers: int
    refreshes: int
    resends: int
    refresh_failures: int
    duplicates: int
    cpu: Cpu
    database: str
    """The run's PostgreSQL database (dropped at the end of the run)."""
    prepare_s: float
    """From the run's start to its measured phase: database, processes, chats, warm-up."""
    postgres_measured: bool
    deliveries_by_node: dict[str, int] = field(default_factory=dict)
    pinned_by_node: dict[str, int] = field(default_factory=dict)
    log_problems: dict[str, Counter[str]] = field(default_factory=dict)
    """Per instance: the warnings, errors and transaction retries its log holds, as
    "level: message" -> count."""
    counters: dict[str, Counter[str]] = field(default_factory=dict)
    """With --instrument: statements, transactions and requests of every instance together,
    over the measured phase."""

    @property
    def accepted_per_s(self) -> float:
        return self.events / self.accept_s if self.accept_s else 0.0

    @property
    def end_to_end_per_s(self) -> float:
        return self.events / self.end_to_end_s if self.end_to_end_s else 0.0

    def ceiling_per_s(self, cores: int) -> float:
        """The rate the measured CPU per event would allow on an otherwise idle machine: each
        single-threaded process (an instance, the receiver, the load generator) at most one
        core, all of them together (PostgreSQL's backends too) at most every core."""
        if not self.events or not sum(self.cpu.processes.values()):
            return 0.0
        per_event = {name: s / self.events for name, s in self.cpu.processes.items()}
        limits = [cores / sum(per_event.values())]
        limits += [1 / v for name, v in per_event.items() if v > 0 and "postgres" not in name]
        return min(limits)

    @property
    def errors(self) -> int:
        return sum(
            count
            for problems in self.log_problems.values()
            for line, count in problems.items()
            if not line.startswith(("warning", "retry"))
        )


def instance_for(n: int, chats: int, instances: int, balance: str) -> int:
    """Which instance event ``n`` goes to (event n goes to chat n mod chats)."""
    if balance == "affinity":
        return (n % chats) % instances
    return (n + n // chats) % instances


async def drive(
    rig: Rig, args: argparse.Namespace, events: int, refusals: Counter[str], first: int = 0
) -> int:
    """Closed loop: ``args.concurrency`` workers post ``events`` agent messages round robin over
    the chats, each to its instance (``instance_for``). Returns how many were refused (not 201);
    counts each refusal, by instance and answer, in ``refusals``."""
    bases = rig.bases or [rig.base]
    posters = [make_poster(args.client, base, args.concurrency) for base in bases]
    chats, last_index = rig.chats, rig.last_index
    paths = [events_path(chat) for chat in chats]
    bodies = [event_body(n) for n in range(64)]
    counter = iter(range(first, first + events))
    refused = 0

    async def worker() -> None:
        nonlocal refused
        for n in counter:  # shared iterator: each n is taken by exactly one worker
            slot = n % len(chats)
            instance = instance_for(n, len(chats), len(posters), args.balance)
            status, answer = await posters[instance].post(paths[slot], bodies[n % len(bodies)])
            if status == 201:
                last_index[chats[slot]] += 1
            else:
                refused += 1
                text = answer[:200].decode(errors="replace")
                refusals[f"instance-{instance + 1}: HTTP {status} {text}"] += 1

    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        for poster in posters:
            await poster.close()
    return refused


def duplicates(samples: list[tuple[str, int, int, int]]) -> int:
    """Triggers received more than once: the same chat, notify-position and notify-attempt."""
    copies = Counter((chat, position, attempt) for chat, position, attempt, _ in samples)
    return sum(count - 1 for count in copies.values() if count > 1)


async def all_counters(rig: Rig) -> list[dict[str, Any]]:
    """Every instance's counters so far (``--instrument``)."""
    return [
        await process_counters(server, cluster_counters_path(server.log)) for server in rig.servers
    ]


def merge_counters(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> dict[str, Counter[str]]:
    """What the counters of all instances together grew by."""
    merged: dict[str, Counter[str]] = {}
    for old, new in zip(before, after, strict=True):
        for key, value in counter_difference(old, new).items():
            if isinstance(value, dict):
                merged.setdefault(key, Counter()).update(value)
    return merged


def log_problems(rig: Rig) -> dict[str, Counter[str]]:
    """Each instance's warnings and errors (its JSON log lines of level warning and above, and
    any line that is not chatpush's JSON), and its transactions retried after a deadlock or a
    serialization failure (logged at info)."""
    found: dict[str, Counter[str]] = {}
    for server in rig.servers:
        problems: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in server.log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    level = str(entry["level"])
                except (ValueError, KeyError, TypeError):
                    # Not chatpush's JSON: a traceback or a warning printed by Python itself.
                    if line.strip():
                        problems[f"output: {line.strip()[:160]}"] += 1
                    continue
                message = str(entry.get("message", ""))
                if level not in ("debug", "info"):
                    problems[f"{level}: {message[:160]}"] += 1
                elif message.startswith("transaction retried"):
                    problems[f"retry: {message[:160]}"] += 1
        found[server.name] = problems
    return found


def keep_logs(rig: Rig, directory: Path, prefix: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for process in rig.processes():
        shutil.copy(process.log, directory / f"{prefix}{process.log.name}")


async def work_split(database_url: str, instances: int) -> tuple[dict[str, int], dict[str, int]]:
    """(deliveries by node, chats pinned by node), over the whole run, from the database; every
    node of the run is listed, one that got nothing with 0."""
    import asyncpg

    parts = urlsplit(database_url)
    conn = await asyncpg.connect(f"postgresql://{parts.netloc}{parts.path}", timeout=10)
    try:
        deliveries = await conn.fetch(
            "SELECT coalesce(node, '-') AS node, count(*) AS n FROM deliveries GROUP BY 1"
        )
        pinned = await conn.fetch(
            "SELECT coalesce(pinned_node, '-') AS node, count(*) AS n FROM subscriptions GROUP BY 1"
        )
    finally:
        await conn.close()
    nodes = {f"node-{number}": 0 for number in range(1, instances + 1)}
    return (
        nodes | {row["node"]: int(row["n"]) for row in deliveries},
        nodes | {row["node"]: int(row["n"]) for row in pinned},
    )


def measure_cpu(
    rig: Rig,
    before: CpuSnapshot,
    after: CpuSnapshot,
    sampling_s: float,
    pg_before: PostgresReading,
    pg_after: PostgresReading,
) -> Cpu:
    processes = {name: after.processes[name] - before.processes[name] for name in after.processes}
    # The load generator: this process, less its PostgreSQL sampling (a few /proc reads every
    # PG_SAMPLE_S), which is left to "others".
    processes["loadgen"] = max(0.0, after.own_s - before.own_s - sampling_s)
    processes["postgres (db)"] = pg_after.database_s - pg_before.database_s
    processes["postgres (server)"] = pg_after.server_s - pg_before.server_s
    whole = pg_after.whole_s - pg_before.whole_s
    return Cpu(
        wall_s=after.wall_s - before.wall_s,
        machine_busy_s=after.machine_busy_s - before.machine_busy_s,
        machine_total_s=after.machine_total_s - before.machine_total_s,
        processes=processes,
        postgres_other_s=max(
            0.0, whole - processes["postgres (db)"] - processes["postgres (server)"]
        ),
    )


async def run(instances: int, round_no: int, args: argparse.Namespace) -> Result:
    began = time.monotonic()
    async with (
        running_cluster(instances, args.postgres, record=True, instrument=args.instrument) as rig,
        ClientSession() as session,
    ):
        assert rig.database_url is not None
        database = urlsplit(rig.database_url).path.lstrip("/")
        pg = await PostgresCpu.attach(args.postgres, database)
        pg.start()
        try:
            receiver = ReceiverClient(session, rig.receiver_url)
            refusals: Counter[str] = Counter()
            await set_up_chats(rig, args.chats, concurrency=SET_UP_CONCURRENCY)
            if await wait_drained(receiver, rig, timeout_s=args.timeout) is None:
                raise RuntimeError(f"{instances} instances: the set-up was never acknowledged")
            if args.warmup:
                await drive(rig, args, args.warmup, refusals)
                if await wait_drained(receiver, rig, timeout_s=args.timeout) is None:
                    raise RuntimeError(f"{instances} instances: the warm-up was never acknowledged")
            duplicated = duplicates(await receiver.samples())
            await receiver.reset()
            counters_before = await all_counters(rig) if args.instrument else []
            pg_before = pg.read()
            sampling_before = pg.cost_s
            before = cpu_snapshot(rig)
            started = time.monotonic()
            refused = await drive(rig, args, args.events, refusals, args.warmup)
            accepted = time.monotonic()
            stats = await wait_drained(receiver, rig, timeout_s=args.timeout)
            finished = time.monotonic()
            after = cpu_snapshot(rig)
            sampling_s = pg.cost_s - sampling_before
            pg_after = pg.read()
            counters_after = await all_counters(rig) if args.instrument else []
        finally:
            await pg.stop()
        completed = stats is not None
        if stats is None:
            stats = await receiver.stats()
        duplicated += duplicates(await receiver.samples())
        deliveries, pinned = await work_split(rig.database_url, instances)
        if args.keep_logs:
            keep_logs(rig, Path(args.keep_logs), f"round{round_no}-x{instances}-")
        return Result(
            instances=instances,
            round=round_no,
            events=args.events - refused,
            refused=refused,
            refusals=refusals,
            accept_s=accepted - started,
            end_to_end_s=finished - started,
            completed=completed,
            triggers=stats["triggers"],
            refreshes=stats["refreshes"],
            resends=stats["resends"],
            refresh_failures=stats["refresh_failures"],
            duplicates=duplicated,
            database=database,
            prepare_s=started - began,
            cpu=measure_cpu(rig, before, after, sampling_s, pg_before, pg_after),
            postgres_measured=pg.enabled,
            deliveries_by_node=deliveries,
            pinned_by_node=pinned,
            log_problems=log_problems(rig),
            counters=merge_counters(counters_before, counters_after),
        )


# -- report ------------------------------------------------------------------------------------


def cpu_columns(results: list[Result]) -> list[str]:
    most = max(r.instances for r in results)
    return [
        *(f"instance-{n}" for n in range(1, most + 1)),
        "postgres (db)",
        "postgres (server)",
        "receiver",
        "loadgen",
    ]


def report(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"instances: {args.events} events (after {args.warmup} warm-up) over {args.chats} chats, "
        f"{args.concurrency} in flight, load client {args.client}, balance {args.balance}, "
        f"PostgreSQL at {urlsplit(args.postgres).netloc}"
    )
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_description().items()))
    print()
    cores = os.cpu_count() or 1
    rows = []
    for r in results:
        rows.append(
            [
                str(r.round),
                str(r.instances),
                str(r.events),
                str(sum(r.refusals.values())),
                f"{r.accepted_per_s:.0f}",
                f"{r.end_to_end_per_s:.0f}",
                str(r.triggers),
                str(r.refreshes),
                str(r.resends),
                str(r.duplicates),
                " ".join(f"{k}:{v}" for k, v in sorted(r.deliveries_by_node.items())),
                " ".join(f"{k}:{v}" for k, v in sorted(r.pinned_by_node.items())),
                str(sum(sum(p.values()) for p in r.log_problems.values())),
                "yes" if r.completed else "TIMEOUT",
            ]
        )
    print_table(
        [
            "round",
            "instances",
            "events",
            "refused",
            "accepted/s",
            "end-to-end ev/s",
            "triggers",
            "refreshes",
            "resends",
            "dup",
            "deliveries by node (all phases)",
            "chats pinned",
            "log warnings, retries",
            "done",
        ],
        rows,
    )
    columns = cpu_columns(results)
    print()
    print("CPU per event, ms (each process over the measured phase):")
    rows = []
    for r in results:
        cells = [
            f"{1000 * r.cpu.processes[c] / r.events:.3f}"
            if c in r.cpu.processes and r.events and (r.postgres_measured or "postgres" not in c)
            else "-"
            for c in columns
        ]
        total = sum(r.cpu.processes.values())
        rows.append(
            [
                str(r.round),
                str(r.instances),
                *cells,
                f"{1000 * total / max(r.events, 1):.3f}",
                f"{r.ceiling_per_s(cores):.0f}",
            ]
        )
    print_table(["round", "instances", *columns, "all", "CPU ceiling ev/s"], rows)
    print()
    print(f"CPU use, % of one core over the measured phase ({cores} cores = {100 * cores}%):")
    rows = []
    for r in results:
        wall = r.cpu.wall_s or 1.0
        cells = [
            f"{100 * r.cpu.processes[c] / wall:.0f}" if c in r.cpu.processes else "-"
            for c in columns
        ]
        rows.append(
            [
                str(r.round),
                str(r.instances),
                *cells,
                f"{100 * r.cpu.others_s / wall:.0f}",
                f"{100 * r.cpu.postgres_other_s / wall:.0f}" if r.postgres_measured else "-",
                f"{100 * r.cpu.idle_s / wall:.0f}",
            ]
        )
    print_table(["round", "instances", *columns, "others", "of which pg other dbs", "idle"], rows)
    for r in results:
        for line, count in r.refusals.most_common(5):
            print(f"round {r.round}, {r.instances} instances, refused: {count}x {line}")
        for name, problems in r.log_problems.items():
            for line, count in problems.most_common(5):
                print(f"round {r.round}, {r.instances} instances, {name} log: {count}x {line}")
    report_counters(results)
    print(
        "databases (each dropped at the end of its run): " + ", ".join(r.database for r in results)
    )
    ratios, accept_ratios, cpu_ratios, ceiling_ratios = [], [], [], []
    by_round: dict[int, dict[int, Result]] = {}
    for r in results:
        by_round.setdefault(r.round, {})[r.instances] = r
    for pair in by_round.values():
        if 1 in pair and 2 in pair and pair[1].events and pair[2].events:
            one, two = pair[1], pair[2]
            ratios.append(two.end_to_end_per_s / one.end_to_end_per_s)
            accept_ratios.append(two.accepted_per_s / one.accepted_per_s)
            cpu_ratios.append(
                (sum(two.cpu.processes.values()) / two.events)
                / (sum(one.cpu.processes.values()) / one.events)
            )
            if one.ceiling_per_s(cores):
                ceiling_ratios.append(two.ceiling_per_s(cores) / one.ceiling_per_s(cores))
    if ratios:
        print()
        print_ratios(
            "ratio 2 instances / 1, end-to-end events/s: ", ratios, f"; target >= {TARGET_RATIO}"
        )
        print_ratios("ratio 2 instances / 1, accepted events/s:   ", accept_ratios)
        print(
            "ratio 2 instances / 1, CPU per event, all processes: "
            + ", ".join(f"{x:.2f}" for x in cpu_ratios)
            + f" (median {statistics.median(cpu_ratios):.2f})"
        )
        if ceiling_ratios:
            print(
                f"ratio 2 instances / 1, CPU ceiling on {cores} idle cores: "
                + ", ".join(f"{x:.2f}" for x in ceiling_ratios)
                + f" (median {statistics.median(ceiling_ratios):.2f})"
            )
    print(flush=True)


def report_counters(results: list[Result]) -> None:
    """--instrument: SQL statements (by shape), transactions and requests per event, all
    instances together, one column per run."""
    measured = [r for r in results if r.counters and r.events]
    if not measured:
        return
    keys: Counter[str] = Counter()
    for r in measured:
        for group in ("statements", "transactions", "requests"):
            for name, count in r.counters.get(group, {}).items():
                label = name if group == "statements" else f"{group[:-1]} {name}"
                keys[label] = max(keys[label], round(1000 * count / r.events))
    rows = []
    for label, _ in keys.most_common(25):
        cells = []
        for r in measured:
            count = 0
            for group in ("statements", "transactions", "requests"):
                for name, n in r.counters.get(group, {}).items():
                    if label == (name if group == "statements" else f"{group[:-1]} {name}"):
                        count += n
            cells.append(f"{count / r.events:.2f}")
        rows.append([label, *cells])
    totals = [f"{sum(r.counters.get('statements', {}).values()) / r.events:.2f}" for r in measured]
    rows.append(["all SQL statements", *totals])
    print()
    print("per event, all instances together (--instrument):")
    print_table(
        ["statement, transaction or request", *(f"r{r.round} x{r.instances}" for r in measured)],
        rows,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=1000, help="measured events per run")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted events first")
    parser.add_argument("--chats", type=int, default=256, help="chats the events go round")
    parser.add_argument("--concurrency", type=int, default=64, help="events in flight")
    parser.add_argument("--rounds", type=int, default=3, help="pairs: 1 2, 2 1, 1 2, ...")
    parser.add_argument(
        "--balance",
        choices=["round-robin", "affinity"],
        default="round-robin",
        help="round-robin: a chat's events alternate between instances; affinity: they do not",
    )
    parser.add_argument(
        "--client", choices=["raw", "aiohttp"], default="raw", help="the load generator's HTTP"
    )
    parser.add_argument(
        "--postgres",
        default=POSTGRES_ADMIN_URL,
        help="libpq URL of an existing database of the server to create the runs' databases on"
        " ($CHATPUSH_TEST_POSTGRES)",
    )
    parser.add_argument(
        "--keep-logs", metavar="DIR", help="copy every process's log there after each run"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds, per wait")
    parser.add_argument(
        "--instrument",
        action="store_true",
        help="run each instance under benchmarks/instrumented_serve.py and print SQL per event",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run (a few seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.events, args.warmup, args.chats, args.concurrency = 100, 10, 8, 8
        args.rounds, args.timeout = 1, 30.0
    if min(args.events, args.chats, args.concurrency, args.rounds) < 1 or args.warmup < 0:
        parser.error("--events, --chats, --concurrency and --rounds must be positive")
    return args


async def amain(args: argparse.Namespace) -> int:
    results = []
    for round_no in range(1, args.rounds + 1):
        order = COUNTS if round_no % 2 else tuple(reversed(COUNTS))
        for instances in order:
            result = await run(instances, round_no, args)
            results.append(result)
            print(
                f"round {round_no}, {instances} instance(s): "
                f"{result.end_to_end_per_s:.0f} events/s end to end "
                f"(after {result.prepare_s:.0f} s of set-up and warm-up)",
                file=sys.stderr,
                flush=True,
            )
    results.sort(key=lambda r: (r.round, r.instances))
    report(results, args)
    ok = all(r.completed and not r.refusals and not r.duplicates and not r.errors for r in results)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with terminate_on_sigterm():
        return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
