"""Raw websocket: a held connect never delays other replies, and the server answers in frames."""

from __future__ import annotations

from chatpush.cometd import RemovalReason
from chatpush.testing import FakeClock
from tests.cometd.conftest import LIMITS, PATH, Bayeux, until
from tests.cometd.support import Client


async def test_held_connect_does_not_delay_other_replies(http: Client, bayeux: Bayeux) -> None:
    async with http.ws_connect(PATH) as ws:
        message = {"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]}
        await ws.send_json([message])
        [reply] = await ws.receive_json(timeout=2)
        client_id = reply["clientId"]

        def connect(message_id: str) -> list[dict[str, object]]:
            return [
                {
                    "channel": "/meta/connect",
                    "clientId": client_id,
                    "connectionType": "websocket",
                    "id": message_id,
                }
            ]

        await ws.send_json(connect("1"))
        [reply] = await ws.receive_json(timeout=2)
        assert reply["id"] == "1" and reply["successful"] is True
        await ws.send_json(connect("2"))  # held
        session = bayeux.server.get_session(client_id)
        assert session is not None
        await until(lambda: session.connect_held)
        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": "/chat/room",
            "id": "3",
        }
        await ws.send_json([subscribe])
        [reply] = await ws.receive_json(timeout=1)
        assert reply["id"] == "3" and reply["successful"] is True
        publish = {"channel": "/service/echo", "clientId": client_id, "data": "ping", "id": "4"}
        await ws.send_json([publish])
        [reply] = await ws.receive_json(timeout=1)
        assert reply == {"channel": "/service/echo", "id": "4", "successful": True}
        # The echo released the held connect: message first, then the connect's reply.
        echo, connect_reply = await ws.receive_json(timeout=1)
        assert echo == {"channel": "/service/echo", "data": {"echo": "ping"}}
        assert connect_reply["id"] == "2" and connect_reply["successful"] is True


async def test_closing_the_socket_under_a_held_connect_lets_the_session_expire(
    http: Client, bayeux: Bayeux, clock: FakeClock
) -> None:
    async with http.ws_connect(PATH) as ws:
        message = {"channel": "/meta/handshake", "supportedConnectionTypes": ["websocket"]}
        await ws.send_json([message])
        [reply] = await ws.receive_json(timeout=2)
        client_id = reply["clientId"]
        for message_id in ("1", "2"):
            connect = {"channel": "/meta/connect", "clientId": client_id, "id": message_id}
            await ws.send_json([connect])
        await ws.receive_json(timeout=2)
        session = bayeux.server.get_session(client_id)
        assert session is not None
        await until(lambda: session.connect_held)
    await until(lambda: not session.connect_held)  # the socket closed: it is idle now
    clock.advance(ms=LIMITS.max_interval_ms)
    await until(lambda: session.removed is RemovalReason.EXPIRED)
