"""A fake APNs on 127.0.0.1 speaking real HTTP/2 over TLS (h2, ALPN "h2"), strict like Apple's.

It checks each ``POST /3/device/{token}``: the ``authorization: bearer`` ES256 JWT against the
registered key (``kid``, ``iss`` = team id, ``iat`` not older than an hour by the test clock),
``apns-topic``, ``apns-push-type`` / ``apns-priority`` / ``apns-expiration`` / ``apns-id`` /
``apns-collapse-id``, and a JSON payload of at most 4,096 bytes. It records every request (with
its ``:authority``, so a test tells production and sandbox apart, and the answer it got) and
answers what a test programmed for a token (``fail``), or never answers (``hang``).

The reasons are Apple's (developer.apple.com, "Handling notification responses from APNs"),
except ``BadPayload`` for a body that is not a JSON object with an ``aps`` object.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chatpush.testing import FakeClock

MAX_PAYLOAD_BYTES = 4096
PROVIDER_TOKEN_MAX_AGE_S = 3600


def ec_private_pem(curve: ec.EllipticCurve | None = None) -> str:
    """A new EC private key (P-256 unless told), PKCS#8 PEM like an APNs ``.p8`` file."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key, as PEM files in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "apns.crt", folder / "apns.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class FakeApns:
    clock: FakeClock
    team_id: str = "TEAM123456"
    key_id: str = "KEY1234567"
    topic: str = "com.acme.chat"
    private_key: str = field(default_factory=ec_private_pem)
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request that reached the fake: token, authority, headers, payload, status, reason."""
    failures: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    hanging: set[str] = field(default_factory=set)
    raw: dict[str, tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=dict)
    tokens_seen: list[str] = field(default_factory=list)
    """The distinct provider tokens accepted, in order."""
    expired_before_iat: int = 0
    """Provider tokens issued before this second are answered 403 ExpiredProviderToken."""
    connections: int = 0
    alpn: list[str | None] = field(default_factory=list)
    max_concurrent_streams: int = 100
    """The ``SETTINGS_MAX_CONCURRENT_STREAMS`` it announces (APNs: 1,000)."""
    initial_window_bytes: int = 65535
    """The ``SETTINGS_INITIAL_WINDOW_SIZE`` it announces: what a client may send on a stream
    before the fake's WINDOW_UPDATE (sent as it reads)."""
    resets: dict[str, int] = field(default_factory=dict)
    hung: int = 0
    """Requests received and left unanswered (``hang``)."""
    port: int = 0
    _server: asyncio.Server | None = None
    _transports: set[asyncio.Transport] = field(default_factory=set)
    _protocols: set[_H2Server] = field(default_factory=set)

    def credentials(self, **overrides: str) -> dict[str, str]:
        return {
            "key_id": self.key_id,
            "team_id": self.team_id,
            "private_key": self.private_key,
            "topic": self.topic,
            **overrides,
        }

    def fail(self, token: str, status: int, reason: str | None) -> None:
        """Answer requests for ``token`` (once they pass the checks) with ``status`` and
        ``{"reason": reason}`` (410s also carry a ``timestamp``; ``None``: no body)."""
        self.failures[token] = (status, reason)

    def answer_raw(
        self, token: str, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """Answer requests for ``token`` (once they pass the checks) with exactly this; the
        body in one DATA frame, so at most 16,384 bytes."""
        self.raw[token] = (status, headers, body)

    def hang(self, token: str) -> None:
        """Never answer requests for ``token``."""
        self.hanging.add(token)

    def reset(self, token: str, error_code: int) -> None:
        """Answer requests for ``token`` with RST_STREAM and this HTTP/2 error code."""
        self.resets[token] = error_code

    def go_away(self, last_stream_id: int | None = None) -> None:
        """Send GOAWAY on every open connection (as APNs does before it closes one): streams
        above ``last_stream_id`` (None: every stream received so far) are not processed."""
        for protocol in list(self._protocols):
            protocol.go_away(last_stream_id)

    def drop_connections(self) -> None:
        """Close every open connection at once, without GOAWAY."""
        for transport in list(self._transports):
            transport.close()

    @property
    def delivered(self) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["status"] == 200]

    async def start(self, cert_file: Path, key_file: Path) -> FakeApns:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_file, key_file)
        context.set_alpn_protocols(["h2"])
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _H2Server(self), "127.0.0.1", 0, ssl=context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self._transports):
                transport.close()
            await self._server.wait_closed()

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        """Check one request as APNs would; record it; the status and JSON answer."""
        status, answer = self._check(headers, body)
        path = headers.get(":path", "")
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        self.requests.append(
            {
                "token": path.removeprefix("/3/device/"),
                "authority": headers.get(":authority", ""),
                "headers": headers,
                "payload": payload,
                "size": len(body),
                "status": status,
                "reason": answer.get("reason") if answer else None,
            }
        )
        return status, answer

    def _check(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        if headers.get(":method") != "POST":
            return 405, {"reason": "MethodNotAllowed"}
        path = headers.get(":path", "")
        if headers.get(":scheme") != "https" or not path.startswith("/3/device/"):
            return 404, {"reason": "BadPath"}
        token = urllib.parse.unquote(path.removeprefix("/3/device/"))
        if not token:
            return 400, {"reason": "MissingDeviceToken"}
        refused = self._check_provider_token(headers.get("authorization"))
        if refused is not None:
            return 403, {"reason": refused}
        topic = headers.get("apns-topic")
        if not topic:
            return 400, {"reason": "MissingTopic"}
        if topic != self.topic:
            return 400, {"reason": "TopicDisallowed"}
        push_type = headers.get("apns-push-type")
        if push_type not in ("alert", "background"):
            return 400, {"reason": "InvalidPushType"}
        if headers.get("apns-priority", "10") not in ("5", "10") or (
            push_type == "background" and headers.get("apns-priority") != "5"
        ):
            return 400, {"reason": "BadPriority"}
        if not headers.get("apns-expiration", "0").isdigit():
            return 400, {"reason": "BadExpirationDate"}
        try:
            uuid.UUID(headers.get("apns-id", str(uuid.uuid4())))
        except ValueError:
            return 400, {"reason": "BadMessageId"}
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, {"reason": "BadCollapseId"}
        if not body:
            return 400, {"reason": "PayloadEmpty"}
        if len(body) > MAX_PAYLOAD_BYTES:
            return 413, {"reason": "PayloadTooLarge"}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"reason": "BadPayload"}
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return 400, {"reason": "BadPayload"}
        if token in self.failures:
            status, reason = self.failures[token]
            if reason is None:
                return status, None
            answer: dict[str, Any] = {"reason": reason}
            if status == 410:
                answer["timestamp"] = self.clock.now_ms()
            return status, answer
        return 200, None

    def _check_provider_token(self, authorization: str | None) -> str | None:
        """None if the bearer token is good; else APNs's reason."""
        if not authorization or not authorization.startswith("bearer "):
            return "MissingProviderToken"
        bearer = authorization.removeprefix("bearer ")
        public = serialization.load_pem_private_key(
            self.private_key.encode(), password=None
        ).public_key()
        try:
            header = jwt.get_unverified_header(bearer)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                return "InvalidProviderToken"
            claims = jwt.decode(
                bearer,
                public,  # type: ignore[arg-type]
                algorithms=["ES256"],
                issuer=self.team_id,
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        now_s = self.clock.now_ms() // 1000
        iat = claims["iat"]
        if not isinstance(iat, int) or iat > now_s + 60:
            return "InvalidProviderToken"
        if iat < self.expired_before_iat or now_s - iat > PROVIDER_TOKEN_MAX_AGE_S:
            return "ExpiredProviderToken"
        if bearer not in self.tokens_seen:
            self.tokens_seen.append(bearer)
        return None


class _H2Server(asyncio.Protocol):
    """One client connection: h2's server side over an asyncio TLS transport."""

    def __init__(self, fake: FakeApns) -> None:
        self.fake = fake
        self.connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        self.fake._transports.add(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.fake.connections += 1
        self.fake.alpn.append(alpn)
        if alpn != "h2":  # APNs speaks HTTP/2 only
            transport.close()
            return
        self.fake._protocols.add(self)
        self.connection.initiate_connection()
        self.connection.update_settings(  # in force once the client acknowledges them
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.fake.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.fake.initial_window_bytes,
            }
        )
        transport.write(self.connection.data_to_send())

    def go_away(self, last_stream_id: int | None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.connection.close_connection(last_stream_id=last_stream_id)
            self.transport.write(self.connection.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.connection.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(self.connection.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = {str(k): str(v) for k, v in event.headers}
                self.streams[event.stream_id] = (headers, bytearray())
            elif isinstance(event, h2.events.DataReceived):
                if event.stream_id in self.streams:
                    self.streams[event.stream_id][1].extend(event.data)
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded):
                self._respond(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.transport.close()
        self.transport.write(self.connection.data_to_send())

    def _respond(self, stream_id: int) -> None:
        headers, body = self.streams.pop(stream_id)
        token = urllib.parse.unquote(headers.get(":path", "").removeprefix("/3/device/"))
        if token in self.fake.hanging:
            self.fake.hung += 1
            return
        if token in self.fake.resets:
            self.connection.reset_stream(stream_id, self.fake.resets[token])
            return
        status, answer = self.fake.answer(headers, bytes(body))
        reply = json.dumps(answer).encode() if answer is not None else b""
        response_headers = [
            (":status", str(status)),
            ("apns-id", headers.get("apns-id", str(uuid.uuid4()))),
        ]
        if status == 200 and token in self.fake.raw:
            raw_status, extra, reply = self.fake.raw[token]
            response_headers = [(":status", str(raw_status)), *extra]
        elif reply:
            response_headers += [
                ("content-type", "application/json"),
                ("content-length", str(len(reply))),
            ]
        self.connection.send_headers(stream_id, response_headers, end_stream=not reply)
        if reply:
            self.connection.send_data(stream_id, reply, end_stream=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.streams.clear()
        self.fake._protocols.discard(self)
        if self.transport is not None:
            self.fake._transports.discard(self.transport)
