"""The Bayeux 1.0 (CometD) server: long-polling and websocket on aiohttp, sessions in memory.

    front.py        the lean long-polling front: plain POSTs without aiohttp's per-request
                    objects, every other connection handed to aiohttp (FrontRunner)
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

    app[FRONT] = Front(server, "/genesys/cometd", limits.max_message_bytes)  # optional
    runner = FrontRunner(app)            # in place of web.AppRunner

docs/cometd.md records the decisions.
"""

from chatpush.cometd.front import FRONT, Front, FrontRunner
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
    "FRONT",
    "Authorizer",
    "BayeuxServer",
    "ClientAddress",
    "CometdLimits",
    "CometdStats",
    "DisconnectHandler",
    "DrainListener",
    "Front",
    "FrontRunner",
    "RemovalListener",
    "RemovalReason",
    "ServiceHandler",
    "Session",
]
