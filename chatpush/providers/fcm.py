"""Firebase Cloud Messaging, HTTP v1 (device types ``fcm``, ``android``, ``gcm``).

A service account's credentials (project id, client email, RSA private key) sign an RS256
assertion (iss = the client email, scope firebase.messaging, aud = the token URI) that the token
endpoint exchanges for an access token; tokens are cached per service account and key, and
renewed five minutes before they expire, by the injected clock. Each notification is one
``POST {fcm_api_url}/v1/projects/{project}/messages:send``. docs/mobile.md shows the message.

Errors (FCM's ``error.details[].errorCode``, else ``error.status``):

- ``UNREGISTERED`` (404), or ``INVALID_ARGUMENT`` about the registration token: the token is dead,
  ``rejected``;
- 429 ``QUOTA_EXCEEDED``: temporary; nothing is sent to that project for ``Retry-After`` seconds
  and at least 60;
- 500 ``INTERNAL``, 503 ``UNAVAILABLE``: temporary (``Retry-After`` kept when given);
- 401 / 403 (``THIRD_PARTY_AUTH_ERROR``, ``SENDER_ID_MISMATCH``, ``PERMISSION_DENIED``) and other
  4xx: permanent; so is a token endpoint that refuses the assertion (a wrong key).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from chatpush.clock import Clock
from chatpush.config import MobileSettings
from chatpush.providers.base import CredentialSource, SendResult
from chatpush.providers.mobile import MobileProvider, read_credentials
from chatpush.push.mobile import MobileMessage

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600
RENEW_BEFORE_S = 300
MIN_BACKOFF_AFTER_429_S = 60
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class FcmCredentials:
    project_id: str
    client_email: str
    private_key: str
    private_key_id: str | None = None
    token_uri: str | None = None

    @classmethod
    def from_mapping(cls, fields: Mapping[str, str]) -> FcmCredentials:
        """From a service-account JSON's fields; ValueError says what is missing or wrong."""
        key = read_credentials(fields, ("project_id", "client_email", "private_key"))
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("private_key must be an RSA key (a Firebase service account's)")
        return cls(
            project_id=fields["project_id"],
            client_email=fields["client_email"],
            private_key=fields["private_key"],
            private_key_id=fields.get("private_key_id") or None,
            token_uri=fields.get("token_uri") or None,
        )


@dataclass(slots=True)
class _Token:
    value: str
    expires_at_ms: int


class TokenRefused(Exception):
    """The token endpoint refused the assertion (a wrong key, a disabled account)."""


class FcmProvider(MobileProvider[FcmCredentials]):
    kind = "fcm"
    platform = "fcm"
    label = "FCM"

    def __init__(self, settings: MobileSettings, clock: Clock, credentials: CredentialSource):
        super().__init__(settings, clock, credentials)
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._token_locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._backoff_until_ms: dict[str, int] = {}
        self.token_requests = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=self._settings.total_timeout_s, connect=self._settings.connect_timeout_s
            )
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def parse(self, fields: Mapping[str, str]) -> FcmCredentials:
        return FcmCredentials.from_mapping(fields)

    async def send_message(self, credentials: FcmCredentials, message: MobileMessage) -> SendResult:
        """One message, with these credentials; the verdict carries FCM's own error."""
        assert self._session is not None, "provider not started"
        now_ms = self._clock.now_ms()
        until_ms = self._backoff_until_ms.get(credentials.project_id, 0)
        if now_ms < until_ms:
            return SendResult(
                "failed",
                0,
                error=f"FCM asked to slow down (429): no sends to project "
                f"{credentials.project_id} for {(until_ms - now_ms) / 1000:.0f} s more",
                retry_after_s=(until_ms - now_ms) / 1000,
            )
        started = time.monotonic()
        try:
            token = await self._access_token(credentials)
        except TokenRefused as exc:
            latency_ms = int((time.monotonic() - started) * 1000)
            return SendResult("failed", latency_ms, error=str(exc), temporary=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            latency_ms = int((time.monotonic() - started) * 1000)
            return SendResult("failed", latency_ms, error=_network_error("token endpoint", exc))
        url = (
            f"{self._settings.fcm_api_url.rstrip('/')}/v1/projects/"
            f"{credentials.project_id}/messages:send"
        )
        payload = {"message": fcm_message(message)}
        try:
            async with self._session.post(
                url, json=payload, headers={"Authorization": f"Bearer {token}"}
            ) as reply:
                text = await reply.text()
                latency_ms = int((time.monotonic() - started) * 1000)
                if reply.status == 200:
                    return SendResult("sent", latency_ms, http_status=200)
                return self._refusal(
                    credentials, reply.status, text, reply.headers.get("Retry-After"), latency_ms
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            latency_ms = int((time.monotonic() - started) * 1000)
            return SendResult("failed", latency_ms, error=_network_error("FCM", exc))

    def _refusal(
        self,
        credentials: FcmCredentials,
        status: int,
        text: str,
        retry_after: str | None,
        latency_ms: int,
    ) -> SendResult:
        code, detail = _fcm_error(text)
        error = f"FCM {status} {code}: {detail}"[:MAX_ERROR_CHARS]
        dead = code == "UNREGISTERED" or (
            code == "INVALID_ARGUMENT" and "registration token" in detail.lower()
        )
        if dead:
            return SendResult("rejected", latency_ms, http_status=status, error=error)
        wait_s = _seconds(retry_after)
        if status == 429:
            wait_s = max(wait_s or 0, MIN_BACKOFF_AFTER_429_S)
            self._backoff_until_ms[credentials.project_id] = self._clock.now_ms() + int(
                wait_s * 1000
            )
        temporary = status == 429 or status >= 500
        return SendResult(
            "failed",
            latency_ms,
            http_status=status,
            error=error,
            temporary=temporary,
            retry_after_s=wait_s if temporary else None,
        )

    async def _access_token(self, credentials: FcmCredentials) -> str:
        token_uri = credentials.token_uri or self._settings.fcm_token_uri
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
        assert self._session is not None
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
            credentials.private_key,
            algorithm="RS256",
            headers=headers,
        )
        self.token_requests += 1
        async with self._session.post(
            token_uri, data={"grant_type": GRANT_TYPE, "assertion": assertion}
        ) as reply:
            text = await reply.text()
            if reply.status != 200:
                raise TokenRefused(f"FCM token endpoint {reply.status}: {_oauth_error(text)}")
            answer = json.loads(text)
        lifetime_s = int(answer.get("expires_in", 3600))
        renew_at_s = now_s + max(lifetime_s - RENEW_BEFORE_S, lifetime_s // 2)
        return _Token(str(answer["access_token"]), renew_at_s * 1000)


def fcm_message(message: MobileMessage) -> dict[str, Any]:
    """The ``message`` of an FCM v1 send request (docs/mobile.md)."""
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


def _fcm_error(text: str) -> tuple[str, str]:
    """(error code, message) of an FCM error body; the details' errorCode first."""
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return "UNKNOWN", text.strip()[:200] or "no error body"
    code = error.get("status") or "UNKNOWN"
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = detail["errorCode"]
            break
    return str(code), str(error.get("message", ""))


def _oauth_error(text: str) -> str:
    try:
        answer = json.loads(text)
    except ValueError:
        return text.strip()[:200] or "no error body"
    return f"{answer.get('error', 'error')}: {answer.get('error_description', '')}".strip()


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _network_error(where: str, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"{where}: timed out"
    return f"{where}: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
