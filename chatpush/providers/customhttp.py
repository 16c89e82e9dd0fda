"""Custom HTTP (docs/push.md): one POST of JSON per notification; any 2xx is success.

One shared ``ClientSession``; connect and total timeouts; a bounded number of requests in flight
per receiver URL, so a slow receiver holds only its own slots. Standard Webhooks signature headers
when a signing secret is configured, ``Authorization`` when credentials are. Redirects are not
followed (a 3xx is a permanent failure); an answer is read, undecoded, up to
``delivery.max_answer_bytes``, and a longer one is a permanent failure.

Outcomes: any 2xx is sent. 408, 425, 429 and 5xx, a timeout and a failed connection are
temporary; every other answer (4xx: 400, 401, 403, 404, ...; a redirect) is permanent.
``Retry-After`` (seconds or an HTTP-date) is kept on a temporary failure; on a 429 or a 503 it
is the receiver's backoff: nothing more goes to that receiver URL until it has passed, and the
notifications are held (docs/push.md, "Outcomes").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import aiohttp

from chatpush.clock import Clock, SystemClock
from chatpush.config import DeliverySettings
from chatpush.providers.base import (
    Notification,
    Provider,
    ProviderContext,
    SendResult,
    Target,
)
from chatpush.providers.http import HttpClient
from chatpush.providers.outbound import (
    OutboundError,
    read_capped,
    retry_after_seconds,
)
from chatpush.providers.registry import register

MAX_ERROR_CHARS = 300
TEMPORARY_4XX = frozenset({408, 425, 429})
"""Request Timeout, Too Early, Too Many Requests: the only 4xx a resend may cure."""
BACKOFF_STATUSES = frozenset({429, 503})
"""With ``Retry-After``: the receiver as a whole asks to wait (held, not failed)."""


def sign(secret: str, message_id: str, timestamp_s: int, payload: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value for ``payload``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp_s}.".encode() + payload
    digest = hmac.digest(key, signed, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode()


def is_temporary(status: int) -> bool:
    """A receiver's answer that a later resend may cure."""
    return status >= 500 or status in TEMPORARY_4XX


def render(notification: Notification, target: Target) -> Mapping[str, Any]:
    """The JSON body POSTed: a chat's body as it is (``customhttp.message`` replacing its
    ``message``); another source's ``renderings["customhttp"]``, or by default
    ``{"deviceId": <the destination's device>, "message": <body>}``. Handed no destination
    device (``target.device_id``, set by the dispatcher), any notification is sent as a chat's."""
    body = notification.body
    if notification.source == "chat" or target.device_id is None:
        if target.message is not None and "message" in body:
            return {**body, "message": target.message}
        return body
    given = notification.renderings.get(CustomHttpProvider.device_type)
    if given is not None:
        return given
    return {"deviceId": target.device_id, "message": body}


@register
class CustomHttpProvider(Provider):
    device_type = "customhttp"

    def __init__(
        self, settings: DeliverySettings, clock: Clock | None = None, http: HttpClient | None = None
    ) -> None:
        """``http``: the app's shared session (one of its own when None: started and closed
        with this provider)."""
        self._settings = settings
        self._clock = clock or SystemClock()
        self._backoff_until_ms: dict[str, int] = {}
        """Receiver URL -> end of the backoff it asked for (429/503 with Retry-After)."""
        self._own_http = http is None
        self._http = http or HttpClient()
        self._timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout_s, connect=settings.connect_timeout_s
        )
        self._per_receiver: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.concurrency_per_receiver)
        )

    @classmethod
    def create(cls, context: ProviderContext) -> CustomHttpProvider:
        return cls(context.settings.delivery, context.clock, context.http)

    async def start(self) -> None:
        if self._own_http:
            await self._http.start()

    async def close(self) -> None:
        if self._own_http:
            await self._http.close()

    async def send(
        self,
        target: Target,
        notification: Notification,
        *,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        """POST one notification. ``node_slot`` (the sending node's limit) is taken only once
        the receiver's own slot is held, so requests queued behind a slow receiver hold no slot
        of the node, and the node's other receivers are not held up."""
        if target.url is None:
            return SendResult("failed", 0, error="no customhttp.url configured", temporary=False)
        waiting = self._backing_off(target.url)
        if waiting is not None:
            return waiting
        message_id = notification.message_id
        body = render(notification, target)
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if target.signing_secret is not None or notification.source != "chat":
            # Another source's receiver always learns the message id (the same on every try).
            headers["webhook-id"] = message_id
            headers["webhook-timestamp"] = str(now_s)
        if target.signing_secret is not None:
            headers["webhook-signature"] = sign(target.signing_secret, message_id, now_s, payload)
        if target.authorization is not None:
            headers["Authorization"] = target.authorization
        async with self._per_receiver[target.url], node_slot or contextlib.nullcontext():
            started = time.monotonic()
            try:
                async with self._http.session.post(
                    target.url,
                    data=payload,
                    headers=headers,
                    allow_redirects=False,
                    timeout=self._timeout,
                ) as reply:
                    await read_capped(reply, self._settings.max_answer_bytes, "receiver")
                    latency_ms = int((time.monotonic() - started) * 1000)
                    if 200 <= reply.status < 300:
                        return SendResult("sent", latency_ms, http_status=reply.status)
                    return self._refusal(
                        target.url, reply.status, reply.headers.get("Retry-After"), latency_ms
                    )
            except OutboundError as exc:
                return exc.result(started)
            except TimeoutError:
                error = f"timed out after {self._settings.total_timeout_s:g} s"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return SendResult("failed", int((time.monotonic() - started) * 1000), error=error)

    def _refusal(
        self, url: str, status: int, retry_after: str | None, latency_ms: int
    ) -> SendResult:
        """A receiver's non-2xx answer as a verdict (the module's docstring has the table)."""
        temporary = is_temporary(status)
        now_ms = self._clock.now_ms()
        wait_s = retry_after_seconds(retry_after, now_ms / 1000) if temporary else None
        backoff = wait_s is not None and status in BACKOFF_STATUSES
        if backoff:
            assert wait_s is not None
            self._backoff_until_ms[url] = now_ms + int(wait_s * 1000)
        return SendResult(
            "failed",
            latency_ms,
            http_status=status,
            error=f"receiver answered {status} {_phrase(status)}".strip(),
            temporary=temporary,
            retry_after_s=wait_s,
            backoff=backoff,
        )

    def _backing_off(self, url: str) -> SendResult | None:
        """The receiver asked to wait and the wait is not over: hold this send too, untried."""
        until_ms = self._backoff_until_ms.get(url)
        if until_ms is None:
            return None
        left_ms = until_ms - self._clock.now_ms()
        if left_ms <= 0:
            del self._backoff_until_ms[url]
            return None
        return SendResult(
            "failed",
            0,
            error=f"receiver asked to wait (Retry-After): {left_ms / 1000:.0f} s more, not tried",
            retry_after_s=left_ms / 1000,
            backoff=True,
        )


def _phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (not the receiver's own words)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
