"""The customer side of Chat API v2 over REST, through the real app on a real SQLite file.

CONTRACT §2 (the ten operations), §3 (the envelope, nextPosition, HTTP statuses) and §4 (events).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Any]

ENVELOPE_KEYS = {
    "statusCode",
    "alias",
    "chatEnded",
    "chatId",
    "secureKey",
    "userId",
    "nextPosition",
    "messages",
}
# The operations that change a chat: after the chat ended they answer 409 (CONTRACT §3).
CHANGING_OPERATIONS: list[tuple[str, dict[str, str]]] = [
    ("send", {"message": "too late"}),
    ("startTyping", {"message": "too"}),
    ("stopTyping", {}),
    ("updateNickname", {"nickname": "Late Ann"}),
    ("customNotice", {"message": "late notice"}),
    ("updateData", {"userData[late]": "yes"}),
    ("pushUrl", {"pushUrl": "https://example.com/late"}),
]
# Every operation after Request Chat, each with parameters that succeed on an active chat.
ALL_OPERATIONS: list[tuple[str, dict[str, str]]] = [
    ("refresh", {}),
    *CHANGING_OPERATIONS,
    ("disconnect", {}),
]


def client_party(nickname: str = "Ann") -> dict[str, Any]:
    return {"nickname": nickname, "participantId": 1, "type": "Client"}


def agent_party(participant_id: int = 2, nickname: str = "Agent Smith") -> dict[str, Any]:
    return {"nickname": nickname, "participantId": participant_id, "type": "Agent"}


def indexes(body: dict[str, Any]) -> list[int]:
    return [event["index"] for event in body["messages"]]


def assert_envelope(
    body: dict[str, Any],
    chat: ChatDriver,
    *,
    next_position: int,
    ended: bool = False,
    alias: str = "1",
) -> None:
    """The §3 envelope of a successful answer about ``chat``, with no extra or missing fields."""
    assert set(body) == ENVELOPE_KEYS, body
    assert body["statusCode"] == 0
    assert body["alias"] == alias
    assert body["chatEnded"] is ended
    assert body["chatId"] == chat.chat_id
    assert body["secureKey"] == chat.secure_key
    assert isinstance(body["userId"], str) and body["userId"]
    assert body["nextPosition"] == next_position
    assert isinstance(body["messages"], list)


async def chat_state(chat: ChatDriver) -> dict[str, Any]:
    """The chat as the chat-server side API shows it: summary, parties and full transcript."""
    return await chat.api("GET", f"/chats/{chat.chat_id}")


async def post_multipart(client: Client, path: str, fields: list[tuple[str, str]]) -> Any:
    with aiohttp.MultipartWriter("form-data") as writer:
        for name, value in fields:
            part = writer.append(value)
            part.set_content_disposition("form-data", name=name)
    return await client.post(path, data=writer)


# -- Request Chat ---------------------------------------------------------------------------------


async def test_request_chat_answers_the_envelope_with_the_customers_join(
    chat: ChatDriver, clock: FakeClock
) -> None:
    body = await chat.request_chat(nickname="Ann")

    assert_envelope(body, chat, next_position=2)
    assert body["messages"] == [
        {
            "from": client_party("Ann"),
            "index": 1,
            "type": "ParticipantJoined",
            "utcTime": clock.now_ms(),
        }
    ]


async def test_request_chat_alias_is_this_instances_configured_alias(
    make_client: MakeClient, make_settings: Callable[..., Settings]
) -> None:
    chat = ChatDriver(await make_client(make_settings(server={"alias": "117"})))
    body = await chat.request_chat()
    assert body["alias"] == "117"
    assert (await chat.op("refresh"))["alias"] == "117"


async def test_request_chat_with_first_and_last_name_instead_of_nickname(chat: ChatDriver) -> None:
    body = await chat.request_chat(nickname="", firstName="Ann", lastName="Lee")

    [joined] = body["messages"]
    assert joined["from"] == client_party("Ann Lee")
    sent = await chat.op("send", message="hi", transcriptPosition="2")
    assert sent["messages"][0]["from"] == client_party("Ann Lee")


async def test_request_chat_keeps_subject_email_and_user_data(chat: ChatDriver) -> None:
    await chat.request_chat(
        nickname="Ann",
        subject="My order",
        emailAddress="ann@example.com",
        **{"userData[orderId]": "A-17", "userData[tier]": "gold"},
    )

    state = await chat_state(chat)
    assert state["chat"]["subject"] == "My order"
    assert state["chat"]["emailAddress"] == "ann@example.com"
    assert state["chat"]["userData"] == {"orderId": "A-17", "tier": "gold"}
    assert state["chat"]["serviceName"] == "support"
    assert state["chat"]["status"] == "active"


async def test_request_chat_accepts_multipart_form_data(
    client: Client, chat: ChatDriver, clock: FakeClock
) -> None:
    response = await post_multipart(
        client,
        "/genesys/2/chat/support",
        [
            ("nickname", "Zoë"),
            ("subject", "Ünïcode subject"),
            ("userData[orderId]", "A-17"),
            ("userData[note]", "a & b = c"),
        ],
    )
    body = await response.json()
    assert response.status == 200, body
    chat.chat_id, chat.secure_key = body["chatId"], body["secureKey"]

    assert_envelope(body, chat, next_position=2)
    assert body["messages"] == [
        {
            "from": client_party("Zoë"),
            "index": 1,
            "type": "ParticipantJoined",
            "utcTime": clock.now_ms(),
        }
    ]
    state = await chat_state(chat)
    assert state["chat"]["subject"] == "Ünïcode subject"
    assert state["chat"]["userData"] == {"orderId": "A-17", "note": "a & b = c"}


async def test_multipart_request_chat_with_first_and_last_name(
    client: Client, chat: ChatDriver
) -> None:
    response = await post_multipart(
        client, "/genesys/2/chat/support", [("firstName", "Ann"), ("lastName", "Lee")]
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["messages"][0]["from"] == client_party("Ann Lee")


async def test_request_chat_ignores_unknown_parameters(chat: ChatDriver) -> None:
    body = await chat.request_chat(
        nickname="Ann", widgetVersion="3.2", tenant="x", **{"userData": "not-a-map", "x[y]": "z"}
    )

    assert_envelope(body, chat, next_position=2)
    assert (await chat_state(chat))["chat"]["userData"] == {}


async def test_ids_are_random_and_the_secure_key_has_at_least_128_bits(client: Client) -> None:
    bodies = []
    for _ in range(20):
        driver = ChatDriver(client)
        bodies.append(await driver.request_chat())

    chat_ids = {body["chatId"] for body in bodies}
    secure_keys = {body["secureKey"] for body in bodies}
    user_ids = {body["userId"] for body in bodies}
    assert len(chat_ids) == len(secure_keys) == len(user_ids) == 20
    for body in bodies:
        assert re.fullmatch(r"[0-9a-f]{32,}", body["secureKey"]), body["secureKey"]
        assert body["secureKey"] not in (body["chatId"], body["userId"])
    # Random, not a counter: ids taken one after another share no long common prefix.
    ordered = [body["chatId"] for body in bodies]
    prefixes = [len(_common_prefix(a, b)) for a, b in itertools.pairwise(ordered)]
    assert max(prefixes) < 8, ordered


def _common_prefix(a: str, b: str) -> str:
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    return a[:length]


async def test_every_chat_has_its_own_dense_transcript(client: Client) -> None:
    first, second = ChatDriver(client), ChatDriver(client)
    await first.request_chat(nickname="Ann")
    await second.request_chat(nickname="Bob")
    await first.op("send", message="from Ann 1")
    await second.op("send", message="from Bob 1")
    await first.op("send", message="from Ann 2")

    ann = await first.op("refresh")
    bob = await second.op("refresh")
    assert indexes(ann) == [1, 2, 3]
    assert [m.get("text") for m in ann["messages"]] == [None, "from Ann 1", "from Ann 2"]
    assert indexes(bob) == [1, 2]
    assert bob["messages"][1]["text"] == "from Bob 1"


# -- Refresh and transcriptPosition ---------------------------------------------------------------


async def _chat_with_five_events(chat: ChatDriver) -> int:
    """1 Ann joins, 2 agent joins, 3 agent says, 4 Ann says, 5 agent says. Returns the agent id."""
    await chat.request_chat(nickname="Ann")
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "Hello Ann")
    await chat.op("send", message="Hi")
    await chat.agent_says(agent, "How can I help?")
    return agent


async def test_refresh_without_transcript_position_returns_every_event(chat: ChatDriver) -> None:
    await _chat_with_five_events(chat)

    body = await chat.op("refresh")

    assert_envelope(body, chat, next_position=6)
    assert indexes(body) == [1, 2, 3, 4, 5]
    assert [event["type"] for event in body["messages"]] == [
        "ParticipantJoined",
        "ParticipantJoined",
        "Message",
        "Message",
        "Message",
    ]


async def test_refresh_returns_the_events_from_transcript_position(chat: ChatDriver) -> None:
    await _chat_with_five_events(chat)
    retrieved = 1  # Request Chat returned index 1

    for position, expected in [
        ("6", []),
        ("2147483647", []),
        ("5", [5]),
        ("0004", [4, 5]),
        ("2", [2, 3, 4, 5]),
        ("1", [1, 2, 3, 4, 5]),
        ("6", []),
    ]:
        body = await chat.op("refresh", transcriptPosition=position)

        assert indexes(body) == expected, position
        retrieved = max([retrieved, *expected])
        # Nothing returned: the index after the last one the customer has retrieved.
        assert body["nextPosition"] == (expected[-1] + 1 if expected else retrieved + 1), position


async def test_refresh_with_position_zero_returns_nothing(chat: ChatDriver) -> None:
    await _chat_with_five_events(chat)

    body = await chat.op("refresh", transcriptPosition="0")

    assert_envelope(body, chat, next_position=2)
    assert body["messages"] == []


async def test_next_position_follows_what_the_customer_has_retrieved(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann")  # retrieved: 1
    agent = await chat.agent_joins()  # 2
    await chat.agent_says(agent, "one")  # 3

    assert (await chat.op("refresh", transcriptPosition="0"))["nextPosition"] == 2
    assert (await chat.op("refresh", transcriptPosition="9"))["nextPosition"] == 2

    got = await chat.op("refresh", transcriptPosition="2")
    assert indexes(got) == [2, 3]
    assert got["nextPosition"] == 4

    await chat.agent_says(agent, "two")  # 4, not yet retrieved
    assert (await chat.op("refresh", transcriptPosition="0"))["nextPosition"] == 4
    # Reading an older range again does not move the position back.
    again = await chat.op("refresh", transcriptPosition="1")
    assert indexes(again) == [1, 2, 3, 4]
    assert again["nextPosition"] == 5
    earlier = await chat.op("refresh", transcriptPosition="2")
    assert earlier["nextPosition"] == 5
    assert (await chat.op("refresh", transcriptPosition="0"))["nextPosition"] == 5
    assert (await chat.op("refresh", transcriptPosition="5"))["messages"] == []
    assert (await chat.op("refresh", transcriptPosition="5"))["nextPosition"] == 5


async def test_events_carry_their_author_type_text_time_message_type_and_user_data(
    chat: ChatDriver, clock: FakeClock
) -> None:
    created = clock.now_ms()
    await chat.request_chat(nickname="Ann")
    clock.advance(1.5)
    agent = await chat.agent_joins("Bob")
    clock.advance(2)
    await chat.api(
        "POST",
        f"/chats/{chat.chat_id}/events",
        201,
        {
            "participantId": agent,
            "type": "Message",
            "text": "Your order ships today",
            "messageType": "order-status",
            "userData": {"orderId": "A-17"},
        },
    )
    clock.advance(ms=250)
    await chat.op("send", message="Thanks!", messageType="text")

    body = await chat.op("refresh")

    assert body["messages"] == [
        {"from": client_party(), "index": 1, "type": "ParticipantJoined", "utcTime": created},
        {
            "from": agent_party(agent, "Bob"),
            "index": 2,
            "type": "ParticipantJoined",
            "utcTime": created + 1500,
        },
        {
            "from": agent_party(agent, "Bob"),
            "index": 3,
            "type": "Message",
            "text": "Your order ships today",
            "utcTime": created + 3500,
            "messageType": "order-status",
            "userData": {"orderId": "A-17"},
        },
        {
            "from": client_party(),
            "index": 4,
            "type": "Message",
            "text": "Thanks!",
            "utcTime": created + 3750,
            "messageType": "text",
        },
    ]


# -- Send Message ---------------------------------------------------------------------------------


async def test_send_without_transcript_position_returns_no_events(
    chat: ChatDriver, clock: FakeClock
) -> None:
    await chat.request_chat(nickname="Ann")
    clock.advance(3)

    body = await chat.op("send", message="Grüße 👋 — line one\nline two & more=yes")

    # The customer has retrieved only index 1: the new message is still to be read.
    assert_envelope(body, chat, next_position=2)
    assert body["messages"] == []
    read = await chat.op("refresh", transcriptPosition="2")
    assert read["messages"] == [
        {
            "from": client_party(),
            "index": 2,
            "type": "Message",
            "text": "Grüße 👋 — line one\nline two & more=yes",
            "utcTime": clock.now_ms(),
        }
    ]
    assert read["nextPosition"] == 3


async def test_send_with_transcript_position_returns_the_events_from_it(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann")
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "Hello")

    body = await chat.op("send", message="Hi", transcriptPosition="2")

    assert_envelope(body, chat, next_position=5)
    assert indexes(body) == [2, 3, 4]
    assert body["messages"][2]["text"] == "Hi"
    assert body["messages"][2]["from"] == client_party()


async def test_send_with_position_zero_returns_nothing(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann")

    body = await chat.op("send", message="Hi", transcriptPosition="0")

    assert body["messages"] == []
    assert body["nextPosition"] == 2
    assert (await chat_state(chat))["chat"]["lastIndex"] == 2


async def test_an_empty_message_is_still_a_message(chat: ChatDriver) -> None:
    await chat.request_chat()
    body = await chat.op("send", message="", transcriptPosition="2")
    assert [(m["type"], m["text"]) for m in body["messages"]] == [("Message", "")]


# -- The other operations and the events they write -----------------------------------------------


@pytest.mark.parametrize(
    ("operation", "event_type"), [("startTyping", "TypingStarted"), ("stopTyping", "TypingStopped")]
)
async def test_typing_events_with_and_without_preview_text(
    chat: ChatDriver, clock: FakeClock, operation: str, event_type: str
) -> None:
    await chat.request_chat(nickname="Ann")

    with_preview = await chat.op(operation, message="I am wri")
    without = await chat.op(operation)

    assert_envelope(with_preview, chat, next_position=2)
    assert with_preview["messages"] == []
    assert without["messages"] == []
    body = await chat.op("refresh", transcriptPosition="2")
    assert body["messages"] == [
        {
            "from": client_party(),
            "index": 2,
            "type": event_type,
            "text": "I am wri",
            "utcTime": clock.now_ms(),
        },
        {"from": client_party(), "index": 3, "type": event_type, "utcTime": clock.now_ms()},
    ]


async def test_push_url_writes_a_push_url_event(chat: ChatDriver, clock: FakeClock) -> None:
    await chat.request_chat(nickname="Ann")

    body = await chat.op("pushUrl", pushUrl="https://shop.example.com/cart?id=7&x=1")

    assert_envelope(body, chat, next_position=2)
    assert body["messages"] == []
    read = await chat.op("refresh", transcriptPosition="2")
    assert read["messages"] == [
        {
            "from": client_party(),
            "index": 2,
            "type": "PushUrl",
            "text": "https://shop.example.com/cart?id=7&x=1",
            "utcTime": clock.now_ms(),
        }
    ]


async def test_custom_notice_writes_a_custom_notice_event(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann")

    body = await chat.op("customNotice", message="customer opened the FAQ")

    assert_envelope(body, chat, next_position=2)
    read = await chat.op("refresh", transcriptPosition="2")
    assert [(m["type"], m["text"], m["from"]) for m in read["messages"]] == [
        ("CustomNotice", "customer opened the FAQ", client_party())
    ]


async def test_update_nickname_renames_the_customer_from_then_on(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann")
    await chat.op("send", message="before")

    body = await chat.op("updateNickname", nickname="Annie")
    await chat.op("send", message="after")

    assert_envelope(body, chat, next_position=2)
    assert body["messages"] == []
    read = await chat.op("refresh")
    assert [
        (m["index"], m["type"], m["from"]["nickname"], m.get("text")) for m in read["messages"]
    ] == [
        (1, "ParticipantJoined", "Ann", None),
        (2, "Message", "Ann", "before"),
        (3, "NicknameUpdated", "Annie", "Annie"),
        (4, "Message", "Annie", "after"),
    ]
    state = await chat_state(chat)
    assert [(p["participantId"], p["nickname"]) for p in state["parties"]] == [(1, "Annie")]


async def test_update_data_merges_the_chats_user_data_without_an_event(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann", **{"userData[a]": "1", "userData[b]": "2"})
    before = await chat_state(chat)

    body = await chat.op("updateData", expect=200, **{"userData[b]": "3", "userData[c]": "4"})

    assert_envelope(body, chat, next_position=2)
    assert body["messages"] == []
    after = await chat_state(chat)
    assert after["chat"]["userData"] == {"a": "1", "b": "3", "c": "4"}
    assert after["chat"]["lastIndex"] == before["chat"]["lastIndex"] == 1
    assert after["transcript"] == before["transcript"]
    assert indexes(await chat.op("refresh")) == [1]


async def test_disconnect_writes_participant_left_and_ends_the_chat(
    chat: ChatDriver, clock: FakeClock
) -> None:
    await chat.request_chat(nickname="Ann")
    agent = await chat.agent_joins()
    clock.advance(10)

    body = await chat.op("disconnect")

    assert_envelope(body, chat, next_position=2, ended=True)
    assert body["messages"] == []
    read = await chat.op("refresh", transcriptPosition="2")
    assert_envelope(read, chat, next_position=5, ended=True)
    assert read["messages"] == [
        {
            "from": agent_party(agent),
            "index": 2,
            "type": "ParticipantJoined",
            "utcTime": clock.now_ms() - 10_000,
        },
        {
            "from": client_party(),
            "index": 3,
            "type": "ParticipantLeft",
            "utcTime": clock.now_ms(),
        },
        {  # the chat has ended, so the agent still present leaves it too
            "from": agent_party(agent),
            "index": 4,
            "type": "ParticipantLeft",
            "utcTime": clock.now_ms(),
        },
    ]
    state = await chat_state(chat)
    assert state["chat"]["status"] == "ended"
    assert state["chat"]["endedAt"] == clock.now_ms()
    assert all(party["leftAt"] == clock.now_ms() for party in state["parties"])


async def test_every_operation_answers_the_envelope_of_its_chat(chat: ChatDriver) -> None:
    created = await chat.request_chat(nickname="Ann")

    for operation, form in ALL_OPERATIONS:
        body = await chat.op(operation, expect=200, **form)

        ended = operation == "disconnect"
        assert_envelope(body, chat, next_position=body["nextPosition"], ended=ended)
        assert body["userId"] == created["userId"], operation
        assert isinstance(body["nextPosition"], int) and body["nextPosition"] >= 2, operation


# -- Ended chats ----------------------------------------------------------------------------------


async def _end(chat: ChatDriver, how: str) -> None:
    if how == "customer":
        await chat.op("disconnect")
    else:
        await chat.api("POST", f"/chats/{chat.chat_id}/end")


@pytest.mark.parametrize("how", ["customer", "agent side"])
async def test_an_ended_chat_can_still_be_read(chat: ChatDriver, how: str) -> None:
    await chat.request_chat(nickname="Ann")
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "Bye now")
    await _end(chat, how)
    last_index = (await chat_state(chat))["chat"]["lastIndex"]

    everything = await chat.op("refresh")
    assert_envelope(everything, chat, next_position=last_index + 1, ended=True)
    assert indexes(everything) == list(range(1, last_index + 1))
    assert everything["messages"][-1]["type"] == "ParticipantLeft"

    tail = await chat.op("refresh", transcriptPosition=str(last_index))
    assert indexes(tail) == [last_index]
    assert tail["chatEnded"] is True


@pytest.mark.parametrize("how", ["customer", "agent side"])
async def test_disconnect_of_an_ended_chat_answers_200_again_and_writes_nothing(
    chat: ChatDriver, how: str
) -> None:
    await chat.request_chat(nickname="Ann")
    await _end(chat, how)
    before = await chat_state(chat)

    again = await chat.op("disconnect")
    twice = await chat.op("disconnect")

    assert again["chatEnded"] is True and twice["chatEnded"] is True
    assert again["statusCode"] == 0
    assert again["messages"] == []
    assert (await chat_state(chat))["transcript"] == before["transcript"]


@pytest.mark.parametrize("how", ["customer", "agent side"])
async def test_changing_an_ended_chat_is_a_409_with_chat_ended(chat: ChatDriver, how: str) -> None:
    await chat.request_chat(nickname="Ann")
    await _end(chat, how)
    before = await chat_state(chat)

    for operation, form in CHANGING_OPERATIONS:
        body = await chat.op(operation, expect=409, **form)

        assert body["statusCode"] == 2, operation
        assert body["chatEnded"] is True, operation
        assert body["chatId"] == chat.chat_id
        assert [type(entry["code"]) for entry in body["errors"]] == [int]
        assert "ended" in body["errors"][0]["advice"]
        after = await chat_state(chat)
        assert after["chat"]["lastIndex"] == before["chat"]["lastIndex"], operation
        assert after["chat"]["userData"] == before["chat"]["userData"], operation
        assert after["parties"] == before["parties"], operation


# -- Identity -------------------------------------------------------------------------------------


async def test_a_secure_key_never_opens_another_chat(client: Client) -> None:
    mine, theirs = ChatDriver(client), ChatDriver(client)
    await mine.request_chat(nickname="Ann")
    await theirs.request_chat(nickname="Bob")
    before = await chat_state(theirs)

    for operation, form in ALL_OPERATIONS:
        body = await theirs.op(operation, expect=403, secureKey=mine.secure_key, **form)

        assert body["statusCode"] == 2, operation
        assert theirs.secure_key not in str(body), operation
        assert body["messages"] == [], operation
        assert await chat_state(theirs) == before, operation
    # And the right key still works on both.
    assert (await theirs.op("refresh"))["chatId"] == theirs.chat_id
    assert (await mine.op("refresh"))["chatId"] == mine.chat_id


async def test_user_id_and_alias_parameters_are_accepted_and_ignored(chat: ChatDriver) -> None:
    created = await chat.request_chat(nickname="Ann", userId="SPOOFED", alias="999")
    assert created["alias"] == "1"
    assert created["userId"] != "SPOOFED"

    sent = await chat.op(
        "send", message="hi", userId="SPOOFED", alias="999", transcriptPosition="2"
    )
    read = await chat.op("refresh", userId="", alias="")

    for body in (sent, read):
        assert body["alias"] == "1"
        assert body["userId"] == created["userId"]
    assert indexes(read) == [1, 2]


async def test_unknown_parameters_on_operations_are_ignored(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann")

    sent = await chat.op("send", message="hi", transcriptPosition="2", clientTime="123", foo="")

    assert indexes(sent) == [2]
    assert sent["messages"][0]["text"] == "hi"


async def test_a_chat_is_not_found_under_another_service(client: Client) -> None:
    chat = ChatDriver(client, service="support")
    await chat.request_chat()
    elsewhere = ChatDriver(client, service="sales")
    elsewhere.chat_id, elsewhere.secure_key = chat.chat_id, chat.secure_key

    body = await elsewhere.op("send", expect=404, message="hi")

    assert body["statusCode"] == 2
    assert (await chat_state(chat))["chat"]["lastIndex"] == 1


# -- restrict_services ----------------------------------------------------------------------------


async def test_restrict_services_serves_only_the_configured_services(
    make_client: MakeClient, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        chat={"restrict_services": True},
        services={"default": {"flex-push-enabled": "true"}, "support": {}},
    )
    client: Client = await make_client(settings)
    served = ChatDriver(client, service="support")
    await served.request_chat()
    await served.op("send", message="hi")

    for service in ("sales", "default", "Support"):
        response = await client.post(f"/genesys/2/chat/{service}", data={"nickname": "Eve"})
        body = await response.json()
        assert response.status == 404, (service, body)
        assert body["statusCode"] == 2
        # A known chat and its right key, under a service that is not served.
        response = await client.post(
            f"/genesys/2/chat/{service}/{served.chat_id}/refresh",
            data={"secureKey": served.secure_key},
        )
        assert response.status == 404, service
        assert (await response.json())["messages"] == []

    listed = await served.api("GET", "/chats")
    assert [c["chatId"] for c in listed["chats"]] == [served.chat_id]


async def test_without_restrict_services_any_service_name_is_served(client: Client) -> None:
    chat = ChatDriver(client, service="any-service-at-all")
    body = await chat.request_chat()
    assert body["statusCode"] == 0
    assert (await chat_state(chat))["chat"]["serviceName"] == "any-service-at-all"


# -- Concurrency ----------------------------------------------------------------------------------


async def test_concurrent_sends_to_one_chat_get_dense_distinct_indexes(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann")
    texts = [f"message {n}" for n in range(40)]

    bodies = await asyncio.gather(*(chat.op("send", message=text) for text in texts))

    assert all(body["statusCode"] == 0 for body in bodies)
    read = await chat.op("refresh")
    assert indexes(read) == list(range(1, 42))
    assert sorted(m["text"] for m in read["messages"][1:]) == sorted(texts)
    assert (await chat_state(chat))["chat"]["lastIndex"] == 41


async def test_concurrent_customer_and_agent_events_interleave_densely(chat: ChatDriver) -> None:
    await chat.request_chat(nickname="Ann")
    agent = await chat.agent_joins()

    await asyncio.gather(
        *(chat.op("send", message=f"customer {n}") for n in range(15)),
        *(chat.agent_says(agent, f"agent {n}") for n in range(15)),
        *(chat.op("startTyping") for _ in range(5)),
    )

    read = await chat.op("refresh", transcriptPosition="3")
    assert indexes(read) == list(range(3, 38))
    assert read["nextPosition"] == 38
    texts = [m.get("text") for m in read["messages"]]
    assert sorted(t for t in texts if t) == sorted(
        [f"customer {n}" for n in range(15)] + [f"agent {n}" for n in range(15)]
    )


async def test_concurrent_request_chats_create_distinct_chats(client: Client) -> None:
    drivers = [ChatDriver(client) for _ in range(20)]

    bodies = await asyncio.gather(
        *(d.request_chat(nickname=f"c{n}") for n, d in enumerate(drivers))
    )

    assert len({body["chatId"] for body in bodies}) == 20
    assert all(indexes(body) == [1] for body in bodies)
    response = await client.get("/api/v1/chats", headers={"X-API-Key": API_KEY})
    assert len((await response.json())["chats"]) == 20


async def test_a_text_plain_form_from_an_old_widget_is_read_as_urlencoded(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post(
        "/genesys/2/chat/support",
        data=b"nickname=Old%20Widget&subject=XDomainRequest",
        headers={"Content-Type": "text/plain"},
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["messages"][0]["from"]["nickname"] == "Old Widget"
