"""Custom HTTP (docs/push.md): one POST of JSON per notification; any 2xx is success.

One shared ``ClientSession``; connect and total timeouts; a bounded number of requests in flight
per receiver URL, so a slow receiver holds only its own slots. Standard Webhooks signature headers
when a signing secret is configured, ``Authorization`` when credentials are. Redirects are not
followed (a 3xx is a permanent failure); an answer is read, undecoded, up to
``delivery.max_answer_bytes``, and a longer one is a permanent failure.
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
from http import HTTPStatus
from typing import Any

import aiohttp

from chatpush.config import DeliverySettings
from chatpush.providers.base import SendResult
from chatpush.providers.outbound import NO_COMPRESSION, OutboundError, read_capped
from chatpush.routing.router import Target

MAX_ERROR_CHARS = 300


def sign(secret: str, message_id: str, timestamp_s: int, payload: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value for ``payload``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp_s}.".encode() + payload
    digest = hmac.digest(key, signed, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode()


class CustomHttpProvider:
    def __init__(self, settings: DeliverySettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._per_receiver: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.concurrency_per_receiver)
        )

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=self._settings.total_timeout_s, connect=self._settings.connect_timeout_s
            ),
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            json_serialize=json.dumps,
            headers=NO_COMPRESSION,
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        target: Target,
        body: dict[str, Any],
        *,
        chat_id: str,
        message_id: str,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        """POST one notification. ``node_slot`` (the sending node's limit) is taken only once
        the receiver's own slot is held, so requests queued behind a slow receiver hold no slot
        of the node, and the node's other receivers are not held up."""
        if target.url is None:
            return SendResult("failed", 0, error="no customhttp.url configured", temporary=False)
        assert self._session is not None, "provider not started"
        if target.message is not None and "message" in body:
            body = {**body, "message": target.message}
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if target.signing_secret is not None:
            headers["webhook-id"] = message_id
            headers["webhook-timestamp"] = str(now_s)
            headers["webhook-signature"] = sign(target.signing_secret, message_id, now_s, payload)
        if target.authorization is not None:
            headers["Authorization"] = target.authorization
        async with self._per_receiver[target.url], node_slot or contextlib.nullcontext():
            started = time.monotonic()
            try:
                async with self._session.post(
                    target.url, data=payload, headers=headers, allow_redirects=False
                ) as reply:
                    await read_capped(reply, self._settings.max_answer_bytes, "receiver")
                    latency_ms = int((time.monotonic() - started) * 1000)
                    if 200 <= reply.status < 300:
                        return SendResult("sent", latency_ms, http_status=reply.status)
                    return SendResult(
                        "failed",
                        latency_ms,
                        http_status=reply.status,
                        error=f"receiver answered {reply.status} {_phrase(reply.status)}".strip(),
                        temporary=reply.status >= 500 or reply.status in (408, 429),
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


def _phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (not the receiver's own words)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
