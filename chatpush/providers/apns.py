"""Apple Push Notification service over HTTP/2, token auth (device types ``ios``, ``apple``).

The provider token is an ES256 JWT (header ``kid`` = key id, claims ``iss`` = team id and
``iat``) signed with the ``.p8`` key; APNs wants it renewed between 20 and 60 minutes, so it is
kept 50 minutes, by the injected clock, and made again at once (one retry) if APNs answers
``ExpiredProviderToken`` (unless another send already did). One HTTP/2 connection per host
(chatpush/providers/http2.py: h2, streams multiplexed), to ``mobile.apns_host`` or, for
``GCTI_GMS_PushDebug`` subscriptions, ``mobile.apns_sandbox_host``. docs/mobile.md shows the
payload and headers.

Errors (APNs's ``reason``): 410 (``Unregistered``, ``ExpiredToken``) and 400 ``BadDeviceToken`` /
``DeviceTokenNotForTopic`` mean a dead token (``rejected``); 429, 5xx and network errors are
temporary; other answers (403 ``InvalidProviderToken``, 400 ``BadTopic``, 413
``PayloadTooLarge``, ...) permanent. A payload over 4,096 bytes is refused before sending.

The hosts must be in ``mobile.allowed_hosts`` (chatpush/providers/outbound.py); redirects are not
followed (a 3xx is a permanent failure) and answers are read up to ``mobile.max_answer_bytes``
within ``mobile.total_timeout_s`` in all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePrivateKey

from chatpush.clock import Clock
from chatpush.config import MobileSettings
from chatpush.providers.base import CredentialSource, ProviderContext, SendResult
from chatpush.providers.http2 import Answer, AnswerTooLarge, Http2Client, Http2Error
from chatpush.providers.message import MobileMessage
from chatpush.providers.mobile import MobileProvider, read_credentials
from chatpush.providers.outbound import (
    NO_COMPRESSION,
    OutboundError,
    disallowed,
    error_field,
    retry_after_seconds,
    too_large,
    unreachable,
)
from chatpush.providers.registry import register

MAX_PAYLOAD_BYTES = 4096
TOKEN_MAX_AGE_S = 50 * 60
EXPIRATION_S = 3600
MAX_COLLAPSE_ID_BYTES = 64
DEAD_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})
"""With 400; any 410 (``Unregistered``, ``ExpiredToken``) is a dead token too."""
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class ApnsCredentials:
    key_id: str
    team_id: str
    private_key: str
    topic: str
    key: EllipticCurvePrivateKey | None = field(default=None, compare=False, repr=False)
    """``private_key`` read, so that a new provider token does not read the PEM text again."""

    @classmethod
    def from_mapping(cls, fields: Mapping[str, str]) -> ApnsCredentials:
        """From ``key_id``, ``team_id``, ``private_key`` (.p8 PEM) and ``topic``; ValueError
        says what is missing or wrong."""
        key = read_credentials(fields, ("key_id", "team_id", "private_key", "topic"))
        if not (isinstance(key, EllipticCurvePrivateKey) and isinstance(key.curve, SECP256R1)):
            raise ValueError("private_key must be an EC P-256 key (an APNs .p8 key)")
        return cls(
            fields["key_id"], fields["team_id"], fields["private_key"], fields["topic"], key=key
        )


def apns_request(message: MobileMessage, topic: str, now_s: int) -> tuple[dict[str, str], bytes]:
    """Headers (without authorization) and JSON payload of one notification: ``aps`` and the
    data keys beside it (a data key ``aps`` cannot replace it); another source's payload as it
    was rendered."""
    if message.rendered is not None:
        headers = {
            "apns-topic": topic,
            "apns-push-type": message.push_type or "alert",
            "apns-priority": "10" if message.high_priority else "5",
            "apns-expiration": str(now_s + EXPIRATION_S),
            "apns-id": str(uuid.uuid4()),
        }
        return headers, json.dumps(message.rendered, separators=(",", ":")).encode()
    aps: dict[str, Any] = {}
    if message.alert:
        alert = {"title": message.title, "body": message.body}
        aps["alert"] = {k: v for k, v in alert.items() if v is not None}
    if message.background:
        aps["content-available"] = 1
    document: dict[str, Any] = {"aps": aps}
    document.update((k, v) for k, v in message.data.items() if k != "aps")
    payload = json.dumps(document, separators=(",", ":")).encode()
    background_only = message.background and not message.alert
    headers = {
        "apns-topic": topic,
        "apns-push-type": "background" if background_only else "alert",
        "apns-priority": "5" if background_only else "10",
        "apns-expiration": str(now_s + EXPIRATION_S),
        "apns-id": str(uuid.uuid4()),
    }
    if message.collapse_id and len(message.collapse_id.encode()) <= MAX_COLLAPSE_ID_BYTES:
        headers["apns-collapse-id"] = message.collapse_id
    return headers, payload


@register
class ApnsProvider(MobileProvider[ApnsCredentials]):
    """Device types ``ios`` / ``apple``: credentials per node group (and named provider) from
    the vault, one HTTP/2 client for all of them, provider tokens cached per key."""

    fixed_headers = tuple((name.lower(), value) for name, value in NO_COMPRESSION.items())

    device_type = "ios"
    aliases = ("apple",)
    credentials_kind = kind = "apns"
    credential_fields = ("key_id", "team_id", "private_key", "topic")
    platform = "ios"
    label = "APNs"

    @classmethod
    def create(cls, context: ProviderContext) -> ApnsProvider:
        return cls(context.settings.mobile, context.clock, context.credentials)

    def __init__(self, settings: MobileSettings, clock: Clock, credentials: CredentialSource):
        super().__init__(settings, clock, credentials)
        self._client: Http2Client | None = None
        self._refused_hosts: dict[str, str | None] = {}
        """Host → why it may not be requested (None: it may), for the two APNs hosts."""
        self._tokens: dict[tuple[str, str, str], tuple[str, int]] = {}
        """(team, key id, key digest) → (JWT, made at, in ms)."""
        self.tokens_made = 0

    async def start(self) -> None:
        context = ssl.create_default_context(cafile=self._settings.apns_ca_file or None)
        self._client = Http2Client(context, connect_timeout_s=self._settings.connect_timeout_s)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @classmethod
    def read_credentials(cls, fields: Mapping[str, str]) -> ApnsCredentials:
        return ApnsCredentials.from_mapping(fields)

    async def send_message(
        self, credentials: ApnsCredentials, message: MobileMessage
    ) -> SendResult:
        """One notification, with these credentials; the verdict carries APNs's own reason."""
        assert self._client is not None, "provider not started"
        headers, payload = apns_request(message, credentials.topic, self._clock.now_ms() // 1000)
        if len(payload) > MAX_PAYLOAD_BYTES:
            return SendResult(
                "failed",
                0,
                error=f"payload of {len(payload)} bytes is over APNs's {MAX_PAYLOAD_BYTES}",
                temporary=False,
            )
        host = self._settings.apns_sandbox_host if message.sandbox else self._settings.apns_host
        path = f"/3/device/{urllib.parse.quote(message.token, safe='')}"
        started = time.monotonic()
        refused = self._refused(host)
        if refused is not None:
            return SendResult("failed", 0, error=f"APNs: {refused}", temporary=False)
        expired: str | None = None
        for attempt in (1, 2):
            bearer = self._token(credentials, expired=expired)
            request_headers = [
                *headers.items(),
                *self.fixed_headers,
                ("authorization", f"bearer {bearer}"),
            ]
            try:
                reply = await self._post(host, path, payload, request_headers)
            except OutboundError as exc:
                return exc.result(started)
            latency_ms = int((time.monotonic() - started) * 1000)
            if reply.status == 200:
                return SendResult("sent", latency_ms, http_status=200)
            if 300 <= reply.status < 400:
                return SendResult(
                    "failed",
                    latency_ms,
                    http_status=reply.status,
                    error=f"APNs {reply.status}: a redirect, not followed",
                    temporary=False,
                )
            reason = _reason(reply.body)
            if reason == "ExpiredProviderToken" and attempt == 1:
                expired = bearer  # made again (unless another send did already), once
                continue
            return _refusal(reply, reason, latency_ms, self._clock.now_ms() / 1000)
        raise AssertionError("unreachable")

    def _refused(self, host: str) -> str | None:
        """Why ``host`` may not be requested (``mobile.allowed_hosts``), or None; worked out
        once per host (the settings do not change under a started provider)."""
        if host not in self._refused_hosts:
            url = f"https://{host}:{self._settings.apns_port}/"
            self._refused_hosts[host] = disallowed(url, self._settings.allowed_hosts)
        return self._refused_hosts[host]

    async def _post(
        self, host: str, path: str, payload: bytes, headers: list[tuple[str, str]]
    ) -> Answer:
        """The answer, its body at most ``max_answer_bytes``, within ``total_timeout_s``."""
        assert self._client is not None
        port, limit = self._settings.apns_port, self._settings.max_answer_bytes
        try:
            async with asyncio.timeout(self._settings.total_timeout_s):
                return await self._client.request(
                    host, port, path, headers, payload, max_answer_bytes=limit
                )
        except AnswerTooLarge as exc:
            raise too_large("APNs", limit, exc.status) from None
        except (Http2Error, TimeoutError, OSError) as exc:
            url = f"https://{host}:{port}{path}"
            raise OutboundError(unreachable("APNs", url, exc), temporary=True) from None

    def _token(self, credentials: ApnsCredentials, *, expired: str | None = None) -> str:
        """The cached provider token of these credentials, or a new one when it is 50 minutes
        old or is ``expired`` (the one APNs just refused as ``ExpiredProviderToken``)."""
        digest = hashlib.sha256(credentials.private_key.encode()).hexdigest()
        key = (credentials.team_id, credentials.key_id, digest)
        now_ms = self._clock.now_ms()
        cached = self._tokens.get(key)
        if (
            cached is not None
            and cached[0] != expired
            and now_ms - cached[1] < TOKEN_MAX_AGE_S * 1000
        ):
            return cached[0]
        token = jwt.encode(
            {"iss": credentials.team_id, "iat": now_ms // 1000},
            credentials.key if credentials.key is not None else credentials.private_key,
            algorithm="ES256",
            headers={"kid": credentials.key_id},
        )
        self.tokens_made += 1
        self._tokens[key] = (token, now_ms)
        return token


def _reason(body: bytes) -> str:
    """APNs's ``reason`` (truncated), the only part of an error answer that is shown."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return "no reason"
    reason = answer.get("reason") if isinstance(answer, dict) else None
    return error_field(reason)[:100] if reason else "no reason"


def _refusal(reply: Answer, reason: str, latency_ms: int, now_s: float) -> SendResult:
    status = reply.status
    error = f"APNs {status} {reason}"[:MAX_ERROR_CHARS]
    if status == 410 or (status == 400 and reason in DEAD_REASONS):
        return SendResult("rejected", latency_ms, http_status=status, error=error)
    temporary = status == 429 or status >= 500
    retry_after = reply.headers.get("retry-after")
    retry_after_s = retry_after_seconds(retry_after, now_s) if temporary else None
    return SendResult(
        "failed",
        latency_ms,
        http_status=status,
        error=error,
        temporary=temporary,
        retry_after_s=retry_after_s,
    )
