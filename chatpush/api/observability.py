"""What ``/metrics`` shows beyond the counters: request latency per route group, and the gauges
computed at scrape time (outbox, reliable triggers, failing subscriptions, CometD, nodes).

``setup_metrics`` is called once by ``create_app``, after the collaborators are in the app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource

from chatpush.api.keys import CLOCK, COMETD, DATABASE, METRICS, ROUTER, SETTINGS
from chatpush.cometd import BayeuxServer
from chatpush.metrics import SCRAPE_QUERY_TIMEOUT_S, Sample
from chatpush.routing.router import Router
from chatpush.store import stats

log = logging.getLogger("chatpush.metrics")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ROUTE_GROUPS = (
    ("/genesys/2/chat", "chat_api"),
    ("/genesys/cometd", "cometd"),
    ("/api/", "server_api"),
    ("/metrics", "metrics"),
    ("/healthz", "health"),
    ("/readyz", "health"),
)
"""The ``route`` label of ``chatpush_request_duration_seconds``: a few groups, never a path (a
stranger could grow a path label without bound). ``other``: a route of none of these;
``unmatched``: no route (404, 405)."""


def route_group(resource: AbstractResource | None) -> str:
    if resource is None:
        return "unmatched"
    canonical = resource.canonical
    for prefix, group in ROUTE_GROUPS:
        if canonical.startswith(prefix):
            return group
    return "other"


def setup_metrics(app: web.Application) -> None:
    """Time every request (the outermost middleware) and compute the gauges at each scrape."""
    metrics = app[METRICS]
    groups: dict[AbstractResource | None, str] = {}

    @web.middleware
    async def request_duration(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            resource = request.match_info.route.resource
            group = groups.get(resource)
            if group is None:
                group = groups[resource] = route_group(resource)
            metrics.observe(
                "chatpush_request_duration_seconds", time.perf_counter() - started, route=group
            )

    app.middlewares.insert(0, request_duration)
    metrics.add_collector(lambda: _cometd_counters(app[COMETD]))

    async def database_gauges() -> Iterable[Sample]:
        """One aggregate query per scrape, given up after SCRAPE_QUERY_TIMEOUT_S: a scrape
        must answer even when the database does not."""
        try:
            backlog = await asyncio.wait_for(
                app[DATABASE].read(stats.backlog), SCRAPE_QUERY_TIMEOUT_S
            )
        except Exception as exc:
            log.warning(
                "metrics: the database did not answer: %r", exc, extra={"action": "metrics_failed"}
            )
            return [("chatpush_metrics_database_ok", {}, 0.0)]
        return [
            ("chatpush_metrics_database_ok", {}, 1.0),
            *_backlog_samples(backlog, app[CLOCK].now_ms()),
        ]

    async def memory_gauges() -> Iterable[Sample]:
        groups = app[SETTINGS].groups
        return [*_cometd_gauges(app[COMETD]), *_node_gauges(app[ROUTER], groups)]

    metrics.add_gauges(memory_gauges)
    metrics.add_gauges(database_gauges)


def _backlog_samples(backlog: stats.Backlog, now_ms: int) -> list[Sample]:
    oldest = backlog.oldest_due_ms
    return [
        ("chatpush_outbox_due", {}, backlog.outbox_due),
        ("chatpush_outbox_parked", {}, backlog.outbox_parked),
        ("chatpush_outbox_oldest_age_seconds", {}, max(0, now_ms - (oldest or now_ms)) / 1000),
        ("chatpush_reliable_triggers_outstanding", {}, backlog.triggers_outstanding),
        ("chatpush_subscriptions_failing", {}, backlog.subscriptions_failing),
    ]


def _cometd_counters(cometd: BayeuxServer) -> Iterator[Sample]:
    stats_ = cometd.stats
    yield "chatpush_cometd_handshakes_total", {}, stats_.handshakes
    yield "chatpush_cometd_messages_queued_total", {}, stats_.messages_queued
    yield "chatpush_cometd_broadcasts_total", {}, stats_.broadcasts


def _cometd_gauges(cometd: BayeuxServer) -> list[Sample]:
    return [
        ("chatpush_cometd_sessions", {}, cometd.session_count),
        ("chatpush_cometd_queued_bytes", {}, cometd.queued_bytes),
    ]


def _node_gauges(router: Router, groups: Iterable[str]) -> list[Sample]:
    """Per group: every configured group (0 when none of its nodes is known) and the groups
    of other instances' nodes."""
    known = dict.fromkeys(groups, 0)
    available = dict.fromkeys(groups, 0)
    for node in router.nodes():
        known[node.group_name] = known.get(node.group_name, 0) + 1
        available[node.group_name] = available.get(node.group_name, 0) + int(node.available)
    return [
        *(("chatpush_nodes", {"group": group}, count) for group, count in sorted(known.items())),
        *(
            ("chatpush_nodes_available", {"group": group}, count)
            for group, count in sorted(available.items())
        ),
    ]
