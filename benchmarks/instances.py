"""Benchmark 5: throughput of 1 against 2 chatpush instances sharing one PostgreSQL database.

Each run makes a fresh PostgreSQL database (``CREATE DATABASE`` through ``--postgres``, migrated to
head, dropped ``WITH (FORCE)`` at the end of the run, whatever happened) and starts 1 or 2
``chatpush serve`` processes on it (benchmarks/rig.py ``Bench``, benchmarks/load.py):
every instance has the same group, ``[groups.bench]`` with one node per instance, and hosts its
own node (``server.nodes``, ``instance_id``, ``alias``). The rest is benchmark 1's rig, unchanged:
the same closed-loop load generator (``--concurrency`` events in flight, agent messages through
``POST /api/v1/chats/{id}/events`` unless ``--sender customer``, round robin over ``--chats`` chats
created beforehand with reliable push), the same acknowledging receiver (benchmarks/receiver.py,
which refreshes round robin over the instances), the same measure: events accepted per second
and end-to-end events per second, until the receiver has acknowledged every chat up to its last
event.

With two instances, the requests go to the instances in turn, as a round-robin load balancer
would: the chats are created alternately on each, and event n goes to instance (n + n // chats)
mod 2, so each chat's events alternate between the instances from one pass over the chats to the
next (no session affinity; ``--balance affinity`` sends all of a chat's requests to one instance).

Reported per run: events/s; CPU per event of each process (every instance, the PostgreSQL
backends of the run's database, PostgreSQL's own processes, the receiver, the load generator), the
rate that CPU would allow on idle cores ("CPU ceiling"), and the share of the machine's cores each
took; what the rest of the machine took meanwhile; refused events, duplicated triggers, and the
warnings, errors and transaction retries in the instances' logs; with ``--instrument``, SQL
statements per event (benchmarks/launch.py --counters). The figure of
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
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.load import (
    SENDERS,
    Phase,
    Target,
    add_closed_loop_options,
    add_options,
    closed_loop_args,
    drive,
    set_up_chats,
    start_target,
    wait_drained,
)
from benchmarks.rig import (
    CLK_TCK,
    POSTGRES_ADMIN_URL,
    Bench,
    CpuMeter,
    Process,
    Record,
    cpu_s,
    exit_on_sigterm,
    machine_line,
    print_counters,
    print_ratios,
    print_table,
    progress,
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
    """A process's command line (a PostgreSQL backend's title), "" once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


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
        title = _cmdline(pid).split()
        return self.database in title

    def sample(self) -> None:
        if self.postmaster is None:
            return
        started = time.process_time()
        for pid in _children(self.postmaster):
            if pid in self.seen or self._ours(pid):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    self.seen[pid] = cpu_s(pid)
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
                spent = cpu_s(pid)
                whole += spent
                if pid not in self.seen and any(t in _cmdline(pid) for t in AUX_TITLES):
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


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Result:
    instances: int
    round: int
    events: int
    refusals: Counter[str]
    """Events not accepted (warm-up included), by instance and answer."""
    accept_s: float
    end_to_end_s: float
    completed: bool
    stats: dict[str, int]
    duplicates: int
    cpu: CpuMeter
    """Over the measured phase: the instances, the receiver, PostgreSQL (the run's database's
    backends, and its own processes), the load generator (less its sampling of PostgreSQL)."""
    postgres_other_s: float
    """Other databases' PostgreSQL backends (other programs): part of the others' CPU."""
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
    counters: dict[str, Any] = field(default_factory=dict)
    """With --instrument: statements, transactions and requests of every instance together,
    over the measured phase."""

    @property
    def accepted_per_s(self) -> float:
        return self.events / self.accept_s if self.accept_s else 0.0

    @property
    def end_to_end_per_s(self) -> float:
        return self.events / self.end_to_end_s if self.end_to_end_s else 0.0

    @property
    def processes(self) -> dict[str, float]:
        """CPU seconds by process: instance-1, ..., receiver, postgres (db), postgres (server),
        loadgen."""
        return {**self.cpu.spent, "loadgen": self.cpu.own_s}

    def ceiling_per_s(self, cores: int) -> float:
        """The rate the measured CPU per event would allow on an otherwise idle machine: each
        single-threaded process (an instance, the receiver, the load generator) at most one
        core, all of them together (PostgreSQL's backends too) at most every core."""
        if not self.events or not sum(self.processes.values()):
            return 0.0
        per_event = {name: s / self.events for name, s in self.processes.items()}
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


def duplicates(records: list[Record]) -> int:
    """Triggers received more than once: the same chat, notify-position and notify-attempt."""
    copies = Counter((r.chat_id, r.position, r.attempt) for r in records)
    return sum(count - 1 for count in copies.values() if count > 1)


def log_problems(target: Target) -> dict[str, Counter[str]]:
    """Each instance's warnings and errors (its JSON log lines of level warning and above, and
    any line that is not chatpush's JSON), and its transactions retried after a deadlock or a
    serialization failure (logged at info)."""
    found: dict[str, Counter[str]] = {}
    for server in target.servers:
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


def keep_logs(processes: list[Process], directory: Path, prefix: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for process in processes:
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


async def run(instances: int, round_no: int, args: argparse.Namespace) -> Result:
    began = time.monotonic()
    sender = SENDERS[args.sender]
    route = partial(instance_for, chats=args.chats, instances=instances, balance=args.balance)
    refusals: Counter[str] = Counter()
    async with Bench() as bench:
        database_url = await bench.postgres_database(args.postgres)
        database = urlsplit(database_url).path.lstrip("/")
        target = await start_target(
            bench,
            "chatpush",
            instances=instances,
            database_url=database_url,
            instrument=args.instrument,
        )
        pg = await PostgresCpu.attach(args.postgres, database)
        pg.start()
        try:
            await set_up_chats(bench.http, target, args.chats, concurrency=SET_UP_CONCURRENCY)
            if await wait_drained(target, timeout_s=args.timeout) is None:
                raise RuntimeError(f"{instances} instances: the set-up was never acknowledged")
            if args.warmup:
                await drive(
                    target, sender, args.client, args.warmup, args.concurrency,
                    route=route, refusals=refusals,
                )  # fmt: skip
                if await wait_drained(target, timeout_s=args.timeout) is None:
                    raise RuntimeError(f"{instances} instances: the warm-up was never acknowledged")
            duplicated = duplicates(await target.receiver.records())
            await target.receiver.control(reset=True)
            pg_before, sampling_before = pg.read(), pg.cost_s
            phase = Phase(target)
            await phase.start()
            started = time.monotonic()
            refused = await drive(
                target, sender, args.client, args.events, args.concurrency,
                first=args.warmup, route=route, refusals=refusals,
            )  # fmt: skip
            accepted = time.monotonic()
            stats = await wait_drained(target, timeout_s=args.timeout)
            finished = time.monotonic()
            await phase.stop()
            sampling_s = pg.cost_s - sampling_before
            pg_after = pg.read()
        finally:
            await pg.stop()
        completed = stats is not None
        stats = stats or await target.receiver.stats()
        duplicated += duplicates(await target.receiver.records())
        deliveries, pinned = await work_split(database_url, instances)
        if args.keep_logs:
            keep_logs(bench.processes, Path(args.keep_logs), f"round{round_no}-x{instances}-")
        # The load generator: this process, less its PostgreSQL sampling (a few /proc reads every
        # PG_SAMPLE_S), which is left to "others".
        cpu = phase.cpu
        cpu.own_s = max(0.0, cpu.own_s - sampling_s)
        cpu.spent["postgres (db)"] = pg_after.database_s - pg_before.database_s
        cpu.spent["postgres (server)"] = pg_after.server_s - pg_before.server_s
        postgres_s = cpu.spent["postgres (db)"] + cpu.spent["postgres (server)"]
        return Result(
            instances=instances,
            round=round_no,
            events=args.events - refused,
            refusals=refusals,
            accept_s=accepted - started,
            end_to_end_s=finished - started,
            completed=completed,
            stats=stats,
            duplicates=duplicated,
            database=database,
            prepare_s=started - began,
            cpu=cpu,
            postgres_other_s=max(0.0, pg_after.whole_s - pg_before.whole_s - postgres_s),
            postgres_measured=pg.enabled,
            deliveries_by_node=deliveries,
            pinned_by_node=pinned,
            log_problems=log_problems(target),
            counters=phase.counters,
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
        f"{args.concurrency} in flight, sender {args.sender}, load client {args.client}, "
        f"balance {args.balance}, PostgreSQL at {urlsplit(args.postgres).netloc}"
    )
    print(machine_line())
    print()
    cores = os.cpu_count() or 1
    rows = [
        [
            str(r.round),
            str(r.instances),
            str(r.events),
            str(sum(r.refusals.values())),
            f"{r.accepted_per_s:.0f}",
            f"{r.end_to_end_per_s:.0f}",
            str(r.stats["triggers"]),
            str(r.stats["refreshes"]),
            str(r.stats["resends"]),
            str(r.duplicates),
            " ".join(f"{k}:{v}" for k, v in sorted(r.deliveries_by_node.items())),
            " ".join(f"{k}:{v}" for k, v in sorted(r.pinned_by_node.items())),
            str(sum(sum(p.values()) for p in r.log_problems.values())),
            "yes" if r.completed else "TIMEOUT",
        ]
        for r in results
    ]
    headers = ["round", "instances", "events", "refused", "accepted/s", "end-to-end ev/s"]
    headers += ["triggers", "refreshes", "resends", "dup", "deliveries by node (all phases)"]
    headers += ["chats pinned", "log warnings, retries", "done"]
    print_table(headers, rows)
    columns = cpu_columns(results)
    print("CPU per event, ms (each process over the measured phase):")
    rows = []
    for r in results:
        cells = [
            f"{1000 * r.processes[c] / r.events:.3f}"
            if c in r.processes and r.events and (r.postgres_measured or "postgres" not in c)
            else "-"
            for c in columns
        ]
        total = sum(r.processes.values())
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
    print(f"CPU use, % of one core over the measured phase ({cores} cores = {100 * cores}%):")
    rows = []
    for r in results:
        wall = r.cpu.wall_s or 1.0
        cells = [f"{100 * r.processes[c] / wall:.0f}" if c in r.processes else "-" for c in columns]
        rows.append(
            [
                str(r.round),
                str(r.instances),
                *cells,
                f"{100 * r.cpu.others_s / wall:.0f}",
                f"{100 * r.postgres_other_s / wall:.0f}" if r.postgres_measured else "-",
                f"{100 * max(0.0, r.cpu.total_s - r.cpu.busy_s) / wall:.0f}",
            ]
        )
    print_table(["round", "instances", *columns, "others", "of which pg other dbs", "idle"], rows)
    for r in results:
        for line, count in r.refusals.most_common(5):
            print(f"round {r.round}, {r.instances} instances, refused: {count}x {line}")
        for name, problems in r.log_problems.items():
            for line, count in problems.most_common(5):
                print(f"round {r.round}, {r.instances} instances, {name} log: {count}x {line}")
        if r.counters:
            where = f"round {r.round}, {r.instances} instance(s) together"
            print_counters(r.counters, r.events, "event", where)
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
                (sum(two.processes.values()) / two.events)
                / (sum(one.processes.values()) / one.events)
            )
            if one.ceiling_per_s(cores):
                ceiling_ratios.append(two.ceiling_per_s(cores) / one.ceiling_per_s(cores))
    if ratios:
        print()
        print_ratios(
            "ratio 2 instances / 1, end-to-end events/s: ", ratios, f"; target >= {TARGET_RATIO}"
        )
        print_ratios("ratio 2 instances / 1, accepted events/s:   ", accept_ratios)
        print_ratios("ratio 2 instances / 1, CPU per event, all processes: ", cpu_ratios)
        if ceiling_ratios:
            print_ratios(
                f"ratio 2 instances / 1, CPU ceiling on {cores} idle cores: ", ceiling_ratios
            )
    print(flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_closed_loop_options(
        parser,
        events=1000,
        warmup=200,
        concurrency=64,
        rounds=3,
        rounds_help="pairs: 1 2, 2 1, 1 2, ...",
        sender="agent",
    )
    parser.add_argument(
        "--balance",
        choices=["round-robin", "affinity"],
        default="round-robin",
        help="round-robin: a chat's events alternate between instances; affinity: they do not",
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
    add_options(parser, chats=256, timeout_s=300.0, targets=False)
    args = parser.parse_args(argv)
    closed_loop_args(parser, args)
    return args


async def amain(args: argparse.Namespace) -> int:
    results = []
    for round_no in range(1, args.rounds + 1):
        order = COUNTS if round_no % 2 else tuple(reversed(COUNTS))
        for instances in order:
            result = await run(instances, round_no, args)
            results.append(result)
            progress(
                f"round {round_no}, {instances} instance(s): "
                f"{result.end_to_end_per_s:.0f} events/s end to end "
                f"(after {result.prepare_s:.0f} s of set-up and warm-up)"
            )
    results.sort(key=lambda r: (r.round, r.instances))
    report(results, args)
    ok = all(r.completed and not r.refusals and not r.duplicates and not r.errors for r in results)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
