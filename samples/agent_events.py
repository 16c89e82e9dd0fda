#!/usr/bin/env python3
"""An event simulator for agent alerts (docs/agents.md): plays the contact centre's routing
events to chatpush, as its webhook or as its event stream.

Register devices and ring an agent, then cancel (the webhook, with a chat-server key):

    python samples/agent_events.py --chatpush http://127.0.0.1:8080 --api-key KEY \
        --agent agent-1 --device customhttp:desk-1 --device ios:<APNs token> \
        ring --then deleted

``--then`` is ``deleted``, ``removed``, ``connected``, ``answered`` (the first device answers:
the others get a cancel) or ``none``; ``--after`` is the wait before it (seconds).

A steady load of rings (each a new conversation, agents taken in turn), for a first look at
latency under load:

    python samples/agent_events.py --chatpush http://127.0.0.1:8080 --api-key KEY \
        --agents 50 load --rate 200 --seconds 10

Or serve a WebSocket event stream that chatpush connects to (``agents.stream_url =
"ws://127.0.0.1:8765/stream"``), ringing the agents in turn every ``--every`` seconds and
cancelling each ring ``--after`` seconds later:

    python samples/agent_events.py --agent agent-1 stream --port 8765 --every 5

Only the Python standard library and aiohttp are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web


def event(kind: str, conversation: str, agent: str | None, **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"queueId": "sample-queue", "conversationId": conversation, **data}
    if agent is not None:
        body.update(memberId=agent, memberType="user", mediaType="voice")
    return {
        "eventType": f"routing.{kind}",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": body,
    }


def ring(conversation: str, agent: str) -> dict[str, Any]:
    return event("queue.member.added", conversation, agent)


def cancel(how: str, conversation: str, agent: str) -> dict[str, Any]:
    if how == "deleted":
        return event("conversation.deleted", conversation, None)
    if how == "removed":
        return event("queue.member.removed", conversation, agent)
    return event("conversation.updated", conversation, agent, status="connected")


class Chatpush:
    def __init__(self, session: ClientSession, url: str, api_key: str) -> None:
        self.session, self.url, self.headers = session, url.rstrip("/"), {"X-API-Key": api_key}

    async def call(self, method: str, path: str, body: Any) -> Any:
        async with self.session.request(
            method, self.url + path, json=body, headers=self.headers
        ) as response:
            answer = await response.json()
            if response.status >= 300:
                raise SystemExit(f"{method} {path}: {response.status} {answer}")
            return answer

    async def events(self, *events: Any) -> Any:
        return await self.call("POST", "/api/v1/agent-events", list(events))


async def register(chatpush: Chatpush, agent: str, devices: list[str]) -> list[str]:
    ids = []
    for spec in devices:
        platform, _, token = spec.partition(":")
        answer = await chatpush.call(
            "POST", f"/api/v1/agents/{agent}/devices", {"platform": platform, "token": token}
        )
        print(f"registered {platform} device {answer['id']} for {agent}", flush=True)
        ids.append(str(answer["id"]))
    return ids


async def play_ring(args: argparse.Namespace, chatpush: Chatpush, ids: list[str]) -> None:
    conversation = args.conversation or f"conv-{uuid.uuid4().hex[:12]}"
    print(f"ring {conversation}: {await chatpush.events(ring(conversation, args.agent))}")
    if args.then == "none":
        return
    await asyncio.sleep(args.after)
    if args.then == "answered":
        if not ids:
            raise SystemExit("--then answered needs a --device (the first one answers)")
        path = f"/api/v1/agents/{args.agent}/answered/{conversation}"
        print(f"answered on {ids[0]}: {await chatpush.call('POST', path, {'deviceId': ids[0]})}")
    else:
        answer = await chatpush.events(cancel(args.then, conversation, args.agent))
        print(f"{args.then} {conversation}: {answer}")


async def play_load(args: argparse.Namespace, chatpush: Chatpush) -> None:
    agents = itertools.cycle([f"{args.agent}-{n}" for n in range(args.agents)])
    interval_s, total = 1 / args.rate, int(args.rate * args.seconds)
    start, latencies_ms = time.perf_counter(), []

    async def one(n: int) -> None:
        sent = time.perf_counter()
        await chatpush.events(ring(f"load-{uuid.uuid4().hex[:12]}-{n}", next(agents)))
        latencies_ms.append((time.perf_counter() - sent) * 1000)

    tasks = []
    for n in range(total):
        await asyncio.sleep(max(0.0, start + n * interval_s - time.perf_counter()))
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    latencies_ms.sort()
    p = lambda q: latencies_ms[min(len(latencies_ms) - 1, int(q * len(latencies_ms)))]  # noqa: E731
    print(
        f"{total} rings in {time.perf_counter() - start:.1f} s; accepted in "
        f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms"
    )


async def serve_stream(args: argparse.Namespace) -> None:
    clients: set[web.WebSocketResponse] = set()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        print(f"chatpush connected ({request.headers.get('Authorization', 'no token')})")
        clients.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            clients.discard(ws)
        return ws

    async def send(payload: Any) -> None:
        for ws in list(clients):
            await ws.send_str(json.dumps(payload))

    app = web.Application()
    app.router.add_get("/stream", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"event stream on ws://{args.host}:{args.port}/stream", flush=True)
    for n in itertools.count():
        await asyncio.sleep(args.every)
        conversation = f"stream-{n}-{uuid.uuid4().hex[:8]}"
        await send(ring(conversation, args.agent))
        print(f"ring {conversation} to {len(clients)} connection(s)", flush=True)
        loop = asyncio.get_running_loop()
        loop.call_later(
            args.after, lambda c=conversation: asyncio.ensure_future(send(cancel("deleted", c, "")))
        )


async def main(args: argparse.Namespace) -> None:
    if args.command == "stream":
        await serve_stream(args)
        return
    async with ClientSession(timeout=ClientTimeout(total=30)) as session:
        chatpush = Chatpush(session, args.chatpush, args.api_key)
        if args.command == "ring":
            ids = await register(chatpush, args.agent, args.device)
            await play_ring(args, chatpush, ids)
        else:
            for n in range(args.agents):  # two devices each
                agent = f"{args.agent}-{n}"
                devices = [f"{args.platform}:{agent}-phone", f"{args.platform}:{agent}-desk"]
                await register(chatpush, agent, devices)
            await play_load(args, chatpush)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chatpush", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--agent", default="agent-1")
    parser.add_argument("--agents", type=int, default=10, help="load: how many agents")
    parser.add_argument(
        "--device", action="append", default=[], help="platform:token, registered first"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("ring", help="ring the agent once, then cancel")
    one.add_argument("--conversation")
    one.add_argument(
        "--then", default="deleted", choices=["deleted", "removed", "connected", "answered", "none"]
    )
    one.add_argument("--after", type=float, default=1.0)
    load = commands.add_parser("load", help="ring at a steady rate")
    load.add_argument("--rate", type=float, default=200.0)
    load.add_argument("--seconds", type=float, default=10.0)
    load.add_argument("--platform", default="customhttp", help="of the agents' two devices each")
    stream = commands.add_parser("stream", help="serve a WebSocket event stream")
    stream.add_argument("--host", default="127.0.0.1")
    stream.add_argument("--port", type=int, default=8765)
    stream.add_argument("--every", type=float, default=5.0)
    stream.add_argument("--after", type=float, default=3.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse(sys.argv[1:])))
