"""A deadline on receiving a request body (``server.body_read_timeout_s``), for every route.

aiohttp waits for a body as long as its client keeps sending: one byte every few seconds holds a
connection (and a handler) open for ever. This middleware bounds the time from the headers to
the body's last byte, CometD long-polling included (a websocket has no body):

- A body with a ``Content-Length`` of up to ``WAIT_WHOLE_BYTES`` and no ``Content-Encoding``,
  which is every body a browser or a mobile SDK sends: the handler runs only once the body is
  all there (aiohttp buffers it). Past the deadline the answer is 408 and the handler never
  ran. aiohttp then reads and drops what still comes for its lingering time (10 s) and closes
  the connection, so the client gets its 408 rather than a reset.
- A chunked, compressed or larger body: the handler runs at once (it must read for more to
  arrive) and a timer fails the body stream at the deadline, so the handler's read raises
  ``BodyTimeout`` (408 through the error middleware) before it has changed anything; the
  connection is closed at once, which a client still sending may see as a reset.

Once the body is complete the deadline does nothing: a CometD connect held after its body
arrived is not cut. The deadline is on the event loop's own (real) time, as aiohttp's socket
timeouts are, not on the injectable clock: it bounds what a socket does, not when chat events
happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from chatpush.api.errors import error_body
from chatpush.api.keys import METRICS, SETTINGS
from chatpush.errors import ChatpushError, Code

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WAIT_WHOLE_BYTES = 64 * 1024
"""Bodies up to this size are waited for whole before their handler runs: far below the unread
bytes at which aiohttp stops reading a socket (twice its read_bufsize, 2 x 256 KiB in 3.14)."""


class BodyTimeout(ChatpushError, TimeoutError):
    """A TimeoutError too: aiohttp's lingering read after the answer then closes the connection
    quietly instead of logging the failed read as an unhandled exception."""

    http_status = 408

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            Code.BODY_TIMEOUT, f"the request body did not arrive within {timeout_s:g} s"
        )


@web.middleware
async def body_timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    body = request.content
    if not request.body_exists or body.is_eof():
        return await handler(request)
    timeout_s = request.app[SETTINGS].server.body_read_timeout_s
    length = request.content_length
    # A compressed body grows as aiohttp decodes it: it might not fit the buffer.
    encoded = hdrs.CONTENT_ENCODING in request.headers
    if length is not None and length <= WAIT_WHOLE_BYTES and not encoded:
        try:
            async with asyncio.timeout(timeout_s):
                await body.wait_eof()
        except TimeoutError:
            request.app[METRICS].inc("chatpush_body_read_timeouts_total")
            response = web.json_response(
                error_body(BodyTimeout(timeout_s), request), status=BodyTimeout.http_status
            )
            response.force_close()
            return response
        except Exception:
            pass  # a body that does not decode: the handler's read meets the same error
        return await handler(request)

    def expire() -> None:
        if body.is_eof() or body.exception() is not None:
            return
        request.app[METRICS].inc("chatpush_body_read_timeouts_total")
        body.set_exception(BodyTimeout(timeout_s))

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await handler(request)
    finally:
        timer.cancel()
