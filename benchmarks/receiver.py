"""The benchmarks' custom HTTP receiver: records each push, answers 200, acknowledges triggers.

It plays the mobile backend of CONTRACT §7-8, in its own process, for every benchmark:

- each ``POST /push`` is recorded in arrival order as (seq, epoch seconds, CLOCK_MONOTONIC ns: the
  same clock in every process of the machine, chat id, index or notify-position, notify-attempt)
  and answered 200, after ``--delay-ms``;
- with ``--refresh BASE`` (given several times: round robin over them), each reliable trigger is
  acknowledged in the background by Chat API v2 ``refresh`` with ``transcriptPosition`` =
  ``notify-position`` and the trigger's ``secure-key``; the reply's ``nextPosition`` - 1 is what
  the chat is acknowledged up to;
- in ``hang`` mode it answers nothing (for 15 minutes at most) and records nothing.

``GET /stats`` gives the counters, ``GET /records?since=K`` the records from K on (pages of 50,000),
``GET /bodies`` the bodies (``--keep-bodies``), ``POST /control?mode=ok|hang&reset=1`` switches
the mode and forgets records and counters (not the chats' acknowledged positions: they are the
chats' state). Run by benchmarks/rig.py:

    python -m benchmarks.receiver --port 9000 [--refresh http://127.0.0.1:8080] [--delay-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

REFRESH_CONNECTIONS = 64
"""At most this many refreshes in flight: a mobile backend's HTTP client pool."""
HANG_S = 900.0
PAGE = 50_000

Parsed = tuple[str | None, int | None, int | None, str | None]


def parse(raw: bytes) -> Parsed:
    """(chat id, index or notify-position, notify-attempt, secure-key) of a CONTRACT §7 body."""
    try:
        message = json.loads(raw).get("message") or {}
        first = (message.get("messages") or [{}])[0]
        user_data = first.get("userData") or {}
        chat_id = message.get("chatId")
        if chat_id in (None, "deprecated"):
            chat_id = user_data.get("session-id")
        if "notify-position" in user_data:
            position, attempt = int(user_data["notify-position"]), int(user_data["notify-attempt"])
            return chat_id, position, attempt, user_data.get("secure-key")
        index = first.get("index")
        return chat_id, None if index is None else int(index), None, None
    except (ValueError, AttributeError, IndexError, TypeError, KeyError):
        return None, None, None, None


class Receiver:
    def __init__(self, refresh: list[str], service: str, delay_ms: float, keep: bool) -> None:
        self.targets = itertools.cycle([base.rstrip("/") for base in refresh])
        self.acknowledges = bool(refresh)
        self.service = service
        self.delay_s = delay_ms / 1000
        self.keep_bodies = keep
        self.mode = "ok"
        self.session: ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.acked: dict[str, int] = {}
        self.acked_sum = 0
        self.refresh_inflight = 0
        """Refreshes under way now: a gauge, not a count of the phase, so a reset leaves it (one
        made while refreshes were in flight sent it below zero and hung wait_drained)."""
        self.reset()

    def reset(self) -> None:
        self.records: list[tuple[int, float, int, str | None, int | None, int | None]] = []
        self.bodies: list[str] = []
        self.triggers = self.resends = self.hung = 0
        self.refreshes = self.refresh_failures = 0

    async def push(self, request: web.Request) -> web.Response:
        raw = await request.read()
        arrived, arrived_ns = time.time(), time.monotonic_ns()
        if self.mode == "hang":
            self.hung += 1
            await asyncio.sleep(HANG_S)
            return web.Response(status=503, text="hung")
        chat_id, position, attempt, secure_key = parse(raw)
        self.records.append((len(self.records), arrived, arrived_ns, chat_id, position, attempt))
        if self.keep_bodies:
            self.bodies.append(raw.decode())
        if attempt is not None:
            self.triggers += 1
            self.resends += attempt > 0
            if self.acknowledges and chat_id and secure_key and position is not None:
                # Acknowledge in the background, as a mobile backend would.
                task = asyncio.create_task(self.refresh(chat_id, secure_key, position))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(text="ok")

    async def refresh(self, chat_id: str, secure_key: str, position: int) -> None:
        assert self.session is not None
        form = {"secureKey": secure_key, "transcriptPosition": str(position)}
        url = f"{next(self.targets)}/genesys/2/chat/{self.service}/{chat_id}/refresh"
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
        names = ("triggers", "resends", "hung", "refreshes", "refresh_failures")
        stats = {name: getattr(self, name) for name in names}
        stats |= {"count": len(self.records), "refresh_inflight": self.refresh_inflight}
        return web.json_response(stats | {"chats": len(self.acked), "acked_sum": self.acked_sum})

    async def records_page(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response({"records": self.records[since : since + PAGE]})

    async def bodies_all(self, request: web.Request) -> web.Response:
        return web.json_response({"bodies": self.bodies})

    async def control(self, request: web.Request) -> web.Response:
        if request.query.get("reset") == "1":
            self.reset()
        if request.query.get("mode") in ("ok", "hang"):
            self.mode = request.query["mode"]
        return web.json_response({"mode": self.mode})

    async def client(self, app: web.Application) -> AsyncIterator[None]:
        self.session = ClientSession(
            timeout=ClientTimeout(total=30), connector=TCPConnector(limit=REFRESH_CONNECTIONS)
        )
        yield
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--refresh", action="append", default=[], help="base URL serving refresh")
    parser.add_argument("--service", default="bench")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="time taken per push")
    parser.add_argument("--keep-bodies", action="store_true")
    args = parser.parse_args(argv)
    receiver = Receiver(args.refresh, args.service, args.delay_ms, args.keep_bodies)
    app = web.Application()
    app.cleanup_ctx.append(receiver.client)
    app.router.add_post("/push", receiver.push)
    app.router.add_get("/stats", receiver.stats)
    app.router.add_get("/records", receiver.records_page)
    app.router.add_get("/bodies", receiver.bodies_all)
    app.router.add_post("/control", receiver.control)
    # A short shutdown: hung requests are not waited for.
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        backlog=1024,
        shutdown_timeout=0.5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
