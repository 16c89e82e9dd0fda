"""Wiring only: ``create_app`` builds the aiohttp application from settings and collaborators.

Shutdown order (aiohttp runs cleanup contexts in reverse): background tasks stop first (the
dispatcher finishes deliveries in flight), then the HTTP client session, then the database.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from chatpush.addresses import TrustedProxies
from chatpush.admin import setup_admin
from chatpush.agents.outbound import SOURCE, PlatformOutbox
from chatpush.agents.outbound import Outbox as AgentOutbox
from chatpush.agents.presence import PresenceSource
from chatpush.agents.service import AgentAlerts
from chatpush.agents.stream import EventStream
from chatpush.api import chat_cometd, chat_server, ratelimit, routes
from chatpush.api.access import KeyRing
from chatpush.api.agents import AGENT_STREAM, AGENTS
from chatpush.api.bayeux import PATH as COMETD_PATH
from chatpush.api.bayeux import bayeux_server, setup_front
from chatpush.api.body_timeout import body_timeout_middleware
from chatpush.api.callbacks import CALLBACKS
from chatpush.api.comet_push import install_push_authorizer
from chatpush.api.cors import setup_cors
from chatpush.api.errors import error_middleware
from chatpush.api.health import HEALTHY
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
from chatpush.api.observability import setup_metrics
from chatpush.api.widget import setup_widget
from chatpush.callbacks.hooks import CallbackHooks
from chatpush.callbacks.service import CallbackService
from chatpush.chat import housekeeping as chat_housekeeping
from chatpush.chat.service import ChatService
from chatpush.clock import Clock, SystemClock
from chatpush.config import Settings
from chatpush.delivery.api import SourceHooks
from chatpush.delivery.dispatcher import Dispatcher
from chatpush.metrics import Metrics
from chatpush.providers.base import Provider, ProviderContext
from chatpush.providers.http import HttpClient
from chatpush.providers.registry import create_all as create_providers
from chatpush.push import housekeeping as push_housekeeping
from chatpush.push.credentials import CredentialVault
from chatpush.push.pipeline import PushPipeline
from chatpush.routing import heartbeat
from chatpush.routing.router import Router
from chatpush.store import chats as chat_store
from chatpush.store import outbox
from chatpush.store.database import Database

log = logging.getLogger("chatpush.app")

TASK_RESTART_DELAY_S = 1.0


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    provider: Provider | None = None,
    providers: Mapping[str, Provider] | None = None,
    housekeeping: bool = True,
    sources: Mapping[str, SourceHooks] | None = None,
    agent_outbox: AgentOutbox | None = None,
) -> web.Application:
    """Build the service. Tests pass a fake ``clock`` and may share a ``database``;
    ``providers`` (device type -> provider) replace the registered ones' own (``provider``: the
    ``customhttp`` one); ``sources``: hooks of notification sources other than chat (source ->
    hooks, chatpush/delivery/api.py: SourceHooks); ``agent_outbox``: where agent alerts hand
    their rings over (default: the delivery platform's outbox)."""
    proxies = TrustedProxies(
        settings.server.trusted_proxies, ipv6_prefix_length=settings.server.ipv6_prefix_length
    )
    app = web.Application(
        middlewares=[
            error_middleware,
            ratelimit.address_middleware(proxies),
            chat_server.api_key_middleware,
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
    cometd = bayeux_server(settings, clock, proxies, metrics)
    vault = CredentialVault(db, clock, settings.security.credentials_key)
    http = HttpClient()  # one HTTP/1.1 session for the app's providers (APNs: its own HTTP/2)
    given = {**({"customhttp": provider} if provider else {}), **(providers or {})}
    context = ProviderContext(settings, clock, vault, http, publisher=cometd)
    providers = create_providers(context, given)
    dispatcher = Dispatcher(
        db, settings, clock, pipeline, router, providers, metrics, sources=sources
    )
    # Agent alerts (docs/agents.md): a source of the platform, its hooks remove dead tokens.
    presence = None if settings.agents.presence_url is None else PresenceSource(settings.agents)
    agents = AgentAlerts(
        db, settings, clock, metrics, agent_outbox or PlatformOutbox(dispatcher.poke), presence
    )
    if not sources or SOURCE not in sources:
        dispatcher.register_source(SOURCE, agents)
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
    app[AGENTS] = agents
    app[VAULT] = vault
    app[HEALTHY] = {}
    app[CALLBACKS] = CallbackService(db, settings, clock)  # issue 17: callbacks, a source
    app[CALLBACKS].poke = dispatcher.poke
    dispatcher.register_source("callback", CallbackHooks())
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

    # Every HTTP route is in chatpush/api/routes.py, with the scopes that may call it.
    routes.mount(app, routes.ROUTES)
    app[COMETD].add_routes(app, COMETD_PATH)
    setup_front(app, settings, metrics)  # chatpush serve's FrontRunner puts it before aiohttp
    install_push_authorizer(app)
    chat_cometd.install(app)
    # Other parts of the service plug in below, one setup_<thing>(app, settings, ...) call each,
    # with their routes (a list of routes.Route, mounted with routes.mount), middleware and
    # start-up/shutdown in their own module.
    setup_cors(app, settings)
    setup_admin(app, settings)
    setup_metrics(app)
    setup_widget(app, settings)

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
        await app[CALLBACKS].hand_over_commands()  # pull <-> [callback] cc_webhook_url
        await pipeline.start()
        await router.start()
        heartbeat_s = settings.delivery.heartbeat_interval_s
        tasks = [
            _supervise(app, "dispatcher", dispatcher.run),
            _supervise(app, "heartbeat", lambda: heartbeat.beat(router, clock, heartbeat_s)),
            _supervise(app, "callback-timers", app[CALLBACKS].run_timers),  # issue 17
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
    # Agent alerts' event stream (docs/agents.md): one connection across instances, if configured;
    # started after the database and the dispatcher, stopped before them.
    if presence is not None:

        async def agent_presence_ctx(app: web.Application) -> AsyncIterator[None]:
            await presence.start()
            yield
            await presence.close()

        app.cleanup_ctx.append(agent_presence_ctx)
    if settings.agents.stream_url is not None:
        stream = EventStream(settings.agents, clock, db, agents, metrics, instance_id)
        app[AGENT_STREAM] = stream

        async def agent_stream_ctx(app: web.Application) -> AsyncIterator[None]:
            task = _supervise(app, "agent-stream", stream.run)
            yield
            await stream.stop()
            await asyncio.gather(task, return_exceptions=True)

        app.cleanup_ctx.append(agent_stream_ctx)
    if housekeeping:
        app.cleanup_ctx.append(_housekeeping_ctx)
    return app


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


async def _housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    """APScheduler runs periodic chores, never per-chat timers (those live in the database)."""
    scheduler = AsyncIOScheduler()
    settings, chats, metrics = app[SETTINGS], app[CHATS], app[METRICS]
    purge_s, sweep_s = settings.chat.purge_interval_s, settings.delivery.sweep_interval_s
    trail_args = [app[DATABASE], app[CLOCK], settings.delivery.trail_retention_s]
    idle_args = [chats, metrics]
    jobs: list[tuple[str, Callable[..., Awaitable[None]], list[Any], int]] = [
        ("purge-ended-chats", chat_housekeeping.purge_ended_chats, [chats], purge_s),
        ("purge-delivery-trail", push_housekeeping.purge_trail, trail_args, sweep_s),
        ("expire-idle-push-chats", chat_housekeeping.end_idle_push_chats, idle_args, sweep_s),
        ("end-idle-chats", chat_housekeeping.end_idle_chats, idle_args, sweep_s),
        ("purge-agent-alerts", app[AGENTS].purge, [], sweep_s),
    ]
    for job_id, job, args, interval_s in jobs:
        scheduler.add_job(
            job,
            "interval",
            args=args,
            seconds=interval_s,
            id=job_id,
            max_instances=1,
            coalesce=True,
        )
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)
