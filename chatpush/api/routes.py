"""Every HTTP route of the service in one table: method, path, handler, who may call it, and
whether ``openapi.json`` documents it.

``mount(app, ROUTES)`` adds them to the app and records each route's scopes for the API-key
check (``access.py``). A part of the service with routes of its own (an admin console, a widget,
metrics) declares them as a list of :class:`Route` in its own module and mounts them from its
``setup_<thing>(app, settings, ...)``, so its scopes are checked the same way.
``tests/integration/test_openapi.py`` checks that the documented routes are exactly the
operations of ``openapi.json``, and that every route the app serves was mounted from a table.

Not in a table: the Bayeux server's own endpoint, ``/genesys/cometd`` (``BayeuxServer.add_routes``;
the chat operations over it are in ``chat_cometd.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from chatpush.api import (
    agents,
    callbacks,
    callbacks_cc,
    chat_server,
    chat_v2,
    credentials,
    health,
    push,
)
from chatpush.api.access import ADMIN, CHAT_SERVER, METRICS, ROUTE_ACCESS, RouteAccess

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    """An aiohttp path; ``{name:regex}`` where the default ``[^{}/]+`` will not do."""
    handler: Handler
    scopes: frozenset[str] | None
    """The API-key scopes that admit a caller (any one of them); None: no key needed."""
    documented: bool
    """In ``chatpush/api/openapi.json``."""


MOUNTED = web.AppKey("mounted_routes", list)
"""Every :class:`Route` mounted on the app, in order (for the tests and for docs)."""

_CHAT = "/api/v1/chats/{chat_id}"
_CREDENTIALS = "/api/v1/groups/{group}/credentials/{kind}"
_BOTH = frozenset({CHAT_SERVER, ADMIN})
_GMS_CB = "/genesys/1/service/callback"  # callbacks (issue 17)
_GMS_POSITION = "/genesys/1/service/{callback_id:[^/]+}/check-queue-position"
# Explicit patterns: aiohttp's default ([^{}/]+) would leave a brace to a plain 404.
_GMS_DIALOG = "/genesys/1/service/{callback_id:[^/]+}/{action:[^/]+}"
_CC = frozenset({CHAT_SERVER})
# Not "commands" or "ewt" alone: those paths are other resources (a 405 there lists their methods).
_CC_CALLBACK = "/api/v1/callbacks/{callback_id:(?!(?:commands|ewt)$)[^/]+}"
_AGENT = "/api/v1/agents/{user_id}"

ROUTES: list[Route] = [
    # Chat API v2 over HTTP (the customer side): its own contract, not in openapi.json. Explicit
    # patterns: aiohttp's default one ([^{}/]+) would not route a segment holding a brace, and a
    # service name may hold any printable character but "/" (decisions.md).
    Route("POST", "/genesys/2/chat/{service:[^/]+}", chat_v2.request_chat, None, False),
    Route(
        "POST",
        "/genesys/2/chat/{service:[^/]+}/{chat_id:[^/]+}/{operation:[^/]+}",
        chat_v2.chat_operation,
        None,
        False,
    ),
    # The Chat API v2's own OpenAPI document (chat_openapi.json; docs/chat-api.md).
    Route("GET", "/genesys/2/openapi.json", chat_v2.openapi_document, None, False),
    # The chat-server side API.
    Route("GET", "/api/v1/openapi.json", chat_server.openapi_document, None, True),
    Route("GET", "/api/v1/chats", chat_server.list_chats, _BOTH, True),
    Route("GET", _CHAT, chat_server.read_chat, _BOTH, True),
    Route("POST", _CHAT + "/parties", chat_server.add_party, frozenset({CHAT_SERVER}), True),
    Route(
        "DELETE",
        _CHAT + "/parties/{participant_id}",
        chat_server.remove_party,
        frozenset({CHAT_SERVER}),
        True,
    ),
    Route("POST", _CHAT + "/events", chat_server.add_event, frozenset({CHAT_SERVER}), True),
    Route("POST", _CHAT + "/end", chat_server.end_chat, frozenset({CHAT_SERVER}), True),
    # Push state and delivery nodes, for operators.
    Route("GET", _CHAT + "/subscription", push.read_subscription, frozenset({ADMIN}), True),
    Route("GET", _CHAT + "/deliveries", push.read_deliveries, frozenset({ADMIN}), True),
    Route("GET", "/api/v1/nodes", push.list_nodes, frozenset({ADMIN}), True),
    Route("POST", "/api/v1/nodes/{node}/drain", push.drain_node, frozenset({ADMIN}), True),
    Route("POST", "/api/v1/nodes/{node}/undrain", push.undrain_node, frozenset({ADMIN}), True),
    # FCM and APNs credentials.
    Route("GET", "/api/v1/credentials", credentials.list_credentials, frozenset({ADMIN}), True),
    Route("PUT", _CREDENTIALS, credentials.put_credentials, frozenset({ADMIN}), True),
    Route("GET", _CREDENTIALS, credentials.get_credentials, frozenset({ADMIN}), True),
    Route("DELETE", _CREDENTIALS, credentials.delete_credentials, frozenset({ADMIN}), True),
    Route("POST", _CREDENTIALS + "/test", credentials.test_credentials, frozenset({ADMIN}), True),
    # -- callbacks (issue 17, docs/callbacks.md) --------------------------------------------------
    # The GMS Callback API (the customer's side): GMS's own contract, errors in its shape.
    Route("GET", "/genesys/1/service/callback", callbacks.query_all, None, False),
    Route("POST", _GMS_CB + "/{service:[^/]+}", callbacks.create, None, False),
    Route("GET", _GMS_CB + "/{service:[^/]+}", callbacks.query_service, None, False),
    Route(
        "GET",
        "/genesys/{version:[12]}/service/callback/{service:[^/]+}/availability",
        callbacks.availability,
        None,
        False,
    ),
    Route("PUT", _GMS_CB + "/{service:[^/]+}/{callback_id:[^/]+}", callbacks.update, None, False),
    Route(
        "DELETE", _GMS_CB + "/{service:[^/]+}/{callback_id:[^/]+}", callbacks.cancel, None, False
    ),
    Route("GET", _GMS_POSITION, callbacks.queue_position, None, False),
    Route("POST", _GMS_POSITION, callbacks.queue_position, None, False),
    Route("POST", "/genesys/1/admin/callback/cancel", callbacks.admin_cancel, None, False),
    Route("GET", _GMS_DIALOG, callbacks.dialog, None, False),
    Route("POST", _GMS_DIALOG, callbacks.dialog, None, False),
    # The Notification API subset (publish checks its key itself: any scope, GMS's shape).
    Route("POST", "/genesys/1/notification/subscription", callbacks.subscribe, None, False),
    Route(
        "DELETE",
        "/genesys/1/notification/subscription/{subscription_id:[^/]+}",
        callbacks.unsubscribe,
        None,
        False,
    ),
    Route("POST", "/genesys/1/notification/publish", callbacks.publish, None, False),
    # The contact-centre side (chat-server scope: the other side of a callback, as of a chat).
    Route("GET", "/api/v1/callbacks/commands", callbacks_cc.pull_commands, _CC, True),
    Route("POST", "/api/v1/callbacks/commands/ack", callbacks_cc.ack_commands, _CC, True),
    Route("POST", "/api/v1/callbacks/ewt", callbacks_cc.post_ewt, _CC, True),
    Route("GET", _CC_CALLBACK, callbacks_cc.read_callback, _BOTH, True),
    Route("POST", _CC_CALLBACK + "/events", callbacks_cc.post_event, _CC, True),
    Route("GET", _CC_CALLBACK + "/deliveries", callbacks_cc.read_deliveries, _BOTH, True),
    # -- end of callbacks -------------------------------------------------------------------------
    # Agent alerts (docs/agents.md): the device registry, event intake, rings and their trail.
    Route("POST", _AGENT + "/devices", agents.register_device, frozenset({CHAT_SERVER}), True),
    Route("GET", _AGENT + "/devices", agents.list_devices, frozenset({CHAT_SERVER}), True),
    Route(
        "DELETE",
        _AGENT + "/devices/{device_id}",
        agents.delete_device,
        frozenset({CHAT_SERVER}),
        True,
    ),
    Route(
        "POST",
        _AGENT + "/answered/{conversation_id}",
        agents.answered,
        frozenset({CHAT_SERVER}),
        True,
    ),
    Route("POST", "/api/v1/agent-events", agents.agent_events, frozenset({CHAT_SERVER}), True),
    Route(
        "GET",
        "/api/v1/agent-conversations/{conversation_id}",
        agents.read_conversation,
        _BOTH,
        True,
    ),
    # Operations: metrics (security.public_metrics opens it), liveness and readiness.
    Route("GET", "/metrics", push.metrics, frozenset({METRICS}), True),
    Route("GET", "/healthz", health.healthz, None, True),
    Route("GET", "/readyz", health.readyz, None, True),
]


def mount(app: web.Application, routes: Iterable[Route]) -> None:
    """Add ``routes`` to the app (a GET also answers HEAD) and record who may call them."""
    if ROUTE_ACCESS not in app:
        app[ROUTE_ACCESS] = RouteAccess()
        app[MOUNTED] = []
    access = app[ROUTE_ACCESS]
    for route in routes:
        if route.method == "GET":
            added = app.router.add_get(route.path, route.handler)
        else:
            added = app.router.add_route(route.method, route.path, route.handler)
        canonical = added.resource.canonical if added.resource is not None else route.path
        if route.scopes is None:
            if canonical.startswith("/api/"):
                access.public.add(canonical)
        else:
            access.scopes[(route.method, canonical)] = route.scopes
        app[MOUNTED].append(route)
