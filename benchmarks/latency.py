"""Benchmark 4: latency from an event accepted (the 201 of the events call) to its trigger received.

At a fixed offered rate (open loop: event k is sent at start + k/rate, whether or not earlier ones
have been answered), the load generator POSTs agent messages through the chat-server side API
(``POST /api/v1/chats/{id}/events``) to chats created beforehand with reliable push
(GCTI_GMS_PushResend, GCTI_GMS_NotifyRequestor); benchmarks/receiver.py, in its own process,
notes the arrival of every trigger (CLOCK_MONOTONIC, the same clock in every process of the
machine) and acknowledges it by ``refresh``. An event is matched to the trigger of its chat whose
``notify-position`` is the event's index, attempt 0: the events go round ``--chats`` chats, so a
chat's previous trigger has long been acknowledged when its next event comes (an event that finds
one still outstanding is coalesced into it, CONTRACT §8.3, and counted as unmatched).

Reported per target and rate: the rate achieved, events matched, and p50/p90/p99/max of
accepted -> trigger received (the figure asked for), of sent -> trigger received, and of the events
call itself (sent -> 201). The same run measures the null relay (benchmarks/null_relay.py: no logic,
no storage, one trigger per event) as the baseline. Run from the repository root:

    .venv/bin/python -m benchmarks.latency                     # 100 and 300 events/s, 10 s each
    .venv/bin/python -m benchmarks.latency --smoke             # a few seconds, for CI
    .venv/bin/python -m benchmarks.latency --rates 50,100,200,400 --duration 20

A negative accepted -> trigger time means the trigger reached the receiver before the 201 reached
the load generator (chatpush pokes its dispatcher at the commit, before it answers).
Exit status: 0 when every run completed, 1 when events were refused or triggers never came.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.load import (
    SENDERS,
    Phase,
    Poster,
    Target,
    add_options,
    make_poster,
    set_up_chats,
    start_target,
    target_args,
    wait_drained,
)
from benchmarks.rig import (
    Bench,
    Chat,
    CpuMeter,
    exit_on_sigterm,
    machine_line,
    percentile,
    print_counters,
    print_table,
    progress,
)

MAX_IN_FLIGHT = 2000
"""Open loop, but bounded: an event due while this many are unanswered is skipped (counted)."""
SENDER = SENDERS["agent"]
"""The events call answers with the event's index, which the trigger's notify-position matches."""


@dataclass
class Sent:
    chat: Chat
    sent_ns: int
    accepted_ns: int = 0
    index: int = 0


@dataclass
class Result:
    target: str
    rate: float
    offered: int
    achieved_rate: float
    refused: int
    skipped: int
    completed: bool
    matched: int
    triggers: int
    resends: int
    cpu: CpuMeter
    server_s: float
    to_trigger_ms: list[float] = field(default_factory=list)
    """accepted (201 received) -> trigger received, per matched event."""
    sent_to_trigger_ms: list[float] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)
    """sent -> 201, per accepted event."""
    counters: dict[str, Any] = field(default_factory=dict)
    """With --instrument: chatpush's counters over this rate's run (after - before)."""


async def offer(
    target: Target, poster: Poster, rate: float, duration_s: float
) -> tuple[list[Sent], int]:
    """Send ``rate`` events per second for ``duration_s``, open loop, round-robin over the chats.
    Returns what was sent (with its index and times) and how many were skipped."""
    count = max(1, int(rate * duration_s))
    period_ns = int(1e9 / rate)
    chats = target.chats
    sent: list[Sent] = []
    tasks: set[asyncio.Task[None]] = set()
    skipped = 0

    async def one(n: int, record: Sent) -> None:
        status, body = await poster.post(*SENDER.request(record.chat, n))
        record.accepted_ns = time.monotonic_ns()
        if status == SENDER.accepted:
            record.index = int(json.loads(body)["event"]["index"])
            record.chat.last_index = max(record.chat.last_index, record.index)

    start = time.monotonic_ns() + 10_000_000
    for n in range(count):
        delay = (start + n * period_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= MAX_IN_FLIGHT:
            skipped += 1
            continue
        record = Sent(chats[n % len(chats)], time.monotonic_ns())
        sent.append(record)
        task = asyncio.create_task(one(n, record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return sent, skipped


async def run_rate(target: Target, rate: float, args: argparse.Namespace) -> Result:
    await target.receiver.control(reset=True)
    poster = make_poster(args.client, target.bases[0], MAX_IN_FLIGHT, SENDER)
    phase = Phase(target)
    await phase.start()
    try:
        sent, skipped = await offer(target, poster, rate, args.duration)
    finally:
        await poster.close()
    accepted = [s for s in sent if s.index]
    stats = await wait_drained(
        target,
        min_triggers=len(accepted) if target.kind == "relay" else 0,
        timeout_s=args.timeout,
    )
    await phase.stop()
    completed = stats is not None
    stats = stats or await target.receiver.stats()
    arrivals: dict[tuple[str, int], int] = {}
    for record in await target.receiver.records():
        if record.attempt == 0 and record.chat_id and record.position is not None:
            arrivals.setdefault((record.chat_id, record.position), record.monotonic_ns)
    to_trigger, sent_to_trigger = [], []
    for s in accepted:
        arrived = arrivals.get((s.chat.chat_id, s.index))
        if arrived is not None:
            to_trigger.append((arrived - s.accepted_ns) / 1e6)
            sent_to_trigger.append((arrived - s.sent_ns) / 1e6)
    span_s = (sent[-1].sent_ns - sent[0].sent_ns) / 1e9 if len(sent) > 1 else 0.0
    return Result(
        target=target.kind,
        rate=rate,
        offered=len(sent) + skipped,
        achieved_rate=(len(sent) - 1) / span_s if span_s else 0.0,
        refused=len(sent) - len(accepted),
        skipped=skipped,
        completed=completed,
        matched=len(to_trigger),
        triggers=stats["triggers"],
        resends=stats["resends"],
        cpu=phase.cpu,
        server_s=phase.cpu.spent[target.servers[0].name],
        to_trigger_ms=to_trigger,
        sent_to_trigger_ms=sent_to_trigger,
        call_ms=[(s.accepted_ns - s.sent_ns) / 1e6 for s in accepted],
        counters=phase.counters,
    )


async def run_target(kind: str, args: argparse.Namespace) -> list[Result]:
    results = []
    async with Bench() as bench:
        target = await start_target(bench, kind, loop=args.loop, instrument=args.instrument)
        await set_up_chats(bench.http, target, args.chats)
        if await wait_drained(target, timeout_s=args.timeout) is None:
            raise RuntimeError(f"{kind}: the set-up triggers were never acknowledged")
        for rate in args.rates:
            result = await run_rate(target, rate, args)
            results.append(result)
            p50 = percentile(result.to_trigger_ms, 50)
            p99 = percentile(result.to_trigger_ms, 99)
            progress(f"{kind} at {rate:g}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return results


def report(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"latency: open loop, {args.duration:g} s per rate over {args.chats} chats, "
        f"loop {args.loop}, load client {args.client}; times in ms"
    )
    print(machine_line())
    print()
    headers = ["target", "offered/s", "achieved/s", "events", "matched"]
    headers += ["accepted->trigger p50", "p90", "p99", "max", "sent->trigger p50", "p99"]
    headers += ["call p50", "call p99", "target CPU %", "others CPU %", "done"]
    rows = []
    for r in results:
        t, s, c = r.to_trigger_ms, r.sent_to_trigger_ms, r.call_ms
        rows.append(
            [
                r.target,
                f"{r.rate:g}",
                f"{r.achieved_rate:.0f}",
                str(r.offered),
                str(r.matched),
                *(f"{percentile(t, q):.1f}" for q in (50, 90, 99, 100)),
                f"{percentile(s, 50):.1f}",
                f"{percentile(s, 99):.1f}",
                f"{percentile(c, 50):.1f}",
                f"{percentile(c, 99):.1f}",
                f"{r.cpu.percent(r.server_s):.0f}",
                f"{r.cpu.percent(r.cpu.others_s):.0f}",
                "yes" if r.completed else "TIMEOUT",
            ]
        )
    print_table(headers, rows)
    for r in results:
        if r.refused or r.skipped or r.resends:
            print(
                f"{r.target} at {r.rate:g}/s: {r.refused} refused, {r.skipped} skipped "
                f"(over {MAX_IN_FLIGHT} in flight), {r.resends} resends"
            )
        if r.counters:
            events = r.offered - r.skipped - r.refused
            print_counters(r.counters, events, "event", f"at {r.rate:g}/s")
    print(flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rates", default="100,300", help="offered events per second, a list")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    add_options(parser, chats=500, timeout_s=120.0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rates, args.duration, args.chats, args.timeout = "50", 1.0, 20, 30.0
    try:
        args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates must be numbers separated by commas")
    target_args(parser, args)
    if not args.rates or min(args.rates) <= 0 or args.duration <= 0 or args.chats < 1:
        parser.error("--rates, --duration and --chats must be positive")
    return args


async def amain(args: argparse.Namespace) -> int:
    results = []
    for kind in args.targets:
        results.extend(await run_target(kind, args))
    report(results, args)
    ok = all(r.completed and not r.refused and r.matched for r in results)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
