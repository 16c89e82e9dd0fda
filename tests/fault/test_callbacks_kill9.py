"""kill -9 and callbacks (docs/callbacks.md §9): no acknowledged event's push is lost, none is
doubled beyond a resend with the same webhook-id, and the timers that fell due while chatpush was
dead fire after the restart, in time order.

``chatpush serve`` runs as a real process on a SQLite file (and on PostgreSQL); a real custom HTTP
receiver (slow enough that pushes are in flight) and the fake FCM of ``chatpush.testing`` record
every push. The contact-centre side is this test, over HTTP: it posts each callback's events and
estimated waits and, when one is cut by the kill, posts it again with the same ``seq`` (the same
``at`` for a wait) until it is answered 2xx, as a real one would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.fernet import Fernet

from chatpush.callbacks.model import format_time
from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm
from tests.fault.support import (
    API_KEY,
    HEADERS,
    SIGNING_SECRET,
    Chatpush,
    free_port,
    now_ms,
    write_config,
)

GMS = "/genesys/1/service/callback/fault"
CUSTOM_DEVICES = 24
FCM_DEVICES = 8
UPCOMING_THRESHOLD_MIN = 2

Key = tuple[str, str, int | None]
"""(callback id, push event, attempt): one push of one callback."""


def key_of(payload: dict[str, Any]) -> Key:
    return payload["callbackId"], payload["event"], payload.get("attempt")


@dataclass
class Push:
    device: str
    webhook_id: str
    payload: dict[str, Any]


@dataclass
class Receiver:
    """The custom HTTP receiver: records every POST (its signature checked), answers slowly."""

    answer_after_s: float = 0.02
    pushes: list[Push] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        secret = base64.b64decode(SIGNING_SECRET.removeprefix("whsec_"))
        digest = hmac.digest(secret, f"{webhook_id}.{timestamp}.".encode() + raw, hashlib.sha256)
        if request.headers.get("webhook-signature") != "v1," + base64.b64encode(digest).decode():
            self.problems.append(f"bad signature: {dict(request.headers)}")
        body = json.loads(raw)
        self.pushes.append(Push(body["deviceId"], webhook_id, body["message"]))
        await asyncio.sleep(self.answer_after_s)
        return web.Response(text="ok")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/push", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/push"
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class ShiftedChatpush(Chatpush):
    """``chatpush serve`` whose wall clock runs ``shift_s`` ahead: a restart that long after the
    kill, without the test waiting for it (asyncio's monotonic clock is left alone)."""

    shift_s = 0

    def start(self) -> Chatpush:
        if not self.shift_s:
            return super().start()
        assert self.process is None or self.process.poll() is not None, "already running"
        boot = (
            "import runpy, sys, time\n"
            f"shift_ns = {self.shift_s * 1_000_000_000}\n"
            "real_ns, real_s = time.time_ns, time.time\n"
            "time.time_ns = lambda: real_ns() + shift_ns\n"
            "time.time = lambda: real_s() + shift_ns / 1e9\n"
            "sys.argv = ['chatpush'] + sys.argv[1:]\n"
            "runpy.run_module('chatpush.cli', run_name='__main__', alter_sys=True)\n"
        )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", boot, "--config", str(self.config), "serve"],
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A SQLite file, or a fresh migrated PostgreSQL database (requested before ``processes``,
    so the process stops before its database is dropped)."""
    if request.param == "sqlite":
        return tmp_path / "chatpush.db"
    return str(request.getfixturevalue("pg_fresh_url"))


class CcSide:
    """The contact-centre side: every post is tried again until chatpush answers it."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.cut = 0
        """Posts cut by the kill (and posted again)."""

    async def post(self, path: str, body: Any, *, deadline_s: float = 60.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.http.post(self.base + path, json=body, headers=HEADERS) as reply:
                    answer = await reply.json()
                    assert reply.status == 200, (path, body, reply.status, answer)
                    return answer
            self.cut += 1
            assert loop.time() < deadline, f"{path} {body} not answered"
            await asyncio.sleep(0.1)

    async def life(self, callback_id: str, n: int) -> list[tuple[str, int | None]]:
        """One callback's life; the pushes its acknowledged events cause, in order."""
        seq = 0

        async def event(kind: str, **fields: Any) -> None:
            nonlocal seq
            seq += 1
            await self.post(
                f"/api/v1/callbacks/{callback_id}/events", {"seq": seq, "type": kind, **fields}
            )

        async def wait(ewt_s: int) -> None:
            update = {"callbackId": callback_id, "ewt": ewt_s, "position": 1, "at": now_ms()}
            answer = await self.post("/api/v1/callbacks/ewt", {"updates": [update]})
            assert answer["ignored"] == []

        # UPCOMING once across jitter: armed (high), sent (low), high and low again: nothing.
        for ewt_s in (600, 30, 600, 20):
            await wait(ewt_s)
        await event("dial_init")
        await event("dial_done", attempt=1)
        await event("dial_init")
        await event("dial_done", attempt=1)  # the CC side repeats an attempt: the guard holds
        await event("dial_init")
        await event("dial_done", attempt=2)
        if n % 2:
            await event("dial_init")
            await event("dial_done", attempt=3)
            await event("exit", reason="FAIL_CALL_TO_CUSTOMER")  # after completion: nothing
            last: tuple[str, int | None] = ("CALLBACK_FINAL_ATTEMPT_FAILED", 3)
        else:
            await event("exit", reason="PURGED")
            last = ("CALLBACK_PURGED", None)
        return [
            ("CALLBACK_UPCOMING", None),
            ("CALLBACK_ATTEMPT_FAILED", 1),
            ("CALLBACK_ATTEMPT_FAILED", 2),
            last,
        ]


def fcm_pushes(fcm: FakeFcm) -> list[tuple[str, dict[str, Any]]]:
    return [(m["token"], json.loads(m["data"]["message"])) for m in fcm.sent]


async def test_kill9_between_cc_events_and_pushes_loses_and_doubles_none(
    tmp_path: Path, database: Path | str, processes: list[Chatpush]
) -> None:
    receiver = await Receiver().start()
    clock = FakeClock()
    clock.set(now_ms())  # the process signs its FCM assertions with the real time
    fcm = await FakeFcm(clock).start()
    port = free_port()
    config = write_config(
        tmp_path / "chatpush.toml",
        port=port,
        database=database,
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,fcm",
                "customhttp.url": receiver.url,
                "customhttp.signing_secret": SIGNING_SECRET,
            }
        },
        service={
            "flex-push-resend-delay": [1],
            "_max_notify_delivery_attempts": 10,
            "_push_notification_threshold": UPCOMING_THRESHOLD_MIN,
        },
        delivery={"lease_s": 2.0},
    )
    # FCM's credentials are stored encrypted (a credentials key), its URLs point at the fake.
    text = config.read_text().replace(
        f'"api_keys" = ["{API_KEY}"]',
        f'"api_keys" = ["{API_KEY}"]\n"credentials_key" = "{Fernet.generate_key().decode()}"',
    )
    text += f'[mobile]\nfcm_api_url = "{fcm.base_url}"\nallowed_hosts = ["{fcm.base_url}"]\n'
    config.write_text(text)
    chatpush = Chatpush(config, port, tmp_path)
    processes.append(chatpush)
    chatpush.start()
    await chatpush.wait_ready()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.put(
                f"{chatpush.base}/api/v1/groups/g1/credentials/fcm",
                json=fcm.credentials(),
                headers=HEADERS,
            ) as reply:
                assert reply.status == 200, await reply.text()
            ids: list[str] = []
            device_of: dict[str, str] = {}
            for n in range(CUSTOM_DEVICES + FCM_DEVICES):
                kind, device = (
                    ("customhttp", f"phone-{n}") if n < CUSTOM_DEVICES else ("fcm", f"tok-{n}")
                )
                form = {
                    "_customer_number": "5115",
                    "_device_os": kind,
                    "_device_notification_id": device,
                }
                async with http.post(chatpush.base + GMS, data=form) as reply:
                    body = await reply.json()
                    assert reply.status == 200, body
                ids.append(body["_id"])
                device_of[body["_id"]] = device

            cc = CcSide(http, chatpush.base)
            lives = asyncio.gather(*(cc.life(each, n) for n, each in enumerate(ids)))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(receiver.pushes) + len(fcm.sent) < 30:  # pushes in flight
                assert loop.time() < deadline, "no pushes before the kill"
                await asyncio.sleep(0.01)
            in_flight_before_kill = len(receiver.pushes) + len(fcm.sent)
            chatpush.kill()
            chatpush.start()
            await chatpush.wait_ready()
            expected_orders = dict(zip(ids, await lives, strict=True))

            expected = {
                (each, event, attempt)
                for each, order in expected_orders.items()
                for event, attempt in order
            }

            def seen() -> list[tuple[str, dict[str, Any], str | None]]:
                """(device, payload, webhook-id; None for FCM) of every push so far."""
                return [(p.device, p.payload, p.webhook_id) for p in receiver.pushes] + [
                    (token, payload, None) for token, payload in fcm_pushes(fcm)
                ]

            deadline = loop.time() + 60
            while {key_of(payload) for _, payload, _ in seen()} < expected:
                assert loop.time() < deadline, sorted(
                    expected - {key_of(payload) for _, payload, _ in seen()}
                )[:10]
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # a late repeat or a stray second push would show now
            pushes = seen()
            keys = {key_of(payload) for _, payload, _ in pushes}
            assert keys == expected, sorted(keys ^ expected)[:10]

            # A repeat is a resend of the same notification: the same webhook-id (customhttp),
            # the same payload (FCM carries no id), never a second push with another id.
            ids_of: dict[Key, set[str]] = defaultdict(set)
            for device, payload, webhook_id in pushes:
                assert device == device_of[payload["callbackId"]], (device, payload)
                ids_of[key_of(payload)].add(
                    webhook_id if webhook_id is not None else json.dumps(payload, sort_keys=True)
                )
            assert [(k, v) for k, v in ids_of.items() if len(v) > 1] == []
            # Per device, in event order (the first arrival of each).
            firsts: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
            for _, payload, _ in pushes:
                callback_id, event, attempt = key_of(payload)
                if (event, attempt) not in firsts[callback_id]:
                    firsts[callback_id].append((event, attempt))
            assert {k: v for k, v in firsts.items() if v != expected_orders[k]} == {}

            assert in_flight_before_kill < len(expected)  # the kill came with pushes pending
            assert cc.cut > 0  # and with posts cut
            assert receiver.problems == []
            assert fcm.refused_assertions == []
            assert chatpush.problems() == []
    finally:
        await receiver.close()
        await fcm.close()


async def test_timers_due_while_dead_fire_after_restart_in_time_order(
    tmp_path: Path, processes: list[Chatpush]
) -> None:
    receiver = await Receiver(answer_after_s=0).start()
    port = free_port()
    config = write_config(
        tmp_path / "chatpush.toml",
        port=port,
        database=tmp_path / "chatpush.db",
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp",
                "customhttp.url": receiver.url,
                "customhttp.signing_secret": SIGNING_SECRET,
            }
        },
        service={"_ttl": 60, "flex-push-resend-delay": [1]},
    )
    chatpush = ShiftedChatpush(config, port, tmp_path)
    processes.append(chatpush)
    chatpush.start()
    await chatpush.wait_ready()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def create(**form: str) -> str:
                form = {"_customer_number": "5115", **form}
                async with http.post(chatpush.base + GMS, data=form) as reply:
                    body = await reply.json()
                    assert reply.status == 200, body
                return str(body["_id"])

            async def cc(method: str, path: str, **kwargs: Any) -> Any:
                async with http.request(
                    method, f"{chatpush.base}/api/v1{path}", headers=HEADERS, **kwargs
                ) as reply:
                    body = await reply.json()
                    assert reply.status == 200, body
                    return body

            # Due timers (SCHEDULED callbacks, 61 s ahead) interleaved with TTL timers (immediate
            # callbacks, _ttl 60 s, created 0.3 s apart): none falls due before the kill.
            start_ms = now_ms()
            scheduled, immediate = [], []
            for n in range(8):
                desired = format_time(start_ms + 61_000 + n * 300)
                scheduled.append(await create(_desired_time=desired))
                immediate.append(
                    await create(_device_os="customhttp", _device_notification_id=f"phone-{n}")
                )
                await asyncio.sleep(0.3)
            while created := (await cc("GET", "/callbacks/commands", params={"limit": "100"}))[
                "commands"
            ]:
                await cc(
                    "POST", "/callbacks/commands/ack", json={"ids": [c["id"] for c in created]}
                )
            timers: list[tuple[int, str, str]] = []
            for each in scheduled:
                found = await cc("GET", f"/callbacks/{each}")
                timers.append((found["timers"]["dueAt"], "callback.queued", each))
            for each in immediate:
                found = await cc("GET", f"/callbacks/{each}")
                timers.append((found["timers"]["ttlAt"], "callback.cancelled", each))
            # Equal times (the same millisecond: rare) fire in the service's order: the timer's
            # kind ("due" before "ttl"), then the callback id.
            timers.sort(key=lambda timer: (timer[0], timer[1] != "callback.queued", timer[2]))
            kinds = [kind for _, kind, _ in timers]
            assert kinds != sorted(kinds), "the timers should interleave"
            assert timers[0][0] > now_ms()  # none due yet

            chatpush.kill()
            chatpush.shift_s = 100  # chatpush comes back 100 s later: every timer above is due
            chatpush.start()
            await chatpush.wait_ready()
            restarted = time.monotonic()
            fired: list[dict[str, Any]] = []
            while len(fired) < len(timers):
                assert time.monotonic() - restarted < 15, fired
                batch = (await cc("GET", "/callbacks/commands", params={"wait_s": "1"}))["commands"]
                fired += batch
                await cc("POST", "/callbacks/commands/ack", json={"ids": [c["id"] for c in batch]})
            assert [(c["type"], c["callbackId"]) for c in fired] == [
                (kind, each) for _, kind, each in timers
            ]
            for command in fired:
                state = command["callback"]["_callback_state"]
                if command["type"] == "callback.queued":
                    assert state == "QUEUED", command
                else:
                    assert (state, command["reason"]) == ("COMPLETED", "FAIL_TIMEOUT_TTL")

            # Each TTL sends its PURGED push once.
            deadline = time.monotonic() + 15
            while len({p.payload["callbackId"] for p in receiver.pushes}) < len(immediate):
                assert time.monotonic() < deadline, receiver.pushes
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            purged = sorted(
                (p.payload["callbackId"], p.payload["event"], p.payload["reason"], p.webhook_id)
                for p in receiver.pushes
            )
            assert [p[:3] for p in purged] == sorted(
                (each, "CALLBACK_PURGED", "FAIL_TIMEOUT_TTL") for each in immediate
            )
            assert receiver.problems == []
            assert chatpush.problems() == []
    finally:
        await receiver.close()
