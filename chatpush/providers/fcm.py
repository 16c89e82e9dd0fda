"""Firebase Cloud Messaging, HTTP v1 (device types ``fcm``, ``android``, ``gcm``).

A service account's credentials (project id, client email, RSA private key) sign an RS256
assertion (iss = the client email, scope firebase.messaging, aud = the token URI) that the token
endpoint exchanges for an access token; tokens are cached per service account and key, and
renewed five minutes before they expire, by the injected clock. Each notification is one
``POST {fcm_api_url}/v1/projects/{project}/messages:send``. docs/mobile.md shows the message.

Errors (FCM's ``error.details[].errorCode``, else ``error.status``):

- ``UNREGISTERED`` (404), or ``INVALID_ARGUMENT`` about the registration token: the token is dead,
  ``rejected``;
- 429 ``QUOTA_EXCEEDED``: temporary, and a backoff: nothing is sent to that project for
  ``Retry-After`` (seconds or an HTTP-date) and at least 60 seconds; the sends are held, not
  failed (docs/push.md, "Outcomes");
- 500 ``INTERNAL``, 503 ``UNAVAILABLE``: temporary (``Retry-After`` kept when given: no resend
  before it);
- 401 / 403 (``THIRD_PARTY_AUTH_ERROR``, ``SENDER_ID_MISMATCH``, ``PERMISSION_DENIED``) and other
  4xx: permanent; so is a token endpoint that refuses the assertion (a wrong key).

The token endpoint and the API must be in ``mobile.allowed_hosts`` (chatpush/providers/outbound.py):
a ``token_uri`` outside it is never requested. Redirects are not followed (a 3xx is a permanent
failure), answers are read up to ``mobile.max_answer_bytes``, and a 200 that is not the expected
JSON is a temporary failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from chatpush.clock import Clock
from chatpush.config import MobileSettings
from chatpush.providers.base import CredentialSource, ProviderContext, SendResult
from chatpush.providers.http import HttpClient
from chatpush.providers.message import MobileMessage
from chatpush.providers.mobile import MobileProvider, read_credentials
from chatpush.providers.outbound import (
    OutboundError,
    disallowed,
    error_field,
    read_capped,
    retry_after_seconds,
    unreachable,
)
from chatpush.providers.registry import register

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600
RENEW_BEFORE_S = 300
MIN_BACKOFF_AFTER_429_S = 60
MAX_ERROR_CHARS = 300
TEMPORARY_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"})
"""FCM's codes that a later resend may cure (with their usual 503, 500 and 429); every other
refusal (INVALID_ARGUMENT, SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, ...) is permanent."""


@dataclass(frozen=True, slots=True)
class FcmCredentials:
    project_id: str
    client_email: str
    private_key: str
    private_key_id: str | None = None
    token_uri: str | None = None
    key: RSAPrivateKey | None = field(default=None, compare=False, repr=False)
    """``private_key`` read: signing with the PEM text would read it again (40 ms, on the loop)."""

    @classmethod
    def from_mapping(cls, fields: Mapping[str, str], *, stored: bool = False) -> FcmCredentials:
        """From a service-account JSON's fields; ValueError says what is missing or wrong.
        ``stored``: fields from the credentials store (``read_credentials``)."""
        key = read_credentials(fields, ("project_id", "client_email", "private_key"), stored=stored)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("private_key must be an RSA key (a Firebase service account's)")
        return cls(
            project_id=fields["project_id"],
            client_email=fields["client_email"],
            private_key=fields["private_key"],
            private_key_id=fields.get("private_key_id") or None,
            token_uri=fields.get("token_uri") or None,
            key=key,
        )


@dataclass(slots=True)
class _Token:
    value: str
    expires_at_ms: int


@register
class FcmProvider(MobileProvider[FcmCredentials]):
    device_type = "fcm"
    aliases = ("android", "gcm")
    credentials_kind = kind = "fcm"
    credential_fields = ("project_id", "client_email", "private_key", "private_key_id", "token_uri")
    platform = "fcm"
    label = "FCM"

    def __init__(
        self,
        settings: MobileSettings,
        clock: Clock,
        credentials: CredentialSource,
        http: HttpClient | None = None,
    ):
        """``http``: the app's shared session (one of its own when None)."""
        super().__init__(settings, clock, credentials)
        self._own_http = http is None
        self._http = http or HttpClient()
        self._timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout_s, connect=settings.connect_timeout_s
        )
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._token_locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._backoff_until_ms: dict[str, int] = {}
        self.token_requests = 0

    @classmethod
    def create(cls, context: ProviderContext) -> FcmProvider:
        return cls(context.settings.mobile, context.clock, context.credentials, context.http)

    async def start(self) -> None:
        if self._own_http:
            await self._http.start()

    async def close(self) -> None:
        if self._own_http:
            await self._http.close()

    @classmethod
    def read_credentials(cls, fields: Mapping[str, str]) -> FcmCredentials:
        return FcmCredentials.from_mapping(fields)

    @classmethod
    def read_stored_credentials(cls, fields: Mapping[str, str]) -> FcmCredentials:
        return FcmCredentials.from_mapping(fields, stored=True)

    async def send_message(self, credentials: FcmCredentials, message: MobileMessage) -> SendResult:
        """One message, with these credentials; the verdict carries FCM's own error."""
        now_ms = self._clock.now_ms()
        until_ms = self._backoff_until_ms.get(credentials.project_id, 0)
        if now_ms < until_ms:
            return SendResult(
                "failed",
                0,
                error=f"FCM asked to slow down (429): no sends to project "
                f"{credentials.project_id} for {(until_ms - now_ms) / 1000:.0f} s more",
                retry_after_s=(until_ms - now_ms) / 1000,
                backoff=True,
            )
        started = time.monotonic()
        url = (
            f"{self._settings.fcm_api_url.rstrip('/')}/v1/projects/"
            f"{urllib.parse.quote(credentials.project_id, safe='')}/messages:send"
        )
        token_uri = credentials.token_uri or self._settings.fcm_token_uri
        try:
            for where, address in (("token endpoint", token_uri), ("FCM", url)):
                refused = disallowed(address, self._settings.allowed_hosts)
                if refused is not None:  # before any request, in the order they are made
                    raise OutboundError(f"{where}: {refused}", temporary=False)
            token = await self._access_token(credentials)
            return await self._post(credentials, url, token, message, started)
        except OutboundError as exc:
            return exc.result(started)

    async def _post(
        self,
        credentials: FcmCredentials,
        url: str,
        token: str,
        message: MobileMessage,
        started: float,
    ) -> SendResult:
        payload = {"message": fcm_message(message)}
        limit = self._settings.max_answer_bytes
        try:
            async with self._http.session.post(
                url,
                json=payload,
                headers={"Authorization": f"Bearer {token}"},
                allow_redirects=False,
                timeout=self._timeout,
            ) as reply:
                body = await read_capped(reply, limit, "FCM")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise OutboundError(unreachable("FCM", url, exc), temporary=True) from None
        latency_ms = int((time.monotonic() - started) * 1000)
        if reply.status == 200:
            if not isinstance(_json(body), dict):
                raise OutboundError(
                    "FCM 200: the answer is not FCM's JSON", temporary=True, http_status=200
                )
            return SendResult("sent", latency_ms, http_status=200)
        if 300 <= reply.status < 400:
            raise OutboundError(
                f"FCM {reply.status}: a redirect, not followed",
                temporary=False,
                http_status=reply.status,
            )
        return self._refusal(
            credentials, reply.status, body, reply.headers.get("Retry-After"), latency_ms
        )

    def _refusal(
        self,
        credentials: FcmCredentials,
        status: int,
        body: bytes,
        retry_after: str | None,
        latency_ms: int,
    ) -> SendResult:
        code, detail = _fcm_error(body)
        error = f"FCM {status} {code}: {detail}"[:MAX_ERROR_CHARS]
        dead = code == "UNREGISTERED" or (
            code == "INVALID_ARGUMENT" and "registration token" in detail.lower()
        )
        if dead:
            return SendResult("rejected", latency_ms, http_status=status, error=error)
        now_ms = self._clock.now_ms()
        wait_s = retry_after_seconds(retry_after, now_ms / 1000)
        if status == 429:
            wait_s = max(wait_s or 0, MIN_BACKOFF_AFTER_429_S)
            self._backoff_until_ms[credentials.project_id] = now_ms + int(wait_s * 1000)
        temporary = status == 429 or status >= 500 or code in TEMPORARY_CODES
        return SendResult(
            "failed",
            latency_ms,
            http_status=status,
            error=error,
            temporary=temporary,
            retry_after_s=wait_s if temporary else None,
            backoff=status == 429,
        )

    async def _access_token(self, credentials: FcmCredentials) -> str:
        token_uri = credentials.token_uri or self._settings.fcm_token_uri
        refused = disallowed(token_uri, self._settings.allowed_hosts)
        if refused is not None:
            raise OutboundError(f"token endpoint: {refused}", temporary=False)
        # The key itself is part of the cache key: credentials being tested with another key
        # for the same account must not borrow the stored key's token.
        fingerprint = hashlib.sha256(credentials.private_key.encode()).hexdigest()
        key = (credentials.client_email, token_uri, fingerprint)
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent sends share one token request
            cached = self._tokens.get(key)
            if cached is not None and self._clock.now_ms() < cached.expires_at_ms:
                return cached.value
            token = await self._fetch_token(credentials, token_uri)
            self._tokens[key] = token
            return token.value

    async def _fetch_token(self, credentials: FcmCredentials, token_uri: str) -> _Token:
        now_s = self._clock.now_ms() // 1000
        headers = {"kid": credentials.private_key_id} if credentials.private_key_id else None
        assertion = jwt.encode(
            {
                "iss": credentials.client_email,
                "scope": SCOPE,
                "aud": token_uri,
                "iat": now_s,
                "exp": now_s + ASSERTION_LIFETIME_S,
            },
            credentials.key if credentials.key is not None else credentials.private_key,
            algorithm="RS256",
            headers=headers,
        )
        self.token_requests += 1
        where = "FCM token endpoint"
        try:
            async with self._http.session.post(
                token_uri,
                timeout=self._timeout,
                data={"grant_type": GRANT_TYPE, "assertion": assertion},
                allow_redirects=False,
            ) as reply:
                body = await read_capped(reply, self._settings.max_answer_bytes, where)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise OutboundError(
                unreachable("token endpoint", token_uri, exc), temporary=True
            ) from None
        if reply.status != 200:
            problem = (
                "a redirect, not followed" if 300 <= reply.status < 400 else _oauth_error(body)
            )
            raise OutboundError(
                f"{where} {reply.status}: {problem}", temporary=False, http_status=reply.status
            )
        answer = _json(body)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        lifetime = answer.get("expires_in", 3600) if isinstance(answer, dict) else None
        if not (isinstance(token, str) and token) or not (
            isinstance(lifetime, int) and 0 < lifetime <= 86400
        ):
            raise OutboundError(
                f"{where} 200: the answer is not an access token", temporary=True, http_status=200
            )
        renew_at_s = now_s + max(lifetime - RENEW_BEFORE_S, lifetime // 2)
        return _Token(token, renew_at_s * 1000)


def fcm_message(message: MobileMessage) -> dict[str, Any]:
    """The ``message`` of an FCM v1 send request (docs/mobile.md)."""
    if message.rendered is not None:  # another source's, whole: only the token is ours
        return {**message.rendered, "token": message.token}
    out: dict[str, Any] = {"token": message.token}
    if message.data:
        out["data"] = dict(message.data)
    if message.alert:
        notification = {"title": message.title, "body": message.body}
        out["notification"] = {k: v for k, v in notification.items() if v is not None}
    android: dict[str, Any] = {"priority": "high" if message.background else "normal"}
    if message.collapse_id:
        android["collapse_key"] = message.collapse_id
    out["android"] = android
    return out


def _json(body: bytes) -> Any:
    """The JSON document of an answer, or None when it is not one."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _fcm_error(body: bytes) -> tuple[str, str]:
    """(error code, message) of an FCM error answer, the details' errorCode first; only those
    fields, truncated (never the rest of the answer)."""
    answer = _json(body)
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return "UNKNOWN", "no FCM error in the answer"
    code = error.get("status") or "UNKNOWN"
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = detail["errorCode"]
            break
    return error_field(code)[:64], error_field(error.get("message", ""))


def _oauth_error(body: bytes) -> str:
    """``error: error_description`` of an OAuth error answer (RFC 6749 §5.2), truncated."""
    answer = _json(body)
    if not isinstance(answer, dict) or "error" not in answer:
        return "no OAuth error in the answer"
    error, description = answer.get("error"), answer.get("error_description", "")
    return f"{error_field(error)[:64]}: {error_field(description)}".strip()
