"""Push subscriptions at Request Chat (CONTRACT §5, §6): accepted in the same transaction, or a
precise 400 that names the wrong key and leaves no chat behind.

Every refusal is checked from outside: the answer's ``errors`` entry names the ``userData`` key,
and the chat-server side lists no chat at all (the chat row is written before the subscription is
parsed, so a refusal that did not roll the whole transaction back would show here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from chatpush.config import Settings
from chatpush.errors import Code
from tests.integration._push_support import Client, api, push_form

MakeClient = Callable[[Settings], Any]

UNUSED_URL = "http://127.0.0.1:9/push"  # never called: these tests send nothing

GROUPS: dict[str, Any] = {
    "main": {
        "default": True,
        "nodes": ["n-main"],
        "customhttp.url": UNUSED_URL,
        "providers": {"acme": {"customhttp.url": UNUSED_URL}},
    },
    "mobile": {
        "nodes": ["n-mobile"],
        "customhttp.url": UNUSED_URL,
        "pushEnabled": "customhttp,comet,android,apple",
    },
    "fcm-only": {"nodes": ["n-fcm"], "pushEnabled": ["fcm"]},
}
SERVICES: dict[str, Any] = {
    "no-push": {"flex-push-enabled": False},
    "no-join": {"flex-push-on-join": "false"},
    "payload": {"push_notification_include_payload": True},
}


@pytest.fixture
async def client(make_settings: Callable[..., Settings], make_client: MakeClient) -> Client:
    client: Client = await make_client(make_settings(groups=GROUPS, services=SERVICES))
    return client


async def request_chat(
    client: Client, form: dict[str, str], service: str = "support", expect: int = 200
) -> dict[str, Any]:
    response = await client.post(f"/genesys/2/chat/{service}", data=form)
    body: dict[str, Any] = await response.json()
    assert response.status == expect, body
    return body


async def subscription(client: Client, chat_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await api(client, "GET", f"/chats/{chat_id}/subscription")
    return body


async def chat_ids(client: Client) -> list[str]:
    return [chat["chatId"] for chat in (await api(client, "GET", "/chats"))["chats"]]


async def refused(client: Client, form: dict[str, str], key: str, service: str = "support") -> str:
    """Request Chat is a 400 whose errors entry names ``userData[key]``, and creates no chat."""
    body = await request_chat(client, form, service, expect=400)
    assert body["statusCode"] == 2
    assert body["chatEnded"] is False
    assert "chatId" not in body and "secureKey" not in body
    [error] = body["errors"]
    assert error["code"] == Code.INVALID_PUSH_KEY
    assert f"userData[{key}]" in error["advice"], error["advice"]
    assert await chat_ids(client) == [], "a refused Request Chat left a chat behind"
    return str(error["advice"])


# -- accepted --------------------------------------------------------------------------------


async def test_request_chat_creates_the_subscription_with_every_flag(client: Client) -> None:
    form = push_form(
        "dev-42",
        NodeGroup="main",
        PushProvider="acme",
        PushDebug="true",
        NotifyRequestor="TRUE",
        PushIncludePayload="true",
        PushResend="true",
        ClientChannel="web-channel",
    )
    body = await request_chat(client, form)
    assert body["statusCode"] == 0
    assert [event["type"] for event in body["messages"]] == ["ParticipantJoined"]
    sub = await subscription(client, body["chatId"])
    assert sub == {
        "deviceId": "dev-42",
        "deviceType": "customhttp",
        "nodeGroup": "main",
        "provider": "acme",
        "debug": True,
        "notifyRequestor": True,
        "includePayload": True,
        "reliable": True,
        "clientChannel": "web-channel",
        "status": "active",
        # CONTRACT §8.1: the Request Chat response (index 1) is already an acknowledgement.
        "acknowledgedPosition": 1,
        "outstandingTrigger": None,
        "nextResendAt": None,
        "foregroundUntil": None,
        "pinnedNode": None,
        "createdAt": sub["createdAt"],
        "queued": [],
    }
    assert await chat_ids(client) == [body["chatId"]]
    chat = (await api(client, "GET", f"/chats/{body['chatId']}"))["chat"]
    assert sub["createdAt"] == chat["createdAt"]
    # The keys stay in the chat's user data as well, as GMS keeps them.
    assert chat["userData"]["GCTI_GMS_PushDeviceId"] == "dev-42"


async def test_multipart_request_chat_subscribes_too(client: Client) -> None:
    form = aiohttp.FormData(push_form("dev-mp", PushResend="true"), default_to_multipart=True)
    response = await client.post("/genesys/2/chat/support", data=form)
    body = await response.json()
    assert response.status == 200, body
    sub = await subscription(client, body["chatId"])
    assert (sub["deviceId"], sub["reliable"]) == ("dev-mp", True)
    bad = aiohttp.FormData(push_form("dev-mp", PushDeviceType="pager"), default_to_multipart=True)
    response = await client.post("/genesys/2/chat/support", data=bad)
    assert response.status == 400
    assert await chat_ids(client) == [body["chatId"]]


async def test_flags_default_to_false_and_the_group_to_the_default_group(client: Client) -> None:
    body = await request_chat(client, push_form("dev-1"))
    sub = await subscription(client, body["chatId"])
    assert (sub["deviceId"], sub["deviceType"], sub["nodeGroup"]) == ("dev-1", "customhttp", "main")
    assert sub["provider"] is None and sub["clientChannel"] is None
    assert not any(sub[flag] for flag in ("debug", "notifyRequestor", "includePayload", "reliable"))


async def test_false_values_and_blank_group_are_accepted(client: Client) -> None:
    form = push_form(
        "dev-1",
        NodeGroup="  ",
        PushDebug="false",
        NotifyRequestor="0",
        PushIncludePayload="False",
        PushResend="no",
    )
    sub = await subscription(client, (await request_chat(client, form))["chatId"])
    assert sub["nodeGroup"] == "main"
    assert not any(sub[flag] for flag in ("debug", "notifyRequestor", "includePayload", "reliable"))


async def test_include_payload_defaults_to_the_service_option(client: Client) -> None:
    on = await request_chat(client, push_form("dev-1"), service="payload")
    assert (await subscription(client, on["chatId"]))["includePayload"] is True
    off = await request_chat(client, push_form("dev-2", PushIncludePayload="false"), "payload")
    assert (await subscription(client, off["chatId"]))["includePayload"] is False
    plain = await request_chat(client, push_form("dev-3"), service="support")
    assert (await subscription(client, plain["chatId"]))["includePayload"] is False


async def test_no_subscription_without_push_subscribe(client: Client) -> None:
    for subscribe in (None, "false", "", "0", "FALSE"):
        body = await request_chat(client, push_form("dev-1", PushSubscribe=subscribe))
        await api(client, "GET", f"/chats/{body['chatId']}/subscription", expect=404)
    # Without PushSubscribe the other keys are plain user data, however wrong.
    form = push_form("dev-1", PushSubscribe="false", PushDeviceType="bogus", PushResend="maybe")
    body = await request_chat(client, form)
    await api(client, "GET", f"/chats/{body['chatId']}/subscription", expect=404)


async def test_a_service_without_push_still_serves_chats_without_subscription(
    client: Client,
) -> None:
    body = await request_chat(client, {"nickname": "Customer"}, service="no-push")
    assert await chat_ids(client) == [body["chatId"]]


async def test_single_group_is_the_default_without_being_marked(
    make_settings: Callable[..., Settings], make_client: MakeClient
) -> None:
    groups = {"only": {"nodes": ["n1"], "customhttp.url": UNUSED_URL}}
    client: Client = await make_client(make_settings(groups=groups))
    body = await request_chat(client, push_form("dev-1"))
    assert (await subscription(client, body["chatId"]))["nodeGroup"] == "only"


async def test_several_groups_without_a_default_need_the_group_key(
    make_settings: Callable[..., Settings], make_client: MakeClient
) -> None:
    groups = {
        "a": {"nodes": ["n1"], "customhttp.url": UNUSED_URL},
        "b": {"nodes": ["n2"], "customhttp.url": UNUSED_URL},
    }
    client: Client = await make_client(make_settings(groups=groups))
    await refused(client, push_form("dev-1"), "GCTI_GMS_NodeGroup")
    body = await request_chat(client, push_form("dev-1", NodeGroup="b"))
    assert (await subscription(client, body["chatId"]))["nodeGroup"] == "b"


async def test_device_type_is_case_insensitive(client: Client) -> None:
    body = await request_chat(client, push_form("dev-1", PushDeviceType=" CustomHTTP "))
    assert (await subscription(client, body["chatId"]))["deviceType"] == "customhttp"


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("fcm", "fcm"), ("Android", "fcm"), ("gcm", "fcm"), ("ios", "ios"), ("apple", "ios")],
)
async def test_mobile_device_types_and_their_aliases_subscribe(
    client: Client, given: str, canonical: str
) -> None:
    form = push_form("token-1", NodeGroup="mobile", PushDeviceType=given)
    body = await request_chat(client, form)
    assert (await subscription(client, body["chatId"]))["deviceType"] == canonical


# -- refused ---------------------------------------------------------------------------------

BAD_BOOLEANS = ["maybe", "ture", "2", "on"]
FLAG_KEYS = ["PushDebug", "NotifyRequestor", "PushIncludePayload", "PushResend"]

# (form, service, the key the errors entry names, a fragment of its advice)
REFUSALS: list[tuple[dict[str, str], str, str, str]] = [
    *[
        (push_form("dev-1", PushDeviceType=kind), "support", "GCTI_GMS_PushDeviceType", "unknown")
        for kind in ("blackberry", "", "http", "customhttp2", "fcm,ios")
    ],
    (push_form("dev-1", PushDeviceType=None), "support", "GCTI_GMS_PushDeviceType", "unknown"),
    *[
        (push_form("x", PushDeviceId=device_id), "support", "GCTI_GMS_PushDeviceId", "required")
        for device_id in (None, "", "   ")
    ],
    (push_form("d" * 257), "support", "GCTI_GMS_PushDeviceId", "longer than 256"),
    (
        push_form("dev-1", ClientChannel="c" * 201),
        "support",
        "GCTI_GMS_ClientChannel",
        "longer than 200",
    ),
    (push_form("dev-1", NodeGroup="nowhere"), "support", "GCTI_GMS_NodeGroup", "'nowhere'"),
    (push_form("dev-1", NodeGroup="MAIN"), "support", "GCTI_GMS_NodeGroup", "'MAIN'"),
    (push_form("dev-1", PushProvider="zeta"), "support", "GCTI_GMS_PushProvider", "'zeta'"),
    # acme is a provider of "main", not of "mobile".
    (
        push_form("dev-1", NodeGroup="mobile", PushProvider="acme"),
        "support",
        "GCTI_GMS_PushProvider",
        "'acme'",
    ),
    (
        push_form("dev-1", NodeGroup="fcm-only"),
        "support",
        "GCTI_GMS_PushDeviceType",
        "customhttp is not enabled in group 'fcm-only'",
    ),
    *[
        (
            push_form("dev-1", PushDeviceType=alias),
            "support",
            "GCTI_GMS_PushDeviceType",
            f"{canonical} is not enabled in group 'main'",
        )
        for alias, canonical in (("Android", "fcm"), ("GCM", "fcm"), ("apple", "ios"))
    ],
    *[
        (
            push_form("dev-1", PushSubscribe=value),
            "support",
            "GCTI_Chat_PushSubscribe",
            f"true or false, got {value!r}",
        )
        for value in BAD_BOOLEANS
    ],
    *[
        (
            push_form("dev-1", **{key: value}),
            "support",
            f"GCTI_GMS_{key}",
            f"true or false, got {value!r}",
        )
        for key in FLAG_KEYS
        for value in BAD_BOOLEANS
    ],
    (push_form("dev-1"), "no-push", "GCTI_Chat_PushSubscribe", "not enabled for this service"),
    (push_form("dev-1"), "no-join", "GCTI_Chat_PushSubscribe", "not enabled for this service"),
]


async def test_refusals_name_the_key_and_create_no_chat(client: Client) -> None:
    for form, service, key, fragment in REFUSALS:
        case = f"{service}: {form}"
        try:
            advice = await refused(client, form, key, service)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from exc
        assert fragment in advice, f"{case}: {advice!r} lacks {fragment!r}"


async def test_a_bad_flag_is_refused_even_when_the_rest_is_valid(client: Client) -> None:
    # The boolean is checked although everything else would make a valid subscription.
    form = push_form("dev-1", NodeGroup="main", PushProvider="acme", PushResend="yes please")
    await refused(client, form, "GCTI_GMS_PushResend")


@pytest.mark.parametrize("device_id", ["phone\n1", "phone\t1", "phone\x1b[31m", "a\u2028b"])
async def test_a_device_id_with_a_control_character_is_refused(
    client: Client, device_id: str
) -> None:
    """It could never name a CometD channel, and it would reach logs and receivers as is."""
    await refused(client, push_form(device_id), "GCTI_GMS_PushDeviceId")


async def test_a_device_id_of_256_characters_is_accepted(client: Client) -> None:
    body = await request_chat(client, push_form("d" * 256))
    assert (await subscription(client, body["chatId"]))["deviceId"] == "d" * 256


async def test_refusal_in_one_chat_leaves_the_others(client: Client) -> None:
    first = await request_chat(client, push_form("dev-1"))
    await request_chat(client, push_form("dev-2", NodeGroup="nowhere"), expect=400)
    assert await chat_ids(client) == [first["chatId"]]
    await api(client, "GET", f"/chats/{first['chatId']}/subscription")
