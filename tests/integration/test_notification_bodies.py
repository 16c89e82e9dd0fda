"""Notification bodies as a real receiver gets them (CONTRACT §7): (a) reliable trigger, (b) event
with payload, (c) bare; flex-push-content; the obfuscated key; customhttp.message; signatures.

Bodies are compared byte for byte with the compact JSON of the contract's shapes, keys in the
contract's order, so a renamed field, a number where a string belongs or an extra key all fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from chatpush.api.keys import DATABASE
from chatpush.config import Settings
from chatpush.push.obfuscation import RevealedKey, reveal
from chatpush.store import secrets as stored_secrets
from chatpush.testing import FakeClock
from tests.conftest import ChatDriver
from tests.integration._push_support import Client, Receivers, api, push_form, settle
from tests.receivers import Received, Receiver

MakeClient = Callable[[Settings], Any]

ALIAS = "117"
SIGNING_KEY = b"0123456789abcdef0123456789abcdef"
SIGNING_SECRET = "whsec_" + base64.b64encode(SIGNING_KEY).decode()
AUTHORIZATION = "Bearer receiver-token-123"
CONTENTS = {
    "c-none": "",
    "c-app": "app-dbid",
    "c-key": "secure-key",
    "c-session": "session-id",
    "c-user": "user-id",
    "c-app-key": "app-dbid, secure-key",
    "c-user-session": "user-id,session-id",
    "c-all": "app-dbid,secure-key,session-id,user-id",
}


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Setup:
    client: Client
    clock: FakeClock
    main: Receiver
    dummy: Receiver
    signed: Receiver

    def chat(self, service: str = "support") -> ChatDriver:
        return ChatDriver(self.client, service)

    async def settle(self) -> None:
        await settle(self.client)

    async def secret(self) -> bytes:
        secret = await self.client.app[DATABASE].read(
            stored_secrets.read_secret, "secure-key-obfuscation"
        )
        assert secret is not None
        return secret

    async def transcript(self, chat_id: str) -> list[dict[str, Any]]:
        body = await api(self.client, "GET", f"/chats/{chat_id}")
        return list(body["transcript"])


@pytest.fixture
async def setup(
    make_settings: Callable[..., Settings], make_client: MakeClient, clock: FakeClock
) -> AsyncIterator[Setup]:
    async with Receivers() as receivers:
        main, dummy, signed = [await receivers.start() for _ in range(3)]
        settings = make_settings(
            server={"alias": ALIAS},
            groups={
                "main": {"default": True, "nodes": ["n1"], "customhttp.url": main.url},
                "dummy": {
                    "nodes": ["n2"],
                    "customhttp.url": dummy.url,
                    "customhttp.message": "dummy message",
                },
                "signed": {
                    "nodes": ["n3"],
                    "customhttp.url": signed.url,
                    "customhttp.signing_secret": SIGNING_SECRET,
                    "customhttp.authorization": AUTHORIZATION,
                },
            },
            services={
                **{name: {"flex-push-content": value} for name, value in CONTENTS.items()},
                "payload": {"push_notification_include_payload": "true"},
            },
        )
        yield Setup(await make_client(settings), clock, main, dummy, signed)


def trigger_bytes(
    *,
    device_id: str,
    secure_key: str,
    next_position: int,
    chat_ended: bool,
    utc_time: int,
    user_data: dict[str, str],
) -> bytes:
    """CONTRACT §7 (a), field for field and in its order."""
    return compact(
        {
            "deviceId": device_id,
            "message": {
                "secureKey": secure_key,
                "chatId": "deprecated",
                "userId": "deprecated",
                "alias": "0",
                "nextPosition": next_position,
                "chatEnded": chat_ended,
                "statusCode": 0,
                "monitored": False,
                "messages": [
                    {
                        "from": {"nickname": "", "participantId": 0, "type": "Client"},
                        "index": 0,
                        "text": "PUSH-NOTIFICATION",
                        "type": "PushUrl",
                        "utcTime": utc_time,
                        "userData": user_data,
                    }
                ],
            },
        }
    )


def payload_bytes(
    *, device_id: str, secure_key: str, chat: dict[str, Any], event: dict[str, Any], ended: bool
) -> bytes:
    """CONTRACT §7 (b): the §3 envelope of the chat around one real event."""
    return compact(
        {
            "deviceId": device_id,
            "message": {
                "secureKey": secure_key,
                "chatId": chat["chatId"],
                "userId": chat["userId"],
                "alias": ALIAS,
                "nextPosition": event["index"] + 1,
                "chatEnded": ended,
                "statusCode": 0,
                "monitored": False,
                "messages": [event],
            },
        }
    )


def obfuscated(item: Received) -> str:
    key = item.body["message"]["secureKey"]
    assert isinstance(key, str) and key
    return key


# -- (a) the reliable trigger ------------------------------------------------------------------


async def test_trigger_is_the_contract_shape_byte_for_byte(setup: Setup) -> None:
    chat = setup.chat()
    started = await chat.request_chat(**push_form("ala23456789", PushResend="true"))
    await chat.agent_joins()
    await setup.settle()
    [item] = setup.main.received
    assert item.raw == trigger_bytes(
        device_id="ala23456789",
        secure_key=obfuscated(item),
        next_position=3,
        chat_ended=False,
        utc_time=setup.clock.now_ms(),
        user_data={
            "notify-attempt": "0",
            "notify-position": "2",
            "session-id": chat.chat_id,
            "user-id": started["userId"],
        },
    )
    assert item.headers["Content-Type"] == "application/json"


async def test_final_trigger_reports_the_end_of_the_chat(setup: Setup) -> None:
    chat = setup.chat()
    started = await chat.request_chat(**push_form("dev-a", PushResend="true"))
    await chat.agent_joins()
    await setup.settle()
    await chat.op("refresh", transcriptPosition="2")  # acknowledges the first trigger
    setup.clock.advance(1)
    await chat.api("POST", f"/chats/{chat.chat_id}/end")  # the agent leaves: index 3
    await setup.settle()
    _first, final = setup.main.received
    assert final.raw == trigger_bytes(
        device_id="dev-a",
        secure_key=obfuscated(final),
        next_position=4,
        chat_ended=True,
        utc_time=setup.clock.now_ms(),
        user_data={
            "notify-attempt": "0",
            "notify-position": "3",
            "session-id": chat.chat_id,
            "user-id": started["userId"],
        },
    )


async def test_flex_push_content_decides_the_trigger_user_data(setup: Setup) -> None:
    for service, content in CONTENTS.items():
        chat = setup.chat(service)
        started = await chat.request_chat(**push_form(f"dev-{service}", PushResend="true"))
        await chat.agent_joins()
        await setup.settle()
        item = setup.main.received[-1]
        assert item.body["deviceId"] == f"dev-{service}"
        user_data = item.body["message"]["messages"][0]["userData"]
        available = {
            "app-dbid": ALIAS,
            "secure-key": started["secureKey"],
            "session-id": chat.chat_id,
            "user-id": started["userId"],
        }
        wanted = [key.strip() for key in content.split(",") if key.strip()]
        expected = {"notify-attempt": "0", "notify-position": "2"}
        expected.update({key: available[key] for key in wanted})
        assert user_data == expected, service
        # The keys come in flex-push-content's order, after the two notify- keys.
        assert list(user_data) == list(expected), service


async def test_secure_key_in_user_data_is_the_real_rest_key(setup: Setup) -> None:
    chat = setup.chat("c-all")
    await chat.request_chat(**push_form("dev-1", PushResend="true"))
    await chat.agent_joins()
    await setup.settle()
    [item] = setup.main.received
    user_data = item.body["message"]["messages"][0]["userData"]
    real = user_data["secure-key"]
    # The receiver's app refreshes with the key from the trigger, exactly as a GMS client does.
    refreshed = await chat.op(
        "refresh", secureKey=real, transcriptPosition=user_data["notify-position"]
    )
    assert [event["index"] for event in refreshed["messages"]] == [2]
    # message.secureKey is not the key and does not work for the REST API.
    assert obfuscated(item) != real and real not in obfuscated(item)
    await chat.op("refresh", expect=403, secureKey=obfuscated(item))


async def test_message_secure_key_is_reversible_with_the_stored_secret(setup: Setup) -> None:
    with_channel = setup.chat()
    await with_channel.request_chat(
        **push_form("dev-1", PushResend="true", ClientChannel="mobile-app")
    )
    without = setup.chat()
    await without.request_chat(**push_form("dev-2", PushIncludePayload="true"))
    for chat in (with_channel, without):
        agent = await chat.agent_joins()
        await chat.agent_says(agent, "hello")
    await setup.settle()
    by_device: dict[str, list[Received]] = {}
    for item in setup.main.received:
        by_device.setdefault(item.body["deviceId"], []).append(item)
    secret = await setup.secret()
    [trigger] = by_device["dev-1"]
    assert reveal(secret, obfuscated(trigger)) == RevealedKey(
        secure_key=with_channel.secure_key, client_channel="mobile-app"
    )
    joined, said = by_device["dev-2"]
    for item in (joined, said):
        assert reveal(secret, obfuscated(item)) == RevealedKey(
            secure_key=without.secure_key, client_channel=None
        )
    # A fresh nonce each time: the same key never gives the same token twice.
    assert obfuscated(joined) != obfuscated(said)
    # Only the stored secret opens it.
    assert reveal(bytes(32), obfuscated(trigger)) is None
    assert reveal(secret, obfuscated(trigger)[:-4] + "AAAA") is None


# -- (b) with payload --------------------------------------------------------------------------


async def test_payload_notification_carries_the_real_event_one_per_event(setup: Setup) -> None:
    chat = setup.chat()
    started = await chat.request_chat(**push_form("dev-b", PushIncludePayload="true"))
    agent = await chat.agent_joins()  # 2
    await chat.agent_says(agent, "hello")  # 3
    await chat.op("send", message="from the customer")  # 4: the customer's own, not notified
    await chat.api(
        "POST",
        f"/chats/{chat.chat_id}/events",
        201,
        {"participantId": agent, "type": "Notice", "text": "n", "userData": {"k": "v"}},
    )  # 5
    await setup.settle()
    transcript = await setup.transcript(chat.chat_id)
    received = setup.main.received
    assert [item.body["message"]["messages"][0]["index"] for item in received] == [2, 3, 5]
    for item, index in zip(received, [2, 3, 5], strict=True):
        assert item.raw == payload_bytes(
            device_id="dev-b",
            secure_key=obfuscated(item),
            chat=started,
            event=transcript[index - 1],
            ended=False,
        )
    assert transcript[2]["text"] == "hello"
    assert received[2].body["message"]["messages"][0]["userData"] == {"k": "v"}


async def test_payload_notifications_of_the_end_of_the_chat(setup: Setup) -> None:
    chat = setup.chat()
    started = await chat.request_chat(**push_form("dev-b", PushIncludePayload="true"))
    await chat.agent_joins("Agent One")  # 2
    await chat.agent_joins("Agent Two")  # 3
    await setup.settle()
    setup.main.received.clear()
    await chat.api("POST", f"/chats/{chat.chat_id}/end")  # both agents leave: 4, 5
    await setup.settle()
    transcript = await setup.transcript(chat.chat_id)
    assert [event["type"] for event in transcript[3:]] == ["ParticipantLeft"] * 2
    assert [item.raw for item in setup.main.received] == [
        payload_bytes(
            device_id="dev-b",
            secure_key=obfuscated(item),
            chat=started,
            event=transcript[index - 1],
            ended=True,
        )
        for item, index in zip(setup.main.received, [4, 5], strict=True)
    ]


async def test_notify_requestor_adds_the_customers_own_events_to_payloads(setup: Setup) -> None:
    chat = setup.chat()
    started = await chat.request_chat(
        **push_form("dev-b", PushIncludePayload="true", NotifyRequestor="true")
    )
    agent = await chat.agent_joins()  # 2
    await chat.op("send", message="mine")  # 3
    await chat.agent_says(agent, "yours")  # 4
    await chat.op("startTyping")  # 5
    await chat.api("DELETE", f"/chats/{chat.chat_id}/parties/{agent}")  # 6: the agent leaves
    await chat.op("disconnect")  # 7: the customer leaves, the chat ends
    await setup.settle()
    transcript = await setup.transcript(chat.chat_id)
    assert len(transcript) == 7
    received = setup.main.received
    # [interpretation] The customer's own ParticipantJoined (1), written by Request Chat, is the
    # customer's activity too, so NotifyRequestor notifies it.
    indexes = [1, 2, 3, 4, 5, 6, 7]
    assert [item.body["message"]["messages"][0]["index"] for item in received] == indexes
    for item, index in zip(received, indexes, strict=True):
        assert item.raw == payload_bytes(
            device_id="dev-b",
            secure_key=obfuscated(item),
            chat=started,
            event=transcript[index - 1],
            ended=index == 7,
        )


# -- (c) without payload -----------------------------------------------------------------------


async def test_bare_notification_is_only_the_device_id(setup: Setup) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-c"))
    agent = await chat.agent_joins()
    await chat.op("send", message="not notified")
    await chat.agent_says(agent, "hello")
    await chat.api("DELETE", f"/chats/{chat.chat_id}/parties/{agent}")
    await chat.op("disconnect")  # the customer's own: not notified
    await setup.settle()
    assert len(await setup.transcript(chat.chat_id)) == 6
    # The agent's join, message and leave; not the customer's message nor disconnect.
    assert [item.raw for item in setup.main.received] == [b'{"deviceId":"dev-c"}'] * 3


async def test_bare_notifications_with_notify_requestor(setup: Setup) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-c", NotifyRequestor="true"))
    agent = await chat.agent_joins()
    await chat.op("send", message="notified")
    await chat.agent_says(agent, "hello")
    await setup.settle()
    # 1 (the customer's join), 2, 3, 4
    assert [item.raw for item in setup.main.received] == [b'{"deviceId":"dev-c"}'] * 4


async def test_include_payload_key_and_service_default(setup: Setup) -> None:
    cases = [
        ("support", None, False),
        ("support", "true", True),
        ("support", "false", False),
        ("payload", None, True),
        ("payload", "false", False),
        ("payload", "true", True),
    ]
    for number, (service, key, with_payload) in enumerate(cases):
        chat = setup.chat(service)
        device = f"dev-{number}"
        await chat.request_chat(**push_form(device, PushIncludePayload=key))
        await chat.agent_joins()
        await setup.settle()
        last = setup.main.received[-1]
        assert last.body["deviceId"] == device
        if with_payload:
            assert last.body["message"]["chatId"] == chat.chat_id, (service, key)
            assert last.body["message"]["messages"][0]["type"] == "ParticipantJoined"
        else:
            assert last.raw == compact({"deviceId": device}), (service, key)


async def test_push_resend_wins_over_include_payload(setup: Setup) -> None:
    chat = setup.chat("payload")
    await chat.request_chat(**push_form("dev-r", PushResend="true", PushIncludePayload="true"))
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "hello")
    await setup.settle()
    [item] = setup.main.received
    assert item.body["message"]["chatId"] == "deprecated"
    assert item.body["message"]["messages"][0]["type"] == "PushUrl"


# -- group options: customhttp.message, signatures, Authorization -----------------------------


async def test_customhttp_message_replaces_message(setup: Setup) -> None:
    reliable, payload, bare = setup.chat(), setup.chat(), setup.chat()
    await reliable.request_chat(**push_form("dev-a", NodeGroup="dummy", PushResend="true"))
    await payload.request_chat(**push_form("dev-b", NodeGroup="dummy", PushIncludePayload="true"))
    await bare.request_chat(**push_form("dev-c", NodeGroup="dummy"))
    for chat in (reliable, payload, bare):
        await chat.agent_joins()
        await setup.settle()
    assert [item.raw for item in setup.dummy.received] == [
        b'{"deviceId":"dev-a","message":"dummy message"}',
        b'{"deviceId":"dev-b","message":"dummy message"}',
        # [interpretation] (c) has no message to replace: it stays only the device id.
        b'{"deviceId":"dev-c"}',
    ]
    assert setup.main.received == []


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def verify_standard_webhook(item: Received, secret: str) -> None:
    """Standard Webhooks, from its specification rather than from chatpush's code."""
    headers = lower(item.headers)
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + item.raw
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # The header is a space-separated list of "v1,<base64>"; one of them must match.
    signatures = headers["webhook-signature"].split(" ")
    assert f"v1,{expected}" in signatures, (signatures, expected)


async def test_signed_group_sends_standard_webhooks_headers(setup: Setup) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-s", NodeGroup="signed", PushIncludePayload="true"))
    agent = await chat.agent_joins()
    setup.clock.advance(7)
    await chat.agent_says(agent, "hello")
    await setup.settle()
    first, second = setup.signed.received
    for item in (first, second):
        verify_standard_webhook(item, SIGNING_SECRET)
        assert lower(item.headers)["webhook-timestamp"] == str(setup.clock.now_ms() // 1000)
        assert lower(item.headers)["authorization"] == AUTHORIZATION
        assert lower(item.headers)["webhook-id"].startswith("msg_")
    assert lower(first.headers)["webhook-id"] != lower(second.headers)["webhook-id"]
    # The signature covers the body: another body does not verify.
    tampered = Received(first.body, first.headers, first.raw.replace(b"dev-s", b"dev-x"))
    with pytest.raises(AssertionError):
        verify_standard_webhook(tampered, SIGNING_SECRET)


async def test_unsigned_group_sends_no_signature_and_no_authorization(setup: Setup) -> None:
    chat = setup.chat()
    await chat.request_chat(**push_form("dev-u"))
    await chat.agent_joins()
    await setup.settle()
    [item] = setup.main.received
    headers = lower(item.headers)
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature", "authorization"} & set(
        headers
    )
