"""An HTTP server on 127.0.0.1 that answers as a test says: a redirect, 10 MB, a page of HTML,
a valid OAuth token, or nothing at all; every request's path is recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

Mode = Literal["redirect", "huge", "huge-declared", "html", "html-error", "token", "ok", "hang"]
SECRET = "INTERNAL-ADMIN-PAGE-7f3a"
"""What an internal page would reveal: must never reach an API caller."""
HUGE_BYTES = 10 * 1024 * 1024


@dataclass
class Hostile:
    mode: Mode = "html"
    hits: list[str] = field(default_factory=list)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Hostile:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        await request.read()
        if self.mode == "redirect":
            return web.Response(status=302, headers={"Location": f"{self.base_url}/landed"})
        if self.mode in ("huge", "huge-declared"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            if self.mode == "huge-declared":
                response.content_length = HUGE_BYTES
            else:
                response.enable_chunked_encoding()
            await response.prepare(request)
            chunk = b" " * 65536
            try:
                for _ in range(HUGE_BYTES // len(chunk)):
                    await response.write(chunk)
            except (ConnectionError, RuntimeError):
                pass  # the client stopped reading, as it should
            return response
        if self.mode == "html":
            return web.Response(text=f"<html>{SECRET}</html>", content_type="text/html")
        if self.mode == "html-error":
            return web.Response(status=500, text=f"<html>{SECRET}</html>", content_type="text/html")
        if self.mode == "token":
            return web.json_response(
                {"access_token": "hostile-token", "expires_in": 3600, "token_type": "Bearer"}
            )
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return web.json_response({"name": "ok"})
