"""The Bayeux 1.0 (CometD) server: long-polling and websocket on aiohttp, sessions in memory.

    transports.py   aiohttp handlers: POST (long-polling) and GET + upgrade (websocket)
        │ list of messages                        ▲ JSON text
        ▼                                         │
    server.py       BayeuxServer: meta channels, hooks, fan-out, held connects, expiry sweep
    session.py      Session: queue of serialized messages, acknowledge batches, held connect
    channels.py     channel names and the subscription index (exact, /*, /**)
    protocol.py     wire constants, error strings, batch decoding

The server mounts the transports (``BayeuxServer.add_routes``); the transports know the server
only as the ``transports.Endpoint`` protocol, so neither module imports the other both ways.

Wiring, for the application::

    server = BayeuxServer(clock, CometdLimits())
    server.on_service("/service/chatV2/", handle_chat_request)
    server.authorize_subscribe(may_subscribe)
    server.on_disconnect(going_to_background)
    server.add_routes(app)               # also runs the expiry sweep for the app's life
    await server.publish("/_genesys/push/" + device_id, body)

docs/cometd.md records the decisions.
"""

from chatpush.cometd.server import (
    Authorizer,
    BayeuxServer,
    ClientAddress,
    CometdLimits,
    CometdStats,
    DisconnectHandler,
    DrainListener,
    RemovalListener,
    ServiceHandler,
)
from chatpush.cometd.session import RemovalReason, Session

__all__ = [
    "Authorizer",
    "BayeuxServer",
    "ClientAddress",
    "CometdLimits",
    "CometdStats",
    "DisconnectHandler",
    "DrainListener",
    "RemovalListener",
    "RemovalReason",
    "ServiceHandler",
    "Session",
]
