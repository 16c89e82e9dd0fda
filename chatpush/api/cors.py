"""Cross-origin access (CORS) for chat widgets and other pages served from elsewhere.

A page on ``https://shop.example.com`` may call the Chat API v2 and CometD of chatpush only if
the answers say that origin may read them. Which paths are open, and to whom:

    /genesys/2/chat/...      server.cors_origins        POST          exact origins or "*"
    /genesys/cometd[/...]    server.cors_origins        POST          exact origins or "*"
    /api/...                 server.cors_admin_origins  GET POST PUT DELETE, X-API-Key; exact
    everything else          never (/metrics, /healthz, /readyz, the admin pages)

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) on an open path
  is answered here, before API keys, rate limits or routing: 204 with the allowed methods and
  headers and ``Access-Control-Max-Age`` when the origin, the method and every requested header
  are allowed; otherwise 403 without any CORS header (the browser then refuses the call). It
  reads no body and changes nothing.
- Every other answer on an open path, error answers included (400, 404, 413, 429, 503: a
  browser hides an answer without ``Access-Control-Allow-Origin`` from the page, so a widget
  could not read why), gets ``Vary: Origin`` and, for an allowed ``Origin``, the origin and the
  headers a widget reads (``Retry-After``). That is done when the answer is prepared
  (``on_response_prepare``), so it covers answers made by any middleware or by aiohttp itself.
- Credentials (cookies): chatpush reads none on these paths. ``Access-Control-Allow-Credentials``
  is sent on CometD for an exact origin only, because the official ``cometd`` JavaScript client
  sends its long-polling requests with ``withCredentials``; never with ``"*"``, never elsewhere.
- Websockets are not subject to CORS: a page anywhere can open ``/genesys/cometd`` as a websocket,
  as it could before; CometD needs no cookie, so that gives it nothing a script could not do
  from its own server.

aiohttp-cors was not used: it is configured route by route (each route registered with it once
every module has added its own), so a route added later without it is silently closed, and it
marks only answers of routes it knows, not the router's own 404 and 405. The policy here is by
path prefix, holds in one screen, and needs nothing from the modules that add routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from chatpush.config import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CHAT_PREFIX = "/genesys/2/chat/"
COMETD_PATH = "/genesys/cometd"
ADMIN_PREFIX = "/api/"
EXPOSED_HEADERS = "Retry-After"
"""Read by a widget besides the CORS-safelisted ones (Content-Type, Content-Length...)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may call one group of paths from a browser, and how."""

    origins: frozenset[str]
    any_origin: bool
    methods: tuple[str, ...]
    headers: frozenset[str]
    """Request headers a page may set, lower case."""
    credentials: bool

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.lower() in self.origins

    def allow_origin(self, origin: str) -> str:
        return "*" if self.any_origin else origin


class CorsPolicies:
    def __init__(self, settings: Settings) -> None:
        server = settings.server
        any_origin = "*" in server.cors_origins
        origins = frozenset(o for o in server.cors_origins if o != "*")
        self.max_age_s = server.cors_max_age_s
        self.chat: Policy | None = None
        self.cometd: Policy | None = None
        self.admin: Policy | None = None
        if server.cors_origins:
            form_headers = frozenset({"content-type", "x-requested-with"})
            self.chat = Policy(origins, any_origin, ("POST",), form_headers, credentials=False)
            self.cometd = Policy(
                origins, any_origin, ("POST",), form_headers, credentials=not any_origin
            )
        if server.cors_admin_origins:
            self.admin = Policy(
                frozenset(server.cors_admin_origins),
                any_origin=False,
                methods=("GET", "POST", "PUT", "DELETE"),
                headers=frozenset({"content-type", "x-api-key", "authorization"}),
                credentials=False,
            )

    @property
    def enabled(self) -> bool:
        return any((self.chat, self.cometd, self.admin))

    def for_path(self, path: str) -> Policy | None:
        if path.startswith(CHAT_PREFIX):
            return self.chat
        if path == COMETD_PATH or path.startswith(COMETD_PATH + "/"):
            return self.cometd
        if path.startswith(ADMIN_PREFIX):
            return self.admin
        return None


def _add_vary(response: web.StreamResponse, *names: str) -> None:
    existing = response.headers.get(hdrs.VARY)
    if not existing:
        response.headers[hdrs.VARY] = ", ".join(names)
        return
    present = {part.strip().lower() for part in existing.split(",")}
    wanted = [name for name in names if name.lower() not in present]
    if wanted:
        response.headers[hdrs.VARY] = ", ".join([existing, *wanted])


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def _preflight(request: web.Request, policy: Policy, max_age_s: int) -> web.Response:
    origin = request.headers[hdrs.ORIGIN]
    method = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD]
    asked = {
        name.strip().lower()
        for name in request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "").split(",")
        if name.strip()
    }
    vary = (hdrs.ORIGIN, hdrs.ACCESS_CONTROL_REQUEST_METHOD, hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
    if not policy.allows(origin) or method not in policy.methods or not asked <= policy.headers:
        # Plain text for the browser's network panel; a page never sees it.
        response = web.Response(status=403, text="CORS preflight refused\n")
        _add_vary(response, *vary)
        return response
    response = web.Response(status=204)
    headers = response.headers
    headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = policy.allow_origin(origin)
    headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ", ".join(policy.methods)
    headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(sorted(policy.headers))
    headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(max_age_s)
    if policy.credentials:
        headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
    _add_vary(response, *vary)
    return response


def setup_cors(app: web.Application, settings: Settings) -> None:
    """Answer preflights and mark answers on the open paths; nothing at all when none is open."""
    policies = CorsPolicies(settings)
    if not policies.enabled:
        return

    @web.middleware
    async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_preflight(request):
            policy = policies.for_path(request.path)
            if policy is not None:
                return _preflight(request, policy, policies.max_age_s)
        return await handler(request)

    async def mark(request: web.Request, response: web.StreamResponse) -> None:
        policy = policies.for_path(request.path)
        if policy is None or _is_preflight(request):
            return  # not open, or a preflight answer, complete as it is
        _add_vary(response, hdrs.ORIGIN)
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or not policy.allows(origin):
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = policy.allow_origin(origin)
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS
        if policy.credentials:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"

    # First of all middlewares: a preflight carries no API key and must not be counted or
    # refused by the ones that follow.
    app.middlewares.insert(0, cors_preflight)
    app.on_response_prepare.append(mark)
