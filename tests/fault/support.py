"""Shared by the fault tests: chatpush as a real process, an acknowledging receiver, a load.

Everything runs on 127.0.0.1: ``chatpush serve`` in a subprocess on a SQLite file of the test's
temporary directory, and, in the test process, real aiohttp servers and clients. Every wait is
bounded and says what it waited for when it runs out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

API_KEY = "fault-api-key"
HEADERS = {"X-API-Key": API_KEY}
SERVICE = "fault"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"chatpush fault tests signing key").decode()
RELIABLE = {
    "nickname": "Customer",
    "userData[GCTI_Chat_PushSubscribe]": "true",
    "userData[GCTI_GMS_PushDeviceId]": "device-1",
    "userData[GCTI_GMS_PushDeviceType]": "customhttp",
    "userData[GCTI_GMS_PushResend]": "true",
}
"""Request Chat's form for a customhttp subscription with reliable delivery."""


def now_ms() -> int:
    """Wall-clock milliseconds, the time base of chatpush's delivery trail."""
    return time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- configuration ----------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _table(lines: list[str], name: str, values: dict[str, Any]) -> None:
    lines.append(f"[{name}]")
    nested = {}
    for key, value in values.items():
        if isinstance(value, dict):
            nested[key] = value
        else:
            lines.append(f"{json.dumps(key)} = {_toml(value)}")
    for key, value in nested.items():
        _table(lines, f"{name}.{json.dumps(key)}", value)


def write_config(
    path: Path,
    *,
    port: int,
    database: Path | str,
    groups: dict[str, dict[str, Any]],
    service: dict[str, Any],
    delivery: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> Path:
    """A chatpush TOML file: [server], [database], [security], [logging], [delivery], groups.

    ``database``: a SQLite file, or a database URL (PostgreSQL)."""
    lines: list[str] = []
    server = {"host": "127.0.0.1", "port": port, "shutdown_timeout_s": 2.0, **(server or {})}
    _table(lines, "server", server)
    url = database if isinstance(database, str) else f"sqlite+aiosqlite:///{database}"
    _table(lines, "database", {"url": url})
    _table(lines, "security", {"api_keys": [API_KEY]})
    _table(lines, "logging", {"level": "WARNING", "format": "json"})
    _table(lines, "delivery", delivery or {})
    _table(lines, "services.default", service)
    for name, group in groups.items():
        _table(lines, f"groups.{json.dumps(name)}", group)
    path.write_text("\n".join(lines) + "\n")
    return path


# -- chatpush as a process --------------------------------------------------------------------


class Chatpush:
    """One ``python -m chatpush.cli --config FILE serve`` process; its output goes to a file."""

    def __init__(self, config: Path, port: int, workdir: Path) -> None:
        self.config = config
        self.port = port
        self.workdir = workdir
        self.log = workdir / f"chatpush-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Chatpush:
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatpush.cli", "--config", str(self.config), "serve"],
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no output)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until /readyz answers 200 (database reachable, background tasks running)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"chatpush exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base}/readyz") as reply:
                        if reply.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError(f"chatpush not ready after {timeout_s} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, in-flight requests and deliveries are cut."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 10 s (teardown)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def problems(self) -> list[str]:
        """Log lines of level error or critical (a 500, a task that died, a crashed delivery)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines() if self.log.exists() else []:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if "Traceback" in line:
                    out.append(line)
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                out.append(line)
        return out


# -- the chat-server side and the customer, over HTTP ------------------------------------------


@dataclass
class Chat:
    chat_id: str
    secure_key: str
    agent: int


class Api:
    """Chat API v2 and the chat-server side API of a running chatpush, over one session."""

    def __init__(self, http: aiohttp.ClientSession, base: Callable[[], str]) -> None:
        self.http = http
        self._base = base

    @property
    def base(self) -> str:
        return self._base()

    async def request_chat(self, **form: str) -> Chat:
        async with self.http.post(
            f"{self.base}/genesys/2/chat/{SERVICE}", data={**RELIABLE, **form}
        ) as reply:
            body = await reply.json()
            assert reply.status == 200, body
        assert [event["index"] for event in body["messages"]] == [1], body
        chat = Chat(body["chatId"], body["secureKey"], 0)
        party = await self.call(
            "POST", f"/chats/{chat.chat_id}/parties", {"type": "Agent", "nickname": "Bob"}, 201
        )
        chat.agent = int(party["party"]["participantId"])
        return chat

    async def call(
        self, method: str, path: str, json_body: Any = None, expect: int = 200
    ) -> dict[str, Any]:
        async with self.http.request(
            method, f"{self.base}/api/v1{path}", json=json_body, headers=HEADERS
        ) as reply:
            body: dict[str, Any] = await reply.json()
            assert reply.status == expect, (method, path, reply.status, body)
            return body

    async def subscription(self, chat_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/chats/{chat_id}/subscription")

    async def chat(self, chat_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/chats/{chat_id}")

    async def deliveries(self, chat_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while True:
            after = rows[-1]["id"] if rows else 0
            page = await self.call("GET", f"/chats/{chat_id}/deliveries?after={after}")
            rows += page["deliveries"]
            if not page["deliveries"]:
                return rows


async def gather_limited(jobs: Iterable[Awaitable[Any]], limit: int = 10) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Awaitable[Any]) -> Any:
        async with semaphore:
            return await job

    return list(await asyncio.gather(*(run(job) for job in jobs)))


# -- the receiver that acknowledges -----------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One trigger as the receiver got it."""

    chat_id: str
    position: int
    attempt: int
    webhook_id: str
    generation: int
    """Which chatpush process sent it: 0 before the restart, 1 after (the test sets it)."""
    seq: int
    """Order of arrivals and refresh starts, across all chats."""
    at_ms: int
    ended: bool
    sender: str = ""
    """The ``app-dbid`` (instance alias) of the trigger, when flex-push-content carries it."""


@dataclass(frozen=True)
class Retrieval:
    """A successful refresh: the range of indexes it returned (first > last: none)."""

    chat_id: str
    position: int
    first: int
    last: int
    started_seq: int
    """When the client decided to refresh (its first try, if it had to retry)."""
    tries: int


@dataclass
class AckReceiver:
    """A custom HTTP receiver that acknowledges every trigger as a mobile app would.

    It answers 200 at once and, in the background, calls ``refresh`` with
    ``transcriptPosition`` = ``notify-position`` and the trigger's ``secure-key``, against the
    chatpush process that is alive now (``base()``); a refresh cut by a crash is tried again until
    it is answered. It checks the Standard Webhooks signature of every POST.
    """

    base: Callable[[], str]
    secret: str = SIGNING_SECRET
    retry_for_s: float = 60.0
    answer_after_s: float = 0.0
    """How long each POST takes to answer (the trigger is recorded when it arrives)."""
    generation: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    answering: dict[str, int] = field(default_factory=dict)
    """Triggers received and not yet answered, per sender."""
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while some trigger is held unanswered (with ``answer_after_s``)."""
    retrievals: list[Retrieval] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    async def start(self) -> AckReceiver:
        app = web.Application()
        app.router.add_post("/push", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10),
            connector=aiohttp.TCPConnector(limit=0),
        )
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # no more triggers, so no more refreshes start
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    @property
    def busy(self) -> int:
        """Refreshes not yet answered."""
        return len(self._tasks)

    def _verify(self, request: web.Request, raw: bytes) -> str:
        message_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        digest = hmac.digest(key, f"{message_id}.{timestamp}.".encode() + raw, hashlib.sha256)
        expected = "v1," + base64.b64encode(digest).decode()
        if not message_id or request.headers.get("webhook-signature") != expected:
            self.problems.append(f"bad signature: {dict(request.headers)}")
        return message_id

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        webhook_id = self._verify(request, raw)
        message = json.loads(raw)["message"]
        [event] = message["messages"]
        user_data = event["userData"]
        chat_id, secure_key = user_data.get("session-id"), user_data.get("secure-key")
        if event["type"] != "PushUrl" or not chat_id or not secure_key:
            self.problems.append(f"not a trigger with session-id and secure-key: {message}")
            return web.Response(status=400)
        arrival = Arrival(
            chat_id=chat_id,
            position=int(user_data["notify-position"]),
            attempt=int(user_data["notify-attempt"]),
            webhook_id=webhook_id,
            generation=self.generation,
            seq=next(self._seq),
            at_ms=now_ms(),
            ended=bool(message["chatEnded"]),
            sender=user_data.get("app-dbid", ""),
        )
        self.arrivals.append(arrival)
        task = asyncio.create_task(self._refresh(chat_id, secure_key, arrival.position))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.answer_after_s:
            sender = arrival.sender
            self.answering[sender] = self.answering.get(sender, 0) + 1
            self.holding.set()
            try:
                await asyncio.sleep(self.answer_after_s)
            finally:
                self.answering[sender] -= 1
                if not any(self.answering.values()):
                    self.holding.clear()
        return web.Response(text="ok")

    async def _refresh(self, chat_id: str, secure_key: str, position: int) -> None:
        assert self._http is not None
        started = next(self._seq)
        deadline = time.monotonic() + self.retry_for_s
        form = {"secureKey": secure_key, "transcriptPosition": str(position)}
        for tries in itertools.count(1):
            url = f"{self.base()}/genesys/2/chat/{SERVICE}/{chat_id}/refresh"
            try:
                async with self._http.post(url, data=form) as reply:
                    body = await reply.json(content_type=None)
                    status = reply.status
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                status, body = 0, None  # chatpush is down or was killed mid-request: try again
            if status == 200:
                indexes = [int(item["index"]) for item in body["messages"]]
                first, last = (indexes[0], indexes[-1]) if indexes else (position, position - 1)
                if indexes != list(range(first, last + 1)) or (indexes and first != position):
                    self.problems.append(f"refresh {chat_id} from {position} returned {indexes}")
                self.retrievals.append(Retrieval(chat_id, position, first, last, started, tries))
                return
            if status not in (0, 503) or time.monotonic() > deadline:
                self.problems.append(f"refresh {chat_id} from {position}: {status} {body}")
                return
            await asyncio.sleep(0.05)

    def by_chat(self) -> tuple[dict[str, list[Arrival]], dict[str, list[Retrieval]]]:
        arrivals: dict[str, list[Arrival]] = {}
        for arrival in self.arrivals:
            arrivals.setdefault(arrival.chat_id, []).append(arrival)
        retrievals: dict[str, list[Retrieval]] = {}
        for retrieval in self.retrievals:
            retrievals.setdefault(retrieval.chat_id, []).append(retrieval)
        return arrivals, retrievals


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Load:
    """Agent messages posted through the chat-server side API, round robin over the chats.

    ``accepted`` keeps, per chat, the (index, text) of every event answered 201: chatpush
    committed it and must never lose it. A request cut by a crash is counted in ``cut``.
    """

    api: Api
    chats: list[Chat]
    workers: int = 8
    pause_s: float = 0.0
    accepted: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    cut: int = 0
    """Requests sent but never answered (chatpush died under them)."""
    unreachable: int = 0
    """Requests that could not connect (chatpush was down)."""
    refused: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Load:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        """Stops the workers if the test did not (it failed first)."""
        self.stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def start(self) -> Load:
        self._tasks = [
            asyncio.create_task(self._work(self.chats[worker :: self.workers], worker))
            for worker in range(self.workers)
        ]
        return self

    @property
    def count(self) -> int:
        return sum(len(events) for events in self.accepted.values())

    async def finish(self, timeout_s: float = 15.0) -> None:
        self.stop.set()
        done, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        assert not pending, f"load workers did not stop within {timeout_s} s"
        for task in done:
            task.result()

    async def _work(self, chats: list[Chat], worker: int) -> None:
        for number in itertools.count():
            if self.stop.is_set():
                return
            chat = chats[number % len(chats)]
            text = f"{chat.chat_id} w{worker} #{number}"
            payload = {"participantId": chat.agent, "type": "Message", "text": text}
            try:
                async with self.api.http.post(
                    f"{self.api.base}/api/v1/chats/{chat.chat_id}/events",
                    json=payload,
                    headers=HEADERS,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as reply:
                    status = reply.status
                    body = await reply.json(content_type=None)
            except aiohttp.ClientConnectorError:
                self.unreachable += 1
                await asyncio.sleep(0.05)
                continue
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                self.cut += 1  # no answer: committed or not, nobody was told it was
                await asyncio.sleep(0.05)
                continue
            if status == 201:
                index = int(body["event"]["index"])
                self.accepted.setdefault(chat.chat_id, []).append((index, text))
            else:
                self.refused.append(f"{status} {body}")
                await asyncio.sleep(0.05)
            if self.pause_s:
                await asyncio.sleep(self.pause_s)


async def run_load(
    load: Load, events: int, chatpush: Chatpush, *, at_least_s: float = 1.0, timeout_s: float = 30
) -> None:
    """Until the load has ``events`` more events accepted and ran ``at_least_s`` more seconds."""
    target = load.count + events
    started = time.monotonic()
    while load.count < target or time.monotonic() - started < at_least_s:
        assert chatpush.process is not None and chatpush.process.poll() is None, (
            f"chatpush exited under load:\n{chatpush.log_tail()}"
        )
        assert time.monotonic() - started < timeout_s, (
            f"only {load.count - target + events} of {events} events accepted in {timeout_s} s"
        )
        await asyncio.sleep(0.05)


# -- the end state ----------------------------------------------------------------------------


async def wait_all_acknowledged(
    api: Api,
    chats: list[Chat],
    timeout_s: float,
    receiver: AckReceiver | None = None,
    chatpush: Chatpush | None = None,
) -> dict[str, int]:
    """Until every chat's subscription has nothing outstanding or queued and its acknowledged
    position is the chat's last index; returns the last index of each chat."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = await gather_limited([_settled(api, chat) for chat in chats], limit=8)
        lagging = [state for state in states if state[1] is not None]
        if not lagging:
            return {chat_id: last for chat_id, _, last in states}
        if time.monotonic() > deadline:
            listing = "\n".join(f"{chat_id}: {why}" for chat_id, why, _ in lagging[:10])
            report = (
                f"{len(lagging)} of {len(chats)} chats not acknowledged up to their last index "
                f"after {timeout_s} s:\n{listing}"
            )
            if receiver is not None:
                report += (
                    f"\nreceiver problems: {receiver.problems[:5]}"
                    f"\nrefreshes still running: {receiver.busy}"
                )
            if chatpush is not None:
                report += f"\nchatpush log:\n{chatpush.log_tail()}"
            raise AssertionError(report)
        await asyncio.sleep(0.2)


async def _settled(api: Api, chat: Chat) -> tuple[str, str | None, int]:
    summary = (await api.chat(chat.chat_id))["chat"]
    sub = await api.subscription(chat.chat_id)
    last = int(summary["lastIndex"])
    if (
        sub["status"] != "active"
        or sub["outstandingTrigger"] is not None
        or sub["queued"]
        or sub["acknowledgedPosition"] != last
    ):
        why = (
            f"status {sub['status']}, acknowledged {sub['acknowledgedPosition']} of {last}, "
            f"outstanding {sub['outstandingTrigger']}, queued {sub['queued']}"
        )
        return chat.chat_id, why, last
    return chat.chat_id, None, last


def check_coverage(
    receiver: AckReceiver, chats: list[Chat], last_index: dict[str, int]
) -> list[str]:
    """Every event covered by an acknowledged trigger, no position skipped; the failures.

    Per chat, in the order the receiver got them: notify-positions never go down; each new
    position was preceded by refreshes (decided before it arrived) that retrieved every index
    below it; the refreshes retrieved every index of the transcript (index 1 is Request Chat's
    own reply). The receiver refreshes only because of a trigger, so an index retrieved is an
    index covered by a trigger.
    """
    arrivals, retrievals = receiver.by_chat()
    failures = []
    for chat in chats:
        got = arrivals.get(chat.chat_id, [])
        took = retrievals.get(chat.chat_id, [])
        if not got or got[0].position != 2:
            failures.append(f"{chat.chat_id}: first trigger {got[:1]}, expected position 2")
            continue
        for before, after in itertools.pairwise(got):
            if after.position < before.position:
                failures.append(f"{chat.chat_id}: position went down: {before} then {after}")
            elif after.position > before.position:
                known = {1}
                for retrieval in took:
                    if retrieval.started_seq < after.seq:
                        known.update(range(retrieval.first, retrieval.last + 1))
                gap = sorted(set(range(1, after.position)) - known)
                if gap:
                    failures.append(
                        f"{chat.chat_id}: trigger at {after.position} skipped unacknowledged "
                        f"indexes {gap[:5]}"
                    )
        known = {1}
        for retrieval in took:
            known.update(range(retrieval.first, retrieval.last + 1))
        missing = sorted(set(range(1, last_index[chat.chat_id] + 1)) - known)
        if missing:
            failures.append(f"{chat.chat_id}: indexes never retrieved: {missing[:5]}")
    return failures


def check_duplicates(receiver: AckReceiver, *, crashed: bool) -> list[str]:
    """Duplicates only as resends of the same notify-position; the failures.

    Per chat and position, attempts never go down. The same (position, attempt) twice is allowed
    only across a crash: the very notification (same ``webhook-id``, one per outbox row) that the
    killed process had sent but not yet recorded, sent again by the next one.
    """
    arrivals, _ = receiver.by_chat()
    failures = []
    for chat_id, got in arrivals.items():
        for before, after in itertools.pairwise(got):
            if after.position == before.position and after.attempt < before.attempt:
                failures.append(f"{chat_id}: attempt went down: {before} then {after}")
        copies: dict[tuple[int, int], list[Arrival]] = {}
        for arrival in got:
            copies.setdefault((arrival.position, arrival.attempt), []).append(arrival)
        for (position, attempt), same in copies.items():
            if len(same) == 1:
                continue
            resent_after_crash = (
                crashed
                and len(same) == 2
                and same[0].webhook_id == same[1].webhook_id
                and (same[0].generation, same[1].generation) == (0, 1)
            )
            if not resent_after_crash:
                failures.append(
                    f"{chat_id}: position {position} attempt {attempt} received {len(same)} "
                    f"times: {same}"
                )
    return failures


async def check_transcripts(api: Api, load: Load) -> list[str]:
    """Every event answered 201 is in its chat's transcript, at its index, with its text; the
    transcript has no gap and no repeat. Returns the failures."""
    failures = []
    for chat in load.chats:
        transcript = (await api.chat(chat.chat_id))["transcript"]
        indexes = [int(event["index"]) for event in transcript]
        if indexes != list(range(1, len(indexes) + 1)):
            failures.append(f"{chat.chat_id}: transcript indexes {indexes[:10]}...")
        text_at = {int(event["index"]): event.get("text") for event in transcript}
        for index, text in load.accepted.get(chat.chat_id, []):
            if text_at.get(index) != text:
                failures.append(
                    f"{chat.chat_id}: event {index} {text!r} was answered 201, transcript has "
                    f"{text_at.get(index)!r}"
                )
    return failures


def write_two_node_config(
    config: Path, port: int, database: Path, receiver_url: str, resend_delay_s: int
) -> None:
    """One signed group of two nodes delivering to ``receiver_url``, with reliable resends."""
    write_config(
        config,
        port=port,
        database=database,
        groups={
            "cluster": {
                "default": True,
                "nodes": ["node-1", "node-2"],
                "customhttp.url": receiver_url,
                "customhttp.signing_secret": SIGNING_SECRET,
            }
        },
        service={
            "flex-push-resend-delay": resend_delay_s,
            "flex-push-resend-attempts": 30,
            "flex-push-content": "session-id, secure-key",
        },
    )


@dataclass
class Started:
    """A two-node chatpush under test, its acknowledging receiver, an API session and the chats."""

    chatpush: Chatpush
    receiver: AckReceiver
    api: Api
    chats: list[Chat]


@contextlib.asynccontextmanager
async def two_node_chatpush(
    tmp_path: Path, processes: list[Chatpush], chats: int, resend_delay_s: int
) -> AsyncIterator[Started]:
    """``chatpush serve`` on a SQLite file with write_two_node_config, ready, with ``chats``
    reliable chats (an agent in each) and the receiver acknowledging their triggers."""
    port = free_port()
    config = tmp_path / "chatpush.toml"
    chatpush = Chatpush(config, port, tmp_path)
    processes.append(chatpush)
    receiver = await AckReceiver(base=lambda: chatpush.base).start()
    try:
        write_two_node_config(config, port, tmp_path / "chatpush.db", receiver.url, resend_delay_s)
        chatpush.start()
        await chatpush.wait_ready()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            api = Api(http, lambda: chatpush.base)
            made = await gather_limited([api.request_chat() for _ in range(chats)], limit=8)
            yield Started(chatpush, receiver, api, made)
    finally:
        await receiver.close()
