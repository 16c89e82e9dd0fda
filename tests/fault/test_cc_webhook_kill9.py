"""kill -9 and the contact-centre side's webhook (docs/callbacks.md §4.2): ``chatpush serve`` as a
real process on a SQLite file, a real signed-webhook receiver that refuses each command's first
try. Killed while commands are being sent and retried, then started again: every command is
taken in the end, each always under one ``webhook-id`` and validly signed, and no callback's
command arrives before the one before it was taken (at-least-once: a repeat is allowed, a skip or
an overtaking is not)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fault.support import Chatpush, free_port, write_config

SECRET = "whsec_" + base64.b64encode(b"the-contact-centre-side-secret!!").decode()
CALLBACKS = 16
GMS = "/genesys/1/service/callback/fault"


@dataclass
class CcSide:
    """Records every POST; answers 500 to each command's first try, 204 after, slowly."""

    answer_after_s: float = 0.03
    posts: list[tuple[str, str, int, str, bool]] = field(default_factory=list)
    """(command id, callback id, seq, webhook-id, taken) in arrival order."""
    problems: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = request.headers
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + raw
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        expected = "v1," + base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()
        if headers.get("webhook-signature") != expected:
            self.problems.append(f"bad signature on {headers['webhook-id']}")
        body = json.loads(raw)
        first = not any(post[0] == body["id"] for post in self.posts)
        await asyncio.sleep(self.answer_after_s)
        self.posts.append(
            (body["id"], body["callbackId"], body["seq"], headers["webhook-id"], not first)
        )
        return web.Response(status=500 if first else 204)

    async def start(self) -> CcSide:
        app = web.Application()
        app.router.add_post("/commands", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/commands"
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def taken(self) -> set[str]:
        return {post[0] for post in self.posts if post[4]}


async def until(done: Callable[[], bool], timeout_s: float) -> None:
    """Until ``done()``, looking every 20 ms, at most ``timeout_s`` (the caller asserts)."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110 (a condition, no event)
        await asyncio.sleep(0.02)


async def test_commands_survive_a_kill_in_order_under_one_webhook_id(
    tmp_path: Path, processes: list[Chatpush]
) -> None:
    side = await CcSide().start()
    port = free_port()
    config = write_config(
        tmp_path / "chatpush.toml",
        port=port,
        database=tmp_path / "chatpush.db",
        groups={"main": {"default": True, "nodes": ["n1"], "pushEnabled": "customhttp"}},
        service={},
    )
    with config.open("a") as out:
        out.write(
            f'[callback]\ncc_webhook_url = "{side.url}"\n'
            f'cc_webhook_signing_secret = "{SECRET}"\ncc_webhook_retry_delay = "1"\n'
        )
    chatpush = Chatpush(config, port, tmp_path).start()
    processes.append(chatpush)
    try:
        await chatpush.wait_ready()
        async with aiohttp.ClientSession() as http:
            ids = []
            for _ in range(CALLBACKS):
                async with http.post(
                    chatpush.base + GMS, data={"_customer_number": "5115"}
                ) as reply:
                    assert reply.status == 200, await reply.text()
                    ids.append((await reply.json())["_id"])
            for callback_id in ids:
                async with http.delete(f"{chatpush.base}{GMS}/{callback_id}") as reply:
                    assert reply.status == 200, await reply.text()
            # Killed once some commands were taken and others are between their tries.
            await until(lambda: len(side.taken()) >= CALLBACKS // 2, 30)
            chatpush.kill()
            assert len(side.taken()) < 2 * CALLBACKS, "all taken before the kill: nothing tested"
            chatpush.start()
            await chatpush.wait_ready()
            await until(lambda: len(side.taken()) >= 2 * CALLBACKS, 60)
        assert len(side.taken()) == 2 * CALLBACKS, chatpush.log_tail()
        assert side.problems == []
        webhook_ids: defaultdict[str, set[str]] = defaultdict(set)
        for command_id, _callback, _seq, webhook_id, _taken in side.posts:
            webhook_ids[command_id].add(webhook_id)
        assert all(len(each) == 1 for each in webhook_ids.values()), webhook_ids
        # Per callback: nothing of seq 2 arrives before seq 1 was taken.
        by_callback: defaultdict[str, list[Any]] = defaultdict(list)
        for _command, callback_id, seq, _webhook_id, taken in side.posts:
            by_callback[callback_id].append((seq, taken))
        assert set(by_callback) == set(ids)
        for callback_id, arrivals in by_callback.items():
            first_taken = arrivals.index((1, True))
            assert all(seq == 1 for seq, _ in arrivals[:first_taken]), (callback_id, arrivals)
            assert (2, True) in arrivals[first_taken:], (callback_id, arrivals)
        assert chatpush.problems() == []
    finally:
        await side.close()
