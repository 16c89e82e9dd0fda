"""Who may push to a device (docs/push.md): customer-chosen NotifyRequestor / IncludePayload, and
the device-id proof.

The attack these close: an anonymous customer names a victim's ``GCTI_GMS_PushDeviceId``, turns on
``NotifyRequestor`` and ``PushIncludePayload``, and sends a message; the victim's device receives
the text. Every test runs the real app on 127.0.0.1 with a real receiver, and checks refusals from
outside: the 400 names the ``userData`` key and the chat-server side lists no chat.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiocometd_noloop import Client as CometdClient
from aiocometd_noloop import ConnectionType

from chatpush.config import ConfigError, Settings, load_settings
from chatpush.errors import Code
from chatpush.push.subscription import PROOF_KEY
from tests.conftest import ChatDriver
from tests.integration._push_support import Client, api, push_form, settle
from tests.receivers import Receiver

MakeClient = Callable[[Settings], Any]

SECRET = "5f3c1e0b8a7d46e29c0f1b2a3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"
NEW_SECRET = "new-" + SECRET[4:]
PHISH = "Your bank account is locked: log in at http://evil.example/"
LOCKED = {"push-customer-notify-requestor": False, "push-customer-include-payload": "false"}
SERVICES: dict[str, Any] = {
    "locked": LOCKED,
    "locked-payload": {**LOCKED, "push_notification_include_payload": True},
    "proven": {"push-device-id-secret": SECRET},
    "rotating": {"push-device-id-secret": NEW_SECRET, "push-device-id-previous-secret": SECRET},
    "default-explicit": {
        "push-customer-notify-requestor": "true",
        "push-customer-include-payload": True,
    },
}


def proof(device_id: str, device_type: str = "customhttp", secret: str = SECRET) -> str:
    """What a mobile backend computes (docs/push.md): hex HMAC-SHA256 of "type:deviceId"."""
    message = f"{device_type}:{device_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@pytest.fixture
async def client(
    receiver: Receiver, make_settings: Callable[..., Settings], make_client: MakeClient
) -> Client:
    """The app, started after (and so stopped before) the receiver it delivers to."""
    groups = {
        "main": {
            "default": True,
            "nodes": ["n-main"],
            "customhttp.url": receiver.url,
            "pushEnabled": "customhttp,comet",
        }
    }
    client: Client = await make_client(make_settings(groups=groups, services=SERVICES))
    return client


async def request_chat(
    client: Client, form: dict[str, str], service: str, expect: int = 200
) -> dict[str, Any]:
    response = await client.post(f"/genesys/2/chat/{service}", data=form)
    body: dict[str, Any] = await response.json()
    assert response.status == expect, body
    return body


async def chat_ids(client: Client) -> list[str]:
    return [chat["chatId"] for chat in (await api(client, "GET", "/chats"))["chats"]]


async def refused(client: Client, form: dict[str, str], key: str, service: str) -> str:
    """Request Chat is a 400 naming ``userData[key]``, and no chat (nor subscription) is left."""
    body = await request_chat(client, form, service, expect=400)
    assert "chatId" not in body and "secureKey" not in body
    [error] = body["errors"]
    assert error["code"] == Code.INVALID_PUSH_KEY
    assert f"userData[{key}]" in error["advice"], error["advice"]
    assert await chat_ids(client) == [], "a refused Request Chat left a chat behind"
    return str(error["advice"])


async def customer_phishes(client: Client, service: str, **keys: str) -> ChatDriver:
    """The attack: subscribe the victim's device, send a text, let an agent answer."""
    chat = ChatDriver(client, service)
    await chat.request_chat(**push_form("victim-device", **keys))
    await chat.op("send", message=PHISH)
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "How can I help?")
    await settle(client)
    return chat


def texts(receiver: Receiver) -> list[str]:
    """Every text that reached the device (payload notifications carry the event)."""
    found = []
    for item in receiver.received:
        for event in item.body.get("message", {}).get("messages", []):
            found.append(str(event.get("text", "")))
    return found


# -- default: GMS behaviour, unchanged ---------------------------------------------------------


@pytest.mark.parametrize("service", ["support", "default-explicit"])
async def test_by_default_customers_still_choose_notify_requestor_and_payload(
    client: Client, receiver: Receiver, service: str
) -> None:
    chat = await customer_phishes(
        client, service, NotifyRequestor="true", PushIncludePayload="true"
    )
    sub = await api(client, "GET", f"/chats/{chat.chat_id}/subscription")
    assert (sub["notifyRequestor"], sub["includePayload"]) == (True, True)
    assert PHISH in texts(receiver)
    assert {item.body["deviceId"] for item in receiver.received} == {"victim-device"}


# -- locked service: customers cannot turn them on ---------------------------------------------


@pytest.mark.parametrize(
    ("key", "keys"),
    [
        ("GCTI_GMS_NotifyRequestor", {"NotifyRequestor": "true"}),
        ("GCTI_GMS_PushIncludePayload", {"PushIncludePayload": "TRUE"}),
        ("GCTI_GMS_NotifyRequestor", {"NotifyRequestor": "yes", "PushIncludePayload": "1"}),
    ],
)
async def test_a_locked_service_refuses_customer_notify_requestor_and_payload(
    client: Client, receiver: Receiver, key: str, keys: dict[str, str]
) -> None:
    advice = await refused(client, push_form("victim-device", **keys), key, "locked")
    assert "does not let the customer turn it on" in advice
    await settle(client)
    assert receiver.received == []


async def test_a_locked_service_accepts_false_and_applies_its_own_defaults(
    client: Client,
) -> None:
    async def flags(form: dict[str, str], service: str) -> tuple[bool, bool]:
        body = await request_chat(client, form, service)
        sub = await api(client, "GET", f"/chats/{body['chatId']}/subscription")
        return sub["notifyRequestor"], sub["includePayload"]

    off = push_form("dev-1", NotifyRequestor="false", PushIncludePayload="0")
    assert await flags(off, "locked") == (False, False)
    assert await flags(push_form("dev-2"), "locked") == (False, False)
    # The service's own payload setting still applies, and asking for it is no error.
    assert await flags(push_form("dev-3"), "locked-payload") == (False, True)
    assert await flags(push_form("dev-4", PushIncludePayload="true"), "locked-payload") == (
        False,
        True,
    )
    # Asking for less than the service gives is allowed.
    less = push_form("dev-5", PushIncludePayload="false")
    assert await flags(less, "locked-payload") == (False, False)


async def test_on_a_locked_service_the_customers_text_never_reaches_the_device(
    client: Client, receiver: Receiver
) -> None:
    chat = await customer_phishes(client, "locked")
    # updateData cannot switch the keys on afterwards: push keys are read at Request Chat only.
    await chat.op(
        "updateData",
        **{
            "userData[GCTI_GMS_NotifyRequestor]": "true",
            "userData[GCTI_GMS_PushIncludePayload]": "true",
        },
    )
    await chat.op("send", message=PHISH)
    await settle(client)
    sub = await api(client, "GET", f"/chats/{chat.chat_id}/subscription")
    assert (sub["notifyRequestor"], sub["includePayload"]) == (False, False)
    # Only the agent's join and message were notified, as bare device ids.
    assert [item.raw for item in receiver.received] == [b'{"deviceId":"victim-device"}'] * 2
    assert PHISH not in texts(receiver)


# -- the device-id proof -----------------------------------------------------------------------


async def test_a_missing_proof_is_refused_and_nothing_is_stored(
    client: Client, receiver: Receiver
) -> None:
    advice = await refused(client, push_form("victim-device"), PROOF_KEY, "proven")
    assert "is required by this service" in advice
    await settle(client)
    assert receiver.received == []


@pytest.mark.parametrize(
    "wrong",
    [
        proof("another-device"),
        proof("victim-device", "comet"),  # a proof for a namesake of another device type
        proof("victim-device", secret=SECRET[::-1]),  # another secret
        proof("victim-device")[:-1],
        proof("victim-device") + "0",
        "zz" * 32,
        "é" * 64,
        "not hex at all",
    ],
)
async def test_a_wrong_proof_is_refused_and_nothing_is_stored(
    client: Client, receiver: Receiver, wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    form = push_form("victim-device", NotifyRequestor="true", PushIncludePayload="true")
    form[f"userData[{PROOF_KEY}]"] = wrong
    advice = await refused(client, form, PROOF_KEY, "proven")
    assert "does not prove GCTI_GMS_PushDeviceId" in advice
    await settle(client)
    assert receiver.received == []
    # Neither the secret nor the right proof shows in the answer or the logs.
    for secret in (SECRET, proof("victim-device")):
        assert secret not in advice and secret not in caplog.text


async def test_a_proof_for_one_device_type_does_not_open_another(client: Client) -> None:
    fcm_style = push_form("shared-name", PushDeviceType="comet")
    fcm_style[f"userData[{PROOF_KEY}]"] = proof("shared-name", "customhttp")
    advice = await refused(client, fcm_style, PROOF_KEY, "proven")
    assert '"comet:<device id>"' in advice
    right = push_form("shared-name", PushDeviceType="comet")
    right[f"userData[{PROOF_KEY}]"] = proof("shared-name", "comet")
    body = await request_chat(client, right, "proven")
    assert await chat_ids(client) == [body["chatId"]]


async def test_the_right_proof_subscribes_and_notifications_arrive(
    client: Client, receiver: Receiver
) -> None:
    keys = {PROOF_KEY: proof("my-device").upper()}  # hex in either case
    chat = ChatDriver(client, "proven")
    await chat.request_chat(
        **push_form("my-device"), **{f"userData[{k}]": v for k, v in keys.items()}
    )
    sub = await api(client, "GET", f"/chats/{chat.chat_id}/subscription")
    assert (sub["deviceId"], sub["status"]) == ("my-device", "active")
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "hello")
    await settle(client)
    assert [item.raw for item in receiver.received] == [b'{"deviceId":"my-device"}'] * 2


async def test_while_rotating_proofs_under_either_secret_are_accepted(client: Client) -> None:
    for device_id, secret in (("old-app", SECRET), ("new-app", NEW_SECRET)):
        form = push_form(device_id)
        form[f"userData[{PROOF_KEY}]"] = proof(device_id, secret=secret)
        body = await request_chat(client, form, "rotating")
        sub = await api(client, "GET", f"/chats/{body['chatId']}/subscription")
        assert sub["deviceId"] == device_id
    stale = push_form("stale-app")
    stale[f"userData[{PROOF_KEY}]"] = proof("stale-app", secret=SECRET[::-1])
    body = await request_chat(client, stale, "rotating", expect=400)
    assert PROOF_KEY in body["errors"][0]["advice"]
    # Each service checks its own secrets only.
    other = push_form("new-app")
    other[f"userData[{PROOF_KEY}]"] = proof("new-app", secret=NEW_SECRET)
    await request_chat(client, other, "proven", expect=400)


async def test_a_service_without_a_secret_ignores_the_proof_key(client: Client) -> None:
    form = push_form("dev-1")
    form[f"userData[{PROOF_KEY}]"] = "anything"
    body = await request_chat(client, form, "support")
    assert await chat_ids(client) == [body["chatId"]]


# -- the same rules over CometD --------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiocometd-noloop's aiohttp arguments
async def test_request_chat_over_cometd_follows_the_same_rules(client: Client) -> None:
    user_data = {
        key.removeprefix("userData[").removesuffix("]"): value
        for key, value in push_form("victim-device", NotifyRequestor="true").items()
        if key.startswith("userData[")
    }
    url = str(client.make_url("/genesys/cometd"))
    async with CometdClient(url, ConnectionType.LONG_POLLING, connection_timeout=0) as cometd:
        for service, key in (("locked", "GCTI_GMS_NotifyRequestor"), ("proven", PROOF_KEY)):
            channel = f"/service/chatV2/{service}"
            reply = await cometd.publish(
                channel, {"operation": "requestChat", "nickname": "A", "userData": user_data}
            )
            assert reply["successful"] is True
            async with asyncio.timeout(5):
                message = await cometd.receive()
            assert message["channel"] == channel
            [error] = message["data"]["errors"]
            assert error["code"] == Code.INVALID_PUSH_KEY
            assert f"userData[{key}]" in error["advice"]
    assert await chat_ids(client) == []


# -- the secret setting ------------------------------------------------------------------------


def test_the_secret_is_never_shown() -> None:
    options = load_settings(None, services=SERVICES).service_options("proven")
    assert options.push_device_id_secret is not None
    assert options.push_device_id_secret.get_secret_value() == SECRET
    assert SECRET not in repr(options) and SECRET not in str(options)
    short = "tooshort-but-secret"
    with pytest.raises(ConfigError) as caught:
        load_settings(None, services={"default": {"push-device-id-secret": short}})
    message = str(caught.value)
    assert "services.default.push-device-id-secret: must be 32 to 1024 characters" in message
    assert short not in message
    with pytest.raises(ConfigError, match="push-device-id-previous-secret is set without"):
        load_settings(None, services={"default": {"push-device-id-previous-secret": SECRET}})
