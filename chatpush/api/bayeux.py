"""The application's Bayeux server (``/genesys/cometd``): its limits from the settings, its
counters on ``/metrics``. The chat operations over it are ``chat_cometd.py``; who may subscribe
to the push channels is ``comet_push.py``."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web

from chatpush.addresses import TrustedProxies
from chatpush.api import chat_cometd
from chatpush.api.cors import CorsPolicies
from chatpush.api.keys import COMETD
from chatpush.api.observability import ROUTE_GROUPS
from chatpush.api.ratelimit import CLIENT_ADDRESS
from chatpush.clock import Clock
from chatpush.cometd import FRONT, BayeuxServer, CometdLimits, CometdStats, Front
from chatpush.config import ConfigError, Settings
from chatpush.metrics import Metrics

PATH = "/genesys/cometd"


def bayeux_server(
    settings: Settings, clock: Clock, proxies: TrustedProxies, metrics: Metrics
) -> BayeuxServer:
    """A Bayeux server with the settings' limits, counted on ``metrics`` (mount it with
    ``add_routes(app, PATH)``)."""
    server = BayeuxServer(clock, cometd_limits(settings), proxies=proxies)
    metrics.add_collector(lambda: cometd_samples(server.stats))
    return server


def setup_front(app: web.Application, settings: Settings, metrics: Metrics) -> None:
    """The lean long-polling front (``cometd.lean_long_polling``, chatpush/cometd/front.py) for
    ``chatpush serve``'s ``FrontRunner``, keeping what the middlewares give a CometD request:
    its duration in ``chatpush_request_duration_seconds`` and its client address for the rate
    limits of ``/service/chatV2`` (``requestChat``); with CORS open to CometD, a request that
    carries ``Origin`` goes through aiohttp and its CORS answers."""
    if not settings.cometd.lean_long_polling:
        return
    server = app[COMETD]
    group = next(group for prefix, group in ROUTE_GROUPS if PATH.startswith(prefix))

    def observe(duration_s: float) -> None:
        metrics.observe("chatpush_request_duration_seconds", duration_s, route=group)

    app[FRONT] = Front(
        server,
        PATH,
        server.limits.max_message_bytes,
        observe=observe,
        request_scope=CLIENT_ADDRESS.set,
        cors=CorsPolicies(settings).cometd is not None,
    )


def cometd_limits(settings: Settings) -> CometdLimits:
    """The Bayeux server's limits; refuses settings whose largest chat envelope would not fit in
    one session's queue (a client asking for it would be removed at each try)."""
    cometd = settings.cometd
    page_bytes = chat_cometd.page_queue_bytes(settings)
    if page_bytes > cometd.max_queued_bytes:
        raise ConfigError(
            f"cometd.max_queued_bytes ({cometd.max_queued_bytes}) must hold one page of events: "
            f"4 x (the larger of chat.max_refresh_bytes and 2 x server.max_body_bytes, plus "
            f"{chat_cometd.ENVELOPE_CHARS}) = {page_bytes} bytes"
        )
    return CometdLimits(
        max_sessions=cometd.max_sessions,
        max_sessions_per_address=cometd.max_sessions_per_address,
        max_ext_bytes=cometd.max_ext_bytes,
        max_ext_depth=cometd.max_ext_depth,
        max_queued_messages=cometd.max_queued_messages,
        max_queued_bytes=cometd.max_queued_bytes,
        max_total_queued_bytes=cometd.max_total_queued_bytes,
        max_message_bytes=cometd.max_message_bytes,
        max_subscriptions=cometd.max_subscriptions,
        connect_timeout_ms=int(cometd.connect_timeout_s * 1000),
        max_interval_ms=int(cometd.max_interval_s * 1000),
    )


def cometd_samples(stats: CometdStats) -> Iterator[tuple[str, dict[str, str], float]]:
    """The Bayeux server's counters, for /metrics (read at each scrape)."""
    for reason, count in stats.refused.items():
        yield "chatpush_cometd_refused_total", {"reason": reason}, count
    for reason, count in stats.sessions_removed.items():
        yield "chatpush_cometd_sessions_removed_total", {"reason": str(reason)}, count
    yield "chatpush_cometd_bad_requests_total", {}, stats.bad_requests
