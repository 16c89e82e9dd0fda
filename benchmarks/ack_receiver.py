"""The benchmark's custom HTTP receiver: takes each trigger, answers 200, acknowledges by refresh.

It plays the mobile backend of CONTRACT §7-8 for both targets of the benchmarks (chatpush and the
null relay): for each reliable trigger it answers 200 at once and, in the background, POSTs Chat
API v2 ``refresh`` with ``transcriptPosition`` = ``notify-position`` and the trigger's
``secure-key`` to ``--target``. The refresh reply's ``nextPosition`` - 1 is what the chat is now
acknowledged up to. Given ``--target`` several times (several chatpush instances behind no load
balancer), the refreshes go round robin over them. Run by the benchmarks as its own process:

    python -m benchmarks.ack_receiver --port 9000 --target http://127.0.0.1:8080

``GET /stats`` gives the counters, ``GET /samples`` the arrival of each trigger (session-id,
notify-position, notify-attempt, CLOCK_MONOTONIC ns: the same clock in every process of the
machine), ``POST /reset`` clears both. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

REFRESH_CONNECTIONS = 64
"""At most this many refreshes in flight: a mobile backend's HTTP client pool."""


class AckReceiver:
    def __init__(self, target: str | Sequence[str], service: str, record: bool) -> None:
        targets = [target] if isinstance(target, str) else list(target)
        if not targets:
            raise ValueError("no target")
        self.targets = [t.rstrip("/") for t in targets]
        self.target = self.targets[0]
        self._next_target = itertools.cycle(self.targets)
        self.service = service
        self.record = record
        self.session: ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.reset()

    def reset(self) -> None:
        self.triggers = 0
        self.resends = 0
        self.bad = 0
        self.refreshes = 0
        self.refresh_failures = 0
        self.refresh_inflight = 0
        self.acked: dict[str, int] = {}
        self.acked_sum = 0
        self.samples: list[tuple[str, int, int, int]] = []

    async def push(self, request: web.Request) -> web.Response:
        arrived_ns = time.monotonic_ns()
        try:
            body = json.loads(await request.read())
            user_data = body["message"]["messages"][0]["userData"]
            chat_id = user_data["session-id"]
            secure_key = user_data["secure-key"]
            position = int(user_data["notify-position"])
            attempt = int(user_data.get("notify-attempt", "0"))
        except (ValueError, KeyError, IndexError, TypeError):
            self.bad += 1
            return web.Response(status=400, text="not a reliable trigger")
        self.triggers += 1
        if attempt:
            self.resends += 1
        if self.record:
            self.samples.append((chat_id, position, attempt, arrived_ns))
        # Answer at once; acknowledge in the background, as a mobile backend would.
        task = asyncio.create_task(self.refresh(chat_id, secure_key, position))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.Response(text="ok")

    async def refresh(self, chat_id: str, secure_key: str, position: int) -> None:
        assert self.session is not None
        form = {"secureKey": secure_key}
        if position >= 0:
            form["transcriptPosition"] = str(position)
        target = next(self._next_target) if len(self.targets) > 1 else self.target
        url = f"{target}/genesys/2/chat/{self.service}/{chat_id}/refresh"
        self.refresh_inflight += 1
        try:
            async with self.session.post(url, data=form) as reply:
                payload = await reply.read()
            if reply.status != 200:
                self.refresh_failures += 1
                return
            acked = int(json.loads(payload)["nextPosition"]) - 1
        except (ClientError, TimeoutError, ValueError, KeyError):
            self.refresh_failures += 1
            return
        finally:
            self.refresh_inflight -= 1
        self.refreshes += 1
        before = self.acked.get(chat_id, 0)
        if acked > before:
            self.acked[chat_id] = acked
            self.acked_sum += acked - before

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "triggers": self.triggers,
                "resends": self.resends,
                "bad": self.bad,
                "refreshes": self.refreshes,
                "refresh_failures": self.refresh_failures,
                "refresh_inflight": self.refresh_inflight,
                "chats": len(self.acked),
                "acked_sum": self.acked_sum,
            }
        )

    async def samples_view(self, request: web.Request) -> web.Response:
        return web.json_response({"samples": self.samples})

    async def reset_view(self, request: web.Request) -> web.Response:
        # The acknowledged positions stay: they are the chats' state, not a counter of this run.
        acked = self.acked
        self.reset()
        self.acked = acked
        self.acked_sum = sum(acked.values())
        return web.json_response({"ok": True})

    async def client_ctx(self, app: web.Application) -> Any:
        self.session = ClientSession(
            timeout=ClientTimeout(total=30),
            connector=TCPConnector(limit=REFRESH_CONNECTIONS),
        )
        yield
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--target",
        required=True,
        action="append",
        help="base URL that serves refresh (several: round robin over them)",
    )
    parser.add_argument("--service", default="bench")
    parser.add_argument("--record", action="store_true", help="keep every trigger's arrival")
    args = parser.parse_args(argv)
    receiver = AckReceiver(args.target, args.service, args.record)
    app = web.Application()
    app.cleanup_ctx.append(receiver.client_ctx)
    app.router.add_post("/push", receiver.push)
    app.router.add_get("/stats", receiver.stats)
    app.router.add_get("/samples", receiver.samples_view)
    app.router.add_post("/reset", receiver.reset_view)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
