"""Real HTTP receivers on 127.0.0.1, port 0: they record what they get and fail when told to."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

RELIABLE_PUSH = {
    "userData[GCTI_Chat_PushSubscribe]": "true",
    "userData[GCTI_GMS_PushDeviceId]": "device-1",
    "userData[GCTI_GMS_PushDeviceType]": "customhttp",
    "userData[GCTI_GMS_PushResend]": "true",
}
"""Request Chat's userData for a customhttp subscription with reliable delivery."""


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes


@dataclass
class Receiver:
    """A custom HTTP receiver. ``mode``: "ok", "error" (500), "hang" (never answers)."""

    mode: str = "ok"
    status: int = 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    server: TestServer | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/push"))

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        # JSON, or a text (a published string goes to httpcb as text/plain): {"text": ...}.
        text = request.content_type == "text/plain"
        body = {"text": raw.decode()} if text else json.loads(raw)
        self.received.append(Received(body, dict(request.headers), raw))
        self.arrived.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "error":
            return web.Response(status=500, text="receiver broke")
        return web.Response(status=self.status, text="ok")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/push", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def triggers(self) -> list[tuple[str, str]]:
        """(notify-position, notify-attempt) of every trigger received, in order."""
        out = []
        for item in self.received:
            user_data = item.body["message"]["messages"][0]["userData"]
            out.append((user_data["notify-position"], user_data["notify-attempt"]))
        return out
