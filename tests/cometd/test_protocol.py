"""The COMETD.md server checklist, message by message, over raw HTTP long-polling.

The clock is a FakeClock that nobody advances unless a test says so: a held connect can only be
released by a message, a newer connect, a disconnect or a stop, which is what these tests check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from chatpush.cometd import CometdLimits, RemovalReason
from chatpush.testing import FakeClock
from tests.cometd.conftest import LIMITS, PATH, Bayeux, make_bayeux, until
from tests.cometd.support import (
    Client,
    connect,
    connect_message,
    events,
    handshake,
    meta,
    post,
    publish,
    start_connect,
    subscribe,
)

T_MS = LIMITS.connect_timeout_ms


async def test_handshake_reply_has_every_field(http: Client) -> None:
    message = {
        "channel": "/meta/handshake",
        "id": "1",
        "version": "1.0",
        "minimumVersion": "1.0",
        "supportedConnectionTypes": ["websocket", "long-polling", "callback-polling"],
    }
    [reply] = await post(http, [message])
    assert reply == {
        "channel": "/meta/handshake",
        "id": "1",
        "successful": True,
        "clientId": reply["clientId"],
        "version": "1.0",
        "minimumVersion": "1.0",
        "supportedConnectionTypes": ["long-polling", "websocket"],
        "advice": {"reconnect": "retry", "interval": 0, "timeout": T_MS},
    }
    assert len(reply["clientId"]) >= 32  # 128 random bits in hex


async def test_handshake_offers_only_the_common_connection_types(http: Client) -> None:
    message = {"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}
    [reply] = await post(http, message)  # a single object is accepted too
    assert reply["supportedConnectionTypes"] == ["long-polling"]
    message["supportedConnectionTypes"] = ["callback-polling"]
    [reply] = await post(http, [message])
    assert reply["successful"] is False
    assert reply["error"].startswith("406::")
    assert reply["supportedConnectionTypes"] == ["long-polling", "websocket"]


async def test_handshake_must_be_alone_in_its_batch(http: Client) -> None:
    handshake_message = {"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]}
    replies = await post(http, [handshake_message, connect_message("nobody")])
    assert [r["successful"] for r in replies] == [False, False]
    assert replies[0]["error"] == "400::handshake_not_alone"


async def test_routes_under_the_endpoint_and_no_cookie(http: Client) -> None:
    client_id = await handshake(http)
    [reply] = await post(http, [connect_message(client_id)], path=PATH + "/connect")
    assert reply["successful"] is True  # the JavaScript client posts to <url>/connect


async def test_first_connect_at_once_then_held_until_a_message(
    http: Client, bayeux: Bayeux
) -> None:
    client_id = await handshake(http)
    [first] = await connect(http, client_id, "1")
    assert first["successful"] is True and first["advice"]["interval"] == 0
    await subscribe(http, client_id, "/chat/room")
    held = start_connect(http, client_id, "2")
    session = bayeux.server.get_session(client_id)
    assert session is not None
    await until(lambda: session.connect_held)
    await asyncio.sleep(0.05)
    assert not held.done()
    assert await bayeux.server.publish("/chat/room", {"text": "hi"}) == 1
    reply = await held
    assert events(reply) == [{"channel": "/chat/room", "data": {"text": "hi"}}]
    assert meta(reply, "/meta/connect")["id"] == "2"
    assert reply[-1]["channel"] == "/meta/connect"  # messages first, then the replies


async def test_held_connect_is_answered_after_the_timeout(
    http: Client, bayeux: Bayeux, clock: FakeClock
) -> None:
    client_id = await handshake(http)
    await connect(http, client_id)
    held = start_connect(http, client_id, "2")
    await until(lambda: bayeux.server.get_session(client_id).connect_held)  # type: ignore[union-attr]
    clock.advance(ms=T_MS - 1)
    await asyncio.sleep(0.05)
    assert not held.done()
    clock.advance(ms=1)
    [reply] = await held
    assert reply["successful"] is True and reply["id"] == "2"


async def test_newer_connect_supersedes_a_held_one(http: Client, bayeux: Bayeux) -> None:
    client_id = await handshake(http)
    await subscribe(http, client_id, "/chat/room")
    await connect(http, client_id, "1")
    session = bayeux.server.get_session(client_id)
    assert session is not None
    old = start_connect(http, client_id, "2")
    await until(lambda: session.connect_held)
    new = start_connect(http, client_id, "3")
    [old_reply] = await old
    assert old_reply == {
        "channel": "/meta/connect",
        "id": "2",
        "clientId": client_id,
        "successful": True,
        "advice": {"reconnect": "retry", "interval": 0, "timeout": T_MS},
    }
    await until(lambda: session.connect_held)
    await bayeux.server.publish("/chat/room", "for the newer connect")
    assert events(await new) == [{"channel": "/chat/room", "data": "for the newer connect"}]


async def test_a_batch_gets_a_reply_per_message_and_is_never_held(http: Client) -> None:
    client_id = await handshake(http)
    await connect(http, client_id, "1")
    batch = [
        connect_message(client_id, "2"),
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/chat/a", "id": "3"},
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/chat/b", "id": "4"},
    ]
    async with asyncio.timeout(2):
        replies = await post(http, batch)
    assert [(r["channel"], r["id"], r["successful"]) for r in replies] == [
        ("/meta/connect", "2", True),
        ("/meta/subscribe", "3", True),
        ("/meta/subscribe", "4", True),
    ]


async def test_messages_before_the_first_connect_are_kept(http: Client, bayeux: Bayeux) -> None:
    client_id = await handshake(http)
    await subscribe(http, client_id, "/chat/room")
    await publish(http, client_id, "/chat/room", 1)
    assert events(await connect(http, client_id)) == [{"channel": "/chat/room", "data": 1}]


async def test_subscribe_and_unsubscribe_echo_subscription_and_id(
    http: Client, bayeux: Bayeux
) -> None:
    client_id = await handshake(http)
    [reply] = await subscribe(http, client_id, "/chat/room", "7")
    assert reply == {
        "channel": "/meta/subscribe",
        "id": "7",
        "successful": True,
        "clientId": client_id,
        "subscription": "/chat/room",
    }
    [reply] = await subscribe(http, client_id, ["/chat/x", "/chat/y/**"], "8")
    assert reply["successful"] is True and reply["subscription"] == ["/chat/x", "/chat/y/**"]
    message = {
        "channel": "/meta/unsubscribe",
        "clientId": client_id,
        "subscription": "/chat/room",
        "id": "9",
    }
    [reply] = await post(http, [message])
    assert reply["successful"] is True and reply["subscription"] == "/chat/room"
    assert reply["id"] == "9"
    assert await bayeux.server.publish("/chat/room", "gone") == 0


async def test_meta_subscriptions_refused_service_ones_not_recorded(
    http: Client, bayeux: Bayeux
) -> None:
    client_id = await handshake(http)
    for channel in ("/meta/connect", "/meta/*", "/meta/**"):
        [reply] = await subscribe(http, client_id, channel)
        assert reply["successful"] is False
        assert reply["error"] == "403::meta_subscription_denied"
        assert reply["subscription"] == channel
    [reply] = await subscribe(http, client_id, "/service/echo")
    assert reply["successful"] is True
    session = bayeux.server.get_session(client_id)
    assert session is not None and session.subscriptions == set()


async def test_subscriptions_per_session_are_bounded(http: Client) -> None:
    client_id = await handshake(http)
    for n in range(LIMITS.max_subscriptions):
        [reply] = await subscribe(http, client_id, f"/chat/{n}")
        assert reply["successful"] is True
    [reply] = await subscribe(http, client_id, "/chat/one-too-many")
    assert reply["error"] == "403::too_many_subscriptions"
    [reply] = await subscribe(http, client_id, "/chat/0")  # already there: no new one
    assert reply["successful"] is True


async def test_trailing_wildcards(http: Client, bayeux: Bayeux) -> None:
    one, many = await handshake(http), await handshake(http)
    await subscribe(http, one, "/chat/*")
    await subscribe(http, many, "/chat/**")
    assert await bayeux.server.publish("/chat/a", "a") == 2
    assert await bayeux.server.publish("/chat/a/b", "ab") == 1
    assert await bayeux.server.publish("/chatter", "no") == 0
    assert [m["data"] for m in events(await connect(http, one))] == ["a"]
    assert [m["data"] for m in events(await connect(http, many))] == ["a", "ab"]


async def test_publish_reply_has_no_data_and_reaches_subscribers(http: Client) -> None:
    sender, receiver = await handshake(http), await handshake(http)
    await subscribe(http, receiver, "/chat/room")
    [reply] = await publish(http, sender, "/chat/room", {"text": "hello"}, "5")
    assert reply == {"channel": "/chat/room", "id": "5", "successful": True}
    assert events(await connect(http, receiver)) == [
        {"channel": "/chat/room", "data": {"text": "hello"}}
    ]


async def test_publish_refusals(http: Client) -> None:
    client_id = await handshake(http)
    cases = {
        "/elsewhere": "403::publish_denied",  # the authorizer allows /chat/** only
        "/chat/*": "400::invalid_channel",
        "/service/nobody": "404::unknown_service",
    }
    for channel, error in cases.items():
        [reply] = await publish(http, client_id, channel, 1)
        assert (reply["successful"], reply.get("error")) == (False, error), channel


async def test_service_reply_goes_to_the_sender_only(http: Client, bayeux: Bayeux) -> None:
    sender, other = await handshake(http), await handshake(http)
    await subscribe(http, other, "/service/echo")
    [reply] = await publish(http, sender, "/service/echo", {"q": 1}, "9")
    assert reply == {"channel": "/service/echo", "id": "9", "successful": True}
    assert events(await connect(http, sender)) == [
        {"channel": "/service/echo", "data": {"echo": {"q": 1}}}
    ]
    assert events(await connect(http, other)) == []


async def test_disconnect_releases_the_held_connect_without_reconnect(
    http: Client, bayeux: Bayeux
) -> None:
    client_id = await handshake(http)
    await connect(http, client_id)
    held = start_connect(http, client_id, "2")
    await until(lambda: bayeux.server.get_session(client_id).connect_held)  # type: ignore[union-attr]
    message = {
        "channel": "/meta/disconnect",
        "clientId": client_id,
        "id": "3",
        "ext": {"transcriptPosition": 12},
    }
    [reply] = await post(http, [message])
    assert reply == {
        "channel": "/meta/disconnect",
        "id": "3",
        "successful": True,
        "clientId": client_id,
    }
    [released] = await held
    assert released["successful"] is True and released["advice"]["reconnect"] == "none"
    [(session, seen)] = bayeux.disconnects
    assert seen["ext"]["transcriptPosition"] == 12 and session.client_id == client_id
    assert [reason for _, reason in bayeux.removed] == [RemovalReason.DISCONNECT]
    [after] = await connect(http, client_id)
    assert after["error"] == "402::session_unknown"


async def test_unknown_or_missing_session_is_402_with_handshake_advice(http: Client) -> None:
    for client_id in ("no-such-session", None, 42):
        message = {"channel": "/meta/connect", "id": "1", "connectionType": "long-polling"}
        if client_id is not None:
            message["clientId"] = client_id
        [reply] = await post(http, [message])
        assert reply == {
            "channel": "/meta/connect",
            "id": "1",
            "successful": False,
            "error": "402::session_unknown",
            "advice": {"reconnect": "handshake", "interval": 0},
        }


async def test_session_expires_after_max_interval_without_connect(
    http: Client, bayeux: Bayeux, clock: FakeClock
) -> None:
    idle, busy = await handshake(http), await handshake(http)
    await connect(http, idle)
    await connect(http, busy)
    held = start_connect(http, busy, "2")
    await until(lambda: bayeux.server.get_session(busy).connect_held)  # type: ignore[union-attr]
    clock.advance(ms=LIMITS.max_interval_ms - 1)
    [reply] = await held  # released at T, then idle from now on: not expired
    assert reply["successful"] is True
    await asyncio.sleep(0.02)
    assert bayeux.server.get_session(idle) is not None
    clock.advance(ms=1)
    await until(lambda: bayeux.server.get_session(idle) is None)
    assert bayeux.server.get_session(busy) is not None
    assert bayeux.removed[0][1] is RemovalReason.EXPIRED
    [reply] = await connect(http, idle)
    assert reply["error"] == "402::session_unknown"


async def test_full_queue_removes_the_session(http: Client, bayeux: Bayeux) -> None:
    client_id = await handshake(http)
    await subscribe(http, client_id, "/chat/room")
    for n in range(LIMITS.max_queued_messages):
        assert await bayeux.server.publish("/chat/room", n) == 1
    assert await bayeux.server.publish("/chat/room", "one too many") == 0
    assert bayeux.removed[0][1] is RemovalReason.QUEUE_FULL
    assert bayeux.server.stats.sessions_removed["queue_full"] == 1
    [reply] = await connect(http, client_id)
    assert reply["error"] == "402::session_unknown"


async def test_max_sessions_refuses_handshakes(
    clock: FakeClock, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    bayeux = make_bayeux(clock, CometdLimits(max_sessions=2))
    http = await aiohttp_client(bayeux.app)
    await handshake(http)
    await handshake(http)
    message = {"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}
    [reply] = await post(http, [message])
    assert reply["successful"] is False and reply["error"] == "503::too_many_sessions"
    assert reply["advice"]["reconnect"] == "handshake"


async def test_acknowledged_messages_are_resent_until_acknowledged(
    http: Client, bayeux: Bayeux
) -> None:
    message = {
        "channel": "/meta/handshake",
        "supportedConnectionTypes": ["long-polling"],
        "ext": {"ack": True},
    }
    [reply] = await post(http, [message])
    assert reply["ext"] == {"ack": True}
    client_id = reply["clientId"]
    [first] = await connect(http, client_id, "1", ext={"ack": 0})
    batch = first["ext"]["ack"]
    await subscribe(http, client_id, "/chat/room")
    await bayeux.server.publish("/chat/room", "m1")
    reply = await connect(http, client_id, "2", ext={"ack": batch})
    assert [m["data"] for m in events(reply)] == ["m1"]
    lost_batch = meta(reply, "/meta/connect")["ext"]["ack"]
    assert lost_batch > batch
    # That reply is "lost": the client connects again acknowledging the previous batch only.
    await bayeux.server.publish("/chat/room", "m2")
    reply = await connect(http, client_id, "3", ext={"ack": batch})
    assert [m["data"] for m in events(reply)] == ["m1", "m2"]
    received = meta(reply, "/meta/connect")["ext"]["ack"]
    assert received > lost_batch
    # Acknowledged: nothing is resent, the next connect is held until a new message.
    held = start_connect(http, client_id, "4", ext={"ack": received})
    session = bayeux.server.get_session(client_id)
    assert session is not None
    await until(lambda: session.connect_held)
    await bayeux.server.publish("/chat/room", "m3")
    assert [m["data"] for m in events(await held)] == ["m3"]


async def test_stop_answers_held_connects(http: Client, bayeux: Bayeux) -> None:
    client_id = await handshake(http)
    await connect(http, client_id)
    held = start_connect(http, client_id, "2")
    await until(lambda: bayeux.server.get_session(client_id).connect_held)  # type: ignore[union-attr]
    await bayeux.server.stop()
    [reply] = await held
    assert reply["successful"] is True
    await bayeux.server.start()


@pytest.mark.parametrize("reason", ["service handler", "authorizer"])
async def test_a_failing_hook_is_a_500_reply_and_logged(
    http: Client, bayeux: Bayeux, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_service(session: object, message: object) -> None:
        raise RuntimeError("bug")

    def broken_authorizer(session: object, channel: str) -> bool:
        raise RuntimeError("bug")

    bayeux.server.on_service("/service/broken", broken_service)
    bayeux.server.authorize_subscribe(broken_authorizer)
    client_id = await handshake(http)
    if reason == "service handler":
        [reply] = await publish(http, client_id, "/service/broken", 1)
    else:
        [reply] = await subscribe(http, client_id, "/chat/x")
    assert reply["error"] == "500::internal_error"
    assert any(r.levelname == "ERROR" for r in caplog.records)
    caplog.clear()  # the autouse fixture checks for ERROR records: these are expected


@pytest.mark.parametrize("handler_cancellation", [True, False])
async def test_a_held_connect_whose_client_left_does_not_take_the_queue(
    clock: FakeClock, handler_cancellation: bool
) -> None:
    # aiohttp's test server cancels handlers when their client leaves; web.run_app does not.
    bayeux = make_bayeux(clock)
    runner = web.AppRunner(bayeux.app, handler_cancellation=handler_cancellation)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            await _client_leaves_a_held_connect(http, bayeux)  # type: ignore[arg-type]
    finally:
        await runner.cleanup()


async def _client_leaves_a_held_connect(http: Client, bayeux: Bayeux) -> None:
    client_id = await handshake(http)
    await subscribe(http, client_id, "/chat/room")
    await connect(http, client_id, "1")
    session = bayeux.server.get_session(client_id)
    assert session is not None
    gone = start_connect(http, client_id, "2")
    await until(lambda: session.connect_held)
    gone.cancel()  # the client closes its connection under the held connect
    await asyncio.gather(gone, return_exceptions=True)
    await asyncio.sleep(0.05)
    await bayeux.server.publish("/chat/room", "kept")
    await until(lambda: not session.connect_held)
    await asyncio.sleep(0.05)
    assert session.queued == 1
    reply = await connect(http, client_id, "3")
    assert events(reply) == [{"channel": "/chat/room", "data": "kept"}]
