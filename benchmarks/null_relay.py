"""The null middleware: chatpush's topology with no logic and no storage (the baseline).

It serves the two routes the benchmarks use, on the same aiohttp stack as chatpush:

- ``POST /api/v1/chats/{chat_id}/events``: reads the JSON event, gives it the chat's next index (a
  counter in memory), answers 201 with the event at once and, in the background, POSTs a reliable
  trigger (the JSON shape of CONTRACT §7 (a), with ``notify-position`` = that index and the
  ``session-id``/``secure-key`` a receiver needs) to ``--receiver``, at most ``--concurrency`` POSTs
  in flight (chatpush's ``delivery.concurrency_per_receiver`` default);
- ``POST /genesys/2/chat/{service}/{chat_id}/refresh``: reads the form and answers a §3 envelope
  whose ``nextPosition`` is the chat's next index, as if every event had been returned.

No database, no subscription state, no resend timers, no API key check: whatever chatpush does per
event beyond this is the price of its logic and storage. Run by the benchmarks as its own process:

    python -m benchmarks.null_relay --port 8081 --receiver http://127.0.0.1:9000/push
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

SECURE_KEY = "0" * 32
USER_ID = "0" * 16


class NullRelay:
    def __init__(self, receiver: str, concurrency: int) -> None:
        self.receiver = receiver
        self.slots = asyncio.Semaphore(concurrency)
        self.index: dict[str, int] = {}
        self.session: ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.forwarded = 0
        self.failed = 0

    async def event(self, request: web.Request) -> web.Response:
        chat_id = request.match_info["chat_id"]
        body = json.loads(await request.read())
        index = self.index.get(chat_id, 0) + 1
        self.index[chat_id] = index
        now_ms = int(time.time() * 1000)
        task = asyncio.create_task(self.forward(chat_id, index, now_ms))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        event = {
            "from": {
                "nickname": "agent",
                "participantId": body.get("participantId"),
                "type": "Agent",
            },
            "index": index,
            "type": body.get("type"),
            "utcTime": now_ms,
            "text": body.get("text"),
        }
        return web.json_response({"event": event}, status=201)

    async def forward(self, chat_id: str, index: int, now_ms: int) -> None:
        assert self.session is not None
        trigger = {
            "deviceId": chat_id,
            "message": {
                "secureKey": SECURE_KEY,
                "chatId": "deprecated",
                "userId": "deprecated",
                "alias": "0",
                "nextPosition": index + 1,
                "chatEnded": False,
                "statusCode": 0,
                "monitored": False,
                "messages": [
                    {
                        "from": {"nickname": "", "participantId": 0, "type": "Client"},
                        "index": 0,
                        "text": "PUSH-NOTIFICATION",
                        "type": "PushUrl",
                        "utcTime": now_ms,
                        "userData": {
                            "notify-attempt": "0",
                            "notify-position": str(index),
                            "session-id": chat_id,
                            "user-id": USER_ID,
                            "secure-key": SECURE_KEY,
                        },
                    }
                ],
            },
        }
        payload = json.dumps(trigger, separators=(",", ":")).encode()
        async with self.slots:
            try:
                async with self.session.post(
                    self.receiver, data=payload, headers={"Content-Type": "application/json"}
                ) as reply:
                    await reply.read()
                ok = 200 <= reply.status < 300
            except (ClientError, TimeoutError):
                ok = False
        if ok:
            self.forwarded += 1
        else:
            self.failed += 1

    async def refresh(self, request: web.Request) -> web.Response:
        chat_id = request.match_info["chat_id"]
        await request.post()
        return web.json_response(
            {
                "statusCode": 0,
                "alias": "1",
                "chatEnded": False,
                "chatId": chat_id,
                "secureKey": SECURE_KEY,
                "userId": USER_ID,
                "nextPosition": self.index.get(chat_id, 0) + 1,
                "messages": [],
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"forwarded": self.forwarded, "failed": self.failed})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def client_ctx(self, app: web.Application) -> Any:
        # As chatpush's custom HTTP provider: one session, keep-alive, no connector limit.
        self.session = ClientSession(
            timeout=ClientTimeout(total=15, connect=5),
            connector=TCPConnector(limit=0, limit_per_host=0),
        )
        yield
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--receiver", required=True, help="URL the triggers are POSTed to")
    parser.add_argument("--concurrency", type=int, default=32, help="POSTs in flight at most")
    args = parser.parse_args(argv)
    relay = NullRelay(args.receiver, args.concurrency)
    app = web.Application()
    app.cleanup_ctx.append(relay.client_ctx)
    app.router.add_post("/api/v1/chats/{chat_id}/events", relay.event)
    app.router.add_post("/genesys/2/chat/{service}/{chat_id}/refresh", relay.refresh)
    app.router.add_get("/stats", relay.stats)
    app.router.add_get("/healthz", relay.healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
