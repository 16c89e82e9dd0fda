"""The null middleware: chatpush's topology with no logic and no storage (the baseline).

It serves the routes the throughput and latency benchmarks use, on the same aiohttp stack, event
loop (benchmarks/launch.py --loop) and JSON library (the standard library's, as chatpush) as
chatpush, with chats held in memory (each one's transcript, acknowledged position and secure key):

- an event comes in, as chatpush takes it: a customer's message by Chat API v2
  ``POST /genesys/2/chat/{service}/{chat_id}/send`` (form: ``secureKey``, ``message``; answered
  with the §3 envelope and no events, as chatpush answers a send without ``transcriptPosition``),
  or an agent's by ``POST /api/v1/chats/{chat_id}/events`` (JSON; answered 201 with the event);
- it gets the chat's next index and, in the background, a reliable trigger goes out to
  ``--receiver`` (the JSON of CONTRACT §7 (a), ``notify-position`` = that index, the
  ``flex-push-content`` keys ``session-id``, ``user-id`` and ``secure-key``), at most
  ``--concurrency`` POSTs in flight (chatpush's ``delivery.concurrency_per_receiver`` default);
- the receiver's ``POST /genesys/2/chat/{service}/{chat_id}/refresh`` (form: ``secureKey``,
  ``transcriptPosition``) is answered with the §3 envelope holding the chat's events from that
  position on, which are then acknowledged, as chatpush answers it.

No database, no subscription state, no resend timers, no key or API key check: whatever chatpush
does per event beyond this is the price of its logic and storage. Run by the benchmarks:

    python -m benchmarks.null_relay --port 8081 --receiver http://127.0.0.1:9000/push
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

SECURE_KEY = "0" * 32
"""The key of a chat whose customer has sent nothing (agent events only)."""
OBFUSCATED_KEY = "0" * 84
"""The trigger's ``message.secureKey``: chatpush's is the key obfuscated, this long."""
DEVICE_ID = "device-0"
USER_ID = "0" * 16
CUSTOMER = {"nickname": "customer-0", "participantId": 1, "type": "Client"}


@dataclass
class Chat:
    key: str = SECURE_KEY
    acked: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    """The transcript as on the wire: event ``i`` at ``events[i - 1]``."""

    def envelope(self, chat_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "statusCode": 0,
            "alias": "1",
            "chatEnded": False,
            "chatId": chat_id,
            "secureKey": self.key,
            "userId": USER_ID,
            "nextPosition": (messages[-1]["index"] if messages else self.acked) + 1,
            "messages": messages,
        }


class NullRelay:
    def __init__(self, receiver: str, concurrency: int) -> None:
        self.receiver = receiver
        self.slots = asyncio.Semaphore(concurrency)
        self.chats: dict[str, Chat] = {}
        self.session: ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, chat_id: str, party: dict[str, Any], kind: Any, text: Any) -> dict[str, Any]:
        """Append an event to the chat, start its trigger; returns the event as on the wire."""
        chat = self.chats.setdefault(chat_id, Chat())
        index, now_ms = len(chat.events) + 1, int(time.time() * 1000)
        event = {"from": party, "index": index, "type": kind, "utcTime": now_ms, "text": text}
        chat.events.append(event)
        task = asyncio.create_task(self.forward(chat_id, chat.key, index, now_ms))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return event

    async def send(self, request: web.Request) -> web.Response:
        chat_id = request.match_info["chat_id"]
        form = await request.post()
        self.chats.setdefault(chat_id, Chat()).key = str(form.get("secureKey", SECURE_KEY))
        self.add(chat_id, CUSTOMER, "Message", form.get("message"))
        return web.json_response(self.chats[chat_id].envelope(chat_id, []))

    async def event(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        party = {"nickname": "agent", "participantId": body.get("participantId"), "type": "Agent"}
        event = self.add(request.match_info["chat_id"], party, body.get("type"), body.get("text"))
        return web.json_response({"event": event}, status=201)

    async def forward(self, chat_id: str, key: str, index: int, now_ms: int) -> None:
        assert self.session is not None
        user_data = {
            "notify-attempt": "0",
            "notify-position": str(index),
            "session-id": chat_id,
            "user-id": USER_ID,
            "secure-key": key,
        }
        trigger = {
            "deviceId": DEVICE_ID,
            "message": {
                "secureKey": OBFUSCATED_KEY,
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
                        "userData": user_data,
                    }
                ],
            },
        }
        payload = json.dumps(trigger, separators=(",", ":")).encode()
        async with self.slots:
            with_type = {"Content-Type": "application/json"}
            try:
                async with self.session.post(self.receiver, data=payload, headers=with_type) as r:
                    await r.read()
            except (ClientError, TimeoutError):
                pass  # the receiver's refreshes show what arrived

    async def refresh(self, request: web.Request) -> web.Response:
        chat_id = request.match_info["chat_id"]
        form = await request.post()
        chat = self.chats.setdefault(chat_id, Chat())
        messages = chat.events[max(0, int(str(form.get("transcriptPosition") or 1)) - 1) :]
        if messages:
            chat.acked = max(chat.acked, messages[-1]["index"])
        return web.json_response(chat.envelope(chat_id, messages))

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def client(self, app: web.Application) -> AsyncIterator[None]:
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
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--receiver", required=True, help="URL the triggers are POSTed to")
    parser.add_argument("--concurrency", type=int, default=32, help="POSTs in flight at most")
    args = parser.parse_args(argv)
    relay = NullRelay(args.receiver, args.concurrency)
    app = web.Application()
    app.cleanup_ctx.append(relay.client)
    app.router.add_post("/genesys/2/chat/{service}/{chat_id}/send", relay.send)
    app.router.add_post("/genesys/2/chat/{service}/{chat_id}/refresh", relay.refresh)
    app.router.add_post("/api/v1/chats/{chat_id}/events", relay.event)
    app.router.add_get("/readyz", relay.readyz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
