"""The admin console at ``/admin/`` (docs/admin.md): server-rendered pages for operators.

:func:`setup_admin` mounts it as a sub-application with its own middleware (sessions, CSRF,
security headers) when ``[admin] enabled = true``. Templates (Jinja2, autoescaped) and the small
stylesheet and script are package data of ``chatpush.admin``.
"""

from __future__ import annotations

from importlib import resources

import aiohttp_jinja2
import jinja2
from aiohttp import web

from chatpush.addresses import TrustedProxies
from chatpush.admin import views
from chatpush.admin.sessions import Sessions
from chatpush.api.access import ADMIN
from chatpush.api.keys import CLOCK, METRICS
from chatpush.api.ratelimit import ClientLimit, TokenBuckets
from chatpush.config import ConfigError, Settings


def setup_admin(app: web.Application, settings: Settings) -> None:
    """Mount the console on ``app`` if enabled; refuse to start if no key could log in."""
    admin_settings = settings.admin
    if not admin_settings.enabled:
        return
    security = settings.security
    if not security.api_keys and not any(ADMIN in key.scopes for key in security.keys):
        raise ConfigError(
            "admin.enabled = true needs an API key with the admin scope to log in with "
            '([[security.keys]] with scopes = ["admin"], or security.api_keys)'
        )
    clock = app[CLOCK]
    admin = web.Application(middlewares=[views.headers_middleware, views.session_middleware])
    aiohttp_jinja2.setup(
        admin,
        loader=jinja2.PackageLoader("chatpush.admin", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        context_processors=[],
    )
    environment = aiohttp_jinja2.get_env(admin)
    environment.globals["when"] = views.when
    admin[views.SESSIONS] = Sessions(admin_settings, clock)
    admin[views.PROXIES] = TrustedProxies(
        settings.server.trusted_proxies, ipv6_prefix_length=settings.server.ipv6_prefix_length
    )
    admin[views.LOGIN_LIMIT] = ClientLimit(
        "admin_login",
        "admin login attempts",
        TokenBuckets(
            clock,
            per_minute=admin_settings.login_attempts_per_minute,
            burst=admin_settings.login_burst,
            max_keys=settings.chat.max_tracked_addresses,
        ),
        app[METRICS],
    )
    views.add_routes(admin)
    static = resources.files("chatpush.admin").joinpath("static")
    admin.router.add_static("/static/", str(static), name="static")
    app.add_subapp(views.PREFIX, admin)
