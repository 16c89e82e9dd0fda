"""The FCM HTTP v1 provider against a fake FCM on 127.0.0.1 (chatpush/testing/fcm.py)."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatpush.chat.model import ChatRecord
from chatpush.config import MobileSettings
from chatpush.providers.base import Notification
from chatpush.providers.fcm import FcmCredentials, FcmProvider
from chatpush.push.bodies import trigger_body
from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm, rsa_private_pem
from tests.providers.conftest import Credentials, chat_notification, target
from tests.providers.hostile import SECRET, Hostile, Mode

TOKEN = "device-token-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeFcm]:
    server = await FakeFcm(clock).start()
    yield server
    await server.close()


@pytest.fixture
async def provider(
    fake: FakeFcm, clock: FakeClock
) -> AsyncIterator[tuple[FcmProvider, Credentials]]:
    credentials = Credentials({("fcm", "mobile", None): fake.credentials()})
    settings = MobileSettings(
        fcm_api_url=fake.base_url,
        fcm_token_uri="http://127.0.0.1:9/unused",
        allowed_hosts=(fake.base_url,),
    )
    fcm = FcmProvider(settings, clock, credentials)
    await fcm.start()
    yield fcm, credentials
    await fcm.close()


def a_chat() -> ChatRecord:
    return ChatRecord(
        id="00C0FFEE00000001",
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


def trigger(position: int = 2, attempt: int = 0, token: str = TOKEN) -> Notification:
    body = trigger_body(
        device_id=token,
        obfuscated_key="obfuscated",
        chat=a_chat(),
        alias="0",
        position=position,
        attempt=attempt,
        final=False,
        content_keys=("session-id", "secure-key"),
        now_ms=0,
    )
    return chat_notification(
        body, "trigger", "00C0FFEE00000001", position=position, attempt=attempt
    )


async def send(fcm: FcmProvider, notification: Notification, **target_fields: Any) -> Any:
    return await fcm.send(target(**target_fields), notification, now_s=0)


async def test_a_trigger_reaches_fcm_as_a_background_data_message(
    provider: tuple[FcmProvider, Credentials], fake: FakeFcm
) -> None:
    fcm, _ = provider
    result = await send(fcm, trigger())
    assert result.outcome == "sent", result
    [message] = fake.sent
    assert message == {
        "token": TOKEN,
        "data": {
            "chatId": "00C0FFEE00000001",
            "chatEnded": "false",
            "notify-attempt": "0",
            "notify-position": "2",
            "session-id": "00C0FFEE00000001",
            "secure-key": "real-secure-key",
        },
        "android": {"priority": "high", "collapse_key": "00C0FFEE00000001"},
    }


async def test_the_group_title_and_body_make_it_visible(
    provider: tuple[FcmProvider, Credentials], fake: FakeFcm
) -> None:
    fcm, _ = provider
    result = await send(fcm, trigger(), fcm_title="Acme", fcm_body="You have a new message")
    assert result.outcome == "sent"
    assert fake.sent[0]["notification"] == {"title": "Acme", "body": "You have a new message"}


async def test_the_access_token_is_cached_then_renewed_before_it_expires(
    provider: tuple[FcmProvider, Credentials], fake: FakeFcm, clock: FakeClock
) -> None:
    fcm, _ = provider
    for _ in range(3):
        assert (await send(fcm, trigger())).outcome == "sent"
    assert fake.token_requests == 1
    clock.advance(54 * 60)  # 6 minutes left: still used
    assert (await send(fcm, trigger())).outcome == "sent"
    assert fake.token_requests == 1
    clock.advance(2 * 60)  # 4 minutes left: renewed before it runs out
    assert (await send(fcm, trigger())).outcome == "sent"
    assert fake.token_requests == 2
    assert not fake.refused_assertions


@pytest.mark.parametrize(
    ("status", "code", "message", "outcome", "temporary"),
    [
        (404, "UNREGISTERED", "Requested entity was not found.", "rejected", False),
        (
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            "rejected",
            False,
        ),
        (400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "failed", False),
        (500, "INTERNAL", "Internal error", "failed", True),
        (503, "UNAVAILABLE", "The service is unavailable", "failed", True),
        (
            401,
            "THIRD_PARTY_AUTH_ERROR",
            "APNs certificate or auth key was invalid",
            "failed",
            False,
        ),
        (403, "SENDER_ID_MISMATCH", "SenderId mismatch", "failed", False),
    ],
)
async def test_fcm_errors_map_to_dead_temporary_or_permanent(
    provider: tuple[FcmProvider, Credentials],
    fake: FakeFcm,
    status: int,
    code: str,
    message: str,
    outcome: str,
    temporary: bool,
) -> None:
    fcm, _ = provider
    fake.fail(TOKEN, status, code, message)
    result = await send(fcm, trigger())
    assert (result.outcome, result.http_status) == (outcome, status)
    assert result.error.startswith(f"FCM {status} {code}: {message}")
    if outcome == "failed":
        assert result.temporary is temporary


@pytest.mark.parametrize(("retry_after", "expected_s"), [(None, 60), ("10", 60), ("120", 120)])
async def test_after_a_429_nothing_goes_to_the_project_for_at_least_60_s(
    provider: tuple[FcmProvider, Credentials],
    fake: FakeFcm,
    clock: FakeClock,
    retry_after: str | None,
    expected_s: int,
) -> None:
    fcm, _ = provider
    fake.fail(TOKEN, 429, "QUOTA_EXCEEDED", "Quota exceeded", retry_after)
    result = await send(fcm, trigger())
    assert (result.outcome, result.temporary, result.retry_after_s) == ("failed", True, expected_s)
    del fake.failures[TOKEN]
    clock.advance(expected_s - 1)
    held = await send(fcm, trigger(token="another-device"))
    assert held.outcome == "failed" and held.temporary and "429" in (held.error or "")
    assert fake.sent == []  # not even tried
    clock.advance(1)
    assert (await send(fcm, trigger(token="another-device"))).outcome == "sent"


async def test_a_wrong_private_key_is_a_permanent_failure_saying_so(
    fake: FakeFcm, clock: FakeClock
) -> None:
    wrong = Credentials({("fcm", "mobile", None): fake.credentials(private_key=rsa_private_pem())})
    settings = MobileSettings(fcm_api_url=fake.base_url, allowed_hosts=(fake.base_url,))
    fcm = FcmProvider(settings, clock, wrong)
    await fcm.start()
    try:
        result = await send(fcm, trigger())
    finally:
        await fcm.close()
    assert (result.outcome, result.temporary) == ("failed", False)
    assert result.error == "FCM token endpoint 400: invalid_grant: Invalid JWT Signature."
    assert fake.sent == []


async def test_no_credentials_and_an_unreachable_fcm(fake: FakeFcm, clock: FakeClock) -> None:
    settings = MobileSettings(fcm_api_url=fake.base_url, allowed_hosts=(fake.base_url,))
    fcm = FcmProvider(settings, clock, Credentials())
    await fcm.start()
    try:
        none = await send(fcm, trigger())
        assert (none.outcome, none.temporary) == ("failed", False)
        assert none.error == "no FCM credentials for group 'mobile'"
    finally:
        await fcm.close()
    gone = Credentials(
        {("fcm", "mobile", None): fake.credentials(token_uri="http://127.0.0.1:9/t")}
    )
    settings = MobileSettings(
        fcm_api_url="http://127.0.0.1:9", allowed_hosts=("http://127.0.0.1:9",)
    )
    fcm = FcmProvider(settings, clock, gone)
    await fcm.start()
    try:
        down = await send(fcm, trigger())
    finally:
        await fcm.close()
    assert (down.outcome, down.temporary) == ("failed", True)
    assert down.error == "token endpoint: unreachable (no connection, or no answer in time)"


def test_credentials_are_checked_when_read() -> None:
    good = {"project_id": "p", "client_email": "e@x", "private_key": rsa_private_pem()}
    assert FcmCredentials.from_mapping(good).project_id == "p"
    with pytest.raises(ValueError, match="missing client_email"):
        FcmCredentials.from_mapping({**good, "client_email": ""})
    with pytest.raises(ValueError, match="not a readable PEM"):
        FcmCredentials.from_mapping({**good, "private_key": "-----BEGIN PRIVATE KEY-----\nxx"})


# -- outbound safety: allowed hosts, no redirects, bounded answers, no foreign text -------------


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    server = await Hostile().start()
    yield server
    await server.close()


async def fcm_against(
    fake: FakeFcm, clock: FakeClock, *allowed: str, **fields: str
) -> tuple[FcmProvider, Credentials]:
    """A started provider whose API is the fake and whose credentials carry ``fields``."""
    credentials = Credentials({("fcm", "mobile", None): fake.credentials(**fields)})
    settings = MobileSettings(fcm_api_url=fake.base_url, allowed_hosts=(fake.base_url, *allowed))
    fcm = FcmProvider(settings, clock, credentials)
    await fcm.start()
    return fcm, credentials


async def test_a_token_uri_outside_the_allowed_hosts_is_never_requested(
    fake: FakeFcm, hostile: Hostile, clock: FakeClock
) -> None:
    fcm, _ = await fcm_against(fake, clock, token_uri=f"{hostile.base_url}/internal")
    try:
        result = await send(fcm, trigger())
    finally:
        await fcm.close()
    assert (result.outcome, result.temporary) == ("failed", False)
    assert result.error == f"token endpoint: {hostile.base_url} is not in mobile.allowed_hosts"
    assert hostile.hits == [] and fake.sent == []


async def test_plain_http_needs_an_http_entry_and_the_default_list_allows_only_google(
    fake: FakeFcm, clock: FakeClock
) -> None:
    port = fake.base_url.rsplit(":", 1)[1]
    not_listed = "is not in mobile.allowed_hosts"
    token_refused = f"token endpoint: http://127.0.0.1:{port} {not_listed}"
    cases = [
        ((fake.base_url,), "https://127.0.0.1", f"FCM: https://127.0.0.1:443 {not_listed}"),
        (
            (fake.base_url,),
            "https://fcm.googleapis.com",
            f"FCM: https://fcm.googleapis.com:443 {not_listed}",
        ),
        (("127.0.0.1", f"127.0.0.1:{port}"), fake.base_url, token_refused),
        ((f"https://127.0.0.1:{port}",), fake.base_url, token_refused),
        (MobileSettings().allowed_hosts, fake.base_url, token_refused),
    ]
    for allowed, api_url, error in cases:
        settings = MobileSettings(fcm_api_url=api_url, allowed_hosts=allowed)
        credentials = Credentials({("fcm", "mobile", None): fake.credentials()})
        fcm = FcmProvider(settings, clock, credentials)
        await fcm.start()
        try:
            result = await send(fcm, trigger())
        finally:
            await fcm.close()
        assert (result.outcome, result.temporary, result.error) == ("failed", False, error)
    assert fake.token_requests == 0 and fake.sent == []  # checked before any request
    assert MobileSettings().allowed_hosts == (
        "https://oauth2.googleapis.com:443",
        "https://fcm.googleapis.com:443",
        "https://api.push.apple.com:443",
        "https://api.push.apple.com:2197",
        "https://api.sandbox.push.apple.com:443",
        "https://api.sandbox.push.apple.com:2197",
    )


@pytest.mark.parametrize(
    ("mode", "error", "temporary"),
    [
        ("redirect", "FCM token endpoint 302: a redirect, not followed", False),
        ("huge", "FCM token endpoint: answer (200) over 65536 bytes, not read", False),
        ("huge-declared", "FCM token endpoint: answer (200) over 65536 bytes, not read", False),
        ("html", "FCM token endpoint 200: the answer is not an access token", True),
        ("html-error", "FCM token endpoint 500: no OAuth error in the answer", False),
    ],
)
async def test_a_token_endpoint_that_redirects_floods_or_answers_html_is_a_clean_failure(
    fake: FakeFcm, hostile: Hostile, clock: FakeClock, mode: Mode, error: str, temporary: bool
) -> None:
    hostile.mode = mode
    token_uri = f"{hostile.base_url}/token"
    fcm, _ = await fcm_against(fake, clock, hostile.base_url, token_uri=token_uri)
    try:
        result = await send(fcm, trigger())
    finally:
        await fcm.close()
    assert (result.outcome, result.error, result.temporary) == ("failed", error, temporary)
    assert hostile.hits == ["/token"]  # the redirect's target is not requested
    assert fake.sent == []


@pytest.mark.parametrize(
    ("mode", "error", "temporary"),
    [
        ("redirect", "FCM 302: a redirect, not followed", False),
        ("huge", "FCM: answer (200) over 65536 bytes, not read", False),
        ("html", "FCM 200: the answer is not FCM's JSON", True),
        ("html-error", "FCM 500 UNKNOWN: no FCM error in the answer", True),
    ],
)
async def test_an_fcm_api_that_redirects_floods_or_answers_html_is_a_clean_failure(
    fake: FakeFcm, hostile: Hostile, clock: FakeClock, mode: Mode, error: str, temporary: bool
) -> None:
    hostile.mode = mode
    credentials = Credentials({("fcm", "mobile", None): fake.credentials()})
    settings = MobileSettings(
        fcm_api_url=hostile.base_url, allowed_hosts=(fake.base_url, hostile.base_url)
    )
    fcm = FcmProvider(settings, clock, credentials)
    await fcm.start()
    try:
        result = await send(fcm, trigger())
    finally:
        await fcm.close()
    assert (result.outcome, result.error, result.temporary) == ("failed", error, temporary)
    assert SECRET not in repr(result)
    assert hostile.hits == ["/v1/projects/acme-app/messages:send"]


async def test_refused_and_silent_endpoints_read_the_same_and_the_detail_is_logged(
    fake: FakeFcm, hostile: Hostile, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    hostile.mode = "hang"
    closed = f"http://127.0.0.1:{free_port()}"
    errors = []
    for token_uri in (f"{closed}/token", f"{hostile.base_url}/token"):
        credentials = Credentials({("fcm", "mobile", None): fake.credentials(token_uri=token_uri)})
        settings = MobileSettings(
            fcm_api_url=fake.base_url,
            allowed_hosts=(fake.base_url, closed, hostile.base_url),
            total_timeout_s=0.3,
        )
        fcm = FcmProvider(settings, clock, credentials)
        await fcm.start()
        try:
            with caplog.at_level(logging.WARNING, logger="chatpush.outbound"):
                result = await send(fcm, trigger())
        finally:
            await fcm.close()
        assert (result.outcome, result.temporary) == ("failed", True)
        errors.append(result.error)
    assert errors == ["token endpoint: unreachable (no connection, or no answer in time)"] * 2
    logged = [record.getMessage() for record in caplog.records]
    assert "ClientConnectorError" in logged[0] and "TimeoutError" in logged[1], logged
