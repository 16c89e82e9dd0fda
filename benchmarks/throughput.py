"""Benchmark 1: throughput of chatpush against the null middleware, in one run, same concurrency.

(a) ``relay``: benchmarks/null_relay.py, chatpush's topology with no logic and no storage. The
    load generator POSTs an event to it, it POSTs a trigger-shaped JSON body (CONTRACT §7 (a)) to
    the receiver, and the receiver POSTs a refresh back to it.
(b) ``chatpush``: ``chatpush serve`` on a fresh SQLite file (WAL), one node group whose
    ``customhttp.url`` is the receiver. The same load generator POSTs agent messages through the
    chat-server side API (``POST /api/v1/chats/{id}/events``) to N chats created beforehand with
    GCTI_Chat_PushSubscribe, GCTI_GMS_PushResend and GCTI_GMS_NotifyRequestor; the same receiver
    (benchmarks/ack_receiver.py) acknowledges each trigger by ``refresh`` with
    ``transcriptPosition`` = ``notify-position`` and the trigger's ``secure-key``.

The load generator, the target and the receiver are three processes. A closed loop keeps
``--concurrency`` events in flight until ``--events`` have been accepted (after ``--warmup``
events that are not counted); then it waits until the receiver has acknowledged every chat up to
its last event. Reported per target: events accepted per second (201s), end-to-end events per
second (up to the last acknowledgement), triggers received and refreshes done, and CPU per event
of each process (and what the rest of the machine took meanwhile). The ratio (b)/(a) of the
end-to-end rates is the figure of merit (target >= 0.7). Run from the repository root:

    .venv/bin/python -m benchmarks.throughput                 # full size
    .venv/bin/python -m benchmarks.throughput --smoke         # a few seconds, for CI
    .venv/bin/python -m benchmarks.throughput --rounds 3 --concurrency 64 --events 20000

Exit status: 0 when every run completed, 1 when a run timed out or events were refused.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession

from benchmarks.pushrig import (
    TARGETS,
    CpuUse,
    ReceiverClient,
    Rig,
    counter_difference,
    cpu_snapshot,
    cpu_use,
    event_body,
    events_path,
    machine_description,
    make_poster,
    print_ratios,
    print_table,
    report_counters,
    running_rig,
    set_up_chats,
    terminate_on_sigterm,
    wait_drained,
)

TARGET_RATIO = 0.7


@dataclass
class Result:
    target: str
    round: int
    events: int
    refused: int
    accept_s: float
    end_to_end_s: float
    completed: bool
    triggers: int
    refreshes: int
    resends: int
    refresh_failures: int
    cpu: CpuUse
    counters: dict[str, Any] = field(default_factory=dict)
    """With --instrument: chatpush's counters over the measured phase (after - before)."""

    @property
    def accepted_per_s(self) -> float:
        return self.events / self.accept_s if self.accept_s else 0.0

    @property
    def end_to_end_per_s(self) -> float:
        return self.events / self.end_to_end_s if self.end_to_end_s else 0.0


async def drive(rig: Rig, client: str, events: int, concurrency: int, first: int = 0) -> int:
    """Closed loop: ``concurrency`` workers post ``events`` agent messages round-robin over the
    chats. Returns how many were refused (not 201)."""
    poster = make_poster(client, rig.base, concurrency)
    chats, last_index = rig.chats, rig.last_index
    paths = [events_path(chat) for chat in chats]
    bodies = [event_body(n) for n in range(64)]
    counter = iter(range(first, first + events))
    refused = 0

    async def worker() -> None:
        nonlocal refused
        for n in counter:  # shared iterator: each n is taken by exactly one worker
            slot = n % len(chats)
            status, _ = await poster.post(paths[slot], bodies[n % len(bodies)])
            if status == 201:
                last_index[chats[slot]] += 1
            else:
                refused += 1

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await poster.close()
    return refused


async def run_target(kind: str, round_no: int, args: argparse.Namespace) -> Result:
    async with (
        running_rig(kind, instrument=args.instrument) as rig,
        ClientSession() as session,
    ):
        receiver = ReceiverClient(session, rig.receiver_url)
        await set_up_chats(rig, args.chats)
        if await wait_drained(receiver, rig, timeout_s=args.timeout) is None:
            raise RuntimeError(f"{kind}: the set-up triggers were never acknowledged")
        if args.warmup:
            refused = await drive(rig, args.client, args.warmup, args.concurrency)
            # The relay sends one trigger per event: wait for the last one, or it would be
            # counted in the measured phase.
            warm = args.warmup - refused if kind == "relay" else 0
            if await wait_drained(receiver, rig, min_triggers=warm, timeout_s=args.timeout) is None:
                raise RuntimeError(f"{kind}: the warm-up was never acknowledged")
        await receiver.reset()
        counters_before = await rig.counters() if rig.counters_path else None
        before = cpu_snapshot(rig)
        started = time.monotonic()
        refused = await drive(rig, args.client, args.events, args.concurrency, args.warmup)
        accepted = time.monotonic()
        stats = await wait_drained(
            receiver,
            rig,
            min_triggers=args.events - refused if kind == "relay" else 0,
            timeout_s=args.timeout,
        )
        finished = time.monotonic()
        after = cpu_snapshot(rig)
        counters = {}
        if counters_before is not None:
            counters = counter_difference(counters_before, await rig.counters())
        completed = stats is not None
        if stats is None:
            stats = await receiver.stats()
        return Result(
            target=kind,
            round=round_no,
            events=args.events - refused,
            refused=refused,
            accept_s=accepted - started,
            end_to_end_s=finished - started,
            completed=completed,
            triggers=stats["triggers"],
            refreshes=stats["refreshes"],
            resends=stats["resends"],
            refresh_failures=stats["refresh_failures"],
            cpu=cpu_use(rig, before, after),
            counters=counters,
        )


def per_event_ms(seconds: float, events: int) -> str:
    return f"{1000 * seconds / events:.3f}" if events else "-"


def report(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"throughput: {args.events} events (after {args.warmup} warm-up) over {args.chats} chats, "
        f"{args.concurrency} in flight, load client {args.client}"
    )
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_description().items()))
    print()
    headers = [
        "round",
        "target",
        "events",
        "accepted/s",
        "end-to-end ev/s",
        "triggers",
        "refreshes",
        "resends",
        "target CPU ms/ev",
        "receiver CPU ms/ev",
        "loadgen CPU ms/ev",
        "loadgen CPU %",
        "others CPU %",
        "done",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                str(r.round),
                r.target,
                str(r.events),
                f"{r.accepted_per_s:.0f}",
                f"{r.end_to_end_per_s:.0f}",
                str(r.triggers),
                str(r.refreshes),
                str(r.resends),
                per_event_ms(r.cpu.server_s, r.events),
                per_event_ms(r.cpu.receiver_s, r.events),
                per_event_ms(r.cpu.loadgen_s, r.events),
                f"{r.cpu.percent(r.cpu.loadgen_s):.0f}",
                f"{r.cpu.percent(r.cpu.others_s):.0f}",
                "yes" if r.completed else "TIMEOUT",
            ]
        )
    print_table(headers, rows)
    by_round: dict[int, dict[str, Result]] = {}
    for r in results:
        by_round.setdefault(r.round, {})[r.target] = r
    ratios, accept_ratios, cpu_ratios, total_cpu_ratios = [], [], [], []
    for targets in by_round.values():
        if "relay" in targets and "chatpush" in targets:
            a, b = targets["relay"], targets["chatpush"]
            ratios.append(b.end_to_end_per_s / a.end_to_end_per_s)
            accept_ratios.append(b.accepted_per_s / a.accepted_per_s)
            # CPU per event does not depend on what the rest of the machine is doing.
            cpu_ratios.append((a.cpu.server_s / a.events) / (b.cpu.server_s / b.events))
            total_cpu_ratios.append(
                (a.cpu.server_s + a.cpu.receiver_s + a.cpu.loadgen_s)
                / a.events
                / ((b.cpu.server_s + b.cpu.receiver_s + b.cpu.loadgen_s) / b.events)
            )
    for r in results:
        if r.counters:
            report_counters(
                r.counters, r.events, f"round {r.round}, {r.triggers} triggers received"
            )
    if ratios:
        print()
        print_ratios(
            "ratio chatpush/relay, end-to-end events/s: ", ratios, f"; target >= {TARGET_RATIO}"
        )
        print_ratios("ratio chatpush/relay, accepted events/s:   ", accept_ratios)
        print(
            "CPU per event, relay/chatpush, target process: "
            + ", ".join(f"{x:.3f}" for x in cpu_ratios)
            + f" (median {statistics.median(cpu_ratios):.3f}); all three processes: "
            + ", ".join(f"{x:.3f}" for x in total_cpu_ratios)
            + f" (median {statistics.median(total_cpu_ratios):.3f})"
        )
    print(flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=5000, help="measured events per target")
    parser.add_argument("--warmup", type=int, default=500, help="uncounted events first")
    parser.add_argument("--chats", type=int, default=256, help="chats the events go round")
    parser.add_argument("--concurrency", type=int, default=64, help="events in flight")
    parser.add_argument("--rounds", type=int, default=1, help="relay, chatpush, relay, ...")
    parser.add_argument("--targets", default=",".join(TARGETS), help="relay,chatpush")
    parser.add_argument(
        "--client", choices=["raw", "aiohttp"], default="raw", help="the load generator's HTTP"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds, per wait")
    parser.add_argument(
        "--instrument",
        action="store_true",
        help="run chatpush under benchmarks/instrumented_serve.py and print SQL per event",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run (a few seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.events, args.warmup, args.chats, args.concurrency = 100, 10, 8, 8
        args.rounds, args.timeout = 1, 30.0
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for target in args.targets:
        if target not in TARGETS:
            parser.error(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if min(args.events, args.chats, args.concurrency, args.rounds) < 1 or args.warmup < 0:
        parser.error("--events, --chats, --concurrency and --rounds must be positive")
    return args


async def amain(args: argparse.Namespace) -> int:
    results = []
    for round_no in range(1, args.rounds + 1):
        for kind in args.targets:
            result = await run_target(kind, round_no, args)
            results.append(result)
            print(
                f"round {round_no} {kind}: {result.end_to_end_per_s:.0f} events/s end to end",
                file=sys.stderr,
                flush=True,
            )
    report(results, args)
    return 0 if all(r.completed and not r.refused for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with terminate_on_sigterm():
        return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
