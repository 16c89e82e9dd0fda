"""A fake FCM HTTP v1 on 127.0.0.1: the OAuth token endpoint and messages:send, both strict.

The token endpoint checks the RS256 assertion against the public key of the registered service
account (signature, iss, scope, aud = its own URL, iat/exp) and issues opaque access tokens; the
send endpoint checks the bearer token, the project and that every ``data`` value is a string,
records each message, and answers what a test programmed for a device token.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chatpush.testing import FakeClock

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def rsa_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class Failure:
    status: int
    code: str
    message: str
    retry_after: str | None = None


@dataclass
class FakeFcm:
    clock: FakeClock
    project_id: str = "acme-app"
    client_email: str = "push@acme-app.iam.gserviceaccount.com"
    private_key: str = field(default_factory=rsa_private_pem)
    token_lifetime_s: int = 3600
    sent: list[dict[str, Any]] = field(default_factory=list)
    token_requests: int = 0
    refused_assertions: list[str] = field(default_factory=list)
    failures: dict[str, Failure] = field(default_factory=dict)
    base_url: str = ""
    _tokens: dict[str, int] = field(default_factory=dict)
    _public: tuple[str, Any] | None = None
    """(``private_key``, its public key): reading the PEM costs 40 ms of the loop, so once."""
    _runner: web.AppRunner | None = None

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def credentials(self, **overrides: str) -> dict[str, str]:
        """A service-account JSON as Google gives it (its token_uri pointing here)."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": "key-1",
            "private_key": self.private_key,
            "client_email": self.client_email,
            "token_uri": self.token_uri,
            **overrides,
        }

    def fail(
        self, token: str, status: int, code: str, message: str = "", retry_after: str | None = None
    ) -> None:
        self.failures[token] = Failure(status, code, message or code, retry_after)

    async def start(self) -> FakeFcm:
        self._public_key()  # read before the first token request, not during it
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _public_key(self) -> Any:
        if self._public is None or self._public[0] != self.private_key:
            key = serialization.load_pem_private_key(self.private_key.encode(), password=None)
            self._public = (self.private_key, key.public_key())
        return self._public[1]

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _oauth_error("unsupported_grant_type", "bad grant_type")
        public = self._public_key()
        try:
            claims = jwt.decode(
                str(form.get("assertion", "")),
                public,
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=self.client_email,
                options={"require": ["iat", "exp", "iss", "aud"], "verify_iat": False},
                leeway=10**9,  # the test clock is not the wall clock
            )
        except jwt.PyJWTError as exc:
            self.refused_assertions.append(str(exc))
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        now_s = self.clock.now_ms() // 1000
        # Up to a minute of clock skew, as Google allows.
        if claims.get("scope") != SCOPE or not claims["iat"] - 60 <= now_s < claims["exp"]:
            self.refused_assertions.append(f"claims {claims}")
            return _oauth_error("invalid_scope", "bad scope or times")
        token = "ya29." + secrets.token_urlsafe(16)
        self._tokens[token] = self.clock.now_ms() + self.token_lifetime_s * 1000
        return web.json_response(
            {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}
        )

    async def _send(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        expires = self._tokens.get(auth.removeprefix("Bearer "))
        if expires is None or self.clock.now_ms() >= expires:
            return _fcm_error(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials."
            )
        if request.match_info["project"] != self.project_id:
            return _fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        body = json.loads(await request.read())
        message = body["message"]
        data = message.get("data", {})
        if not all(isinstance(value, str) for value in data.values()):
            return _fcm_error(400, "INVALID_ARGUMENT", "data values must be strings")
        failure = self.failures.get(message.get("token", ""))
        if failure is not None:
            detail = (
                failure.code
                if failure.code not in ("INVALID_ARGUMENT", "UNAVAILABLE", "INTERNAL")
                else None
            )
            status_text = {
                404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL",
                503: "UNAVAILABLE",
                401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED",
                400: "INVALID_ARGUMENT",
            }.get(failure.status, "UNKNOWN")
            response = _fcm_error(failure.status, status_text, failure.message, detail)
            if failure.retry_after is not None:
                response.headers["Retry-After"] = failure.retry_after
            return response
        self.sent.append(message)
        return web.json_response({"name": f"projects/{self.project_id}/messages/{len(self.sent)}"})


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _fcm_error(
    status: int, status_text: str, message: str, error_code: str | None = None
) -> web.Response:
    details = (
        [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]
        if error_code
        else []
    )
    return web.json_response(
        {"error": {"code": status, "message": message, "status": status_text, "details": details}},
        status=status,
    )
