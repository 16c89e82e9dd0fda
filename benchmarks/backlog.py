"""Benchmark 2 (issue 4): delivering a backlog, chatpush against the GMS model.

What is compared, in one run on one machine, against one receiver process that takes 5 ms per
request (``asyncio.sleep(0.005)``, then 200) and records every arrival in order:

* **chatpush**: one ``chatpush serve`` process with one node group of one node (``node-1``)
  delivers a backlog of N payload notifications: C chats (Request Chat with
  ``GCTI_Chat_PushSubscribe``, ``GCTI_GMS_PushIncludePayload=true``, no ``PushResend``), each with
  an agent who joins and writes E messages, so N = C x (E + 1) notifications, one per event.
* **sequential sender** (the GMS model): the same N bodies, POSTed by a plain aiohttp client
  strictly one after another (the next request only when the previous answer has arrived).

How the backlog is made and released (``--release``):

* ``activity`` (the product's documented path): the node is drained
  (``POST /api/v1/nodes/node-1/drain``) before the events are written, so each notification is
  *parked* (docs/decisions.md, "no node"). The node is undrained, which releases nothing by
  itself (checked: nothing may arrive), then each chat's customer polls once (``refresh`` with
  ``transcriptPosition`` past the end: it returns no events and adds no notification), which is
  the chat's next activity and makes all its parked notifications due. The release requests go
  out 32 at a time; the clock starts at the first of them.
* ``restart``: the receiver hangs (accepts, never answers) while the events are written, so each
  chat's first notification is in flight and the rest wait behind it in the outbox; chatpush is
  stopped (SIGTERM: in-flight deliveries are cut short and stay in the outbox, docs/push.md), the
  receiver recovers, and chatpush is started again on the same database: the whole backlog is due
  at once. The clock starts at the first arrival. (This mode runs chatpush with
  ``delivery.total_timeout_s = 600``, so that the hanging first deliveries do not time out, which
  would drop them: without PushResend a failed delivery is not resubmitted.)

And with the sends arriving while chatpush delivers (``live``, as the independent harness of
issue 13 measured it): C chats are made (Request Chat with ``GCTI_Chat_PushSubscribe``,
``GCTI_GMS_PushIncludePayload=true`` and ``GCTI_GMS_NotifyRequestor=true``, so that the customer's
own messages are notified; no ``PushResend``; an agent joins) and their set-up notifications
delivered and forgotten. Then the customers send E messages each (Chat API v2 ``send``), in a
closed loop of ``--send-concurrency`` requests in flight (benchmarks/load.py's ``drive``, round
robin over the chats), while chatpush delivers them: N = C x E notifications. The clock starts at
the first send.

deliveries/s = N / (last arrival - release); the sequential sender's release is its first send.
Also printed: chatpush's CPU time while delivering (in ``live`` it also takes the sends), per
delivered notification too, and the CPU the rest of the machine took meanwhile ("others":
neighbours on a shared machine slow chatpush down, not the sequential sender, which mostly
waits). ``--instrument`` counts SQL statements, commits and HTTP requests per delivered
notification (``benchmarks/launch.py --counters``); ``--loop uvloop`` runs chatpush on uvloop.
Every chat's notifications must arrive complete, once, and in index order (strictly increasing in
arrival order); otherwise the script exits 1. Target (issues 4 and 13): chatpush >= 15x the
sequential sender in every mode.

Run (from the repository root, with the project's venv):

    .venv/bin/python benchmarks/backlog.py                      # every mode, see --help
    .venv/bin/python benchmarks/backlog.py --smoke              # tiny, for CI
    .venv/bin/python benchmarks/backlog.py --release live --loop uvloop
    .venv/bin/python benchmarks/backlog.py --release activity --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load import SENDERS, Target, drive, set_up_chats
from benchmarks.rig import (
    API_HEADERS,
    LOOPS,
    SERVICE,
    Bench,
    Chat,
    CpuMeter,
    Process,
    Receiver,
    Record,
    add_service_options,
    agent_message,
    counters_delta,
    exit_on_sigterm,
    expect,
    join_agent,
    machine,
    peak_rss_kb,
    print_counters,
    print_table,
    progress,
    push_user_data,
    request_chat,
    sqlite_rows,
    wait_until,
)

TARGET_RATIO = 15.0
RELEASE_CONCURRENCY = 32
MODES = ("activity", "restart", "live")


@dataclass
class Run:
    """One delivery of the backlog, by chatpush or by the sequential sender."""

    name: str
    notifications: int
    chats: int
    release_at: float = 0.0
    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cpu: CpuMeter | None = None
    counters: dict[str, Any] | None = None
    """With --instrument: SQL statements, commits and requests while delivering."""
    counted: int = 0
    peak_rss_mb: float | None = None
    release_s: float | None = None
    missing: int = 0
    duplicates: int = 0
    reordered_chats: int = 0
    unexpected: int = 0

    @property
    def span_s(self) -> float:
        return max(r.at for r in self.records) - self.release_at if self.records else float("nan")

    @property
    def rate(self) -> float:
        return self.notifications / self.span_s if self.records else 0.0

    @property
    def chatpush_cpu_s(self) -> float | None:
        """chatpush's CPU while delivering (None for the sequential sender)."""
        return self.cpu.spent.get("chatpush") if self.cpu else None

    @property
    def cpu_ms_per_notification(self) -> float | None:
        """chatpush's CPU per delivered notification (None for the sequential sender)."""
        cpu_s = self.chatpush_cpu_s
        return None if cpu_s is None else 1000 * cpu_s / self.notifications

    @property
    def verified(self) -> bool:
        return not (self.missing or self.duplicates or self.reordered_chats or self.unexpected)


def verify(run: Run, expected: dict[str, list[int]]) -> None:
    """Complete, each once, and per chat in strictly increasing index order of arrival."""
    seen: dict[str, list[int]] = defaultdict(list)
    for record in sorted(run.records, key=lambda r: r.seq):
        if record.chat_id not in expected or record.position is None:
            run.unexpected += 1
            continue
        seen[record.chat_id].append(record.position)
    for chat_id, positions in expected.items():
        got = seen.get(chat_id, [])
        run.missing += len(set(positions) - set(got))
        run.duplicates += len(got) - len(set(got))
        if any(b <= a for a, b in itertools.pairwise(got)):
            run.reordered_chats += 1


def outbox_counts(db_path: Path) -> tuple[int, int]:
    """(rows in the outbox, rows due)."""
    [(total, due)] = sqlite_rows(db_path, "SELECT count(*), count(due_at_ms) FROM outbox")
    return int(total), int(due)


def live_user_data(number: int) -> dict[str, str]:
    """A live chat's subscription: payload push of the customer's own messages too."""
    return push_user_data(f"device-{number}", notify_requestor=True, include_payload=True)


async def make_chat(
    http: aiohttp.ClientSession, base: str, number: int, events: int, gate: asyncio.Semaphore
) -> Chat:
    """Request Chat with a payload subscription; an agent joins and writes ``events`` messages."""
    async with gate:
        user_data = push_user_data(f"device-{number}", include_payload=True)
        chat = await request_chat(http, base, f"Customer {number}", user_data)
        participant = await join_agent(http, base, chat)
        for k in range(events):
            await agent_message(http, base, chat, participant, f"message {k + 1}")
        return chat


def start_chatpush(
    bench: Bench, receiver: Receiver, args: argparse.Namespace, extra: str = ""
) -> Process:
    """``chatpush serve`` delivering to ``receiver`` (``extra``: more [delivery] lines)."""
    return bench.chatpush(
        receiver.url,
        delivery=args.delivery_toml + extra,
        loop=args.loop,
        instrument=args.instrument,
    )


async def chatpush_run(
    mode: str, args: argparse.Namespace, bench: Bench, receiver: Receiver
) -> tuple[Run, list[str]]:
    """Build the backlog, release it, and wait for every notification at the receiver."""
    http = bench.http
    # restart: the hanging first deliveries must not time out (and be dropped) meanwhile
    service = start_chatpush(
        bench, receiver, args, "\ntotal_timeout_s = 600" if mode == "restart" else ""
    )
    db_path = bench.workdir / "chatpush.db"
    n = args.chats * (args.events + 1)
    run = Run(f"chatpush, release by {mode}", n, args.chats)
    await receiver.control(mode="hang" if mode == "restart" else "ok", reset=True)
    progress(f"{mode}: starting chatpush")
    service.start()
    await service.wait_ready(http)
    progress(f"{mode}: ready; writing the backlog")
    if mode == "activity":
        url = f"{service.base}/api/v1/nodes/node-1/drain"
        async with http.post(url, headers=API_HEADERS) as reply:
            await expect(reply, 200)
    started = time.monotonic()
    gate = asyncio.Semaphore(args.concurrency)
    chats = await asyncio.gather(
        *(make_chat(http, service.base, i, args.events, gate) for i in range(args.chats))
    )
    run.notes.append(f"backlog written through the APIs in {time.monotonic() - started:.1f} s")

    async def backlog_complete() -> bool:
        total, due = outbox_counts(db_path)
        return total == n and (mode == "restart" or due == 0)

    await wait_until(backlog_complete, 60, "the whole backlog in the outbox")
    progress(f"{mode}: {n} notifications waiting; releasing")
    run.cpu = CpuMeter()
    if mode == "activity":
        url = f"{service.base}/api/v1/nodes/node-1/undrain"
        async with http.post(url, headers=API_HEADERS) as reply:
            await expect(reply, 200)
        await asyncio.sleep(0.5)
        early = await receiver.count()
        run.notes.append(f"delivered after undrain, before any activity: {early} (expected 0)")
        service.profile(args.profile, f"backlog-{mode}")
        await asyncio.sleep(0.5 if args.profile else 0.0)  # py-spy attaches
        run.cpu.start({"chatpush": service.pid, "receiver": receiver.process.pid})
        counters_before = await service.counters() if args.instrument else None
        run.release_at = time.time()
        gate = asyncio.Semaphore(RELEASE_CONCURRENCY)

        async def release(chat: Chat) -> None:
            url = f"{service.base}/genesys/2/chat/{SERVICE}/{chat.chat_id}/refresh"
            form = {"secureKey": chat.secure_key, "transcriptPosition": str(args.events + 3)}
            async with gate, http.post(url, data=form) as reply:
                await expect(reply, 200)

        await asyncio.gather(*(release(chat) for chat in chats))
        run.release_s = time.time() - run.release_at
        counted = n
    else:
        service.stop()  # deliveries in flight are cut short and stay in the outbox
        progress(f"{mode}: stopped; restarting")
        await receiver.control(mode="ok", reset=True)
        service.start()
        service.profile(args.profile, f"backlog-{mode}")
        await service.wait_ready(http)
        # CPU is counted from readiness (the boot's imports are not delivery work).
        run.cpu.start({"chatpush": service.pid, "receiver": receiver.process.pid})
        counters_before = await service.counters() if args.instrument else None
        counted = n - await receiver.count()

    expected = {c.chat_id: list(range(2, args.events + 3)) for c in chats}
    bodies = await collect(run, service, receiver, expected, counters_before, counted)
    if mode == "restart":
        run.release_at = min(r.at for r in run.records)
    return run, bodies


async def live_run(
    args: argparse.Namespace, bench: Bench, receiver: Receiver
) -> tuple[Run, list[str]]:
    """Chats made and idle; then their customers send while chatpush delivers (the module's
    docstring)."""
    service = start_chatpush(bench, receiver, args)
    db_path = bench.workdir / "chatpush.db"
    n = args.live_chats * args.sends
    run = Run("chatpush, live sends", n, args.live_chats)
    await receiver.control(mode="ok", reset=True)
    progress("live: starting chatpush")
    service.start()
    await service.wait_ready(bench.http)
    target = Target("chatpush", [service], [service.base], receiver)
    await set_up_chats(
        bench.http, target, args.live_chats, args.concurrency, user_data=live_user_data
    )

    async def outbox_empty() -> bool:
        return outbox_counts(db_path)[0] == 0

    await wait_until(outbox_empty, 60, "the chats' set-up notifications delivered")
    await asyncio.sleep(0.2)  # the last answers reach the receiver's records
    await receiver.control(reset=True)
    expected = {
        c.chat_id: list(range(c.last_index + 1, c.last_index + args.sends + 1))
        for c in target.chats
    }
    progress(f"live: {args.live_chats} chats ready; {n} sends, {args.send_concurrency} in flight")
    service.profile(args.profile, "backlog-live")
    await asyncio.sleep(0.5 if args.profile else 0.0)  # py-spy attaches
    run.cpu = CpuMeter()
    run.cpu.start({"chatpush": service.pid, "receiver": receiver.process.pid})
    counters_before = await service.counters() if args.instrument else None
    run.release_at = time.time()
    refused = await drive(target, SENDERS["customer"], "raw", n, args.send_concurrency)
    run.release_s = time.time() - run.release_at
    if refused:
        raise RuntimeError(f"{refused} of {n} sends refused")
    run.notes.append(
        f"{n} sends answered in {run.release_s:.2f} s ({n / run.release_s:.0f}/s); "
        f"delivered by then: {await receiver.count()}"
    )
    return run, await collect(run, service, receiver, expected, counters_before, n)


async def collect(
    run: Run,
    service: Process,
    receiver: Receiver,
    expected: dict[str, list[int]],
    counters_before: dict[str, Any] | None,
    counted: int,
) -> list[str]:
    """Wait for every notification at the receiver, take the figures, stop chatpush, verify the
    arrivals against ``expected``; returns the bodies, for the sequential sender."""
    assert run.cpu is not None
    n = run.notifications

    async def all_arrived() -> bool:
        return await receiver.count() >= n

    await wait_until(all_arrived, n / 50 + 60, f"{n} notifications at the receiver", 0.05)
    await asyncio.sleep(0.2)  # anything extra (a duplicate) would arrive now
    run.cpu.stop()
    if counters_before is not None:
        run.counters = counters_delta(counters_before, await service.counters())
        run.counted = counted
    run.peak_rss_mb = peak_rss_kb(service.pid) / 1024
    run.records = await receiver.records()
    progress(f"{run.name}: all {n} arrived")
    bodies = await receiver.bodies()
    service.stop()
    verify(run, expected)
    return bodies


async def sequential_run(bodies: list[str], receiver: Receiver, chats: int) -> Run:
    """The GMS model: the same bodies, strictly one at a time over one keep-alive connection."""
    run = Run("sequential sender (GMS model)", len(bodies), chats)
    progress(f"sequential sender: {len(bodies)} bodies")
    await receiver.control(mode="ok", reset=True)
    run.cpu = CpuMeter()
    run.cpu.start({"receiver": receiver.process.pid})
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as sender:
        run.release_at = time.time()
        for body in bodies:
            async with sender.post(receiver.url, data=body.encode(), headers=headers) as reply:
                await reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"receiver answered {reply.status}")
    run.cpu.stop()
    run.records = await receiver.records()
    return run


async def main_async(args: argparse.Namespace) -> int:
    modes = list(MODES) if args.release == "all" else [args.release]
    results: list[tuple[Run, Run]] = []
    for mode in modes:
        workdir = Path(args.workdir) / f"chatpush-{mode}" if args.workdir else None
        async with Bench(workdir, keep=args.keep) as bench:
            receiver = await bench.receiver(delay_ms=args.delay_ms, keep_bodies=True)
            if mode == "live":
                run, bodies = await live_run(args, bench, receiver)
            else:
                run, bodies = await chatpush_run(mode, args, bench, receiver)
            results.append((run, await sequential_run(bodies, receiver, run.chats)))
    report(args, results)
    return 0 if all(run.verified for run, _ in results) else 1


def report(args: argparse.Namespace, results: list[tuple[Run, Run]]) -> None:
    info = machine()
    print(
        f"backlog: {args.chats} chats x {args.events + 1} payload notifications (live: "
        f"{args.live_chats} chats x {args.sends} sends, {args.send_concurrency} in flight), "
        f"receiver {args.delay_ms:g} ms per request; chatpush on {args.loop}; {info['cores']} "
        f"cores, Python {info['python']}, SQLite {info['sqlite']}, aiohttp {info['aiohttp']}; "
        f"chatpush {info['commit']}; {info['date']}; load average {info['load average']}"
    )
    rows = []
    for run, baseline in results:
        for r in (baseline, run):
            rows.append(
                [
                    r.name,
                    str(r.notifications),
                    f"{r.span_s:.2f}",
                    f"{r.rate:.0f}",
                    "1.0x" if r is baseline else f"{run.rate / baseline.rate:.1f}x",
                    str(r.missing),
                    str(r.duplicates),
                    str(r.reordered_chats),
                    r.cpu.share(r.chatpush_cpu_s)
                    if r.cpu and r.chatpush_cpu_s is not None
                    else "n/a",
                    "n/a"
                    if r.cpu_ms_per_notification is None
                    else f"{r.cpu_ms_per_notification:.2f}",
                    r.cpu.share(r.cpu.others_s) if r.cpu else "n/a",
                ]
            )
    headers = ["run", "notifications", "seconds", "deliveries/s", "ratio", "missing"]
    print_table(
        [
            *headers,
            "duplicates",
            "reordered chats",
            "chatpush CPU",
            "chatpush CPU ms/notification",
            "others CPU",
        ],
        rows,
        f"Benchmark 2: backlog delivery (target: chatpush >= {TARGET_RATIO:g}x the sequential "
        "sender)",
    )
    for run, baseline in results:
        ratio = run.rate / baseline.rate if baseline.rate else 0.0
        verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
        print(f"{run.name}: ratio {ratio:.1f}x, target {TARGET_RATIO:g}x {verdict}")
        if run.cpu is not None:
            print(
                f"  chatpush CPU: {run.cpu.spent['chatpush']:.1f} s over {run.cpu.wall_s:.2f} s "
                f"({run.cpu.share(run.cpu.spent['chatpush'])} of one core), "
                f"{run.cpu_ms_per_notification:.2f} ms per notification delivered; others on the "
                f"machine {run.cpu.share(run.cpu.others_s)}; the load generator "
                f"{run.cpu.share(run.cpu.own_s)}; peak RSS {run.peak_rss_mb:.0f} MB"
            )
        if run.release_s is not None and run.name.endswith("activity"):
            print(f"  release requests ({run.chats} refreshes) took {run.release_s:.2f} s")
        for note in run.notes:
            print(f"  {note}")
        if run.counters is not None:
            print_counters(run.counters, run.counted, "notification delivered", run.name)
        print(f"  order and completeness: {'verified' if run.verified else 'FAILED'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "chats": args.chats,
                    "events": args.events,
                    "live_chats": args.live_chats,
                    "sends": args.sends,
                    "send_concurrency": args.send_concurrency,
                    "loop": args.loop,
                    "runs": [
                        {
                            "name": r.name,
                            "notifications": r.notifications,
                            "seconds": r.span_s,
                            "rate": r.rate,
                            "ratio": run.rate / baseline.rate,
                            "verified": r.verified,
                            "chatpush_cpu_s": r.chatpush_cpu_s,
                            "chatpush_cpu_ms_per_notification": r.cpu_ms_per_notification,
                            "others_cpu_share": r.cpu.percent(r.cpu.others_s) / 100
                            if r.cpu
                            else None,
                            "peak_rss_mb": r.peak_rss_mb,
                            "release_s": r.release_s,
                            "notes": r.notes,
                        }
                        for run, baseline in results
                        for r in (baseline, run)
                    ],
                },
                indent=2,
            )
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chats", type=int, default=500, help="activity, restart: chats")
    parser.add_argument(
        "--events", type=int, default=8, help="activity, restart: agent messages per chat"
    )
    parser.add_argument("--live-chats", type=int, default=200, help="live: chats")
    parser.add_argument("--sends", type=int, default=10, help="live: customer sends per chat")
    parser.add_argument(
        "--send-concurrency", type=int, default=32, help="live: sends in flight (closed loop)"
    )
    parser.add_argument("--release", choices=[*MODES, "all"], default="all")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="receiver time per request")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="chats written at once while building"
    )
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="chatpush's event loop")
    add_service_options(parser, smoke="10 chats x 4, live 10 chats x 3", unit="notification")
    args = parser.parse_args()
    if args.smoke:
        args.chats, args.events, args.live_chats, args.sends = 10, 3, 10, 3
    if min(args.chats, args.events, args.live_chats, args.sends, args.send_concurrency) < 1:
        parser.error("--chats, --events, --live-chats, --sends, --send-concurrency: at least 1")
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        parser.error("--loop uvloop: uvloop is not installed (pip install uvloop)")
    return args


def main() -> int:
    exit_on_sigterm()
    args = parse_args()
    machine()  # the commit and date of the start
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
