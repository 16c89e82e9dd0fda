"""A deadline on receiving a request body (``server.body_read_timeout_s``), for every route.

aiohttp waits for a body as long as its client keeps sending: one byte every few seconds holds a
connection (and a handler) open for ever. When a request has a body that has not fully arrived,
this middleware arms a timer; if the body is still incomplete when it fires, the body stream
fails with ``BodyTimeout``, so whoever reads it (a form, a JSON body, CometD long-polling) gets a
408 through the error middleware, which closes the connection. Handlers read their body before
they change anything, so nothing has changed. Once the body is complete the timer does nothing:
a long-polling connect held after its body arrived is not cut.

The deadline is on the event loop's own (real) time, as aiohttp's socket timeouts are, not on
the injectable clock: it bounds what a socket does, not when chat events happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from chatpush.api.keys import METRICS, SETTINGS
from chatpush.errors import ChatpushError, Code

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(ChatpushError):
    http_status = 408


@web.middleware
async def body_timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    body = request.content
    if not request.body_exists or body.is_eof():
        return await handler(request)
    timeout_s = request.app[SETTINGS].server.body_read_timeout_s

    def expire() -> None:
        if body.is_eof() or body.exception() is not None:
            return
        request.app[METRICS].inc("chatpush_body_read_timeouts_total")
        body.set_exception(
            BodyTimeout(
                Code.INVALID_PARAMETER,
                f"the request body did not arrive within {timeout_s:g} s",
            )
        )

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await handler(request)
    finally:
        timer.cancel()
