"""What a stranger can grow through the chat APIs, and how fast: the per-address Request Chat
limit (REST and CometD), events per chat, paged transcripts and the end of idle chats.

The real app on a real SQLite file, a fake clock; each test sets the limits it exercises
(tests/conftest.py turns the Request Chat limit off for every other test).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.api.keys import CHATS, METRICS
from chatpush.api.ratelimit import TokenBuckets
from chatpush.app import create_app
from chatpush.chat.housekeeping import end_idle_chats
from chatpush.config import ConfigError, Settings
from chatpush.errors import Code
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver
from tests.integration.reliable import push_settings, start_chat
from tests.receivers import Receiver

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Any]
MakeSettings = Callable[..., Settings]

COMETD = "/genesys/cometd"
RATE_LIMITED = Code.RATE_LIMITED
TRANSCRIPT_FULL = Code.TRANSCRIPT_FULL


def limited(per_minute: int = 6, burst: int = 3, **chat: Any) -> dict[str, Any]:
    return {"chats_per_address_per_minute": per_minute, "chats_per_address_burst": burst, **chat}


async def request_chat(client: Client, headers: dict[str, str] | None = None) -> Any:
    return await client.post(
        "/genesys/2/chat/support", data={"nickname": "Ann"}, headers=headers or {}
    )


async def chat_count(client: Client) -> int:
    response = await client.get("/api/v1/chats?limit=1000", headers={"X-API-Key": API_KEY})
    return len((await response.json())["chats"])


async def metrics(client: Client) -> str:
    response = await client.get("/metrics", headers={"X-API-Key": API_KEY})
    return await response.text()


def indexes(body: dict[str, Any], key: str = "messages") -> list[int]:
    return [event["index"] for event in body[key]]


async def chat_with_messages(client: Client, count: int) -> ChatDriver:
    """A chat whose transcript is the customer's join (1), an agent's join (2) and ``count``
    agent messages (3 ...)."""
    chat = ChatDriver(client)
    await chat.request_chat()
    agent = await chat.agent_joins()
    for n in range(count):
        await chat.agent_says(agent, f"message {n} " + "x" * 100)
    return chat


# -- Request Chat per client address ---------------------------------------------------------


async def test_rest_request_chat_over_the_limit_is_429_with_retry_after_and_creates_nothing(
    make_settings: MakeSettings, make_client: MakeClient, clock: FakeClock
) -> None:
    client = await make_client(make_settings(chat=limited(per_minute=6, burst=3)))
    for _ in range(3):
        assert (await request_chat(client)).status == 200

    refused = await request_chat(client)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "10"  # one token at 6 a minute
    body = await refused.json()
    assert body["statusCode"] == 1 and body["chatEnded"] is False and body["messages"] == []
    [error] = body["errors"]
    assert error["code"] == RATE_LIMITED and "retry in 10 s" in error["advice"]
    assert await chat_count(client) == 3
    assert 'chatpush_rate_limited_total{limit="chat_create"} 1' in await metrics(client)

    clock.advance(9)
    assert (await request_chat(client)).status == 429
    clock.advance(1)
    assert (await request_chat(client)).status == 200
    assert (await request_chat(client)).status == 429
    assert await chat_count(client) == 4


async def test_the_limit_counts_per_client_address_behind_a_trusted_proxy(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    settings = make_settings(
        chat=limited(per_minute=1, burst=2), server={"trusted_proxies": ["127.0.0.1"]}
    )
    client = await make_client(settings)
    first = {"X-Forwarded-For": "198.51.100.1"}
    second = {"X-Forwarded-For": "198.51.100.2"}
    assert [(await request_chat(client, first)).status for _ in range(3)] == [200, 200, 429]
    assert [(await request_chat(client, second)).status for _ in range(3)] == [200, 200, 429]
    # A client's own X-Forwarded-For entries to the left of the proxy's prove nothing.
    spoofed = {"X-Forwarded-For": "203.0.113.5, 198.51.100.1"}
    assert (await request_chat(client, spoofed)).status == 429


async def test_an_ipv6_client_cannot_take_a_fresh_address_for_every_chat(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    """One host holds a whole /64: every address in it shares one bucket (so do the CometD
    sessions per address: both limits count the same key)."""
    settings = make_settings(
        chat=limited(per_minute=1, burst=2), server={"trusted_proxies": ["127.0.0.1"]}
    )
    client = await make_client(settings)
    statuses = [
        (await request_chat(client, {"X-Forwarded-For": f"2001:db8:1:1::{n:x}"})).status
        for n in range(1, 6)
    ]
    assert statuses == [200, 200, 429, 429, 429]
    other_network = {"X-Forwarded-For": "2001:db8:1:2::1"}
    assert (await request_chat(client, other_network)).status == 200


async def test_a_cometd_batch_of_request_chats_creates_no_more_than_the_limit(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    """The finding: one 62 KB CometD request holding 450 requestChat messages made 450 chats."""
    client = await make_client(make_settings(chat=limited(per_minute=30, burst=5)))
    [handshake] = await bayeux(client, [handshake_message()])
    client_id = handshake["clientId"]
    publishes = [
        {
            "channel": "/service/chatV2/support",
            "clientId": client_id,
            "id": str(n),
            "data": {"operation": "requestChat", "nickname": f"N{n}"},
        }
        for n in range(200)
    ]
    await bayeux(client, publishes)
    reply = await bayeux(client, [connect_message(client_id)])
    envelopes = [m["data"] for m in reply if m.get("channel") == "/service/chatV2/support"]
    assert len(envelopes) == 200
    started = [e for e in envelopes if e["statusCode"] == 0]
    refused = [e for e in envelopes if e["statusCode"] != 0]
    assert len(started) == 5
    assert {(e["statusCode"], e["errors"][0]["code"]) for e in refused} == {(1, RATE_LIMITED)}
    assert "retry in 2 s" in refused[0]["errors"][0]["advice"]
    assert await chat_count(client) == 5
    assert 'chatpush_rate_limited_total{limit="chat_create"} 195' in await metrics(client)


def handshake_message() -> dict[str, Any]:
    return {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling"],
        "id": "h",
    }


def connect_message(client_id: str) -> dict[str, Any]:
    return {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
        "id": "c",
    }


async def bayeux(client: Client, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await client.post(
        COMETD, data=json.dumps(messages), headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()
    reply: list[dict[str, Any]] = await response.json()
    return reply


def test_the_buckets_stay_bounded_whatever_the_number_of_addresses() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock, per_minute=60, burst=2, max_keys=100)
    for n in range(10_000):
        assert buckets.take(f"10.0.{n // 256}.{n % 256}") == 0
    assert len(buckets) == 100
    # Once refilled, a bucket is the same as none and is dropped as others come.
    clock.advance(2)
    for n in range(10):
        buckets.take(f"192.0.2.{n}")
    assert len(buckets) <= 100 - 40 + 10
    assert buckets.take("192.0.2.0") == 0 and buckets.take("192.0.2.0") == 1


def test_a_zero_rate_turns_the_limit_off() -> None:
    buckets = TokenBuckets(FakeClock(), per_minute=0, burst=1, max_keys=10)
    assert all(buckets.take("127.0.0.1") == 0 for _ in range(1000))
    assert len(buckets) == 0


# -- events per chat -------------------------------------------------------------------------


async def test_a_full_chat_refuses_new_events_from_both_sides_and_still_ends(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    client = await make_client(make_settings(chat={"max_events_per_chat": 10}))
    chat = await chat_with_messages(client, 6)  # indexes 1-8
    agent = 2
    await chat.op("send", message="nine")
    await chat.op("startTyping")  # ten
    for operation, form in [
        ("send", {"message": "eleven"}),
        ("startTyping", {}),
        ("stopTyping", {}),
        ("customNotice", {"message": "n"}),
        ("pushUrl", {"pushUrl": "https://example.com/"}),
        ("updateNickname", {"nickname": "Ann B"}),
    ]:
        body = await chat.op(operation, expect=409, **form)
        assert body["statusCode"] == 2 and body["chatEnded"] is False
        assert [e["code"] for e in body["errors"]] == [TRANSCRIPT_FULL], operation
    event = {"participantId": agent, "type": "Message", "text": "eleven"}
    refused = await chat.api("POST", f"/chats/{chat.chat_id}/events", 409, event)
    assert [e["code"] for e in refused["errors"]] == [TRANSCRIPT_FULL]
    party = {"type": "Agent", "nickname": "Second"}
    await chat.api("POST", f"/chats/{chat.chat_id}/parties", 409, party)
    state = await chat.api("GET", f"/chats/{chat.chat_id}")
    assert state["chat"]["lastIndex"] == 10 and state["parties"][0]["nickname"] == "Customer"

    # Leaving and ending are never refused: the agent's and the customer's leave events follow.
    ended = await chat.op("disconnect")
    assert ended["chatEnded"] is True
    state = await chat.api("GET", f"/chats/{chat.chat_id}")
    assert state["chat"]["status"] == "ended" and state["chat"]["lastIndex"] == 12


# -- paged transcripts -----------------------------------------------------------------------


async def test_refresh_is_paged_and_following_next_position_returns_every_event_once(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    client = await make_client(make_settings(chat={"max_refresh_events": 5}))
    chat = await chat_with_messages(client, 21)  # indexes 1-23

    first = await chat.op("refresh")  # no transcriptPosition: the whole transcript, paged
    assert indexes(first) == [1, 2, 3, 4, 5] and first["nextPosition"] == 6
    seen = indexes(first)
    position = first["nextPosition"]
    while True:
        page = await chat.op("refresh", transcriptPosition=str(position))
        if not page["messages"]:
            break
        assert len(page["messages"]) <= 5
        seen += indexes(page)
        position = page["nextPosition"]
    assert seen == list(range(1, 24))
    assert position == 24

    # send with a transcriptPosition is paged the same way.
    sent = await chat.op("send", message="hi", transcriptPosition="20")
    assert indexes(sent) == [20, 21, 22, 23, 24] and sent["nextPosition"] == 25


async def test_a_long_transcript_no_longer_makes_a_huge_refresh(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    """The findings: a 300-message chat returned a 4.9 MB refresh (16 KB messages); paged at 100
    events, a page of such messages was still 1.6 MB (6.5 MB in a CometD queue)."""
    client = await make_client(make_settings())  # the defaults: 100 events, 128 KiB a reply
    chat = ChatDriver(client)
    await chat.request_chat()
    agent = await chat.agent_joins()
    for _ in range(150):  # indexes 3-152
        await chat.agent_says(agent, "x" * 16_000)
    seen: list[int] = []
    position = None
    while True:
        data = {"secureKey": chat.secure_key}
        if position is not None:
            data["transcriptPosition"] = str(position)
        response = await client.post(f"/genesys/2/chat/support/{chat.chat_id}/refresh", data=data)
        raw = await response.read()
        assert response.status == 200 and len(raw) < 131_072 + 1_024
        page = json.loads(raw)
        if not page["messages"]:
            break
        seen += indexes(page)
        position = page["nextPosition"]
    assert seen == list(range(1, 153))  # every event once, in order
    assert position == 153


async def test_pages_count_bytes_and_always_carry_one_event(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    """chat.max_refresh_bytes counts the events' JSON in UTF-8: 4 bytes for an emoji; an event
    larger than the budget comes alone, so a client following nextPosition still progresses."""
    client = await make_client(make_settings(chat={"max_refresh_bytes": 10_000}))
    chat = ChatDriver(client)
    await chat.request_chat()
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "\U0001f600" * 2_000)  # 3: 8 KB of UTF-8
    await chat.agent_says(agent, "\U0001f600" * 2_000)  # 4
    await chat.agent_says(agent, "y" * 15_000)  # 5: larger than a page
    await chat.agent_says(agent, "short")  # 6

    first = await chat.op("refresh")
    assert indexes(first) == [1, 2, 3] and first["nextPosition"] == 4
    alone = await chat.op("refresh", transcriptPosition="5")
    assert indexes(alone) == [5] and alone["nextPosition"] == 6
    # The server-side read is paged by the same budget.
    page = await chat.api("GET", f"/chats/{chat.chat_id}")
    assert indexes(page, "transcript") == [1, 2, 3] and page["nextPosition"] == 4
    page = await chat.api("GET", f"/chats/{chat.chat_id}?fromPosition=4")
    assert indexes(page, "transcript") == [4] and page["nextPosition"] == 5


def test_settings_whose_page_would_not_fit_a_cometd_queue_stop_start_up(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(
        chat={"max_refresh_bytes": 1_048_576}, cometd={"max_queued_bytes": 1_048_576}
    )
    with pytest.raises(ConfigError, match="max_queued_bytes"):
        create_app(settings, clock=FakeClock())


async def test_paging_acknowledges_only_what_a_reply_returned(
    make_settings: MakeSettings, make_client: MakeClient, receiver: Receiver, clock: FakeClock
) -> None:
    """CONTRACT §8: a paged refresh acknowledges the events it returned; the trigger for the rest
    goes out at once (rule 4), until a page reaches the end."""
    settings = push_settings(make_settings, receiver, chat={"max_refresh_events": 3})
    push = await start_chat(await make_client(settings), receiver, clock)
    for n in range(8):
        await push.agent_says(f"m{n}")  # indexes 3-10
    await push.settle()
    assert push.seen() == [("2", "0")]

    page = await push.refresh()
    await push.settle()
    assert indexes(page) == [1, 2, 3] and page["nextPosition"] == 4
    assert (await push.subscription())["acknowledgedPosition"] == 3
    assert push.seen() == [("2", "0"), ("4", "0")]

    page = await push.refresh(4)
    await push.settle()
    assert indexes(page) == [4, 5, 6]
    assert (await push.subscription())["acknowledgedPosition"] == 6
    assert push.seen()[-1] == ("7", "0")

    page = await push.refresh(7)
    await push.settle()
    assert indexes(page) == [7, 8, 9] and page["nextPosition"] == 10
    page = await push.refresh(10)
    await push.settle()
    assert indexes(page) == [10] and page["nextPosition"] == 11
    sub = await push.subscription()
    assert sub["acknowledgedPosition"] == 10 and sub["outstandingTrigger"] is None
    assert push.seen() == [("2", "0"), ("4", "0"), ("7", "0"), ("10", "0")]


async def test_the_server_side_read_is_paged_with_a_next_position(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    client = await make_client(make_settings())
    chat = await chat_with_messages(client, 10)  # indexes 1-12
    page = await chat.api("GET", f"/chats/{chat.chat_id}?limit=5")
    assert indexes(page, "transcript") == [1, 2, 3, 4, 5] and page["nextPosition"] == 6
    page = await chat.api("GET", f"/chats/{chat.chat_id}?limit=5&fromPosition=11")
    assert indexes(page, "transcript") == [11, 12] and page["nextPosition"] is None
    whole = await chat.api("GET", f"/chats/{chat.chat_id}")
    assert indexes(whole, "transcript") == list(range(1, 13)) and whole["nextPosition"] is None
    refused = await chat.api("GET", f"/chats/{chat.chat_id}?limit=1001", 400)
    assert "limit" in refused["errors"][0]["advice"]


# -- idle chats without push -----------------------------------------------------------------


async def test_an_idle_chat_without_push_ends_through_the_normal_end(
    make_settings: MakeSettings, make_client: MakeClient, clock: FakeClock
) -> None:
    client = await make_client(make_settings(chat={"idle_chat_timeout_s": 600}))
    idle = await chat_with_messages(client, 1)  # customer join, agent join, one message
    busy = ChatDriver(client)
    await busy.request_chat()

    clock.advance(300)
    await busy.op("refresh")  # a client request: busy is not idle
    clock.advance(299)
    await end_idle_chats(client.app[CHATS], client.app[METRICS])
    assert (await idle.api("GET", f"/chats/{idle.chat_id}"))["chat"]["status"] == "active"

    clock.advance(2)
    await end_idle_chats(client.app[CHATS], client.app[METRICS])
    state = await idle.api("GET", f"/chats/{idle.chat_id}")
    assert state["chat"]["status"] == "ended" and state["chat"]["endedAt"] == clock.now_ms()
    assert state["transcript"][-1]["type"] == "ParticipantLeft"  # the agent left, as on any end
    reply = await idle.op("refresh")
    assert reply["chatEnded"] is True
    assert (await busy.api("GET", f"/chats/{busy.chat_id}"))["chat"]["status"] == "active"
    assert "chatpush_chats_idle_ended_total 1" in await metrics(client)

    clock.advance(301)
    await end_idle_chats(client.app[CHATS], client.app[METRICS])
    assert (await busy.api("GET", f"/chats/{busy.chat_id}"))["chat"]["status"] == "ended"


async def test_an_idle_timeout_of_zero_ends_nothing(
    make_settings: MakeSettings, make_client: MakeClient, receiver: Receiver, clock: FakeClock
) -> None:
    settings = push_settings(make_settings, receiver, chat={"idle_chat_timeout_s": 0})
    client = await make_client(settings)
    push = await start_chat(client, receiver, clock)
    plain = ChatDriver(client)
    await plain.request_chat()
    clock.advance(10 * 86400)
    await end_idle_chats(client.app[CHATS], client.app[METRICS])
    assert (await plain.api("GET", f"/chats/{plain.chat_id}"))["chat"]["status"] == "active"
    state = await push.chat.api("GET", f"/chats/{push.chat.chat_id}")
    assert state["chat"]["status"] == "active"


async def test_idle_expiry_leaves_push_chats_to_flex_push_timeout(
    make_settings: MakeSettings, make_client: MakeClient, receiver: Receiver, clock: FakeClock
) -> None:
    settings = push_settings(make_settings, receiver, chat={"idle_chat_timeout_s": 60})
    client = await make_client(settings)
    push = await start_chat(client, receiver, clock)
    clock.advance(61)
    await end_idle_chats(client.app[CHATS], client.app[METRICS])
    state = await push.chat.api("GET", f"/chats/{push.chat.chat_id}")
    assert state["chat"]["status"] == "active"
