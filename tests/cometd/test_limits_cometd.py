"""The chat limits over CometD: paged replies whose rest follows as live envelopes (at most
chat.max_refresh_events and chat.max_refresh_bytes each, sent as the session's queue drains), and
a chat followed live that does not count as idle (chat.idle_chat_timeout_s).

The full app on a real SQLite file and a FakeClock that the tests move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiocometd_noloop import Client, ConnectionType

from chatpush.api.chat_cometd import CHAT_COMETD
from chatpush.api.keys import CHATS, CLOCK, COMETD, METRICS
from chatpush.chat.housekeeping import end_idle_chats
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.cometd.conftest import until
from tests.cometd.support import connect, events, handshake, meta, publish
from tests.conftest import ChatDriver

CHANNEL = "/service/chatV2/support"
LEASE_S = 30

MakeClient = Callable[[Settings], Any]
MakeSettings = Callable[..., Settings]


async def test_a_paged_reply_is_followed_by_the_rest_of_the_transcript_once_in_order(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    http = await make_client(make_settings(chat={"max_refresh_events": 5}))
    chat = ChatDriver(http)
    await chat.request_chat()
    agent = await chat.agent_joins()
    for n in range(21):  # indexes 3-23
        await chat.agent_says(agent, f"m{n}")

    client_id = await handshake(http)
    data = {
        "operation": "requestNotifications",
        "chatId": chat.chat_id,
        "secureKey": chat.secure_key,
        "transcriptPosition": "1",
    }
    await publish(http, client_id, CHANNEL, data)
    envelopes: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while sum(len(e["messages"]) for e in envelopes) < 23:
            envelopes += [m["data"] for m in events(await connect(http, client_id))]
    first = envelopes[0]
    assert [e["index"] for e in first["messages"]] == [1, 2, 3, 4, 5]
    assert first["nextPosition"] == 6
    assert all(len(e["messages"]) <= 5 for e in envelopes)
    seen = [event["index"] for envelope in envelopes for event in envelope["messages"]]
    assert seen == list(range(1, 24))
    assert envelopes[-1]["nextPosition"] == 24

    # Live events go on from there.
    await chat.agent_says(agent, "one more")
    [live] = [m["data"] for m in events(await connect(http, client_id))]
    assert [e["index"] for e in live["messages"]] == [24]


BIG = "x" * 16_000 + "\U0001f600"
"""16 KB of UTF-8, but 64 KB in a queue: one emoji makes Python keep 4 bytes a character."""


async def chat_of_big_messages(http: Any, count: int) -> ChatDriver:
    """Joins at 1 and 2, then ``count`` messages of BIG (3 ...)."""
    chat = ChatDriver(http)
    await chat.request_chat()
    agent = await chat.agent_joins()
    for _ in range(count):
        await chat.agent_says(agent, BIG)
    return chat


async def removed(http: Any, reason: str) -> float:
    response = await http.get("/metrics")
    series = f'chatpush_cometd_sessions_removed_total{{reason="{reason}"}} '
    for line in (await response.text()).splitlines():
        if line.startswith(series):
            return float(line.split()[-1])
    return 0.0


async def test_a_page_of_big_messages_fits_the_session_queue(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    """The finding: 100 events of 16 K characters were up to 6.5 MB in a 1 MiB queue, so a client
    asking for them was removed (queue_full) each time it asked."""
    http = await make_client(make_settings())  # the defaults
    chat = await chat_of_big_messages(http, 30)
    client_id = await handshake(http)
    data = {
        "operation": "requestNotifications",
        "chatId": chat.chat_id,
        "secureKey": chat.secure_key,
        "transcriptPosition": "1",
    }
    await publish(http, client_id, CHANNEL, data)
    reply = await connect(http, client_id)
    assert meta(reply, "/meta/connect")["successful"] is True
    [first, *_] = [m["data"] for m in events(reply)]
    indexes = [e["index"] for e in first["messages"]]
    assert indexes == list(range(1, first["nextPosition"])) and 3 <= len(indexes) < 30
    assert await removed(http, "queue_full") == 0


@pytest.mark.parametrize("ack", [False, True], ids=["plain", "ack"])
async def test_a_long_transcript_follows_as_the_queue_drains_once_and_in_order(
    make_settings: MakeSettings, make_client: MakeClient, ack: bool
) -> None:
    """The finding: the live pump queued page after page (3.8 MB here) without waiting for the
    client, which was removed past max_queued_bytes, and again after each re-handshake."""
    http = await make_client(make_settings())
    chat = await chat_of_big_messages(http, 60)  # indexes 1-62
    client_id = await handshake(http, ext={"ack": True} if ack else {})
    data = {
        "operation": "requestNotifications",
        "chatId": chat.chat_id,
        "secureKey": chat.secure_key,
        "transcriptPosition": "1",
    }
    await publish(http, client_id, CHANNEL, data)
    await asyncio.sleep(0.3)  # a slow client: its next connect comes a moment later
    seen: list[int] = []
    batch = 0
    async with asyncio.timeout(10):
        while len(seen) < 62:
            reply = await connect(http, client_id, **({"ext": {"ack": batch}} if ack else {}))
            connected = meta(reply, "/meta/connect")
            assert connected["successful"] is True, connected
            batch = connected.get("ext", {}).get("ack", batch)
            seen += [e["index"] for m in events(reply) for e in m["data"]["messages"]]
    assert seen == list(range(1, 63))  # every event once, in order
    assert await removed(http, "queue_full") == 0


async def follow(http: Any, client_id: str, count: int) -> list[int]:
    """Connect until ``count`` events arrived; their indexes."""
    seen: list[int] = []
    async with asyncio.timeout(10):
        while len(seen) < count:
            reply = await connect(http, client_id)
            assert meta(reply, "/meta/connect")["successful"] is True, reply
            seen += [e["index"] for m in events(reply) for e in m["data"]["messages"]]
    return seen


async def test_a_slow_session_waits_without_holding_back_a_fast_one(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    http = await make_client(make_settings())
    chat = await chat_of_big_messages(http, 40)  # indexes 1-42
    data = {
        "operation": "requestNotifications",
        "chatId": chat.chat_id,
        "secureKey": chat.secure_key,
        "transcriptPosition": "1",
    }
    slow, fast = await handshake(http), await handshake(http)
    await publish(http, slow, CHANNEL, data)
    await publish(http, fast, CHANNEL, data)
    assert await follow(http, fast, 42) == list(range(1, 43))
    cometd = http.app[COMETD]
    session = cometd.get_session(slow)
    assert session is not None and session.removed is None
    assert session.queued_bytes < 600_000  # about one page of the 2.6 MB transcript
    # The slow client comes back: the rest follows from where its queue stopped.
    assert await follow(http, slow, 42) == list(range(1, 43))
    assert await removed(http, "queue_full") == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiocometd's aiohttp arguments
@pytest.mark.parametrize(
    "transport",
    [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET],
    ids=["long-polling", "websocket"],
)
async def test_a_real_client_gets_a_long_transcript_of_big_messages_once_in_order(
    make_settings: MakeSettings, make_client: MakeClient, transport: ConnectionType
) -> None:
    app_client = await make_client(make_settings())
    chat = await chat_of_big_messages(app_client, 60)  # indexes 1-62, 3.8 MB in a queue
    url = str(app_client.make_url("/genesys/cometd"))
    seen: list[int] = []
    async with Client(url, transport, connection_timeout=0) as cometd:
        data = {
            "operation": "requestNotifications",
            "chatId": chat.chat_id,
            "secureKey": chat.secure_key,
            "transcriptPosition": "1",
        }
        await cometd.publish(CHANNEL, data)
        async with asyncio.timeout(10):
            while len(seen) < 62:
                envelope = (await cometd.receive())["data"]
                seen += [event["index"] for event in envelope["messages"]]
    assert seen == list(range(1, 63))
    assert await removed(app_client, "queue_full") == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiocometd's aiohttp arguments
async def test_a_chat_followed_live_is_not_idle_and_ends_once_its_client_is_gone(
    make_settings: MakeSettings, make_client: MakeClient
) -> None:
    settings = make_settings(
        chat={"idle_chat_timeout_s": 60},
        cometd={"foreground_lease_s": LEASE_S, "max_interval_s": 30.0},
    )
    app_client = await make_client(settings)
    clock: FakeClock = app_client.app[CLOCK]
    url = str(app_client.make_url("/genesys/cometd"))
    async with Client(url, ConnectionType.LONG_POLLING, connection_timeout=0) as cometd:
        await cometd.publish(CHANNEL, {"operation": "requestChat", "nickname": "Ann"})
        started = (await cometd.receive())["data"]
        chat = ChatDriver(app_client)
        chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
        for _ in range(9):  # 90 s, with no request of the client but its connects
            clock.advance(10)
            expected = clock.now_ms()
            for _ in range(200):
                state = await chat.api("GET", f"/chats/{chat.chat_id}")
                if state["chat"]["lastClientRequestAt"] == expected:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the chat followed live was not counted as requested")
            await end_idle_chats(app_client.app[CHATS], app_client.app[METRICS])
            assert (await chat.api("GET", f"/chats/{chat.chat_id}"))["chat"]["status"] == "active"
    await until(lambda: app_client.app[CHAT_COMETD].attached_sessions(chat.chat_id) == 0)
    clock.advance(61)
    await end_idle_chats(app_client.app[CHATS], app_client.app[METRICS])
    assert (await chat.api("GET", f"/chats/{chat.chat_id}"))["chat"]["status"] == "ended"
