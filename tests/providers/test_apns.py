"""The APNs provider against a fake APNs speaking real HTTP/2 over TLS (chatpush/testing/apns.py).

Production is ``127.0.0.1`` and the sandbox ``localhost``: the same fake, told apart by the
``:authority`` each request carries.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hpack
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chatpush.chat.model import ChatRecord
from chatpush.config import MobileSettings
from chatpush.providers.apns import ApnsCredentials, ApnsProvider, apns_request
from chatpush.providers.base import Alert, Notification, SendResult
from chatpush.providers.http2 import _LiteralEncoder
from chatpush.providers.message import MobileMessage
from chatpush.push.bodies import bare_body, trigger_body
from chatpush.testing import FakeClock
from chatpush.testing.apns import FakeApns, ec_private_pem, self_signed
from tests.providers.conftest import Credentials, chat_notification, target

TOKEN = "device-token-1"
CHAT_ID = "00C0FFEE00000001"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("apns"))


@pytest.fixture
async def fake(clock: FakeClock, certificate: tuple[Path, Path]) -> AsyncIterator[FakeApns]:
    server = await FakeApns(clock).start(*certificate)
    yield server
    await server.close()


def settings(fake: FakeApns, certificate: tuple[Path, Path], **changes: Any) -> MobileSettings:
    fields: dict[str, Any] = {
        "apns_host": "127.0.0.1",
        "apns_sandbox_host": "localhost",
        "apns_port": fake.port,
        "apns_ca_file": str(certificate[0]),
        "allowed_hosts": (f"127.0.0.1:{fake.port}", f"localhost:{fake.port}"),  # https
    }
    return MobileSettings(**{**fields, **changes})


@pytest.fixture
async def apns(
    fake: FakeApns, clock: FakeClock, certificate: tuple[Path, Path]
) -> AsyncIterator[ApnsProvider]:
    credentials = Credentials({("apns", "mobile", None): fake.credentials()})
    provider = ApnsProvider(settings(fake, certificate), clock, credentials)
    await provider.start()
    yield provider
    await provider.close()


def a_chat() -> ChatRecord:
    return ChatRecord(
        id=CHAT_ID,
        service_name="support",
        secure_key="real-secure-key",
        user_id="0001USER",
        subject=None,
        email_address=None,
        user_data={},
        created_at_ms=0,
        ended_at_ms=None,
        last_client_request_ms=0,
        last_index=3,
        client_position=1,
        last_participant_id=2,
    )


def trigger(token: str = TOKEN) -> Notification:
    body = trigger_body(
        device_id=token,
        obfuscated_key="obfuscated",
        chat=a_chat(),
        alias="0",
        position=2,
        attempt=0,
        final=False,
        content_keys=("session-id", "secure-key"),
        now_ms=0,
    )
    return chat_notification(body, "trigger", CHAT_ID, position=2, attempt=0)


def bare(token: str = TOKEN) -> Notification:
    return chat_notification(bare_body(token), "bare", CHAT_ID)


def agent_message(token: str = TOKEN) -> Notification:
    """A CONTRACT §7 (b) notification: one event with its payload."""
    body = {
        "deviceId": token,
        "message": {
            "secureKey": "obfuscated",
            "chatId": CHAT_ID,
            "userId": "0001USER",
            "alias": "0",
            "nextPosition": 5,
            "chatEnded": False,
            "statusCode": 0,
            "monitored": False,
            "messages": [
                {
                    "from": {"nickname": "Bob", "participantId": 2, "type": "Agent"},
                    "index": 4,
                    "text": "How can I help?",
                    "type": "Message",
                    "utcTime": 0,
                }
            ],
        },
    }
    return chat_notification(body, "payload", CHAT_ID)


async def send(apns: ApnsProvider, notification: Notification, **target_fields: Any) -> SendResult:
    return await apns.send(target(**target_fields), notification, now_s=0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- what APNs receives -------------------------------------------------------------------


async def test_a_trigger_is_a_background_push_over_http2(
    apns: ApnsProvider, fake: FakeApns, clock: FakeClock
) -> None:
    result = await send(apns, trigger())
    assert (result.outcome, result.http_status, result.error) == ("sent", 200, None), result
    [request] = fake.requests
    headers = request["headers"]
    assert fake.alpn == ["h2"]
    assert (headers[":method"], headers[":path"]) == ("POST", f"/3/device/{TOKEN}")
    assert request["authority"] == f"127.0.0.1:{fake.port}"  # production
    assert headers["apns-topic"] == "com.acme.chat"
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("background", "5")
    assert headers["apns-collapse-id"] == CHAT_ID
    assert int(headers["apns-expiration"]) == clock.now_ms() // 1000 + 3600
    assert uuid.UUID(headers["apns-id"])
    assert headers["authorization"].startswith("bearer ey")
    assert request["payload"] == {
        "aps": {"content-available": 1},
        "chatId": CHAT_ID,
        "chatEnded": "false",
        "notify-attempt": "0",
        "notify-position": "2",
        "session-id": CHAT_ID,
        "secure-key": "real-secure-key",
    }


async def test_a_title_makes_the_trigger_an_alert_and_debug_goes_to_the_sandbox(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    result = await send(
        apns, trigger(), apple_title="Acme", apple_body="You have a new message", debug=True
    )
    assert result.outcome == "sent", result
    [request] = fake.requests
    assert request["authority"] == f"localhost:{fake.port}"  # the sandbox
    headers = request["headers"]
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("alert", "10")
    assert headers["apns-collapse-id"] == CHAT_ID
    assert request["payload"]["aps"] == {
        "alert": {"title": "Acme", "body": "You have a new message"},
        "content-available": 1,
    }
    assert request["payload"]["notify-position"] == "2"


async def test_an_event_is_an_alert_without_content_available_or_collapse_id(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    assert (await send(apns, agent_message())).outcome == "sent"
    [request] = fake.requests
    headers = request["headers"]
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("alert", "10")
    assert "apns-collapse-id" not in headers
    assert request["payload"] == {
        "aps": {"alert": {"title": "Bob", "body": "How can I help?"}},
        "chatId": CHAT_ID,
        "chatEnded": "false",
        "index": "4",
        "type": "Message",
        "nickname": "Bob",
        "participantType": "Agent",
        "nextPosition": "5",
        "text": "How can I help?",
    }
    assert all(isinstance(value, str) for key, value in request["payload"].items() if key != "aps")


async def test_a_bare_body_wakes_the_app_or_shows_the_configured_alert(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    assert (await send(apns, bare(TOKEN))).outcome == "sent"
    assert (await send(apns, bare(TOKEN), apple_body="Something new")).outcome == "sent"
    wake, alert = fake.requests
    assert wake["payload"] == {"aps": {"content-available": 1}}
    assert (wake["headers"]["apns-push-type"], wake["headers"]["apns-priority"]) == (
        "background",
        "5",
    )
    assert alert["payload"] == {"aps": {"alert": {"body": "Something new"}}}
    assert (alert["headers"]["apns-push-type"], alert["headers"]["apns-priority"]) == (
        "alert",
        "10",
    )


async def test_a_kind_without_a_phone_message_is_a_permanent_failure_not_sent(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    """The kind is the envelope's: an ``alert`` (no source makes one yet) has no APNs message,
    whatever its body holds, so nothing goes to Apple and no resend can help."""
    alert = chat_notification(agent_message().body, "alert", CHAT_ID)
    result = await send(apns, alert)
    assert (result.outcome, result.temporary) == ("failed", False)
    assert result.error == "APNs has no message for a notification of kind alert"
    assert fake.requests == []


async def test_the_message_sandbox_flag_picks_the_host(apns: ApnsProvider, fake: FakeApns) -> None:
    credentials = ApnsCredentials.from_mapping(fake.credentials())
    for sandbox in (True, False, True):
        message = MobileMessage(TOKEN, "bare", None, None, background=True, sandbox=sandbox)
        assert (await apns.send_message(credentials, message)).outcome == "sent"
    assert [request["authority"].split(":")[0] for request in fake.requests] == [
        "localhost",
        "127.0.0.1",
        "localhost",
    ]
    assert fake.connections == 2  # one HTTP/2 connection per host, reused


async def test_sends_share_one_http2_connection(apns: ApnsProvider, fake: FakeApns) -> None:
    assert (await send(apns, trigger())).outcome == "sent"
    results = await asyncio.gather(*(send(apns, trigger(f"device-{n}")) for n in range(10)))
    assert {result.outcome for result in results} == {"sent"}
    assert (fake.connections, len(fake.delivered)) == (1, 11)


async def test_headers_and_payload_details(apns: ApnsProvider, fake: FakeApns) -> None:
    credentials = ApnsCredentials.from_mapping(fake.credentials())
    odd_token = "abc/../x?y#z"
    long_collapse = MobileMessage(
        odd_token, "payload", "t", "b", {"aps": "not mine", "k": "v"}, collapse_id="é" * 33
    )
    assert (await apns.send_message(credentials, long_collapse)).outcome == "sent"
    [request] = fake.requests
    assert request["headers"][":path"] == "/3/device/abc%2F..%2Fx%3Fy%23z"  # stays one segment
    assert "apns-collapse-id" not in request["headers"]  # 66 bytes: over APNs's 64
    assert request["payload"] == {"aps": {"alert": {"title": "t", "body": "b"}}, "k": "v"}


# --- the provider token -------------------------------------------------------------------


async def test_the_provider_token_is_es256_reused_then_renewed_after_50_minutes(
    apns: ApnsProvider, fake: FakeApns, clock: FakeClock
) -> None:
    started_s = clock.now_ms() // 1000
    for _ in range(3):
        assert (await send(apns, trigger())).outcome == "sent"
    assert len(fake.tokens_seen) == 1
    first = fake.tokens_seen[0]
    assert jwt.get_unverified_header(first) == {"alg": "ES256", "kid": "KEY1234567", "typ": "JWT"}
    assert jwt.decode(first, options={"verify_signature": False}) == {
        "iss": "TEAM123456",
        "iat": started_s,
    }
    for minutes in (19, 30):  # 49 minutes old: kept (APNs refuses renewals under 20 minutes)
        clock.advance(minutes * 60)
        assert (await send(apns, trigger())).outcome == "sent"
        assert len(fake.tokens_seen) == 1
    clock.advance(61)  # 50 minutes and a second
    assert (await send(apns, trigger())).outcome == "sent"
    assert len(fake.tokens_seen) == 2
    renewed = jwt.decode(fake.tokens_seen[1], options={"verify_signature": False})
    assert renewed["iat"] == clock.now_ms() // 1000 == started_s + 50 * 60 + 1
    clock.advance(49 * 60)
    assert (await send(apns, trigger())).outcome == "sent"
    assert len(fake.tokens_seen) == 2 and apns.tokens_made == 2
    assert len({request["headers"]["authorization"] for request in fake.requests}) == 2


async def test_an_expired_provider_token_is_made_again_and_the_send_retried_once(
    apns: ApnsProvider, fake: FakeApns, clock: FakeClock
) -> None:
    assert (await send(apns, trigger())).outcome == "sent"
    clock.advance(60)
    fake.expired_before_iat = clock.now_ms() // 1000  # APNs no longer takes the current one
    result = await send(apns, trigger())
    assert result.outcome == "sent", result
    assert [request["status"] for request in fake.requests] == [200, 403, 200]
    assert fake.requests[1]["reason"] == "ExpiredProviderToken"
    assert len(fake.tokens_seen) == 2


async def test_concurrent_sends_refused_as_expired_make_one_new_token(
    apns: ApnsProvider, fake: FakeApns, clock: FakeClock
) -> None:
    assert (await send(apns, trigger())).outcome == "sent"
    clock.advance(60)
    fake.expired_before_iat = clock.now_ms() // 1000
    results = await asyncio.gather(*(send(apns, trigger(f"device-{n}")) for n in range(5)))
    assert {result.outcome for result in results} == {"sent"}
    assert [request["status"] for request in fake.requests].count(403) == 5
    assert apns.tokens_made == 2 and len(fake.tokens_seen) == 2


async def test_a_token_still_expired_after_the_retry_is_a_permanent_failure(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    fake.fail(TOKEN, 403, "ExpiredProviderToken")
    result = await send(apns, trigger())
    assert (result.outcome, result.http_status, result.error, result.temporary) == (
        "failed",
        403,
        "APNs 403 ExpiredProviderToken",
        False,
    )
    first, second = fake.requests  # tried twice, no more
    assert first["headers"]["authorization"] != second["headers"]["authorization"]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "outcome", "temporary"),
    [
        (410, "Unregistered", "rejected", False),
        (410, "ExpiredToken", "rejected", False),
        (400, "BadDeviceToken", "rejected", False),
        (400, "DeviceTokenNotForTopic", "rejected", False),
        (429, "TooManyRequests", "failed", True),
        (429, "TooManyProviderTokenUpdates", "failed", True),
        (500, "InternalServerError", "failed", True),
        (503, "ServiceUnavailable", "failed", True),
        (503, "Shutdown", "failed", True),
        (403, "InvalidProviderToken", "failed", False),
        (403, "Forbidden", "failed", False),
        (400, "BadTopic", "failed", False),
        (400, "TopicDisallowed", "failed", False),
        (400, "BadCollapseId", "failed", False),
        (413, "PayloadTooLarge", "failed", False),
        (502, None, "failed", True),
    ],
)
async def test_apns_errors_map_to_dead_temporary_or_permanent(
    apns: ApnsProvider,
    fake: FakeApns,
    status: int,
    reason: str | None,
    outcome: str,
    temporary: bool,
) -> None:
    fake.fail(TOKEN, status, reason)
    result = await send(apns, trigger())
    assert (result.outcome, result.http_status, result.error) == (
        outcome,
        status,
        f"APNs {status} {reason or 'no reason'}",
    )
    if outcome == "failed":
        assert result.temporary is temporary
    assert len(fake.requests) == 1


async def test_the_fakes_own_checks_reach_the_verdict(
    fake: FakeApns, clock: FakeClock, certificate: tuple[Path, Path]
) -> None:
    """A wrong key and a wrong topic, refused by the fake's real checks, are permanent."""
    wrong = Credentials(
        {
            ("apns", "mobile", None): fake.credentials(private_key=ec_private_pem()),
            ("apns", "mobile", "other-app"): fake.credentials(topic="com.acme.other"),
        }
    )
    provider = ApnsProvider(settings(fake, certificate), clock, wrong)
    await provider.start()
    try:
        bad_key = await send(provider, trigger())
        bad_topic = await send(provider, trigger(), provider="other-app")
    finally:
        await provider.close()
    assert (bad_key.outcome, bad_key.error, bad_key.temporary) == (
        "failed",
        "APNs 403 InvalidProviderToken",
        False,
    )
    assert (bad_topic.outcome, bad_topic.error, bad_topic.temporary) == (
        "failed",
        "APNs 400 TopicDisallowed",
        False,
    )


async def test_a_payload_over_4_kb_is_refused_without_a_request(
    apns: ApnsProvider, fake: FakeApns, clock: FakeClock
) -> None:
    credentials = ApnsCredentials.from_mapping(fake.credentials())

    def message(size: int) -> MobileMessage:
        return MobileMessage(TOKEN, "payload", "t", "x" * size)

    overhead = len(apns_request(message(0), "t", 0)[1])
    big = await apns.send_message(credentials, message(4097 - overhead))
    assert (big.outcome, big.temporary, big.http_status) == ("failed", False, None)
    assert big.error == "payload of 4097 bytes is over APNs's 4096"
    assert fake.requests == [] and apns.tokens_made == 0
    just = await apns.send_message(credentials, message(4096 - overhead))
    assert just.outcome == "sent", just
    assert fake.requests[0]["size"] == 4096


async def test_no_or_unreadable_credentials_are_a_permanent_failure(
    fake: FakeApns, clock: FakeClock, certificate: tuple[Path, Path]
) -> None:
    source = Credentials(
        {
            ("apns", "other", "vip"): fake.credentials(),
            ("apns", "broken", None): fake.credentials(private_key="not a key"),
        }
    )
    provider = ApnsProvider(settings(fake, certificate), clock, source)
    await provider.start()
    try:
        none = await send(provider, trigger())
        named = await send(provider, trigger(), group_name="other", provider="gold")
        found = await send(provider, trigger(), group_name="other", provider="vip")
        broken = await send(provider, trigger(), group_name="broken")
    finally:
        await provider.close()
    assert (none.outcome, none.temporary, none.error) == (
        "failed",
        False,
        "no APNs credentials for group 'mobile'",
    )
    assert named.error == "no APNs credentials for group 'other' provider 'gold'"
    assert found.outcome == "sent"
    assert (broken.outcome, broken.temporary) == ("failed", False)
    assert (broken.error or "").startswith("APNs credentials: private_key is not a readable PEM")
    assert len(fake.requests) == 1


async def test_apns_down_or_silent_is_temporary(
    fake: FakeApns, clock: FakeClock, certificate: tuple[Path, Path]
) -> None:
    present = Credentials({("apns", "mobile", None): fake.credentials()})
    port = free_port()
    down = ApnsProvider(
        settings(fake, certificate, apns_port=port, allowed_hosts=(f"127.0.0.1:{port}",)),
        clock,
        present,
    )
    await down.start()
    try:
        refused = await send(down, trigger())
    finally:
        await down.close()
    assert (refused.outcome, refused.temporary, refused.http_status) == ("failed", True, None)
    assert refused.error == "APNs: unreachable (no connection, or no answer in time)"

    fake.hang(TOKEN)
    slow = ApnsProvider(settings(fake, certificate, total_timeout_s=0.3), clock, present)
    await slow.start()
    try:
        silent = await send(slow, trigger())
    finally:
        await slow.close()
    assert (silent.outcome, silent.temporary) == ("failed", True)
    assert silent.error == refused.error  # a timeout reads as a refused connection does
    assert 300 <= silent.latency_ms < 3000


def test_credentials_are_checked_when_read() -> None:
    good = {"key_id": "K", "team_id": "T", "private_key": ec_private_pem(), "topic": "com.x"}
    assert ApnsCredentials.from_mapping(good) == ApnsCredentials(
        "K", "T", good["private_key"], "com.x"
    )
    with pytest.raises(ValueError, match="missing topic"):
        ApnsCredentials.from_mapping({**good, "topic": ""})
    with pytest.raises(ValueError, match="missing key_id, team_id"):
        ApnsCredentials.from_mapping({"private_key": good["private_key"], "topic": "com.x"})
    with pytest.raises(ValueError, match="private_key is not a readable PEM"):
        ApnsCredentials.from_mapping({**good, "private_key": "-----BEGIN PRIVATE KEY-----\nx"})
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    for other in (rsa_pem, ec_private_pem(ec.SECP384R1())):
        with pytest.raises(ValueError, match="EC P-256"):
            ApnsCredentials.from_mapping({**good, "private_key": other})


# --- the fake itself is strict ------------------------------------------------------------


async def test_the_fake_refuses_what_apns_refuses(
    fake: FakeApns, clock: FakeClock, certificate: tuple[Path, Path]
) -> None:
    """The checks the tests above rely on, hit directly with a plain HTTP/2 client."""
    key = serialization.load_pem_private_key(fake.private_key.encode(), password=None)
    now_s = clock.now_ms() // 1000

    def bearer(iat: int = now_s, kid: str = fake.key_id, iss: str = fake.team_id) -> str:
        token = jwt.encode({"iss": iss, "iat": iat}, key, algorithm="ES256", headers={"kid": kid})  # type: ignore[arg-type]
        return f"bearer {token}"

    good = {
        "authorization": bearer(),
        "apns-topic": fake.topic,
        "apns-push-type": "alert",
        "apns-priority": "10",
    }
    payload = b'{"aps":{"alert":{"body":"hi"}}}'
    cases: list[tuple[dict[str, str], bytes, int, str | None]] = [
        (good, payload, 200, None),
        ({**good, "authorization": ""}, payload, 403, "MissingProviderToken"),
        ({**good, "authorization": bearer(kid="OTHER")}, payload, 403, "InvalidProviderToken"),
        ({**good, "authorization": bearer(iss="OTHER")}, payload, 403, "InvalidProviderToken"),
        ({**good, "authorization": bearer(now_s - 3601)}, payload, 403, "ExpiredProviderToken"),
        ({**good, "apns-topic": "com.other"}, payload, 400, "TopicDisallowed"),
        ({**good, "apns-push-type": "background"}, payload, 400, "BadPriority"),
        ({**good, "apns-collapse-id": "c" * 65}, payload, 400, "BadCollapseId"),
        (good, b'{"aps":{}, "x":"' + b"x" * 4090 + b'"}', 413, "PayloadTooLarge"),
        (good, b"{not json", 400, "BadPayload"),
    ]
    context = ssl.create_default_context(cafile=str(certificate[0]))
    async with httpx.AsyncClient(http1=False, http2=True, verify=context) as client:
        for headers, body, status, reason in cases:
            reply = await client.post(
                f"https://127.0.0.1:{fake.port}/3/device/{TOKEN}", content=body, headers=headers
            )
            assert reply.http_version == "HTTP/2"
            assert (reply.status_code, reply.json()["reason"] if reply.content else None) == (
                status,
                reason,
            ), headers
        get = await client.get(f"https://127.0.0.1:{fake.port}/3/device/{TOKEN}")
        assert (get.status_code, get.json()["reason"]) == (405, "MethodNotAllowed")
    assert len(fake.requests) == len(cases) + 1


# --- outbound safety: allowed hosts, no redirects, bounded answers, no foreign text ----------


async def test_hosts_outside_the_allowed_hosts_are_never_connected_to(
    fake: FakeApns, clock: FakeClock, certificate: tuple[Path, Path]
) -> None:
    present = Credentials({("apns", "mobile", None): fake.credentials()})
    refused = [
        MobileSettings().allowed_hosts,
        ("127.0.0.1", f"http://127.0.0.1:{fake.port}", f"127.0.0.2:{fake.port}"),
    ]
    for allowed in refused:
        apns = ApnsProvider(settings(fake, certificate, allowed_hosts=allowed), clock, present)
        await apns.start()
        try:
            result = await send(apns, trigger())
        finally:
            await apns.close()
        assert (result.outcome, result.temporary) == ("failed", False)
        assert result.error == f"APNs: https://127.0.0.1:{fake.port} is not in mobile.allowed_hosts"
    only_production = settings(fake, certificate, allowed_hosts=(f"127.0.0.1:{fake.port}",))
    apns = ApnsProvider(only_production, clock, present)
    await apns.start()
    try:
        assert (await send(apns, trigger())).outcome == "sent"
        debug = await send(apns, trigger(), debug=True)
    finally:
        await apns.close()
    assert debug.error == f"APNs: https://localhost:{fake.port} is not in mobile.allowed_hosts"
    assert [request["authority"] for request in fake.requests] == [f"127.0.0.1:{fake.port}"]


async def test_an_apns_redirect_is_a_permanent_failure_not_followed(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    fake.answer_raw(TOKEN, 307, [("location", f"https://127.0.0.1:{fake.port}/3/device/x")], b"")
    result = await send(apns, trigger())
    assert (result.outcome, result.http_status, result.temporary) == ("failed", 307, False)
    assert result.error == "APNs 307: a redirect, not followed"
    assert len(fake.requests) == 1


@pytest.mark.parametrize("declared", [True, False])
async def test_an_apns_answer_over_max_answer_bytes_is_a_failure(
    fake: FakeApns, clock: FakeClock, certificate: tuple[Path, Path], declared: bool
) -> None:
    body = b'{"reason": "' + b"x" * 4000 + b'"}'
    length = [("content-length", str(len(body)))] if declared else []
    fake.answer_raw(TOKEN, 200, length, body)
    present = Credentials({("apns", "mobile", None): fake.credentials()})
    apns = ApnsProvider(settings(fake, certificate, max_answer_bytes=1024), clock, present)
    await apns.start()
    try:
        result = await send(apns, trigger())
    finally:
        await apns.close()
    assert (result.outcome, result.http_status, result.temporary) == ("failed", 200, False)
    assert result.error == "APNs: answer (200) over 1024 bytes, not read"


async def test_only_apns_own_reason_is_shown_and_truncated(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    page = b"<html>INTERNAL-ADMIN-PAGE</html>"
    fake.answer_raw(TOKEN, 500, [("content-type", "text/html")], page)
    html = await send(apns, trigger())
    assert (html.outcome, html.error, html.temporary) == ("failed", "APNs 500 no reason", True)
    fake.answer_raw(TOKEN, 400, [], b'{"reason": "' + b"Bad\\nTopic" * 50 + b'", "x": "secret"}')
    long = await send(apns, trigger())
    assert long.error == "APNs 400 " + ("Bad Topic" * 50)[:100]


# --- a notification no chat made (issue 14: the default rendering and a given one) ----------


async def test_another_sources_alert_gets_the_default_rendering_for_its_device(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    alert = Alert("Incoming call", "Alice is calling", category="INCOMING_CALL")
    notification = Notification("test", "call-1", "alert", "m1", {"call": 7}, alert=alert)
    assert (await send(apns, notification, device_id=TOKEN)).outcome == "sent"
    [request] = fake.requests
    assert request["token"] == TOKEN
    assert (request["headers"]["apns-push-type"], request["headers"]["apns-priority"]) == (
        "alert",
        "10",
    )
    assert request["payload"] == {
        "aps": {
            "alert": {"title": "Incoming call", "body": "Alice is calling"},
            "sound": "default",
            "category": "INCOMING_CALL",
        },
        "message": {"call": 7},
    }


async def test_another_sources_rendering_and_push_type_are_sent_as_given(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    given = {"aps": {"content-available": 1}, "conversationId": "c-9", "ring": False}
    notification = Notification(
        "agent_alert",
        "c-9:dev",
        "cancel",
        "m2",
        {"ignored": True},
        renderings={"ios": given},
        apns_push_type="background",
    )
    assert (await send(apns, notification, device_id=TOKEN, debug=True)).outcome == "sent"
    [request] = fake.requests
    assert request["authority"] == f"localhost:{fake.port}"  # debug: the sandbox
    assert request["payload"] == given
    assert (request["headers"]["apns-push-type"], request["headers"]["apns-priority"]) == (
        "background",
        "5",
    )


# --- the HTTP/2 connection (chatpush/providers/http2.py) ------------------------------------


async def test_the_first_sends_at_once_open_one_connection(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    results = await asyncio.gather(*(send(apns, trigger(f"device-{n}")) for n in range(10)))
    assert {result.outcome for result in results} == {"sent"}
    assert (fake.connections, len(fake.delivered)) == (1, 10)


async def test_sends_over_the_servers_stream_limit_wait_for_a_stream(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    fake.max_concurrent_streams = 3
    assert (await send(apns, trigger())).outcome == "sent"  # the fake's settings now known
    results = await asyncio.gather(*(send(apns, trigger(f"device-{n}")) for n in range(20)))
    assert {result.outcome for result in results} == {"sent"}
    assert (fake.connections, len(fake.delivered)) == (1, 21)


async def test_a_payload_larger_than_the_servers_window_waits_for_window_updates(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    fake.initial_window_bytes = 100
    assert (await send(apns, trigger())).outcome == "sent"  # the fake's settings now known
    credentials = apns.parse(fake.credentials())
    message = MobileMessage(TOKEN, "bare", "title", "body", {"pad": "x" * 3000})
    results = await asyncio.gather(*(apns.send_message(credentials, message) for _ in range(3)))
    assert {result.outcome for result in results} == {"sent"}
    assert [request["payload"].get("pad") for request in fake.delivered[1:]] == ["x" * 3000] * 3


async def test_a_timed_out_send_leaves_the_connection_usable(
    fake: FakeApns, clock: FakeClock, certificate: tuple[Path, Path]
) -> None:
    fake.hang("slow-device")
    present = Credentials({("apns", "mobile", None): fake.credentials()})
    apns = ApnsProvider(settings(fake, certificate, total_timeout_s=0.3), clock, present)
    await apns.start()
    try:
        slow = await send(apns, trigger("slow-device"))
        after = await send(apns, trigger())
    finally:
        await apns.close()
    assert (slow.outcome, slow.temporary) == ("failed", True)
    assert after.outcome == "sent"
    assert (fake.connections, fake.hung) == (1, 1)


async def test_after_goaway_the_next_send_opens_a_new_connection(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    assert (await send(apns, trigger())).outcome == "sent"
    fake.go_away()
    await asyncio.sleep(0.05)
    assert (await send(apns, trigger())).outcome == "sent"
    assert (fake.connections, len(fake.delivered)) == (2, 2)


async def test_a_send_the_server_did_not_process_before_goaway_is_sent_again(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    fake.hang(TOKEN)
    pending = asyncio.create_task(send(apns, trigger()))
    for _ in range(500):  # until the fake holds it
        if fake.hung:
            break
        await asyncio.sleep(0.01)
    fake.hanging.clear()
    fake.go_away(last_stream_id=0)  # "none of your streams was processed"
    result = await pending
    assert result.outcome == "sent"
    assert (fake.connections, len(fake.delivered)) == (2, 1)


async def test_a_send_in_flight_when_the_server_goes_away_fails_at_once_as_temporary(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    fake.hang(TOKEN)
    pending = asyncio.create_task(send(apns, trigger()))
    for _ in range(500):  # until the fake holds it
        if fake.hung:
            break
        await asyncio.sleep(0.01)
    fake.go_away()  # the stream was received: maybe processed, not to be sent again here
    result = await pending
    assert (result.outcome, result.temporary) == ("failed", True)
    assert result.latency_ms < 1000 < apns._settings.total_timeout_s * 1000  # not a timeout
    assert (await send(apns, trigger("other"))).outcome == "sent"
    assert (fake.connections, len(fake.delivered)) == (2, 1)


async def test_a_lost_connection_is_replaced_on_the_next_send(
    apns: ApnsProvider, fake: FakeApns
) -> None:
    assert (await send(apns, trigger())).outcome == "sent"
    fake.drop_connections()
    await asyncio.sleep(0.05)
    assert (await send(apns, trigger())).outcome == "sent"
    assert (fake.connections, len(fake.delivered)) == (2, 2)


@pytest.mark.parametrize("error_code", [2, 7])  # INTERNAL_ERROR; REFUSED_STREAM (sent twice)
async def test_a_reset_stream_is_a_temporary_failure(
    apns: ApnsProvider, fake: FakeApns, error_code: int
) -> None:
    fake.reset(TOKEN, error_code)
    result = await send(apns, trigger())
    assert (result.outcome, result.temporary, result.http_status) == ("failed", True, None)
    assert result.error == "APNs: unreachable (no connection, or no answer in time)"
    fake.resets.clear()
    assert (await send(apns, trigger())).outcome == "sent"
    assert fake.connections == 1


def test_sends_run_on_uvloop_the_loop_serve_runs_on(certificate: tuple[Path, Path]) -> None:
    import uvloop

    async def scenario() -> tuple[list[SendResult], int]:
        clock = FakeClock()
        fake = await FakeApns(clock).start(*certificate)
        present = Credentials({("apns", "mobile", None): fake.credentials()})
        apns = ApnsProvider(settings(fake, certificate), clock, present)
        await apns.start()
        try:
            results = await asyncio.gather(*(send(apns, trigger(f"d-{n}")) for n in range(5)))
        finally:
            await apns.close()
            await fake.close()
        return results, len(fake.delivered)

    results, delivered = uvloop.run(scenario())
    assert ({result.outcome for result in results}, delivered) == ({"sent"}, 5)


def test_header_blocks_use_no_dynamic_table_and_never_index_the_provider_token() -> None:
    encoder = _LiteralEncoder()
    decoder = hpack.Decoder()
    encoder.header_table_size = 1024  # the server's SETTINGS_HEADER_TABLE_SIZE changed
    headers = [
        (b":method", b"POST"),
        (b":path", b"/3/device/" + b"a" * 200),
        (b"apns-topic", b"com.acme.chat"),
        (b"authorization", b"bearer " + b"j" * 300),
    ]
    for _ in range(2):
        decoded = decoder.decode(encoder.encode(headers), raw=True)
        assert decoded == headers
    assert decoder.header_table.maxsize == 1024  # the size update was signalled
    assert len(decoder.header_table.dynamic_entries) == 0
    assert [isinstance(h, hpack.NeverIndexedHeaderTuple) for h in decoded] == [
        False,
        False,
        False,
        True,
    ]
