"""Bad input gets a Bayeux error reply, HTTP 200 or 400, never a 500 and never an ERROR log line.

Bodies that cannot be read as messages at all are HTTP 400 with a one-element error array; a
readable batch is HTTP 200 with an unsuccessful reply for each bad message. The autouse fixture
of conftest.py fails any test here that makes the server log at ERROR.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import WSMsgType

from tests.cometd.conftest import LIMITS, PATH, Bayeux
from tests.cometd.support import Client, connect, handshake, post, subscribe

TOO_BIG = json.dumps([{"channel": "/chat/x", "data": "x" * LIMITS.max_message_bytes}])

UNREADABLE_BODIES: dict[str, tuple[bytes | str, str]] = {
    "malformed JSON": (b'[{"channel": "/meta/handshake"', "400::invalid_json"),
    "empty body": (b"", "400::invalid_json"),
    "not UTF-8": (b'[{"channel": "\xff\xfe"}]', "400::invalid_json"),
    "NaN": (b'[{"channel": "/chat/x", "data": NaN}]', "400::invalid_json"),
    "deep nesting": (b"[" * 3_000 + b"]" * 3_000, "400::invalid_json"),
    "a number": (b"42", "400::invalid_batch"),
    "a string": (b'"hello"', "400::invalid_batch"),
    "null": (b"null", "400::invalid_batch"),
    "empty array": (b"[]", "400::invalid_batch"),
    "too large": (TOO_BIG, "413::message_too_large"),
}


@pytest.mark.parametrize("name", list(UNREADABLE_BODIES))
async def test_unreadable_body_is_400_with_an_error_array(http: Client, name: str) -> None:
    body, error = UNREADABLE_BODIES[name]
    assert await post(http, body, status=400) == [
        {"channel": "/meta/error", "successful": False, "error": error}
    ]


async def test_bad_messages_in_a_batch_get_their_own_errors(http: Client) -> None:
    client_id = await handshake(http)
    cases: list[tuple[Any, dict[str, Any]]] = [
        (42, {"channel": "/meta/error", "error": "400::invalid_message"}),
        ({"id": "1"}, {"channel": "/meta/error", "id": "1", "error": "400::invalid_channel"}),
        ({"channel": 5}, {"channel": "/meta/error", "error": "400::invalid_channel"}),
        ({"channel": "chat"}, {"channel": "/meta/error", "error": "400::invalid_channel"}),
        ({"channel": "/a//b"}, {"channel": "/meta/error", "error": "400::invalid_channel"}),
        ({"channel": "/a b"}, {"channel": "/meta/error", "error": "400::invalid_channel"}),
        ({"channel": "/" + "a" * 600}, {"channel": "/meta/error", "error": "400::invalid_channel"}),
        (
            {"channel": "/meta/bogus", "clientId": client_id},
            {"channel": "/meta/bogus", "error": "400::unknown_meta_channel"},
        ),
        (
            {"channel": "/meta/connect", "id": {"x": 1}, "clientId": client_id},
            {"channel": "/meta/connect", "error": "400::invalid_id"},
        ),
        (
            {"channel": "/meta/connect", "id": "2"},
            {
                "channel": "/meta/connect",
                "id": "2",
                "error": "402::session_unknown",
                "advice": {"reconnect": "handshake", "interval": 0},
            },
        ),
        (
            {"channel": "/meta/subscribe", "clientId": client_id},
            {"channel": "/meta/subscribe", "error": "400::invalid_subscription"},
        ),
        (
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": ["/a", 3]},
            {
                "channel": "/meta/subscribe",
                "error": "400::invalid_subscription",
                "subscription": ["/a", 3],
            },
        ),
        (
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/a/*/b"},
            {
                "channel": "/meta/subscribe",
                "error": "400::invalid_subscription",
                "subscription": "/a/*/b",
            },
        ),
        (
            {"channel": "/chat/x", "clientId": client_id},
            {"channel": "/chat/x", "error": "400::missing_data"},
        ),
        (
            {"channel": "/chat/x", "data": 1},
            {
                "channel": "/chat/x",
                "error": "402::session_unknown",
                "advice": {"reconnect": "handshake", "interval": 0},
            },
        ),
        (
            {"channel": "/meta/handshake", "supportedConnectionTypes": "long-polling"},
            {"channel": "/meta/handshake", "error": "400::handshake_not_alone"},
        ),
    ]
    replies = await post(http, [message for message, _ in cases])
    assert replies == [{"successful": False, **expected} for _, expected in cases]


async def test_handshake_without_a_list_of_connection_types(http: Client) -> None:
    for offered in (None, "long-polling", [1]):
        message = {"channel": "/meta/handshake", "supportedConnectionTypes": offered}
        [reply] = await post(http, [message])
        assert reply["error"] == "400::invalid_connection_types"


async def test_get_without_upgrade_is_a_400_bayeux_error(http: Client) -> None:
    response = await http.get(PATH)
    assert response.status == 400
    assert response.content_type == "application/json"
    [reply] = await response.json()
    assert reply["error"] == "400::websocket_upgrade_required"


async def test_bad_websocket_frames_get_error_frames_and_the_socket_lives_on(http: Client) -> None:
    async with http.ws_connect(PATH) as ws:
        frames: list[str | bytes] = [
            "not json",
            "[]",
            "[NaN]",
            b"\xff\xfe",
            json.dumps([{"channel": "/x", "data": "\u00e9" * (LIMITS.max_message_bytes // 2)}]),
        ]
        errors = []
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            [reply] = await ws.receive_json(timeout=2)
            errors.append(reply["error"])
        assert errors == [
            "400::invalid_json",
            "400::invalid_batch",
            "400::invalid_json",
            "400::invalid_json",
            "413::message_too_large",
        ]
        message = {"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]}
        await ws.send_json([message])
        [reply] = await ws.receive_json(timeout=2)
        assert reply["successful"] is True


async def test_a_frame_beyond_the_hard_limit_closes_the_socket(http: Client) -> None:
    async with http.ws_connect(PATH) as ws:
        await ws.send_str("x" * (LIMITS.max_message_bytes * 5))
        closing = await ws.receive(timeout=2)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)


async def test_lone_surrogates_are_refused_and_pairs_delivered(http: Client) -> None:
    client_id = await handshake(http)
    [reply] = await subscribe(http, client_id, "/chat/room")
    assert reply["successful"] is True
    # json.dumps escapes non-ASCII: a lone surrogate as \ud800, an emoji as a pair of escapes.
    lone = json.dumps([{"channel": "/chat/room", "clientId": client_id, "data": "\ud800"}])
    [reply] = await post(http, lone, status=400)
    assert reply["error"] == "400::invalid_json"
    pair = json.dumps([{"channel": "/chat/room", "clientId": client_id, "data": "\U0001f600"}])
    assert "\\ud83d\\ude00" in pair
    [reply] = await post(http, pair)
    assert reply["successful"] is True
    [event, _] = await connect(http, client_id)
    assert event["data"] == "\U0001f600"


async def test_server_side_publish_refuses_what_cannot_be_sent(bayeux: Bayeux) -> None:
    for channel in ("/meta/connect", "/service/echo", "/chat/*", "chat"):
        with pytest.raises(ValueError):
            await bayeux.server.publish(channel, 1)
    with pytest.raises(ValueError):
        await bayeux.server.publish("/chat/room", "\ud800")
