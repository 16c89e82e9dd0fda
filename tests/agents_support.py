"""Agent alerts in tests: the outbox rings are handed to until the delivery platform's is wired
(docs/agents.md), and event builders in the contact centre's shape."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from chatpush.agents.outbound import AgentPush


@dataclass(slots=True)
class RecordingOutbox:
    """Takes rings and cancels as the platform's ``enqueue`` does (a message id each, inside the
    caller's transaction) and keeps them in order for the test to read."""

    pushes: list[tuple[str, AgentPush]] = field(default_factory=list)
    pokes: int = 0

    def enqueue(self, conn: Connection, pushes: Sequence[AgentPush], now_ms: int) -> list[str]:
        ids = [secrets.token_hex(16) for _ in pushes]
        self.pushes.extend(zip(ids, pushes, strict=True))
        return ids

    def poke(self) -> None:
        self.pokes += 1

    def of_kind(self, kind: str) -> list[AgentPush]:
        return [push for _, push in self.pushes if push.kind == kind]

    def clear(self) -> None:
        self.pushes.clear()


def event(
    event_type: str,
    conversation_id: str = "conv-abc-123",
    member_id: str | None = "agent-1",
    *,
    member_type: str = "user",
    media_type: str | None = "voice",
    **data: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "queueId": "12345678-1234-1234-1234-123456789012",
        "memberType": member_type,
        "conversationId": conversation_id,
        **data,
    }
    if member_id is not None:
        body["memberId"] = member_id
    if media_type is not None:
        body["mediaType"] = media_type
    return {"eventType": event_type, "timestamp": "2023-10-27T10:00:00.000Z", "data": body}


def added(conversation_id: str = "conv-abc-123", member_id: str = "agent-1", **kw: Any) -> Any:
    return event("routing.queue.member.added", conversation_id, member_id, **kw)


def removed(conversation_id: str = "conv-abc-123", member_id: str = "agent-1", **kw: Any) -> Any:
    return event("routing.queue.member.removed", conversation_id, member_id, **kw)


def deleted(conversation_id: str = "conv-abc-123") -> Any:
    return event("routing.conversation.deleted", conversation_id, None)


def connected(conversation_id: str = "conv-abc-123", member_id: str = "agent-1") -> Any:
    return event("routing.conversation.updated", conversation_id, member_id, status="connected")


# -- a WebSocket event source on 127.0.0.1 -------------------------------------------------------

import asyncio  # noqa: E402
import json  # noqa: E402
from collections.abc import Callable  # noqa: E402

from aiohttp import WSMsgType, web  # noqa: E402


class EventSource:
    """A real WebSocket server standing for the contact centre's event stream. ``mode``:
    ``accept`` (keep the connection; the test sends with :meth:`send`), ``refuse`` (answer the
    handshake with 503), ``drop`` (accept, then close at once). Records every attempt with the
    (fake) clock's time, the Authorization header and the connections open at once."""

    def __init__(self, now_ms: Callable[[], int], mode: str = "accept") -> None:
        self.mode = mode
        self._now_ms = now_ms
        self.attempts: list[int] = []
        self.authorizations: list[str | None] = []
        self.open: set[web.WebSocketResponse] = set()
        self.most_open = 0
        self.connected = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> EventSource:
        app = web.Application()
        app.router.add_get("/stream", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"ws://{host}:{port}/stream"
        return self

    async def close(self) -> None:
        for ws in list(self.open):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts.append(self._now_ms())
        self.authorizations.append(request.headers.get("Authorization"))
        if self.mode == "refuse":
            return web.Response(status=503, text="maintenance")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self.mode == "drop":
            await ws.close()
            return ws
        self.open.add(ws)
        self.most_open = max(self.most_open, len(self.open))
        self.connected.set()
        try:
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.open.discard(ws)
            if not self.open:
                self.connected.clear()
        return ws

    async def send(self, *payloads: object) -> None:
        """Each payload as one text message on every open connection (a str as it is)."""
        for ws in list(self.open):
            for payload in payloads:
                await ws.send_str(payload if isinstance(payload, str) else json.dumps(payload))

    async def drop_all(self) -> None:
        for ws in list(self.open):
            await ws.close()


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait (real time) until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.005)
