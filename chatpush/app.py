"""Wiring only: ``create_app`` builds the aiohttp application from settings and collaborators.

Shutdown order (aiohttp runs cleanup contexts in reverse): background tasks stop first (the
dispatcher finishes deliveries in flight), then the HTTP client session, then the database.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from chatpush.addresses import TrustedProxies
from chatpush.api import chat_cometd, chat_v2, credentials, push, ratelimit, server
from chatpush.api.access import KeyRing
from chatpush.api.body_timeout import body_timeout_middleware
from chatpush.api.comet_push import install_push_authorizer
from chatpush.api.errors import error_middleware
from chatpush.api.keys import (
    CHATS,
    CLOCK,
    COMETD,
    DATABASE,
    DISPATCHER,
    INSTANCE_ID,
    KEYS,
    METRICS,
    PIPELINE,
    ROUTER,
    SETTINGS,
    VAULT,
)
from chatpush.chat.service import ChatService
from chatpush.clock import Clock, SystemClock
from chatpush.cometd import BayeuxServer, CometdLimits, CometdStats
from chatpush.config import ConfigError, Settings
from chatpush.errors import ChatpushError
from chatpush.metrics import Metrics
from chatpush.providers.base import Provider, ProviderContext
from chatpush.providers.http import HttpClient
from chatpush.providers.registry import create_all as create_providers
from chatpush.push.credentials import CredentialVault
from chatpush.push.dispatcher import Dispatcher
from chatpush.push.pipeline import PushPipeline
from chatpush.routing.router import Router
from chatpush.store import chats as chat_store
from chatpush.store import outbox, trail
from chatpush.store.database import Database

log = logging.getLogger("chatpush.app")

TASK_RESTART_DELAY_S = 1.0
HEALTHY = web.AppKey("healthy", dict)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    provider: Provider | None = None,
    providers: Mapping[str, Provider] | None = None,
    housekeeping: bool = True,
) -> web.Application:
    """Build the service. Tests pass a fake ``clock`` and may share a ``database``;
    ``providers`` (device type -> provider) replace the registered ones' own (``provider``: the
    ``customhttp`` one)."""
    proxies = TrustedProxies(
        settings.server.trusted_proxies, ipv6_prefix_length=settings.server.ipv6_prefix_length
    )
    app = web.Application(
        middlewares=[
            error_middleware,
            ratelimit.address_middleware(proxies),
            server.api_key_middleware,
            body_timeout_middleware,
        ],
        client_max_size=settings.server.max_body_bytes,
    )
    clock = clock or SystemClock()
    owns_database = database is None
    db = database or Database.from_settings(settings.database)
    instance_id = settings.server.instance_id or f"{socket.gethostname()}:{settings.server.port}"
    metrics = Metrics()
    pipeline = PushPipeline(db, settings, clock, metrics)
    router = Router(settings, db, clock, instance_id)
    cometd = BayeuxServer(clock, _cometd_limits(settings), client_address=proxies.client_address)
    metrics.add_collector(lambda: _cometd_samples(cometd.stats))
    vault = CredentialVault(db, clock, settings.security.credentials_key)
    http = HttpClient()  # one HTTP/1.1 session for the app's providers (APNs: its own HTTP/2)
    given = {**({"customhttp": provider} if provider else {}), **(providers or {})}
    context = ProviderContext(settings, clock, vault, http, publisher=cometd)
    providers = create_providers(context, given)
    dispatcher = Dispatcher(db, settings, clock, pipeline, router, providers, metrics)
    app[SETTINGS] = settings
    app[KEYS] = KeyRing(settings.security)
    app[CLOCK] = clock
    app[DATABASE] = db
    app[METRICS] = metrics
    app[PIPELINE] = pipeline
    app[ROUTER] = router
    app[DISPATCHER] = dispatcher
    # On PostgreSQL every commit that changes a chat is announced, for CometD sessions elsewhere.
    announce_as = None if db.is_sqlite else instance_id
    app[CHATS] = ChatService(db, settings, clock, push=pipeline, announce_as=announce_as)
    app[COMETD] = cometd
    app[INSTANCE_ID] = instance_id
    app[VAULT] = vault
    app[HEALTHY] = {}
    app[ratelimit.CHAT_CREATE_LIMIT] = ratelimit.ClientLimit(
        "chat_create",
        "chats requested",
        ratelimit.TokenBuckets(
            clock,
            per_minute=settings.chat.chats_per_address_per_minute,
            burst=settings.chat.chats_per_address_burst,
            max_keys=settings.chat.max_tracked_addresses,
        ),
        metrics,
    )

    chat_v2.add_routes(app)
    server.add_routes(app)
    push.add_routes(app)
    credentials.add_routes(app)
    install_push_authorizer(app)
    app[COMETD].add_routes(app, "/genesys/cometd")
    chat_cometd.install(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        if owns_database:
            await db.close()

    async def provider_ctx(app: web.Application) -> AsyncIterator[None]:
        await http.start()
        for each in providers.values():
            await each.start()
        yield
        for each in providers.values():
            await each.close()
        await http.close()

    async def delivery_ctx(app: web.Application) -> AsyncIterator[None]:
        # One SQLite file has one instance; on PostgreSQL only our own leases are void.
        await db.write(outbox.release_leases, None if db.is_sqlite else instance_id)
        await pipeline.start()
        await router.start()
        tasks = [
            _supervise(app, "dispatcher", dispatcher.run),
            _supervise(app, "heartbeat", lambda: _heartbeat(router, settings, clock)),
        ]
        if not db.is_sqlite:
            # Other instances' commits that make work wake this dispatcher (LISTEN/NOTIFY).
            listen = lambda: db.listen(  # noqa: E731
                outbox.WORK_CHANNEL, lambda _payload: dispatcher.poke()
            )
            tasks.append(_supervise(app, "listen", listen))
            # Chats changed by other instances: live events for this instance's CometD sessions.
            changes = app[chat_cometd.CHAT_COMETD].changed_elsewhere
            follow = lambda: db.listen(chat_store.CHANGES_CHANNEL, changes)  # noqa: E731
            tasks.append(_supervise(app, "listen-chats", follow))
        yield
        await dispatcher.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.extend([database_ctx, provider_ctx, delivery_ctx])
    if housekeeping:
        app.cleanup_ctx.append(_housekeeping_ctx)
    return app


def _cometd_limits(settings: Settings) -> CometdLimits:
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


def _cometd_samples(stats: CometdStats) -> Iterator[tuple[str, dict[str, str], float]]:
    """The Bayeux server's counters, for /metrics (read at each scrape)."""
    for reason, count in stats.refused.items():
        yield "chatpush_cometd_refused_total", {"reason": reason}, count
    for reason, count in stats.sessions_removed.items():
        yield "chatpush_cometd_sessions_removed_total", {"reason": str(reason)}, count
    yield "chatpush_cometd_bad_requests_total", {}, stats.bad_requests


def _supervise(
    app: web.Application, name: str, run: Callable[[], Awaitable[None]]
) -> asyncio.Task[None]:
    """Run a background task for the life of the app; if it dies, say so loudly and restart it."""

    async def supervisor() -> None:
        while True:
            app[HEALTHY][name] = True
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                app[HEALTHY][name] = False
                log.critical(
                    "background task %s died; restarting",
                    name,
                    exc_info=True,
                    extra={"action": "task_died", "task": name},
                )
                await asyncio.sleep(TASK_RESTART_DELAY_S)

    return asyncio.create_task(supervisor(), name=name)


async def _heartbeat(router: Router, settings: Settings, clock: Clock) -> None:
    interval_ms = int(settings.delivery.heartbeat_interval_s * 1000)
    never = asyncio.Event()
    while True:
        await clock.sleep_until(clock.now_ms() + interval_ms, never)
        try:
            await router.heartbeat()
        except ChatpushError as exc:
            log.warning("heartbeat failed: %s", exc, extra={"action": "heartbeat_failed"})


async def _housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    """APScheduler runs periodic chores, never per-chat timers (those live in the database)."""
    settings = app[SETTINGS]
    scheduler = AsyncIOScheduler()
    jobs = [
        ("purge-ended-chats", _purge_ended_chats, settings.chat.purge_interval_s),
        ("purge-delivery-trail", _purge_trail, settings.delivery.sweep_interval_s),
        ("expire-idle-push-chats", _expire_idle_chats, settings.delivery.sweep_interval_s),
        ("end-idle-chats", _end_idle_chats, settings.delivery.sweep_interval_s),
    ]
    for job_id, job, interval_s in jobs:
        scheduler.add_job(
            job,
            "interval",
            args=[app],
            seconds=interval_s,
            id=job_id,
            max_instances=1,
            coalesce=True,
        )
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)


async def _purge_ended_chats(app: web.Application) -> None:
    try:
        purged = await app[CHATS].purge_ended()
    except ChatpushError as exc:
        log.warning("purge failed: %s", exc, extra={"action": "purge_failed"})
        return
    if purged:
        log.info("purged %d ended chats", purged, extra={"action": "chats_purged", "count": purged})


async def _purge_trail(app: web.Application) -> None:
    cutoff_ms = app[CLOCK].now_ms() - app[SETTINGS].delivery.trail_retention_s * 1000
    try:
        purged = await app[DATABASE].write(trail.purge_trail, cutoff_ms)
    except ChatpushError as exc:
        log.warning("trail purge failed: %s", exc, extra={"action": "purge_failed"})
        return
    if purged:
        log.info("purged %d delivery records", purged, extra={"action": "trail_purged"})


async def _expire_idle_chats(app: web.Application) -> None:
    try:
        expired = await app[CHATS].expire_idle_push_chats()
    except ChatpushError as exc:
        log.warning("expiry sweep failed: %s", exc, extra={"action": "expiry_failed"})
        return
    if expired:
        app[METRICS].inc("chatpush_chats_expired_total", expired)


async def _end_idle_chats(app: web.Application) -> None:
    try:
        ended = await app[CHATS].expire_idle_chats()
    except ChatpushError as exc:
        log.warning("idle chat sweep failed: %s", exc, extra={"action": "expiry_failed"})
        return
    if ended:
        app[METRICS].inc("chatpush_chats_idle_ended_total", ended)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    stopped = sorted(name for name, alive in request.app[HEALTHY].items() if not alive)
    if stopped:
        return web.json_response(
            {"status": f"background task down: {', '.join(stopped)}"}, status=503
        )
    try:
        await request.app[DATABASE].ping()
    except ChatpushError:
        return web.json_response({"status": "database unavailable"}, status=503)
    return web.json_response({"status": "ok"})
