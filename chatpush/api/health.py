"""Liveness and readiness: ``/healthz`` (the process answers) and ``/readyz`` (the database
answers and every background task runs)."""

from __future__ import annotations

from aiohttp import web

from chatpush import __version__
from chatpush.api.keys import DATABASE
from chatpush.errors import ChatpushError

HEALTHY = web.AppKey("healthy", dict)
"""Background task name -> running; the app's supervisor (``chatpush/app.py``) keeps it."""


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


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
