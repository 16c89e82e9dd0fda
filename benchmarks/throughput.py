"""Benchmark 1: throughput of chatpush against the null middleware, in one run, same concurrency.

(a) ``relay``: benchmarks/null_relay.py, chatpush's topology with no logic and no storage.
(b) ``chatpush``: ``chatpush serve`` on a fresh SQLite file (WAL), one node group whose
    ``customhttp.url`` is the receiver.

By default the load is the one of the independent harness that measured the project: 200 chats,
32 sends in flight, each event a customer's message by Chat API v2 ``send`` (``secureKey`` and
``message``; ``--sender agent``: an agent's message through the chat-server side API instead),
the chats made beforehand with reliable push (PushResend, NotifyRequestor, IncludePayload) and
``flex-push-content`` holding ``secure-key``. The receiver (benchmarks/receiver.py) acknowledges
every trigger by ``refresh`` from its ``notify-position`` with the trigger's ``secure-key``, for
both targets (benchmarks/load.py). Both targets run on uvloop, chatpush's default loop
(``--loop asyncio``: both on asyncio's own); the load generator and the receiver stay on
asyncio: they are the same for both.

The load generator, the target and the receiver are three processes. A closed loop keeps
``--concurrency`` events in flight until ``--events`` have been accepted (after ``--warmup``
events that are not counted); then it waits until the receiver has acknowledged every chat up to
its last event. Reported per target: events accepted per second, end-to-end events per second (up
to the last acknowledgement), triggers received and refreshes done, and CPU per event of each
process, all its threads (and what the rest of the machine took meanwhile). The ratio (b)/(a) of
the end-to-end rates is the figure of merit (target >= 0.7); chatpush's CPU per event beside it
(target <= 1.5 ms). Run from the repository root:

    .venv/bin/python -m benchmarks.throughput                 # full size
    .venv/bin/python -m benchmarks.throughput --smoke         # a few seconds, for CI
    .venv/bin/python -m benchmarks.throughput --rounds 3 --loop asyncio --sender agent

Exit status: 0 when every run completed, 1 when a run timed out or events were refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.load import (
    SENDERS,
    Phase,
    add_closed_loop_options,
    add_options,
    closed_loop_args,
    drive,
    set_up_chats,
    start_target,
    target_args,
    wait_drained,
)
from benchmarks.rig import (
    Bench,
    CpuMeter,
    exit_on_sigterm,
    machine_line,
    print_counters,
    print_ratios,
    print_table,
    progress,
)

TARGET_RATIO = 0.7
TARGET_CPU_MS = 1.5


@dataclass
class Result:
    target: str
    round: int
    events: int
    refused: int
    accept_s: float
    end_to_end_s: float
    completed: bool
    stats: dict[str, int]
    cpu: CpuMeter
    server_s: float
    receiver_s: float
    counters: dict[str, Any] = field(default_factory=dict)
    """With --instrument: chatpush's counters over the measured phase (after - before)."""

    @property
    def accepted_per_s(self) -> float:
        return self.events / self.accept_s if self.accept_s else 0.0

    @property
    def end_to_end_per_s(self) -> float:
        return self.events / self.end_to_end_s if self.end_to_end_s else 0.0

    @property
    def all_s(self) -> float:
        """CPU of the target, the receiver and the load generator."""
        return self.server_s + self.receiver_s + self.cpu.own_s

    def ms_per_event(self, seconds: float) -> float:
        return 1000 * seconds / self.events if self.events else float("nan")


async def run_target(kind: str, round_no: int, args: argparse.Namespace) -> Result:
    sender = SENDERS[args.sender]
    async with Bench() as bench:
        target = await start_target(bench, kind, loop=args.loop, instrument=args.instrument)
        await set_up_chats(bench.http, target, args.chats)
        if await wait_drained(target, timeout_s=args.timeout) is None:
            raise RuntimeError(f"{kind}: the set-up triggers were never acknowledged")
        if args.warmup:
            refused = await drive(target, sender, args.client, args.warmup, args.concurrency)
            # The relay sends one trigger per event: wait for the last one, or it would be
            # counted in the measured phase.
            warm = args.warmup - refused if kind == "relay" else 0
            if await wait_drained(target, min_triggers=warm, timeout_s=args.timeout) is None:
                raise RuntimeError(f"{kind}: the warm-up was never acknowledged")
        await target.receiver.control(reset=True)
        phase = Phase(target)
        await phase.start()
        started = time.monotonic()
        refused = await drive(
            target, sender, args.client, args.events, args.concurrency, first=args.warmup
        )
        accepted = time.monotonic()
        min_triggers = args.events - refused if kind == "relay" else 0
        stats = await wait_drained(target, min_triggers=min_triggers, timeout_s=args.timeout)
        finished = time.monotonic()
        await phase.stop()
        return Result(
            target=kind,
            round=round_no,
            events=args.events - refused,
            refused=refused,
            accept_s=accepted - started,
            end_to_end_s=finished - started,
            completed=stats is not None,
            stats=stats or await target.receiver.stats(),
            cpu=phase.cpu,
            server_s=phase.cpu.spent[target.servers[0].name],
            receiver_s=phase.cpu.spent["receiver"],
            counters=phase.counters,
        )


def report(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"throughput: {args.events} events (after {args.warmup} warm-up) over {args.chats} chats, "
        f"{args.concurrency} in flight, sender {args.sender}, loop {args.loop}, "
        f"load client {args.client}"
    )
    print(machine_line())
    print()
    headers = ["round", "target", "events", "accepted/s", "end-to-end ev/s", "triggers"]
    headers += ["refreshes", "resends", "target CPU ms/ev", "receiver CPU ms/ev"]
    headers += ["loadgen CPU ms/ev", "loadgen CPU %", "others CPU %", "done"]
    rows = [
        [
            str(r.round),
            r.target,
            str(r.events),
            f"{r.accepted_per_s:.0f}",
            f"{r.end_to_end_per_s:.0f}",
            str(r.stats["triggers"]),
            str(r.stats["refreshes"]),
            str(r.stats["resends"]),
            f"{r.ms_per_event(r.server_s):.3f}",
            f"{r.ms_per_event(r.receiver_s):.3f}",
            f"{r.ms_per_event(r.cpu.own_s):.3f}",
            f"{r.cpu.percent(r.cpu.own_s):.0f}",
            f"{r.cpu.percent(r.cpu.others_s):.0f}",
            "yes" if r.completed else "TIMEOUT",
        ]
        for r in results
    ]
    print_table(headers, rows)
    for r in results:
        if r.counters:
            print_counters(r.counters, r.events, "event", f"round {r.round}")
    by_round: dict[int, dict[str, Result]] = {}
    for r in results:
        by_round.setdefault(r.round, {})[r.target] = r
    pairs = [(t["relay"], t["chatpush"]) for t in by_round.values() if len(t) == 2]
    if pairs:
        print_ratios(
            "ratio chatpush/relay, end-to-end events/s: ",
            [b.end_to_end_per_s / a.end_to_end_per_s for a, b in pairs],
            f"; target >= {TARGET_RATIO}",
        )
        print_ratios(
            "ratio chatpush/relay, accepted events/s:   ",
            [b.accepted_per_s / a.accepted_per_s for a, b in pairs],
        )
        # CPU per event does not depend on what the rest of the machine is doing.
        print_ratios(
            "CPU per event, relay/chatpush, target process: ",
            [(a.server_s / a.events) / (b.server_s / b.events) for a, b in pairs],
            digits=3,
        )
        print_ratios(
            "CPU per event, relay/chatpush, all three processes: ",
            [(a.all_s / a.events) / (b.all_s / b.events) for a, b in pairs],
            digits=3,
        )
    chatpush = [r.ms_per_event(r.server_s) for r in results if r.target == "chatpush"]
    if chatpush:
        print_ratios(
            "chatpush CPU per event (all its threads), ms: ",
            chatpush,
            f"; target <= {TARGET_CPU_MS}",
            digits=3,
        )
    print(flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_closed_loop_options(
        parser,
        events=5000,
        warmup=500,
        concurrency=32,
        rounds=1,
        rounds_help="relay, chatpush, relay, ...",
        sender="customer",
    )
    add_options(parser, chats=200, timeout_s=300.0)
    args = parser.parse_args(argv)
    closed_loop_args(parser, args)
    target_args(parser, args)
    return args


async def amain(args: argparse.Namespace) -> int:
    results = []
    for round_no in range(1, args.rounds + 1):
        for kind in args.targets:
            result = await run_target(kind, round_no, args)
            results.append(result)
            progress(f"round {round_no} {kind}: {result.end_to_end_per_s:.0f} events/s end to end")
    report(results, args)
    return 0 if all(r.completed and not r.refused for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
