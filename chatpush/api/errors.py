"""The one boundary where exceptions become HTTP answers: never a traceback for a client."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chatpush.api.keys import METRICS, SETTINGS
from chatpush.errors import ChatpushError, Code, RateLimited, StorageUnavailable
from chatpush.metrics import Metrics

log = logging.getLogger("chatpush.api")

CHAT_API_PREFIX = "/genesys/2/chat/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(exc: ChatpushError, request: web.Request) -> dict[str, Any]:
    errors = [{"code": entry.code, "advice": entry.advice} for entry in exc.errors]
    if not request.path.startswith(CHAT_API_PREFIX):
        return {"errors": errors}
    body: dict[str, Any] = {
        "statusCode": exc.status_code,
        "alias": request.app[SETTINGS].server.alias,
        "chatEnded": exc.chat_ended,
        "messages": [],
        "errors": errors,
    }
    chat_id = request.match_info.get("chat_id")
    if chat_id:
        body["chatId"] = chat_id
    return body


def _from_http(exc: web.HTTPException) -> ChatpushError:
    error = ChatpushError(Code.INVALID_PARAMETER, exc.reason)
    error.http_status = exc.status
    return error


def count_refusal(metrics: Metrics, exc: ChatpushError) -> None:
    """A client's request refused (4xx), by error code: wrong secure keys, rate limits, full
    chats, refused device proofs... show at ``/metrics`` as they happen."""
    if exc.http_status < 500:
        for entry in exc.errors:
            metrics.inc("chatpush_requests_refused_total", code=str(entry.code))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ChatpushError as exc:
        response = web.json_response(error_body(exc, request), status=exc.http_status)
        count_refusal(request.app[METRICS], exc)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        if request.content.exception() is not None:
            # The body did not decode to its end (a broken Content-Encoding): aiohttp closes this
            # connection after the answer, so say so, or the client's next request on it fails.
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(("/genesys/", "/api/")):
            raise
        mapped = _from_http(exc)
        response = web.json_response(error_body(mapped, request), status=exc.status)
        if "Allow" in exc.headers:  # a 405 must say which methods are allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        # A bug of ours, never the client's input: logged with its traceback, answered plainly.
        log.exception("unhandled error", extra={"action": "request_failed", "path": request.path})
        internal = StorageUnavailable("internal error, retry later")
        return web.json_response(error_body(internal, request), status=500)
