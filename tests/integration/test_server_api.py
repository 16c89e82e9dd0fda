"""The chat-server side API (CONTRACT §11) as agents, bots and chat servers use it.

Real app, real SQLite file, the fake clock; the customer side is driven through Chat API v2 so
that what the chat-server side writes is checked where the customer reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.api.chat_server import SERVER_EVENT_TYPES
from chatpush.config import Settings
from chatpush.errors import Code
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver

Client = TestClient[web.Request, web.Application]

START_MS = FakeClock().now_ms()


async def call(
    client: Client,
    method: str,
    path: str,
    *,
    key: str | None = API_KEY,
    json_body: Any = None,
    data: bytes | None = None,
) -> tuple[int, Any]:
    headers = {} if key is None else {"X-API-Key": key}
    if data is not None:
        headers["Content-Type"] = "application/json"
    response = await client.request(
        method, f"/api/v1{path}", json=json_body, data=data, headers=headers
    )
    return response.status, await response.json()


def codes(body: dict[str, Any]) -> list[int]:
    assert set(body) == {"errors"}, body
    assert body["errors"] and all(entry["advice"] for entry in body["errors"]), body
    return [entry["code"] for entry in body["errors"]]


async def state(chat: ChatDriver) -> dict[str, Any]:
    return await chat.api("GET", f"/chats/{chat.chat_id}")


def server_routes(chat_id: str) -> list[tuple[str, str, Any]]:
    """Every keyed route of the chat-server side, with a request that would succeed."""
    return [
        ("GET", "/chats", None),
        ("GET", f"/chats/{chat_id}", None),
        ("POST", f"/chats/{chat_id}/parties", {"type": "Agent", "nickname": "Bob"}),
        ("POST", f"/chats/{chat_id}/events", {"participantId": 2, "type": "Message"}),
        ("DELETE", f"/chats/{chat_id}/parties/2", None),
        ("POST", f"/chats/{chat_id}/end", None),
    ]


# -- the API key ---------------------------------------------------------------------------------


async def test_every_call_needs_the_right_api_key(client: Client, chat: ChatDriver) -> None:
    await chat.request_chat()
    await chat.agent_joins()
    before = await state(chat)
    wrong_keys = [None, "", "wrong", API_KEY.upper(), API_KEY[:-1], API_KEY + "x"]
    for method, path, body in server_routes(chat.chat_id):
        for key in wrong_keys:
            status, answer = await call(client, method, path, key=key, json_body=body)
            assert status == 403, (method, path, key, answer)
            assert codes(answer) == [Code.INVALID_API_KEY]
    assert await state(chat) == before, "a refused call wrote something"
    for method, path, body in server_routes(chat.chat_id):
        status, answer = await call(client, method, path, json_body=body)
        assert status in (200, 201), (method, path, answer)


async def test_the_key_is_checked_before_anything_else(client: Client) -> None:
    for method, path, data in [
        ("GET", "/chats/UNKNOWN", None),
        ("GET", "/chats?limit=0", None),
        ("POST", "/chats/UNKNOWN/events", b"{not json"),
        ("DELETE", "/chats/UNKNOWN/parties/abc", None),
        ("GET", "/no/such/route", None),
    ]:
        status, answer = await call(client, method, path, key="wrong", data=data)
        assert status == 403, (path, answer)
        assert codes(answer) == [Code.INVALID_API_KEY]


async def test_any_of_several_configured_keys_works(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(security={"api_keys": ["key-one", "key-two"]}))
    for key in ("key-one", "key-two"):
        status, _ = await call(client, "GET", "/chats", key=key)
        assert status == 200
    for key in ("key-three", "key-one,key-two", API_KEY):
        status, _ = await call(client, "GET", "/chats", key=key)
        assert status == 403


async def test_without_configured_keys_nothing_gets_in(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(security={"api_keys": []}))
    for key in (None, "", API_KEY):
        status, _ = await call(client, "GET", "/chats", key=key)
        assert status == 403
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200


# -- adding parties ------------------------------------------------------------------------------


async def test_parties_join_with_the_next_participant_ids(
    chat: ChatDriver, clock: FakeClock
) -> None:
    await chat.request_chat(nickname="Ann")
    added = []
    for kind, nickname in [("Agent", "Bob"), ("Supervisor", "Sue"), ("External", "Bot")]:
        clock.advance(1)
        body = await chat.api(
            "POST", f"/chats/{chat.chat_id}/parties", 201, {"type": kind, "nickname": nickname}
        )
        added.append(body)
    assert [body["party"] for body in added] == [
        {
            "participantId": 2,
            "type": "Agent",
            "nickname": "Bob",
            "joinedAt": START_MS + 1000,
            "leftAt": None,
        },
        {
            "participantId": 3,
            "type": "Supervisor",
            "nickname": "Sue",
            "joinedAt": START_MS + 2000,
            "leftAt": None,
        },
        {
            "participantId": 4,
            "type": "External",
            "nickname": "Bot",
            "joinedAt": START_MS + 3000,
            "leftAt": None,
        },
    ]
    assert [body["event"] for body in added] == [
        {
            "from": {"nickname": nickname, "participantId": pid, "type": kind},
            "index": pid,
            "type": "ParticipantJoined",
            "utcTime": START_MS + (pid - 1) * 1000,
        }
        for pid, kind, nickname in [
            (2, "Agent", "Bob"),
            (3, "Supervisor", "Sue"),
            (4, "External", "Bot"),
        ]
    ]
    # The customer sees them join, exactly as written.
    refreshed = await chat.op("refresh", transcriptPosition="2")
    assert refreshed["messages"] == [body["event"] for body in added]
    assert refreshed["nextPosition"] == 5


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Client", "nickname": "Fake customer"},
        {"type": "agent", "nickname": "Bob"},
        {"type": "Agent"},
        {"nickname": "Bob"},
        {"type": "Agent", "nickname": ""},
        {"type": "Agent", "nickname": "x" * 129},
        {"type": "Agent", "nickname": 7},
        {"type": "Agent", "nickname": "Bob", "participantId": 9},
        [],
        "Agent",
        None,
    ],
)
async def test_a_bad_party_is_refused_and_nothing_is_written(
    client: Client, chat: ChatDriver, body: Any
) -> None:
    await chat.request_chat()
    before = await state(chat)
    status, answer = await call(
        client, "POST", f"/chats/{chat.chat_id}/parties", data=json.dumps(body).encode()
    )
    assert status == 400, answer
    assert codes(answer) == [Code.INVALID_PARAMETER]
    assert await state(chat) == before


async def test_a_party_cannot_join_an_unknown_or_ended_chat(
    client: Client, chat: ChatDriver
) -> None:
    party = {"type": "Agent", "nickname": "Bob"}
    status, answer = await call(client, "POST", "/chats/0000000000000000/parties", json_body=party)
    assert (status, codes(answer)) == (404, [Code.UNKNOWN_CHAT])
    await chat.request_chat()
    await chat.op("disconnect")
    before = await state(chat)
    status, answer = await call(client, "POST", f"/chats/{chat.chat_id}/parties", json_body=party)
    assert (status, codes(answer)) == (409, [Code.CHAT_ENDED])
    assert await state(chat) == before


# -- adding events -------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", SERVER_EVENT_TYPES)
async def test_every_event_type_reaches_the_customer(
    chat: ChatDriver, clock: FakeClock, event_type: str
) -> None:
    await chat.request_chat()
    agent = await chat.agent_joins("Bob")
    clock.advance(5)
    body = await chat.api(
        "POST",
        f"/chats/{chat.chat_id}/events",
        201,
        {
            "participantId": agent,
            "type": event_type,
            "text": f"{event_type} text",
            "messageType": "kind-a",
            "userData": {"key": "value", "other": ""},
        },
    )
    expected = {
        "from": {"nickname": "Bob", "participantId": agent, "type": "Agent"},
        "index": 3,
        "type": event_type,
        "utcTime": START_MS + 5000,
        "text": f"{event_type} text",
        "messageType": "kind-a",
        "userData": {"key": "value", "other": ""},
    }
    assert body == {"event": expected}
    refreshed = await chat.op("refresh", transcriptPosition="3")
    assert refreshed["messages"] == [expected]
    assert (await state(chat))["transcript"][-1] == expected


async def test_optional_event_members_are_left_out_when_empty(chat: ChatDriver) -> None:
    await chat.request_chat()
    agent = await chat.agent_joins("Bob")
    extras: list[dict[str, Any]] = [
        {},
        {"text": None, "messageType": None, "userData": None},
        {"userData": {}},
    ]
    for extra in extras:
        body = await chat.api(
            "POST",
            f"/chats/{chat.chat_id}/events",
            201,
            {"participantId": agent, "type": "TypingStarted", **extra},
        )
        assert set(body["event"]) == {"from", "index", "type", "utcTime"}
    assert [m["index"] for m in (await chat.op("refresh", transcriptPosition="3"))["messages"]] == [
        3,
        4,
        5,
    ]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"type": "ParticipantJoined"}, 400, Code.INVALID_PARAMETER),
        ({"type": "ParticipantLeft"}, 400, Code.INVALID_PARAMETER),
        ({"type": "Bogus"}, 400, Code.INVALID_PARAMETER),
        ({"type": "message"}, 400, Code.INVALID_PARAMETER),
        ({"type": ""}, 400, Code.INVALID_PARAMETER),
        ({"participantId": "2"}, 400, Code.INVALID_PARAMETER),
        ({"participantId": True}, 400, Code.INVALID_PARAMETER),
        ({"participantId": 2.5}, 400, Code.INVALID_PARAMETER),
        ({"participantId": 0}, 400, Code.INVALID_PARAMETER),
        ({"participantId": 2**31}, 400, Code.INVALID_PARAMETER),
        ({"participantId": 10**30}, 400, Code.INVALID_PARAMETER),
        ({"text": 5}, 400, Code.INVALID_PARAMETER),
        ({"text": "x" * 16385}, 400, Code.INVALID_PARAMETER),
        ({"messageType": "x" * 129}, 400, Code.INVALID_PARAMETER),
        ({"userData": {"k": 1}}, 400, Code.INVALID_PARAMETER),
        ({"userData": ["k"]}, 400, Code.INVALID_PARAMETER),
        ({"userData": {"": "empty key"}}, 400, Code.INVALID_PARAMETER),
        ({"userData": {f"k{i}": "v" for i in range(101)}}, 400, Code.INVALID_PARAMETER),
        ({"from": {"participantId": 2}}, 400, Code.INVALID_PARAMETER),
        ({"participantId": 1}, 404, Code.UNKNOWN_PARTY),
        ({"participantId": 99}, 404, Code.UNKNOWN_PARTY),
    ],
)
async def test_a_bad_event_is_refused_and_nothing_is_written(
    client: Client, chat: ChatDriver, change: dict[str, Any], status: int, code: int
) -> None:
    await chat.request_chat()
    agent = await chat.agent_joins()
    body = {"participantId": agent, "type": "Message", "text": "hi", **change}
    before = await state(chat)
    got, answer = await call(client, "POST", f"/chats/{chat.chat_id}/events", json_body=body)
    assert got == status, answer
    assert codes(answer) == [code]
    assert await state(chat) == before


async def test_a_party_that_left_cannot_write(client: Client, chat: ChatDriver) -> None:
    await chat.request_chat()
    agent = await chat.agent_joins()
    await chat.api("DELETE", f"/chats/{chat.chat_id}/parties/{agent}")
    before = await state(chat)
    status, answer = await call(
        client,
        "POST",
        f"/chats/{chat.chat_id}/events",
        json_body={"participantId": agent, "type": "Message", "text": "still here?"},
    )
    assert (status, codes(answer)) == (409, [Code.CONFLICT])
    assert await state(chat) == before


async def test_nobody_writes_to_an_unknown_or_ended_chat(client: Client, chat: ChatDriver) -> None:
    event = {"participantId": 2, "type": "Message", "text": "hi"}
    status, answer = await call(client, "POST", "/chats/0000000000000000/events", json_body=event)
    assert (status, codes(answer)) == (404, [Code.UNKNOWN_CHAT])
    await chat.request_chat()
    await chat.agent_joins()
    await chat.op("disconnect")
    before = await state(chat)
    status, answer = await call(client, "POST", f"/chats/{chat.chat_id}/events", json_body=event)
    assert (status, codes(answer)) == (409, [Code.CHAT_ENDED])
    assert await state(chat) == before


# -- removing parties ----------------------------------------------------------------------------


async def test_removing_an_agent_writes_participant_left(
    chat: ChatDriver, clock: FakeClock
) -> None:
    await chat.request_chat()
    agent = await chat.agent_joins("Bob")
    clock.advance(7)
    body = await chat.api("DELETE", f"/chats/{chat.chat_id}/parties/{agent}")
    left = {
        "from": {"nickname": "Bob", "participantId": agent, "type": "Agent"},
        "index": 3,
        "type": "ParticipantLeft",
        "utcTime": START_MS + 7000,
    }
    assert body == {"event": left}
    refreshed = await chat.op("refresh", transcriptPosition="3")
    assert refreshed["messages"] == [left]
    assert refreshed["chatEnded"] is False
    read = await state(chat)
    assert read["chat"]["status"] == "active"
    assert [(p["participantId"], p["leftAt"]) for p in read["parties"]] == [
        (1, None),
        (agent, START_MS + 7000),
    ]
    # The customer can still write; the agent cannot be removed twice.
    await chat.op("send", message="anyone?")
    await chat.api("DELETE", f"/chats/{chat.chat_id}/parties/{agent}", 409)


async def test_removing_the_customer_ends_the_chat(chat: ChatDriver, clock: FakeClock) -> None:
    await chat.request_chat(nickname="Ann")
    agent = await chat.agent_joins("Bob")
    clock.advance(3)
    body = await chat.api("DELETE", f"/chats/{chat.chat_id}/parties/1")
    assert body["event"] == {
        "from": {"nickname": "Ann", "participantId": 1, "type": "Client"},
        "index": 3,
        "type": "ParticipantLeft",
        "utcTime": START_MS + 3000,
    }
    refreshed = await chat.op("refresh")
    assert refreshed["chatEnded"] is True
    # The chat ends with the customer's removal, so the agent still present leaves it too.
    assert refreshed["messages"][-2:] == [
        body["event"],
        {
            "from": {"nickname": "Bob", "participantId": agent, "type": "Agent"},
            "index": 4,
            "type": "ParticipantLeft",
            "utcTime": START_MS + 3000,
        },
    ]
    await chat.op("send", expect=409, message="wait")
    read = await state(chat)
    assert read["chat"]["status"] == "ended"
    assert read["chat"]["endedAt"] == START_MS + 3000
    assert all(party["leftAt"] == START_MS + 3000 for party in read["parties"])
    await chat.api(
        "POST",
        f"/chats/{chat.chat_id}/events",
        409,
        {"participantId": agent, "type": "Message", "text": "bye"},
    )


@pytest.mark.parametrize(
    ("participant", "status", "code"),
    [
        ("99", 404, Code.UNKNOWN_PARTY),
        ("0", 400, Code.INVALID_PARAMETER),
        ("-2", 400, Code.INVALID_PARAMETER),
        ("abc", 400, Code.INVALID_PARAMETER),
        ("2.0", 400, Code.INVALID_PARAMETER),
        ("%C2%B2", 400, Code.INVALID_PARAMETER),
        ("%D9%A2", 400, Code.INVALID_PARAMETER),
        ("2147483648", 400, Code.INVALID_PARAMETER),
        ("9" * 5000, 400, Code.INVALID_PARAMETER),
    ],
)
async def test_removing_a_party_that_is_not_there(
    client: Client, chat: ChatDriver, participant: str, status: int, code: int
) -> None:
    await chat.request_chat()
    await chat.agent_joins()
    before = await state(chat)
    got, answer = await call(client, "DELETE", f"/chats/{chat.chat_id}/parties/{participant}")
    assert got == status, answer
    assert codes(answer) == [code]
    assert await state(chat) == before


async def test_removing_from_an_unknown_or_ended_chat(client: Client, chat: ChatDriver) -> None:
    status, answer = await call(client, "DELETE", "/chats/0000000000000000/parties/2")
    assert (status, codes(answer)) == (404, [Code.UNKNOWN_CHAT])
    await chat.request_chat()
    await chat.agent_joins()
    await chat.api("POST", f"/chats/{chat.chat_id}/end")
    before = await state(chat)
    for participant in (1, 2):
        status, answer = await call(
            client, "DELETE", f"/chats/{chat.chat_id}/parties/{participant}"
        )
        assert (status, codes(answer)) == (409, [Code.CHAT_ENDED])
    assert await state(chat) == before


# -- ending a chat ------------------------------------------------------------------------------


async def test_end_chat_makes_present_agents_leave_and_ends_it(
    chat: ChatDriver, clock: FakeClock
) -> None:
    await chat.request_chat(nickname="Ann")
    agent = await chat.agent_joins("Bob")
    supervisor = (
        await chat.api(
            "POST", f"/chats/{chat.chat_id}/parties", 201, {"type": "Supervisor", "nickname": "Sue"}
        )
    )["party"]["participantId"]
    external = (
        await chat.api(
            "POST", f"/chats/{chat.chat_id}/parties", 201, {"type": "External", "nickname": "Bot"}
        )
    )["party"]["participantId"]
    await chat.api("DELETE", f"/chats/{chat.chat_id}/parties/{supervisor}")  # index 5
    clock.advance(10)
    ended = await chat.api("POST", f"/chats/{chat.chat_id}/end")
    assert ended["chat"]["status"] == "ended"
    assert ended["chat"]["endedAt"] == START_MS + 10_000
    assert ended["chat"]["lastIndex"] == 7

    refreshed = await chat.op("refresh", transcriptPosition="6")
    assert refreshed["chatEnded"] is True
    assert [
        (m["type"], m["from"]["participantId"], m["utcTime"]) for m in refreshed["messages"]
    ] == [
        ("ParticipantLeft", agent, START_MS + 10_000),
        ("ParticipantLeft", external, START_MS + 10_000),
    ]
    read = await state(chat)
    assert all(party["leftAt"] is not None for party in read["parties"])

    # Ending again is a no-op that answers 200 with the chat as it was ended.
    clock.advance(10)
    again = await chat.api("POST", f"/chats/{chat.chat_id}/end")
    assert again["chat"] == {
        **ended["chat"],
        "clientPosition": 7,
        "lastClientRequestAt": START_MS + 10_000,
    }
    assert (await state(chat))["transcript"] == read["transcript"]


async def test_end_chat_without_agents_writes_no_event(chat: ChatDriver) -> None:
    await chat.request_chat()
    ended = await chat.api("POST", f"/chats/{chat.chat_id}/end")
    assert ended["chat"]["lastIndex"] == 1
    refreshed = await chat.op("refresh")
    assert refreshed["chatEnded"] is True
    assert [m["type"] for m in refreshed["messages"]] == ["ParticipantJoined"]


async def test_ending_an_unknown_chat_is_a_404(client: Client) -> None:
    status, answer = await call(client, "POST", "/chats/0000000000000000/end")
    assert (status, codes(answer)) == (404, [Code.UNKNOWN_CHAT])


# -- reading a chat ------------------------------------------------------------------------------


async def test_read_chat_shows_state_parties_and_transcript(
    chat: ChatDriver, clock: FakeClock
) -> None:
    await chat.request_chat(
        nickname="Ann", subject="billing", emailAddress="ann@example.com", **{"userData[a]": "1"}
    )
    agent = await chat.agent_joins("Bob")
    await chat.agent_says(agent, "Hello")
    clock.advance(30)
    await chat.op("refresh", transcriptPosition="2")
    read = await state(chat)
    assert read["chat"] == {
        "chatId": chat.chat_id,
        "serviceName": "support",
        "status": "active",
        "createdAt": START_MS,
        "endedAt": None,
        "lastClientRequestAt": START_MS + 30_000,
        "lastIndex": 3,
        "clientPosition": 3,
        "subject": "billing",
        "emailAddress": "ann@example.com",
        "userData": {"a": "1"},
    }
    assert read["parties"] == [
        {
            "participantId": 1,
            "type": "Client",
            "nickname": "Ann",
            "joinedAt": START_MS,
            "leftAt": None,
        },
        {
            "participantId": 2,
            "type": "Agent",
            "nickname": "Bob",
            "joinedAt": START_MS,
            "leftAt": None,
        },
    ]
    assert [(e["index"], e["type"]) for e in read["transcript"]] == [
        (1, "ParticipantJoined"),
        (2, "ParticipantJoined"),
        (3, "Message"),
    ]
    # Reading is not a customer request: it changes nothing the customer side sees.
    assert await state(chat) == read


@pytest.mark.parametrize(
    ("position", "indexes"),
    [
        ("", [1, 2, 3]),
        ("0", [1, 2, 3]),
        ("1", [1, 2, 3]),
        ("3", [3]),
        ("4", []),
        ("2147483647", []),
    ],
)
async def test_read_chat_from_a_position(
    chat: ChatDriver, position: str, indexes: list[int]
) -> None:
    await chat.request_chat()
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "Hello")
    read = await chat.api("GET", f"/chats/{chat.chat_id}?fromPosition={position}")
    assert [e["index"] for e in read["transcript"]] == indexes
    assert len(read["parties"]) == 2


@pytest.mark.parametrize("position", ["-1", "2147483648", "x", "1.0", "%C2%B2", "--1", "9" * 5000])
async def test_read_chat_refuses_a_bad_position(
    client: Client, chat: ChatDriver, position: str
) -> None:
    await chat.request_chat()
    status, answer = await call(client, "GET", f"/chats/{chat.chat_id}?fromPosition={position}")
    assert (status, codes(answer)) == (400, [Code.INVALID_PARAMETER])


async def test_an_ended_chat_can_still_be_read(client: Client, chat: ChatDriver) -> None:
    await chat.request_chat()
    await chat.op("disconnect")
    read = await state(chat)
    assert read["chat"]["status"] == "ended"
    assert [e["type"] for e in read["transcript"]] == ["ParticipantJoined", "ParticipantLeft"]
    status, answer = await call(client, "GET", "/chats/0000000000000000")
    assert (status, codes(answer)) == (404, [Code.UNKNOWN_CHAT])


# -- listing chats -------------------------------------------------------------------------------


async def _make_chats(client: Client, clock: FakeClock) -> dict[str, dict[str, Any]]:
    """Five chats a minute apart: support x3 (the second ended), sales x2 (the last ended)."""
    made: dict[str, dict[str, Any]] = {}
    for number, (service, end) in enumerate(
        [
            ("support", False),
            ("support", True),
            ("sales", False),
            ("support", False),
            ("sales", True),
        ]
    ):
        driver = ChatDriver(client, service=service)
        await driver.request_chat(nickname=f"Customer {number}")
        if end:
            await driver.op("disconnect")
        made[driver.chat_id] = {"service": service, "ended": end, "created": clock.now_ms()}
        clock.advance(60)
    return made


async def _list(client: Client, query: str) -> dict[str, Any]:
    status, body = await call(client, "GET", f"/chats?{query}")
    assert status == 200, body
    return dict(body)


async def test_list_chats_filters(client: Client, clock: FakeClock) -> None:
    made = await _make_chats(client, clock)

    def ids(predicate: Callable[[dict[str, Any]], bool]) -> list[str]:
        return sorted(chat_id for chat_id, info in made.items() if predicate(info))

    async def listed(query: str) -> list[str]:
        body = await _list(client, query)
        assert body["next"] is None
        return [chat["chatId"] for chat in body["chats"]]

    assert await listed("") == ids(lambda info: True)
    assert await listed("service=support") == ids(lambda info: info["service"] == "support")
    assert await listed("service=nowhere") == []
    assert await listed("status=active") == ids(lambda info: not info["ended"])
    assert await listed("status=ended") == ids(lambda info: info["ended"])
    third = START_MS + 120_000
    assert await listed(f"createdAfter={third}") == ids(lambda info: info["created"] >= third)
    assert await listed(f"createdBefore={third}") == ids(lambda info: info["created"] < third)
    assert await listed(f"createdAfter={third}&createdBefore={third + 1}") == ids(
        lambda info: info["created"] == third
    )
    assert await listed(f"service=sales&status=ended&createdAfter={START_MS}") == ids(
        lambda info: info["service"] == "sales" and info["ended"]
    )
    # Empty values are the same as no value.
    assert await listed("service=&status=&createdAfter=&createdBefore=&after=&limit=") == ids(
        lambda info: True
    )
    summaries = (await _list(client, "status=ended"))["chats"]
    assert all(s["status"] == "ended" and s["endedAt"] is not None for s in summaries)


async def test_list_chats_pages_with_limit_and_the_next_cursor(
    client: Client, clock: FakeClock
) -> None:
    made = await _make_chats(client, clock)
    pages: list[list[str]] = []
    query = "limit=2"
    while True:
        body = await _list(client, query)
        pages.append([chat["chatId"] for chat in body["chats"]])
        if body["next"] is None:
            break
        assert body["next"] == pages[-1][-1]
        query = f"limit=2&after={body['next']}"
        assert len(pages) < 10
    assert [len(page) for page in pages] == [2, 2, 1]
    flat = [chat_id for page in pages for chat_id in page]
    assert flat == sorted(made)

    # A page that is exactly full still gives a cursor; the page after it is empty.
    body = await _list(client, "limit=5")
    assert body["next"] == flat[-1]
    assert await _list(client, f"limit=5&after={body['next']}") == {"chats": [], "next": None}
    # Filters and the cursor combine.
    support = sorted(chat_id for chat_id, info in made.items() if info["service"] == "support")
    first = await _list(client, "service=support&limit=1")
    rest = await _list(client, f"service=support&after={first['next']}")
    assert [c["chatId"] for c in first["chats"] + rest["chats"]] == support


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "limit=%C2%B2",
        "limit=--5",
        "limit=1e3",
        "limit=" + "9" * 5000,
        "status=open",
        "status=Active",
        "createdAfter=-1",
        "createdAfter=4611686018427387905",
        "createdBefore=yesterday",
    ],
)
async def test_list_chats_refuses_bad_parameters(client: Client, query: str) -> None:
    status, answer = await call(client, "GET", f"/chats?{query}")
    assert (status, codes(answer)) == (400, [Code.INVALID_PARAMETER])


async def test_list_chats_limit_bounds_are_inclusive(client: Client, chat: ChatDriver) -> None:
    await chat.request_chat()
    for limit in ("1", "1000"):
        assert len((await _list(client, f"limit={limit}"))["chats"]) == 1


# -- malformed bodies ----------------------------------------------------------------------------


BAD_BODIES = [
    pytest.param(b"", Code.INVALID_PARAMETER, id="empty"),
    pytest.param(b"{not json", Code.INVALID_PARAMETER, id="not-json"),
    pytest.param(b'{"type": "Agent", "nickname": "Bob",}', Code.INVALID_PARAMETER, id="comma"),
    pytest.param(b"\xff\xfe{}", Code.BAD_ENCODING, id="not-utf8"),
    pytest.param('{"nickname": "Bj\u00f6rn"}'.encode("latin-1"), Code.BAD_ENCODING, id="latin-1"),
    pytest.param(b"[" * 30000 + b"]" * 30000, Code.INVALID_PARAMETER, id="deeply-nested"),
    pytest.param(b'{"type": "Agent", "nickname": "a\\u0000b"}', Code.BAD_ENCODING, id="nul"),
    pytest.param(b'{"type": "Agent", "nickname": "\\ud800"}', Code.BAD_ENCODING, id="surrogate"),
    pytest.param(
        b'{"participantId": 2, "type": "Message", "text": "\\udfff"}',
        Code.BAD_ENCODING,
        id="surrogate-text",
    ),
    pytest.param(
        b'{"participantId": 2, "type": "Message", "userData": {"\\ud800": "x"}}',
        Code.BAD_ENCODING,
        id="surrogate-key",
    ),
    pytest.param(
        b'{"type": "Agent", "nickname": "Bob", "extra": 1}', Code.INVALID_PARAMETER, id="extra"
    ),
    pytest.param(
        b'{"participantId": 2, "type": "Message", "extra": null}',
        Code.INVALID_PARAMETER,
        id="extra-null",
    ),
    pytest.param(b"[]", Code.INVALID_PARAMETER, id="array"),
    pytest.param(b"42", Code.INVALID_PARAMETER, id="number"),
    pytest.param(b"null", Code.INVALID_PARAMETER, id="null"),
    pytest.param(b'{"a": "' + b"x" * 70_000 + b'"}', Code.BODY_TOO_LARGE, id="too-large"),
]


@pytest.mark.parametrize("route", ["parties", "events"])
@pytest.mark.parametrize(("data", "code"), BAD_BODIES)
async def test_a_malformed_body_is_a_400_and_writes_nothing(
    client: Client, chat: ChatDriver, route: str, data: bytes, code: int
) -> None:
    await chat.request_chat()
    await chat.agent_joins()
    before = await state(chat)
    status, answer = await call(client, "POST", f"/chats/{chat.chat_id}/{route}", data=data)
    assert status == 400, answer
    assert codes(answer) == [code]
    assert await state(chat) == before
    # The connection and the app are fine afterwards.
    await chat.agent_says(2, "still working")
