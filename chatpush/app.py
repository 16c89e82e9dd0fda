"""Wiring only: ``create_app`` builds the aiohttp application from settings and collaborators."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from chatpush.api import chat_v2, server
from chatpush.api.errors import error_middleware
from chatpush.api.keys import CHATS, CLOCK, DATABASE, SETTINGS
from chatpush.chat.service import ChatService
from chatpush.clock import Clock, SystemClock
from chatpush.config import Settings
from chatpush.errors import ChatpushError
from chatpush.store.database import Database

log = logging.getLogger("chatpush.app")


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    housekeeping: bool = True,
) -> web.Application:
    """Build the service. Tests pass a fake ``clock`` and may share a ``database``."""
    app = web.Application(
        middlewares=[error_middleware, server.api_key_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    clock = clock or SystemClock()
    owns_database = database is None
    db = database or Database.from_settings(settings.database)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[DATABASE] = db
    app[CHATS] = ChatService(db, settings, clock)

    chat_v2.add_routes(app)
    server.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        if owns_database:
            await db.close()

    app.cleanup_ctx.append(database_ctx)
    if housekeeping:
        app.cleanup_ctx.append(_housekeeping_ctx)
    return app


async def _housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    """APScheduler runs periodic chores, never per-chat timers (those live in the database)."""
    scheduler = AsyncIOScheduler()
    scheduler.add_job(
        _purge_ended_chats,
        "interval",
        args=[app],
        seconds=app[SETTINGS].chat.purge_interval_s,
        id="purge-ended-chats",
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


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[DATABASE].ping()
    except ChatpushError:
        return web.json_response({"status": "database unavailable"}, status=503)
    return web.json_response({"status": "ok"})
