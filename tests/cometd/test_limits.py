"""What one client can make the Bayeux server keep: the handshake's ``ext``, a session's queue in
bytes, and sessions per client address; every refusal is counted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiocometd_noloop import Client as CometdClient
from aiocometd_noloop import ConnectionType

from chatpush.api.bayeux import cometd_samples
from chatpush.cometd import RemovalReason
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.cometd.conftest import LIMITS, PATH, Bayeux, Client, FrontTestServer, make_bayeux
from tests.cometd.support import (
    connect,
    connect_message,
    events,
    handshake,
    meta,
    post,
    publish,
    subscribe,
)
from tests.conftest import API_KEY, ChatDriver

PROXY = "127.0.0.1"  # the test client's peer: trusted, so X-Forwarded-For names the client


def handshake_message(**fields: Any) -> dict[str, Any]:
    return {
        "channel": "/meta/handshake",
        "id": "h",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling", "websocket"],
        **fields,
    }


async def handshake_from(http: Client, address: str, **fields: Any) -> dict[str, Any]:
    """The handshake reply for a client at ``address`` (behind the trusted proxy)."""
    [reply] = await post(http, [handshake_message(**fields)], headers={"X-Forwarded-For": address})
    return reply


# --- the handshake's ext ---------------------------------------------------------------------


async def test_handshake_with_a_huge_ext_is_refused_and_creates_no_session(
    clock: FakeClock, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    # The finding: 63 KB of nested empty arrays, which took 1.45 MB per session once decoded.
    limits = dataclasses.replace(LIMITS, max_message_bytes=65_536)
    bayeux = make_bayeux(clock, limits)
    http = await aiohttp_client(bayeux.app)
    ext = {"ack": True, "padding": [[] for _ in range(15_500)]}  # 62 KB as JSON
    [reply] = await post(http, [handshake_message(ext=ext)])
    assert reply == {
        "channel": "/meta/handshake",
        "id": "h",
        "successful": False,
        "error": "400::ext_too_large",
    }
    assert bayeux.server.session_count == 0
    assert bayeux.server.stats.refused["ext_too_large"] == 1
    assert bayeux.server.stats.handshakes == 0
    await handshake(http, ext={"ack": True})  # a normal client still gets in


@pytest.mark.parametrize("character", ["a", "é"], ids=["ascii", "two-byte"])
async def test_ext_up_to_max_ext_bytes_of_json_is_kept_whole(
    http: Client, bayeux: Bayeux, character: str
) -> None:
    # {"key":"…"} is 10 bytes of JSON around the value; é is two bytes of UTF-8.
    fits = (LIMITS.max_ext_bytes - 10) // len(character.encode())
    ext = {"key": character * fits}
    [reply] = await post(http, json.dumps([handshake_message(ext=ext)], ensure_ascii=False))
    session = bayeux.server.get_session(reply["clientId"])
    assert session is not None and session.handshake_ext == ext
    too_large = [handshake_message(ext={"key": character * (fits + 1)})]
    [reply] = await post(http, json.dumps(too_large, ensure_ascii=False))
    assert reply["error"] == "400::ext_too_large"
    assert bayeux.server.session_count == 1


async def test_deeply_nested_ext_is_refused(http: Client, bayeux: Bayeux) -> None:
    def nested(depth: int) -> dict[str, Any]:
        ext: dict[str, Any] = {}
        for _ in range(depth - 1):
            ext = {"a": ext}
        return ext

    client_id = await handshake(http, ext=nested(LIMITS.max_ext_depth))
    session = bayeux.server.get_session(client_id)
    assert session is not None and session.handshake_ext == nested(LIMITS.max_ext_depth)
    [reply] = await post(http, [handshake_message(ext=nested(LIMITS.max_ext_depth + 1))])
    assert reply["error"] == "400::ext_too_large"
    [reply] = await post(http, [handshake_message(ext={"a": [[[[[[[[[]]]]]]]]]})])
    assert reply["error"] == "400::ext_too_large"
    deep = '{"a":' + "[" * 900 + "]" * 900 + "}"  # small, but as deep as the decoder goes
    [reply] = await post(http, json.dumps([handshake_message(ext={})]).replace("{}", deep))
    assert reply["error"] == "400::ext_too_large"
    assert bayeux.server.session_count == 1


# --- a session's queue, in bytes -------------------------------------------------------------

BYTES_LIMITS = dataclasses.replace(LIMITS, max_queued_bytes=16_384)
ECHOED = "x" * 5_000  # three echo replies fit in 16 KiB, the fourth does not


@pytest.fixture
async def small_queues(
    clock: FakeClock, aiohttp_client: Callable[..., Awaitable[Client]]
) -> tuple[Bayeux, Client]:
    bayeux = make_bayeux(clock, BYTES_LIMITS)
    return bayeux, await aiohttp_client(bayeux.app)


async def test_a_session_that_never_connects_is_removed_past_max_queued_bytes(
    small_queues: tuple[Bayeux, Client], caplog: pytest.LogCaptureFixture
) -> None:
    # The finding: replies to a client's own requests piled up without a connect (32 MB).
    bayeux, http = small_queues
    client_id = await handshake(http)
    session = bayeux.server.get_session(client_id)
    assert session is not None
    for n in range(3):
        [reply] = await publish(http, client_id, "/service/echo", ECHOED, str(n))
        assert reply["successful"] is True
    assert session.queued == 3 and session.queued_bytes <= BYTES_LIMITS.max_queued_bytes
    assert session.queued < BYTES_LIMITS.max_queued_messages  # the count bound is far off
    await publish(http, client_id, "/service/echo", ECHOED, "3")
    assert bayeux.removed == [(session, RemovalReason.QUEUE_FULL)]
    assert bayeux.server.stats.sessions_removed["queue_full"] == 1
    [warning] = [r for r in caplog.records if getattr(r, "action", "") == "cometd_session_removed"]
    assert warning.levelname == "WARNING"
    assert getattr(warning, "queued") == 3 and getattr(warning, "queued_bytes") > 0  # noqa: B009
    [reply] = await connect(http, client_id)
    assert reply["error"] == "402::session_unknown"
    assert reply["advice"]["reconnect"] == "handshake"


async def test_unacknowledged_messages_count_until_acknowledged(
    small_queues: tuple[Bayeux, Client],
) -> None:
    bayeux, http = small_queues
    sessions = []
    for _ in range(2):
        client_id = await handshake(http, ext={"ack": True})
        [first] = await connect(http, client_id, "c0", ext={"ack": 0})
        for n in range(3):
            await publish(http, client_id, "/service/echo", ECHOED, str(n))
        reply = await connect(http, client_id, "c1", ext={"ack": first["ext"]["ack"]})
        assert len(events(reply)) == 3  # delivered, but not acknowledged yet
        sessions.append((client_id, meta(reply, "/meta/connect")["ext"]["ack"]))
    (silent, _), (acknowledging, batch) = sessions
    # The first client does not acknowledge: its unacknowledged batch still counts.
    await publish(http, silent, "/service/echo", ECHOED, "more")
    assert bayeux.server.get_session(silent) is None
    assert [reason for _, reason in bayeux.removed] == [RemovalReason.QUEUE_FULL]
    # The second acknowledges the batch first: the room is free again.
    ack = {
        "channel": "/meta/connect",
        "clientId": acknowledging,
        "connectionType": "long-polling",
        "id": "c2",
        "ext": {"ack": batch},
    }
    echo = {"channel": "/service/echo", "clientId": acknowledging, "data": ECHOED, "id": "more"}
    reply = await post(http, [ack, echo])
    assert [m["data"] for m in events(reply)] == [{"echo": ECHOED}]
    assert bayeux.server.get_session(acknowledging) is not None


# --- sessions per client address -------------------------------------------------------------

ADDRESS_LIMITS = dataclasses.replace(LIMITS, max_sessions_per_address=3)


@pytest.fixture(params=["lean", "aiohttp"])
async def behind_proxy(
    request: pytest.FixtureRequest,
    clock: FakeClock,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> tuple[Bayeux, Client]:
    """Behind a trusted proxy, through the lean front (its own reading of X-Forwarded-For) and
    through aiohttp alone."""
    bayeux = make_bayeux(clock, ADDRESS_LIMITS, trusted_proxies=(PROXY,))
    if request.param == "lean":
        return bayeux, await aiohttp_client(FrontTestServer(bayeux.app))
    return bayeux, await aiohttp_client(bayeux.app)


async def test_one_address_cannot_take_every_session(
    behind_proxy: tuple[Bayeux, Client], caplog: pytest.LogCaptureFixture
) -> None:
    bayeux, http = behind_proxy
    client_ids = []
    for _ in range(3):
        reply = await handshake_from(http, "203.0.113.7")
        assert reply["successful"] is True
        client_ids.append(reply["clientId"])
    for _ in range(2):
        reply = await handshake_from(http, "203.0.113.7")
        assert reply == {
            "channel": "/meta/handshake",
            "id": "h",
            "successful": False,
            "error": "429::too_many_sessions_from_address",
            "advice": {"reconnect": "handshake", "interval": 0},
        }
    assert (await handshake_from(http, "203.0.113.8"))["successful"] is True
    assert bayeux.server.session_count == 4
    assert bayeux.server.stats.refused["too_many_sessions_from_address"] == 2
    warnings = [r for r in caplog.records if getattr(r, "action", "") == "cometd_address_full"]
    assert len(warnings) == 1  # once per episode, not once per refused handshake
    # A session that leaves frees its slot.
    disconnect = {"channel": "/meta/disconnect", "clientId": client_ids[0], "id": "d"}
    await post(http, [disconnect])
    assert (await handshake_from(http, "203.0.113.7"))["successful"] is True
    assert (await handshake_from(http, "203.0.113.7"))["successful"] is False


async def test_expired_sessions_free_their_address_slots(
    behind_proxy: tuple[Bayeux, Client], clock: FakeClock
) -> None:
    bayeux, http = behind_proxy
    for _ in range(3):
        assert (await handshake_from(http, "203.0.113.7"))["successful"] is True
    assert (await handshake_from(http, "203.0.113.7"))["successful"] is False
    clock.advance(ms=ADDRESS_LIMITS.max_interval_ms)
    bayeux.server.sweep()
    assert bayeux.server.session_count == 0
    assert (await handshake_from(http, "203.0.113.7"))["successful"] is True


async def test_an_ipv6_client_counts_per_64(behind_proxy: tuple[Bayeux, Client]) -> None:
    # One host commonly holds a whole /64: one address each would be no limit at all.
    _, http = behind_proxy
    for host in ("2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"):
        assert (await handshake_from(http, host))["successful"] is True
    reply = await handshake_from(http, "2001:db8::abcd")
    assert reply["error"] == "429::too_many_sessions_from_address"
    assert (await handshake_from(http, "2001:db8:0:1::1"))["successful"] is True


async def test_websocket_handshakes_count_against_the_address_of_the_upgrade(
    behind_proxy: tuple[Bayeux, Client],
) -> None:
    _, http = behind_proxy
    for _ in range(2):
        assert (await handshake_from(http, "203.0.113.7"))["successful"] is True
    headers = {"X-Forwarded-For": "203.0.113.7"}
    async with http.ws_connect(PATH, headers=headers) as ws:
        replies = []
        for message_id in ("1", "2"):
            await ws.send_json([handshake_message(id=message_id)])
            [reply] = await ws.receive_json(timeout=2)
            replies.append(reply)
    assert replies[0]["successful"] is True
    assert replies[1]["error"] == "429::too_many_sessions_from_address"


async def test_x_forwarded_for_from_an_untrusted_peer_does_not_change_the_address(
    clock: FakeClock, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    bayeux = make_bayeux(clock, ADDRESS_LIMITS)  # no trusted proxies
    http = await aiohttp_client(bayeux.app)
    for n in range(3):
        assert (await handshake_from(http, f"198.51.100.{n}"))["successful"] is True
    reply = await handshake_from(http, "198.51.100.99")
    assert reply["error"] == "429::too_many_sessions_from_address"


async def test_refusals_by_other_limits_are_counted(
    http: Client, bayeux: Bayeux, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client_id = await handshake(http)
    subscriptions = [f"/chat/{n}" for n in range(LIMITS.max_subscriptions + 1)]
    message = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": subscriptions}
    [reply] = await post(http, [message])
    assert reply["error"] == "403::too_many_subscriptions"
    await post(http, b"[" + b" " * LIMITS.max_message_bytes + b"]", status=400)
    assert dict(bayeux.server.stats.refused) == {
        "too_many_subscriptions": 1,
        "message_too_large": 1,
    }


# --- the full app: settings, proxies and /metrics --------------------------------------------

CHAT_CHANNEL = "/service/chatV2/support"


async def metric(client: Any, series: str) -> float:
    response = await client.get("/metrics", headers={"X-API-Key": API_KEY})
    assert response.status == 200
    for line in (await response.text()).splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiocometd-noloop's aiohttp usage
async def test_a_flood_of_handshakes_from_one_address_leaves_room_for_others(
    make_settings: Callable[..., Settings], make_client: Callable[..., Any]
) -> None:
    # The finding: 1,000 handshakes from one client took every session of max_sessions = 1000.
    settings = make_settings(server={"trusted_proxies": [PROXY]}, cometd={"max_sessions": 150})
    assert settings.cometd.max_sessions_per_address == 100
    client = await make_client(settings)
    flood = {"X-Forwarded-For": "198.51.100.1"}
    replies = [(await post(client, [handshake_message()], headers=flood))[0] for _ in range(150)]
    refused = [reply for reply in replies if not reply["successful"]]
    assert len(refused) == 50
    assert {reply["error"] for reply in refused} == {"429::too_many_sessions_from_address"}
    # A real client from another address still gets a session and chats.
    url = str(client.make_url(PATH))
    async with CometdClient(url, ConnectionType.LONG_POLLING, connection_timeout=0) as cometd:
        reply = await cometd.publish(CHAT_CHANNEL, {"operation": "requestChat", "nickname": "Ann"})
        assert reply["successful"] is True
        async with asyncio.timeout(5):
            started = await cometd.receive()
        assert started["data"]["statusCode"] == 0
    series = 'chatpush_cometd_refused_total{reason="too_many_sessions_from_address"}'
    assert await metric(client, series) == 50


async def test_chat_replies_piling_up_without_a_connect_remove_the_session(
    make_settings: Callable[..., Settings], make_client: Callable[..., Any]
) -> None:
    # The finding: 100 queued refresh replies of a 330 KB transcript kept 32 MB for one session.
    settings = make_settings(
        server={"max_body_bytes": 8_192},
        chat={"max_refresh_bytes": 8_192},
        cometd={"max_queued_bytes": 81_920},  # holds a page: 4 x (2 x 8 KiB + 4 KiB)
    )
    client = await make_client(settings)
    chat = ChatDriver(client)
    await chat.request_chat()
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "y" * 7_000)  # a transcript of about 7 KB, one page
    client_id = await handshake(client)
    request = {"operation": "requestNotifications", "chatId": chat.chat_id}
    request["secureKey"] = chat.secure_key
    for n in range(10):  # ten replies of about 7.5 KB fit in 80 KiB
        [reply] = await publish(client, client_id, CHAT_CHANNEL, request, str(n))
        assert reply["successful"] is True
    assert await metric(client, 'chatpush_cometd_sessions_removed_total{reason="queue_full"}') == 0
    await publish(client, client_id, CHAT_CHANNEL, request, "10")  # the eleventh does not
    [reply] = await connect(client, client_id)
    assert reply["error"] == "402::session_unknown"
    assert await metric(client, 'chatpush_cometd_sessions_removed_total{reason="queue_full"}') == 1


# --- every session's queue together ----------------------------------------------------------

TOTAL_LIMITS = dataclasses.replace(
    LIMITS, max_queued_messages=100, max_queued_bytes=16_384, max_total_queued_bytes=20_000
)
PIECE = "z" * 2_000  # about 2 KB queued per message


async def test_past_the_total_budget_the_largest_queue_goes_not_the_receiver(
    clock: FakeClock, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    # The finding: nothing bounded the sum of the queues (20,000 sessions x 1 MiB, > 20 GB).
    bayeux = make_bayeux(clock, TOTAL_LIMITS)
    http = await aiohttp_client(bayeux.app)
    hogs = [await handshake(http) for _ in range(3)]  # subscribed, never connecting
    for n, hog in enumerate(hogs):
        await subscribe(http, hog, "/chat/room", f"s{n}")
    reader = await handshake(http)
    await subscribe(http, reader, "/chat/room")
    await connect(http, reader)
    sessions = [bayeux.server.get_session(client_id) for client_id in hogs]
    # The first hog also follows a busy channel: it holds the largest queue.
    await subscribe(http, hogs[0], "/chat/busy", "s-busy")
    for n in range(4):
        await publish(http, reader, "/chat/busy", PIECE, f"b{n}")
    assert bayeux.removed == []
    for n in range(4):  # the second passes 20,000 bytes in all
        [reply] = await publish(http, reader, "/chat/room", PIECE, f"r{n}")
        assert reply["successful"] is True
        # The reader drains at once: its queue never grows.
        assert [m["data"] for m in events(await connect(http, reader, f"c{n}"))] == [PIECE]
    assert bayeux.removed == [(sessions[0], RemovalReason.TOTAL_QUEUE_FULL)]
    assert bayeux.server.stats.sessions_removed["total_queue_full"] == 1
    removals = ("chatpush_cometd_sessions_removed_total", {"reason": "total_queue_full"}, 1)
    assert removals in list(cometd_samples(bayeux.server.stats))  # what /metrics shows
    assert bayeux.server.queued_bytes <= TOTAL_LIMITS.max_total_queued_bytes
    assert bayeux.server.queued_bytes == sum(
        session.queued_bytes for session in sessions[1:] if session is not None
    )
    [reply] = await connect(http, hogs[0])
    assert reply["error"] == "402::session_unknown"  # it handshakes again and catches up
    [gone, *kept] = [await connect(http, hog, "k") for hog in hogs[1:]]
    assert len(events(gone)) == 4 and all(len(events(reply)) == 4 for reply in kept)
    assert bayeux.server.queued_bytes == 0


async def test_the_total_is_kept_as_queues_are_taken_acknowledged_and_removed(
    clock: FakeClock, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    bayeux = make_bayeux(clock, TOTAL_LIMITS)
    http = await aiohttp_client(bayeux.app)
    plain = await handshake(http)
    acking = await handshake(http, ext={"ack": True})
    leaving = await handshake(http)
    for n, client_id in enumerate((plain, acking, leaving)):
        await subscribe(http, client_id, "/chat/room", f"s{n}")
        await connect(http, client_id, "first", **({"ext": {"ack": 0}} if n == 1 else {}))
    await publish(http, plain, "/chat/room", PIECE)
    each = bayeux.server.queued_bytes // 3
    assert each > 2_000 and bayeux.server.queued_bytes == 3 * each
    await connect(http, plain)  # taken
    assert bayeux.server.queued_bytes == 2 * each
    [batch] = [m for m in await connect(http, acking, ext={"ack": 1}) if "successful" in m]
    assert bayeux.server.queued_bytes == 2 * each  # sent, kept until acknowledged
    # Not alone in its batch, the acknowledging connect is answered at once rather than held.
    acknowledged = connect_message(acking, "c2", ext={"ack": batch["ext"]["ack"]})
    unsubscribe = {"channel": "/meta/unsubscribe", "clientId": acking, "subscription": "/x"}
    async with asyncio.timeout(5):
        await post(http, [acknowledged, unsubscribe])
    assert bayeux.server.queued_bytes == each
    await post(http, [{"channel": "/meta/disconnect", "clientId": leaving}])
    assert bayeux.server.queued_bytes == 0
