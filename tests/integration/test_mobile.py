"""Mobile push end to end on the full app: credentials through the admin API (encrypted, never
readable back, tested with one click), a chat whose device is ``fcm`` getting its triggers on a
fake FCM and acknowledged by refresh, and a dead token ending the subscription for good.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet
from sqlalchemy import text

from chatpush.api.keys import DATABASE, METRICS, VAULT
from chatpush.config import Settings
from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm, rsa_private_pem
from tests.conftest import API_KEY, ChatDriver
from tests.integration._push_support import api, push_form, settle, trail
from tests.providers.hostile import SECRET, Hostile, Mode

Client = TestClient[web.Request, web.Application]
CREDENTIALS_KEY = Fernet.generate_key().decode()
RESEND_DELAY_S = 15
FCM_PATH = "/groups/mobile/credentials/fcm"


@pytest.fixture
async def fcm(clock: FakeClock) -> AsyncIterator[FakeFcm]:
    server = await FakeFcm(clock).start()
    yield server
    await server.close()


@pytest.fixture
def mobile_settings(
    make_settings: Callable[..., Settings], fcm: FakeFcm
) -> Callable[..., Settings]:
    def make(*allowed: str, **security: Any) -> Settings:
        return make_settings(
            security={"api_keys": [API_KEY], "credentials_key": CREDENTIALS_KEY, **security},
            mobile={"fcm_api_url": fcm.base_url, "allowed_hosts": [fcm.base_url, *allowed]},
            groups={"mobile": {"default": True, "nodes": ["n1"], "pushEnabled": "fcm,ios"}},
            services={
                "default": {
                    "flex-push-resend-delay": RESEND_DELAY_S,
                    "flex-push-content": "session-id, secure-key",
                }
            },
        )

    return make


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    server = await Hostile().start()
    yield server
    await server.close()


@pytest.fixture
async def app(make_client: Callable[..., Any], mobile_settings: Callable[..., Settings]) -> Client:
    client: Client = await make_client(mobile_settings())
    return client


async def test_credentials_are_stored_encrypted_and_shown_only_masked(
    app: Client, fcm: FakeFcm
) -> None:
    stored = await api(app, "PUT", FCM_PATH, json=fcm.credentials())
    assert stored["group"] == "mobile" and stored["kind"] == "fcm" and stored["provider"] is None
    assert set(stored["fields"]) == {
        "project_id",
        "client_email",
        "private_key",
        "private_key_id",
        "token_uri",
    }  # "type" and the other service-account fields are not kept
    shown = await api(app, "GET", FCM_PATH)
    assert shown["fields"]["client_email"] == (f"push… ({len(fcm.client_email)} characters)")
    assert shown["fields"]["private_key"].startswith("----… (")
    assert fcm.private_key[40:80] not in str(shown)
    listed = await api(app, "GET", "/credentials")
    assert [item["fields"] for item in listed["credentials"]] == [shown["fields"]]

    def rows(conn: Any) -> list[str]:
        return list(conn.execute(text("SELECT ciphertext FROM provider_credentials")).scalars())

    [ciphertext] = await app.app[DATABASE].read(rows)
    assert fcm.client_email not in ciphertext and "PRIVATE KEY" not in ciphertext
    assert Fernet(CREDENTIALS_KEY.encode()).decrypt(ciphertext.encode())  # really encrypted
    assert await api(app, "DELETE", FCM_PATH) == {"deleted": True}
    await api(app, "GET", FCM_PATH, expect=404)


@pytest.mark.parametrize(
    ("change", "advice"),
    [
        ({"client_email": None}, "missing client_email"),
        ({"private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n"}, "not a readable PEM"),
        ({"project_id": 42}, "project_id: must be strings"),
    ],
)
async def test_bad_credentials_are_refused_and_nothing_is_stored(
    app: Client, fcm: FakeFcm, change: dict[str, Any], advice: str
) -> None:
    given = {**fcm.credentials(), **change}
    refused = await api(app, "PUT", FCM_PATH, expect=400, json=given)
    assert advice in refused["errors"][0]["advice"]
    apns = {"key_id": "K", "team_id": "T", "private_key": rsa_private_pem(), "topic": "com.x"}
    wrong_key = await api(app, "PUT", "/groups/mobile/credentials/apns", expect=400, json=apns)
    assert "EC P-256" in wrong_key["errors"][0]["advice"]
    await api(app, "PUT", "/groups/nowhere/credentials/fcm", expect=404, json=fcm.credentials())
    await api(app, "PUT", "/groups/mobile/credentials/gcm", expect=400, json=fcm.credentials())
    assert (await api(app, "GET", "/credentials"))["credentials"] == []


async def test_without_a_credentials_key_nothing_can_be_stored(
    make_client: Callable[..., Any], mobile_settings: Callable[..., Settings], fcm: FakeFcm
) -> None:
    app: Client = await make_client(mobile_settings(credentials_key=None))
    refused = await api(app, "PUT", FCM_PATH, expect=503, json=fcm.credentials())
    assert refused["errors"][0]["code"] == 201
    assert "security.credentials_key" in refused["errors"][0]["advice"]


async def test_the_test_call_reports_success_or_the_providers_exact_error(
    app: Client, fcm: FakeFcm
) -> None:
    await api(app, "PUT", FCM_PATH, json=fcm.credentials())
    ok = await api(app, "POST", FCM_PATH + "/test", json={"deviceToken": "phone-1"})
    assert (ok["ok"], ok["outcome"], ok["httpStatus"], ok["error"]) == (True, "sent", 200, None)
    assert fcm.sent[-1]["notification"]["title"] == "chatpush"
    fcm.fail("gone-phone", 404, "UNREGISTERED", "Requested entity was not found.")
    dead = await api(app, "POST", FCM_PATH + "/test", json={"deviceToken": "gone-phone"})
    assert (dead["ok"], dead["outcome"]) == (False, "rejected")
    assert dead["error"] == "FCM 404 UNREGISTERED: Requested entity was not found."
    # Credentials in the body are tried without being stored: a wrong key says so clearly.
    wrong = fcm.credentials(private_key=rsa_private_pem())
    verdict = await api(
        app, "POST", FCM_PATH + "/test", json={"deviceToken": "phone-1", "credentials": wrong}
    )
    assert verdict["ok"] is False
    assert verdict["error"] == "FCM token endpoint 400: invalid_grant: Invalid JWT Signature."
    await api(app, "POST", FCM_PATH + "/test", expect=400, json={})


async def test_an_fcm_chat_gets_its_triggers_and_is_acknowledged_by_refresh(
    app: Client, fcm: FakeFcm, clock: FakeClock
) -> None:
    await api(app, "PUT", FCM_PATH, json=fcm.credentials())
    chat = ChatDriver(app)
    await chat.request_chat(**push_form("phone-1", PushDeviceType="android", PushResend="true"))
    await chat.agent_joins()
    await settle(app)
    [first] = fcm.sent
    data = first["data"]
    assert (first["token"], data["notify-position"], data["notify-attempt"]) == (
        "phone-1",
        "2",
        "0",
    )
    assert data["chatId"] == chat.chat_id and first["android"]["priority"] == "high"
    clock.advance(RESEND_DELAY_S)
    await settle(app)
    assert [m["data"]["notify-attempt"] for m in fcm.sent] == ["0", "1"]
    # The app, woken, pulls the transcript with what the trigger carried.
    refreshed = await chat.op(
        "refresh", secureKey=data["secure-key"], transcriptPosition=data["notify-position"]
    )
    assert [event["index"] for event in refreshed["messages"]] == [2]
    sub = await api(app, "GET", f"/chats/{chat.chat_id}/subscription")
    assert sub["outstandingTrigger"] is None and sub["deviceType"] == "fcm"
    clock.advance(10 * RESEND_DELAY_S)
    await settle(app)
    assert len(fcm.sent) == 2
    assert [row["outcome"] for row in await trail(app, chat.chat_id)] == ["sent", "sent"]


async def test_a_dead_token_ends_the_subscription_and_is_never_sent_to_again(
    app: Client, fcm: FakeFcm, clock: FakeClock
) -> None:
    await api(app, "PUT", FCM_PATH, json=fcm.credentials())
    fcm.fail("old-phone", 404, "UNREGISTERED", "Requested entity was not found.")
    chat = ChatDriver(app)
    await chat.request_chat(**push_form("old-phone", PushDeviceType="fcm", PushResend="true"))
    await chat.agent_joins()
    await settle(app)
    sub = await api(app, "GET", f"/chats/{chat.chat_id}/subscription")
    assert (sub["status"], sub["outstandingTrigger"], sub["nextResendAt"]) == (
        "rejected",
        None,
        None,
    )
    [row] = await trail(app, chat.chat_id)
    assert (row["outcome"], row["httpStatus"]) == ("rejected", 404)
    assert "UNREGISTERED" in row["error"]
    assert 'chatpush_dead_tokens_total{device_type="fcm"} 1' in app.app[METRICS].render()
    clock.advance(10 * RESEND_DELAY_S)
    await settle(app)
    assert len(await trail(app, chat.chat_id)) == 1  # never again
    # A later chat on the same token: its subscription is rejected from the start.
    later = ChatDriver(app)
    await later.request_chat(**push_form("old-phone", PushDeviceType="fcm", PushResend="true"))
    agent = await later.agent_joins()
    await later.agent_says(agent, "hello?")
    await settle(app)
    assert (await api(app, "GET", f"/chats/{later.chat_id}/subscription"))["status"] == "rejected"
    assert await trail(app, later.chat_id) == []
    assert fcm.sent == []


# -- outbound safety: the credentials API is no way to reach other hosts ----------------------


async def test_a_token_uri_outside_the_allowed_hosts_is_refused_and_never_requested(
    app: Client, fcm: FakeFcm, hostile: Hostile
) -> None:
    given = fcm.credentials(token_uri=f"{hostile.base_url}/latest/meta-data")
    refused = await api(app, "PUT", FCM_PATH, expect=400, json=given)
    assert refused["errors"][0]["advice"] == (
        f"fcm credentials: token_uri: {hostile.base_url} is not in mobile.allowed_hosts"
    )
    await api(app, "GET", FCM_PATH, expect=404)  # nothing stored
    body = {"deviceToken": "phone-1", "credentials": given}
    tried = await api(app, "POST", FCM_PATH + "/test", expect=400, json=body)
    assert tried["errors"][0]["advice"] == refused["errors"][0]["advice"]
    for https_only in (fcm.token_uri.replace("http://", "https://"), "https://10.0.0.1/token"):
        await api(app, "PUT", FCM_PATH, expect=400, json=fcm.credentials(token_uri=https_only))
    # Stored before the check (or before mobile.allowed_hosts changed): never used either.
    await app.app[VAULT].put("fcm", "mobile", None, given)
    verdict = await api(app, "POST", FCM_PATH + "/test", json={"deviceToken": "phone-1"})
    assert (verdict["ok"], verdict["outcome"]) == (False, "failed")
    assert verdict["error"] == (
        f"token endpoint: {hostile.base_url} is not in mobile.allowed_hosts"
    )
    chat = ChatDriver(app)
    await chat.request_chat(**push_form("phone-1", PushDeviceType="fcm", PushResend="true"))
    await chat.agent_joins()
    await settle(app)
    [row] = await trail(app, chat.chat_id)
    assert (row["outcome"], row["error"]) == ("failed", verdict["error"])
    assert hostile.hits == [] and fcm.sent == []


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("html", "FCM token endpoint 200: the answer is not an access token"),
        ("html-error", "FCM token endpoint 500: no OAuth error in the answer"),
        ("redirect", "FCM token endpoint 302: a redirect, not followed"),
        ("huge", "FCM token endpoint: answer (200) over 65536 bytes, not read"),
        ("hang", "token endpoint: unreachable (no connection, or no answer in time)"),
    ],
)
async def test_the_test_call_answers_a_verdict_not_the_endpoints_words_nor_a_500(
    make_client: Callable[..., Any],
    mobile_settings: Callable[..., Settings],
    fcm: FakeFcm,
    hostile: Hostile,
    mode: Mode,
    error: str,
) -> None:
    settings = mobile_settings(hostile.base_url)
    # Short for the hanging endpoint; the others must answer well within it, even on a machine
    # busy with the rest of the suite (0.5 s was once too short for 64 KiB on loopback).
    timeout_s = 0.5 if mode == "hang" else 5.0
    settings = settings.model_copy(
        update={"mobile": settings.mobile.model_copy(update={"total_timeout_s": timeout_s})}
    )
    app: Client = await make_client(settings)
    hostile.mode = mode
    given = fcm.credentials(token_uri=f"{hostile.base_url}/token")
    body = {"deviceToken": "phone-1", "credentials": given}
    verdict = await api(app, "POST", FCM_PATH + "/test", json=body)
    assert (verdict["ok"], verdict["error"]) == (False, error)
    assert SECRET not in str(verdict)
    assert hostile.hits == ["/token"]


async def test_stored_credentials_that_no_longer_parse_get_a_verdict_not_a_500(
    app: Client, fcm: FakeFcm
) -> None:
    broken = {"key_id": "K", "team_id": "T", "private_key": rsa_private_pem(), "topic": "com.x"}
    await app.app[VAULT].put("apns", "mobile", None, broken)  # as an older version could
    path = "/groups/mobile/credentials/apns/test"
    verdict = await api(app, "POST", path, json={"deviceToken": "phone-1"})
    assert (verdict["ok"], verdict["outcome"]) == (False, "failed")
    assert verdict["error"] == (
        "APNs credentials: private_key must be an EC P-256 key (an APNs .p8 key)"
    )
