"""The connect reply the server writes directly must be the text ``protocol.dumps`` makes of the
reply object, byte for byte; held connects time out from the one sweep, not a timer each."""

from __future__ import annotations

from typing import Any

from chatpush.cometd import BayeuxServer, CometdLimits, protocol
from chatpush.testing import FakeClock

T_MS = 25_000


def _server(clock: FakeClock) -> BayeuxServer:
    server = BayeuxServer(clock, CometdLimits(connect_timeout_ms=T_MS))
    server.authorize_publish(lambda session, channel: True)
    return server


async def _handshake(server: BayeuxServer, ext: dict[str, Any] | None = None) -> str:
    message: dict[str, Any] = {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling"],
    }
    if ext is not None:
        message["ext"] = ext
    exchange = await server.process([message], "long-polling", "127.0.0.1")
    client_id: str = exchange.replies[0]["clientId"]
    return client_id


async def test_a_written_connect_reply_is_what_dumps_makes() -> None:
    server = _server(FakeClock())
    client_id = await _handshake(server)
    for message_id in ("1", 2, 'é"\\', None):
        connect: dict[str, Any] = {"channel": "/meta/connect", "clientId": client_id}
        if message_id is not None:
            connect["id"] = message_id
        connect["connectionType"] = "long-polling"
        exchange = await server.process([connect], "long-polling", "127.0.0.1")
        text = server.render(exchange)
        assert text == protocol.join([protocol.dumps(reply) for reply in exchange.replies])
        if message_id is not None:
            assert exchange.connect is not None and exchange.connect.text is not None


async def test_a_connect_with_the_ack_extension_is_rendered_from_its_object() -> None:
    server = _server(FakeClock())
    client_id = await _handshake(server, {"ack": True})
    connect = {"channel": "/meta/connect", "clientId": client_id, "id": "1", "ext": {"ack": -1}}
    exchange = await server.process([connect], "long-polling", "127.0.0.1")
    [reply] = protocol.decode_batch(server.render(exchange))
    assert reply["ext"] == {"ack": 1} and reply["successful"] is True
    assert exchange.connect is not None and exchange.connect.text is None


async def test_held_connects_are_released_by_the_sweep_at_their_deadline() -> None:
    clock = FakeClock()
    start_ms = clock.now_ms()
    server = _server(clock)
    exchanges = []
    for _ in range(3):
        client_id = await _handshake(server)
        first = {"channel": "/meta/connect", "clientId": client_id, "id": "1"}
        server.render(await server.process([first], "long-polling", "127.0.0.1"))
        held = {"channel": "/meta/connect", "clientId": client_id, "id": "2"}
        exchange = await server.process([held], "long-polling", "127.0.0.1")
        assert exchange.hold
        exchanges.append(exchange)
        clock.advance(ms=1_000)
    # The earliest deadline is what the sweep sleeps until.
    assert server.sweep() == start_ms + T_MS
    clock.advance(ms=T_MS - 3_000)  # now T_MS: the first is due, the others not yet
    assert server.sweep() == start_ms + T_MS + 1_000
    released = [
        exchange.connect is not None and exchange.connect.released for exchange in exchanges
    ]
    assert released == [True, False, False]
