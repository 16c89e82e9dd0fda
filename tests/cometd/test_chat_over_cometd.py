"""Chat API v2 over CometD (CONTRACT §10) against the full app, with the real aiocometd client.

The app runs on a real SQLite file with a FakeClock that no test moves (no resend timer fires);
agents act through the chat-server side API, as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiocometd_noloop import Client, ConnectionType
from aiocometd_noloop.extensions import Extension
from aiocometd_noloop.typing import Headers, Payload

from chatpush.api.chat_cometd import CHAT_COMETD
from chatpush.api.keys import DISPATCHER
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.cometd.conftest import until
from tests.conftest import ChatDriver
from tests.receivers import Receiver

CONNECTION_TYPES = [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET]
CHANNEL = "/service/chatV2/support"
RECEIVE_TIMEOUT_S = 5.0
RESEND_DELAY_S = 15
# Past the first resend of an unacknowledged trigger, and below a CometD session's max interval
# (30 s), so that a connected client is not expired by the jump of the fake clock.
RESENDS_OVER_S = RESEND_DELAY_S + 5
RELIABLE_USER_DATA = {
    "GCTI_Chat_PushSubscribe": "true",
    "GCTI_GMS_PushDeviceId": "device-1",
    "GCTI_GMS_PushDeviceType": "customhttp",
    "GCTI_GMS_PushResend": "true",
}

MakeClient = Callable[[Settings], Any]

pytestmark = [
    pytest.mark.parametrize(
        "connection_type", CONNECTION_TYPES, ids=[c.value for c in CONNECTION_TYPES]
    ),
    # aiocometd-noloop passes aiohttp client arguments that aiohttp has since deprecated.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


class DisconnectPosition(Extension):
    """Adds ``ext.transcriptPosition`` to the client's /meta/disconnect once it is set."""

    def __init__(self) -> None:
        self.position: int | None = None

    async def outgoing(self, payload: Payload, headers: Headers) -> None:
        for message in payload:
            if message.get("channel") == "/meta/disconnect" and self.position is not None:
                message.setdefault("ext", {})["transcriptPosition"] = self.position

    async def incoming(self, payload: Payload, headers: Headers | None = None) -> None:
        return None


@pytest.fixture
def open_client(connection_type: ConnectionType) -> Callable[..., Any]:
    @asynccontextmanager
    async def open_client(
        url: str, extensions: list[Extension] | None = None
    ) -> AsyncIterator[Client]:
        async with Client(
            url, connection_type, connection_timeout=0, extensions=extensions
        ) as client:
            yield client

    return open_client


async def receive(client: Client) -> dict[str, Any]:
    """The data of the next message, which must arrive on the chat's channel."""
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        message: dict[str, Any] = await client.receive()
    assert message["channel"] == CHANNEL, message
    data: dict[str, Any] = message["data"]
    return data


async def call(client: Client, **data: Any) -> dict[str, Any]:
    """Publish one operation and return the reply envelope (the next message)."""
    reply = await client.publish(CHANNEL, data)
    assert reply["successful"] is True, reply
    return await receive(client)


def indexes(envelope: dict[str, Any]) -> list[int]:
    return [event["index"] for event in envelope["messages"]]


def cometd_url(client: Any) -> str:
    return str(client.make_url("/genesys/cometd"))


async def test_request_chat_live_events_and_send_message(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    open_client: Callable[..., Any],
) -> None:
    client = await make_client(make_settings())
    async with open_client(cometd_url(client)) as cometd:
        started = await call(
            cometd, operation="requestChat", nickname="Ann", userData={"topic": "billing"}
        )
        assert started["statusCode"] == 0 and started["chatEnded"] is False
        assert indexes(started) == [1] and started["nextPosition"] == 2
        chat = ChatDriver(client)
        chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
        state = await chat.api("GET", f"/chats/{chat.chat_id}")
        assert "billing" in str(state)

        agent = await chat.agent_joins()  # through the chat-server side API
        joined = await receive(cometd)
        assert indexes(joined) == [2] and joined["nextPosition"] == 3
        assert joined["messages"][0]["type"] == "ParticipantJoined"
        assert joined["messages"][0]["from"]["type"] == "Agent"
        await chat.agent_says(agent, "Hello, how can I help?")
        said = await receive(cometd)
        assert [(e["index"], e["text"]) for e in said["messages"]] == [
            (3, "Hello, how can I help?")
        ]

        reply = await cometd.publish(
            CHANNEL,
            {
                "operation": "sendMessage",
                "chatId": chat.chat_id,
                "secureKey": chat.secure_key,
                "message": "My invoice is wrong",
            },
        )
        assert reply["successful"] is True
        # The reply (no events: no transcriptPosition) and the live event, in either order.
        got = [await receive(cometd), await receive(cometd)]
        assert sorted(len(envelope["messages"]) for envelope in got) == [0, 1]
        [live] = [envelope for envelope in got if envelope["messages"]]
        assert live["messages"][0]["text"] == "My invoice is wrong" and indexes(live) == [4]
        assert all(envelope["statusCode"] == 0 for envelope in got)

        transcript = await chat.op("refresh")  # REST sees what was sent over CometD
        assert [(e["index"], e["from"]["type"], e.get("text")) for e in transcript["messages"]][
            -1
        ] == (4, "Client", "My invoice is wrong")

        typing = await call(
            cometd, operation="startTyping", chatId=chat.chat_id, secureKey=chat.secure_key
        )
        assert typing["statusCode"] == 0
        assert indexes(await receive(cometd)) == [5]

        await call(cometd, operation="disconnect", chatId=chat.chat_id, secureKey=chat.secure_key)
        ended = await receive(cometd)
        assert ended["chatEnded"] is True
        assert [e["type"] for e in ended["messages"]] == ["ParticipantLeft", "ParticipantLeft"]
        # An ended chat stays attached until its session leaves (it may acknowledge the end).
        assert client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 1
    assert client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 0


async def test_bad_requests_get_the_error_envelope(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    open_client: Callable[..., Any],
) -> None:
    client = await make_client(make_settings())
    chat = ChatDriver(client)
    await chat.request_chat()
    async with open_client(cometd_url(client)) as cometd:
        unknown = await call(cometd, operation="dance", chatId=chat.chat_id)
        assert unknown["statusCode"] == 2 and unknown["chatId"] == chat.chat_id
        assert unknown["errors"][0]["code"] == 101 and "dance" in unknown["errors"][0]["advice"]

        # A missing secureKey answers exactly what REST answers (§3).
        no_key = await call(cometd, operation="sendMessage", chatId=chat.chat_id, message="hi")
        rest = await chat.op("send", expect=403, secureKey="", message="hi")
        assert no_key == rest
        assert no_key["errors"][0]["code"] == 102 and no_key["messages"] == []

        wrong_key = await call(
            cometd, operation="requestNotifications", chatId=chat.chat_id, secureKey="nope"
        )
        assert wrong_key["errors"][0]["code"] == 102
        assert client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 0

        cases: list[tuple[Any, int]] = [
            ("not an object", 101),
            ({}, 100),  # no operation
            ({"operation": "requestChat"}, 100),  # no nickname
            ({"operation": "requestChat", "nickname": "A", "userData": ["x"]}, 101),
            ({"operation": "requestChat", "nickname": "A", "userData": {"k": 1}}, 101),
            ({"operation": "requestChat", "nickname": 3.5}, 101),
            ({"operation": "sendMessage", "secureKey": chat.secure_key}, 100),  # no chatId
            (
                {
                    "operation": "requestNotifications",
                    "chatId": chat.chat_id,
                    "secureKey": chat.secure_key,
                    "transcriptPosition": "x",
                },
                101,
            ),
            (
                {
                    "operation": "sendMessage",
                    "chatId": chat.chat_id,
                    "secureKey": chat.secure_key,
                    "message": "a\x00b",
                },
                107,
            ),
        ]
        for data, code in cases:
            reply = await cometd.publish(CHANNEL, data)
            assert reply["successful"] is True
            envelope = await receive(cometd)
            assert envelope["statusCode"] == 2, (data, envelope)
            assert [e["code"] for e in envelope["errors"]] == [code], (data, envelope)

        other = await cometd.publish(
            "/service/chatV2/no/such", {"operation": "requestChat", "nickname": "A"}
        )
        assert other["successful"] is True
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            message = await cometd.receive()
        assert message["channel"] == "/service/chatV2/no/such"
        assert message["data"]["errors"][0]["code"] == 104


async def test_background_push_and_resume(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    open_client: Callable[..., Any],
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    settings = make_settings(
        groups={"g1": {"default": True, "nodes": ["n1"], "customhttp.url": receiver.url}},
        services={"default": {"flex-push-resend-delay": RESEND_DELAY_S}},
    )
    client = await make_client(settings)
    chat = ChatDriver(client)

    async def settle() -> None:
        await client.app[DISPATCHER].settle()

    async def subscription() -> dict[str, Any]:
        return await chat.api("GET", f"/chats/{chat.chat_id}/subscription")

    background = DisconnectPosition()
    async with open_client(cometd_url(client), [background]) as cometd:
        started = await call(
            cometd, operation="requestChat", nickname="Ann", userData=RELIABLE_USER_DATA
        )
        chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
        assert (await subscription())["acknowledgedPosition"] == 1
        agent = await chat.agent_joins()
        joined = await receive(cometd)
        assert indexes(joined) == [2]
        # What push does in the foreground is not this test's business: only what arrives
        # after the app goes to background counts.
        background.position = joined["nextPosition"]  # the app goes to background
    # The session has left; its position acknowledged the trigger, as a refresh would.
    assert client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 0
    sub = await subscription()
    assert sub["acknowledgedPosition"] == 2 and sub["outstandingTrigger"] is None

    await settle()
    earlier = len(receiver.triggers())
    await chat.agent_says(agent, "Are you still there?")  # index 3
    await chat.agent_says(agent, "I will wait")  # index 4
    await settle()
    assert receiver.triggers()[earlier:] == [("3", "0")]  # notify-position = its position
    assert (await subscription())["outstandingTrigger"]["notifyPosition"] == 3

    async with open_client(cometd_url(client)) as cometd:  # a new handshake
        resumed = await call(
            cometd,
            operation="requestNotifications",
            chatId=chat.chat_id,
            secureKey=chat.secure_key,
            transcriptPosition=3,
        )
        assert resumed["statusCode"] == 0
        assert [(e["index"], e["text"]) for e in resumed["messages"]] == [
            (3, "Are you still there?"),
            (4, "I will wait"),
        ]
        assert resumed["nextPosition"] == 5
        # That acknowledged the trigger: past its first resend, nothing more is sent.
        sub = await subscription()
        assert sub["acknowledgedPosition"] == 4 and sub["outstandingTrigger"] is None
        clock.advance(RESENDS_OVER_S)
        await settle()
        assert len(receiver.triggers()) == earlier + 1
        # Attached again: the next agent event arrives live.
        await chat.agent_says(agent, "Welcome back")
        live = await receive(cometd)
        assert indexes(live) == [5] and live["messages"][0]["text"] == "Welcome back"
        await until(lambda: client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 1)
    await until(lambda: client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 0)


async def test_two_sessions_follow_one_chat(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    open_client: Callable[..., Any],
) -> None:
    client = await make_client(make_settings())
    url = cometd_url(client)
    async with open_client(url) as phone, open_client(url) as tablet:
        started = await call(phone, operation="requestChat", firstName="Ann", lastName="Lee")
        chat = ChatDriver(client)
        chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
        # The second device resumes without a position: everything so far, then live events.
        resumed = await call(
            tablet, operation="requestNotifications", chatId=chat.chat_id, secureKey=chat.secure_key
        )
        assert indexes(resumed) == [1]
        assert client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 2

        updated = await call(
            tablet,
            operation="updateData",
            chatId=chat.chat_id,
            secureKey=chat.secure_key,
            userData={"order": "A-17"},
        )
        assert updated["statusCode"] == 0 and updated["messages"] == []
        state = await chat.api("GET", f"/chats/{chat.chat_id}")
        assert "A-17" in str(state)

        await chat.agent_joins()
        for device in (phone, tablet):
            assert indexes(await receive(device)) == [2]
        await chat.api("POST", f"/chats/{chat.chat_id}/end")
        for device in (phone, tablet):
            ended = await receive(device)
            assert ended["chatEnded"] is True and indexes(ended) == [3]
        gone = await call(
            phone,
            operation="sendMessage",
            chatId=chat.chat_id,
            secureKey=chat.secure_key,
            message="late",
        )
        assert gone["chatEnded"] is True and gone["errors"][0]["code"] == 105
