"""The FCM HTTP v1 provider against a fake FCM on 127.0.0.1 (tests/providers/fake_fcm.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatpush.chat.model import ChatRecord
from chatpush.config import MobileSettings
from chatpush.providers.fcm import FcmCredentials, FcmProvider
from chatpush.push.bodies import trigger_body
from chatpush.testing import FakeClock
from tests.providers.conftest import Credentials, target
from tests.providers.fake_fcm import FakeFcm, rsa_private_pem

TOKEN = "device-token-1"


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
    settings = MobileSettings(fcm_api_url=fake.base_url, fcm_token_uri="http://127.0.0.1:9/unused")
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


def trigger(position: int = 2, attempt: int = 0, token: str = TOKEN) -> dict[str, Any]:
    return trigger_body(
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


async def send(fcm: FcmProvider, body: dict[str, Any], **target_fields: Any) -> Any:
    return await fcm.send(
        target(**target_fields), body, chat_id="00C0FFEE00000001", message_id="m1", now_s=0
    )


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
    fcm = FcmProvider(MobileSettings(fcm_api_url=fake.base_url), clock, wrong)
    await fcm.start()
    try:
        result = await send(fcm, trigger())
    finally:
        await fcm.close()
    assert (result.outcome, result.temporary) == ("failed", False)
    assert result.error == "FCM token endpoint 400: invalid_grant: Invalid JWT Signature."
    assert fake.sent == []


async def test_no_credentials_and_an_unreachable_fcm(fake: FakeFcm, clock: FakeClock) -> None:
    fcm = FcmProvider(MobileSettings(fcm_api_url=fake.base_url), clock, Credentials())
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
    fcm = FcmProvider(MobileSettings(fcm_api_url="http://127.0.0.1:9"), clock, gone)
    await fcm.start()
    try:
        down = await send(fcm, trigger())
    finally:
        await fcm.close()
    assert (down.outcome, down.temporary) == ("failed", True)
    assert down.error.startswith("token endpoint: ClientConnectorError")


def test_credentials_are_checked_when_read() -> None:
    good = {"project_id": "p", "client_email": "e@x", "private_key": rsa_private_pem()}
    assert FcmCredentials.from_mapping(good).project_id == "p"
    with pytest.raises(ValueError, match="missing client_email"):
        FcmCredentials.from_mapping({**good, "client_email": ""})
    with pytest.raises(ValueError, match="not a readable PEM"):
        FcmCredentials.from_mapping({**good, "private_key": "-----BEGIN PRIVATE KEY-----\nxx"})
