"""The admin console's pages and forms (docs/admin.md).

Every page needs a session (a login with an ``admin`` key); every POST needs the session's CSRF
token; GET never changes anything. A form's bad input renders the form again with a message and
changes nothing. What the console changes it changes through the same code as the API and the
CLI: the router's drain, the credential vault, the push pipeline's redrive (``rules.decide``),
the callback service's admin cancel, the agent registry's delete.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup

from chatpush.addresses import TrustedProxies
from chatpush.admin.sessions import Session, Sessions
from chatpush.agents.service import valid_conversation_id
from chatpush.api.access import ADMIN
from chatpush.api.agents import AGENTS
from chatpush.api.callbacks import CALLBACKS
from chatpush.api.credentials import send_test
from chatpush.api.errors import count_refusal
from chatpush.api.keys import (
    CHATS,
    CLOCK,
    DATABASE,
    DISPATCHER,
    KEYS,
    METRICS,
    PIPELINE,
    ROUTER,
    SETTINGS,
    VAULT,
)
from chatpush.api.ratelimit import ClientLimit
from chatpush.callbacks.errors import CallbackNotFound
from chatpush.callbacks.model import CANCELLED_BY_ADMIN, STATES, is_id
from chatpush.callbacks.pushes import key_of
from chatpush.errors import BadRequest, ChatpushError, Code, Forbidden, NotFound, RateLimited
from chatpush.providers.base import CredentialKind, SendResult
from chatpush.push.credentials import credential_fields, fields_of, kinds
from chatpush.store import console as queries
from chatpush.store import outbox, subscriptions
from chatpush.store.agents import MAX_TRAIL_PAGE

log = logging.getLogger("chatpush.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSIONS = web.AppKey("admin_sessions", Sessions)
LOGIN_LIMIT = web.AppKey("admin_login_limit", ClientLimit)
PROXIES = web.AppKey("admin_proxies", TrustedProxies)
SESSION: ContextVar[Session | None] = ContextVar("chatpush_admin_session", default=None)
"""The session of the request being handled (set by :func:`session_middleware`)."""
COOKIE = "chatpush_admin"
PREFIX = "/admin"
PUBLIC_PATHS = (f"{PREFIX}/login",)
MAX_SEARCH_CHARS = 256
"""A search or filter field longer than this is refused (400)."""
MAX_NOTE_CHARS = 1000
"""An admin cancel's note, as the API's ``reason`` takes it."""
MAX_FIELD_CHARS = 20_000
"""A form field longer than this is refused (a private key PEM is about 1,700-2,000)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

FIELD_LABELS: dict[str, str] = {
    "project_id": "Project ID",
    "client_email": "Client email",
    "private_key": "Private key (PEM)",
    "private_key_id": "Private key ID (optional)",
    "token_uri": "Token URI (optional; Google's by default)",
    "key_id": "Key ID",
    "team_id": "Team ID",
    "topic": "Topic (the app's bundle id)",
}
KIND_LABELS = {"fcm": "Firebase Cloud Messaging (FCM)", "apns": "Apple Push Notification service"}


# -- middleware ----------------------------------------------------------------------------------


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer of the console: a strict CSP, no framing, no caching."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No page without a session; no POST without the session's CSRF token; errors as pages."""
    if request.path == PREFIX:
        raise web.HTTPMovedPermanently(f"{PREFIX}/")
    sessions = request.app[SESSIONS]
    session = sessions.find(request.cookies.get(COOKIE))
    token = SESSION.set(session)
    try:
        return await _guarded(request, session, handler)
    finally:
        SESSION.reset(token)


async def _guarded(
    request: web.Request, session: Session | None, handler: Handler
) -> web.StreamResponse:
    public = request.path in PUBLIC_PATHS or request.path.startswith(f"{PREFIX}/static/")
    if session is None and not public:
        raise web.HTTPSeeOther(f"{PREFIX}/login")
    if session is not None and request.method == "POST" and not public:
        form = await request.post()
        token = form.get("csrf")
        if not Sessions.csrf_ok(session, token if isinstance(token, str) else None):
            count_refusal(request.config_dict[METRICS], Forbidden(Code.INVALID_PARAMETER, "csrf"))
            log.warning(
                "admin form refused: missing or wrong CSRF token",
                extra={"action": "admin_csrf_refused", "path": request.path},
            )
            return _error_page(
                request,
                403,
                "This form did not come from this console session (missing or wrong CSRF "
                "token). Nothing was changed. Reload the page and try again.",
            )
    try:
        return await handler(request)
    except ChatpushError as exc:
        count_refusal(request.config_dict[METRICS], exc)
        return _error_page(request, exc.http_status, str(exc))


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    return _render(request, "error.html", {"status": status, "message": message}, status=status)


# -- rendering -------------------------------------------------------------------------------------


def _render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    session: Session | None = SESSION.get()
    now_ms = request.config_dict[CLOCK].now_ms()
    flash = _take_flash(request)
    base = {
        "session": session,
        "csrf": session.csrf if session else "",
        "now_ms": now_ms,
        "flash": flash,
        "path": request.path,
    }
    response = aiohttp_jinja2.render_template(template, request, {**base, **context})
    response.set_status(status)
    return response


def _flash(request: web.Request, level: str, message: str) -> None:
    """A message for the next page this session shows (after a redirect)."""
    session: Session | None = SESSION.get()
    if session is not None:
        session.flash[:] = [*session.flash[-4:], (level, message)]


def _take_flash(request: web.Request) -> list[tuple[str, str]]:
    session: Session | None = SESSION.get()
    if session is None:
        return []
    taken, session.flash[:] = list(session.flash), []
    return taken


def when(now_ms: int, at_ms: int | None) -> Markup:
    """A time as people read it: ISO 8601 in UTC and how long ago (updated by admin.js)."""
    if at_ms is None:
        return Markup("—")
    iso = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="seconds")
    iso = iso.replace("+00:00", "Z")
    return Markup(
        '<time datetime="{iso}" data-ms="{ms}">{iso} <span class="ago">({ago})</span></time>'
    ).format(iso=iso, ms=at_ms, ago=relative(now_ms - at_ms))


def relative(delta_ms: int) -> str:
    seconds = abs(delta_ms) // 1000
    if seconds < 60:
        amount = f"{seconds} s"
    elif seconds < 3600:
        amount = f"{seconds // 60} min"
    elif seconds < 86400:
        amount = f"{seconds // 3600} h {seconds % 3600 // 60} min"
    else:
        amount = f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    return f"in {amount}" if delta_ms < 0 else f"{amount} ago"


# -- login ---------------------------------------------------------------------------------------


def _secure(request: web.Request) -> bool:
    """The browser reached us over https: directly, or through a trusted proxy that says so."""
    if request.secure:
        return True
    peer = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and request.app[PROXIES].trusts(peer)


async def login_page(request: web.Request) -> web.Response:
    if request.app[SESSIONS].find(request.cookies.get(COOKIE)) is not None:
        raise web.HTTPSeeOther(f"{PREFIX}/")
    return _render(request, "login.html", {"error": None})


async def login(request: web.Request) -> web.Response:
    metrics = request.config_dict[METRICS]
    try:
        request.app[LOGIN_LIMIT].check()
    except RateLimited as exc:
        count_refusal(metrics, exc)
        response = _render(request, "login.html", {"error": str(exc)}, status=429)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    form = await request.post()
    given = form.get("key")
    key = given if isinstance(given, str) else ""
    caller = request.config_dict[KEYS].caller(key) if 0 < len(key) <= 1000 else None
    if caller is None or ADMIN not in caller.scopes:
        code = Code.INVALID_API_KEY if caller is None else Code.MISSING_SCOPE
        count_refusal(metrics, Forbidden(code, "admin login"))
        log.warning(
            "admin login refused",
            extra={
                "action": "admin_login_refused",
                "reason": "wrong key" if caller is None else "no admin scope",
            },
        )
        message = (
            "That key is not an API key of this service."
            if caller is None
            else "That key lacks the admin scope."
        )
        return _render(request, "login.html", {"error": message}, status=401)
    _session, cookie = request.app[SESSIONS].create(caller.name)
    log.info(
        "admin login with key %s",
        caller.name,
        extra={"action": "admin_login", "key": caller.name},
    )
    response = web.HTTPSeeOther(f"{PREFIX}/")
    response.set_cookie(
        COOKIE,
        cookie,
        path=f"{PREFIX}/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    session = SESSION.get()
    if session is not None:
        request.app[SESSIONS].end(session)
    response = web.HTTPSeeOther(f"{PREFIX}/login")
    response.del_cookie(COOKIE, path=f"{PREFIX}/")
    raise response


# -- overview ------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    now_ms = request.config_dict[CLOCK].now_ms()

    def read(conn: Any) -> tuple[queries.Overview, dict[str, int], int]:
        return (
            queries.overview(conn, now_ms),
            queries.open_callbacks_by_state(conn),
            queries.device_count(conn),
        )

    data, callbacks_open, devices = await request.config_dict[DATABASE].read(read)
    peak = max((minute.total for minute in data.minutes), default=0)
    context = {
        "data": data,
        "peak": peak,
        "callbacks_open": callbacks_open,
        "open_states": [state for state in STATES if state != "COMPLETED"],
        "devices": devices,
    }
    return _render(request, "overview.html", context)


# -- nodes ---------------------------------------------------------------------------------------


async def nodes(request: web.Request) -> web.Response:
    router = request.config_dict[ROUTER]
    await router.refresh()
    pinned = await request.config_dict[DATABASE].read(queries.pinned_counts)
    groups: dict[str, list[Any]] = {}
    for node in router.nodes():
        groups.setdefault(node.group_name, []).append(node)
    timeout_s = request.config_dict[SETTINGS].delivery.node_timeout_s
    return _render(
        request, "nodes.html", {"groups": groups, "pinned": pinned, "timeout_s": timeout_s}
    )


async def _set_drained(request: web.Request, drained: bool) -> web.Response:
    name = request.match_info["node"]
    router = request.config_dict[ROUTER]
    await router.refresh()
    # Only a node the router knows: a name no database can hold (a NUL) is not sent to one.
    known = {node.name for node in router.nodes()}
    if name not in known or not await router.set_drained(name, drained):
        raise NotFound(Code.INVALID_PARAMETER, f"There is no node {name!r}. Nothing was changed.")
    _flash(request, "ok", f"Node {name} {'drained' if drained else 'undrained'}.")
    raise web.HTTPSeeOther(f"{PREFIX}/nodes")


async def drain(request: web.Request) -> web.Response:
    return await _set_drained(request, True)


async def undrain(request: web.Request) -> web.Response:
    return await _set_drained(request, False)


# -- chats ---------------------------------------------------------------------------------------


async def chats(request: web.Request) -> web.Response:
    query = request.query.get("q", "").strip()
    by = request.query.get("by", "chat")
    state = request.query.get("state", "")
    error = None
    if by not in ("chat", "device"):
        error = "Search by chat id or by device id."
    elif state and state not in queries.CHAT_STATES:
        error = f"State must be one of: {', '.join(queries.CHAT_STATES)}."
    elif len(query) > 256 or not query.isprintable():
        error = "The search text must be at most 256 printable characters."
    found: list[queries.FoundChat] = []
    if error is None:
        found = await request.config_dict[DATABASE].read(
            lambda conn: queries.search_chats(
                conn,
                chat_id=query if by == "chat" else None,
                device_id=query if by == "device" else None,
                state=state or None,
            )
        )
    context = {
        "found": found,
        "q": query,
        "by": by,
        "state": state,
        "states": queries.CHAT_STATES,
        "error": error,
        "limit": queries.MAX_ROWS,
    }
    return _render(request, "chats.html", context, status=400 if error else 200)


async def chat(request: web.Request) -> web.Response:
    chat_id = request.match_info["chat_id"]
    if len(chat_id) > 64:
        raise NotFound(Code.UNKNOWN_CHAT, "There is no such chat.")
    state = await request.config_dict[CHATS].read_chat(chat_id, 1, 1000)

    def read(conn: Any) -> tuple[Any, Any, Any]:
        return (
            subscriptions.get_subscription(conn, chat_id),
            outbox.pending_for_chat(conn, chat_id),
            queries.trail_of(conn, chat_id),
        )

    subscription, pending, trail = await request.config_dict[DATABASE].read(read)
    context = {
        "chat": state.chat,
        "parties": state.parties,
        "events": state.events,
        "subscription": subscription,
        "pending": pending,
        "trail": trail,
    }
    return _render(request, "chat.html", context)


async def redrive(request: web.Request) -> web.Response:
    chat_id = request.match_info["chat_id"]
    redriven = await request.config_dict[PIPELINE].redrive(chat_id)
    if redriven is None:
        raise NotFound(Code.UNKNOWN_CHAT, "This chat has no push subscription to redrive.")
    was, decision = redriven
    if was == "failed":
        trigger = decision.trigger
        what = (
            f"a {'final ' if trigger.final else ''}trigger for position {trigger.position} "
            "was queued"
            if trigger is not None
            else "nothing is waiting to be notified"
        )
        _flash(request, "ok", f"Subscription redriven: it is active again and {what}.")
        log.info(
            "subscription of chat %s redriven",
            chat_id,
            extra={"action": "subscription_redriven", "chat_id": chat_id},
        )
    else:
        _flash(
            request,
            "error",
            f"Only a failed subscription can be redriven; this one is {was}. Nothing was changed.",
        )
    raise web.HTTPSeeOther(f"{PREFIX}/chats/{chat_id}")


# -- callbacks -------------------------------------------------------------------------------------

CALLBACK_FILTERS = ("open", *STATES)


def _field(text: str) -> bool:
    return len(text) <= MAX_SEARCH_CHARS and text.isprintable()


def _cursor(raw: str) -> tuple[int, str] | None:
    """``before=<created ms>.<id>`` of the "Older" link; None if it is not one."""
    at, _, last_id = raw.partition(".")
    if not (at.isascii() and at.isdigit() and len(at) <= 15 and is_id(last_id)):
        return None
    return int(at), last_id


async def callbacks(request: web.Request) -> web.Response:
    service = request.query.get("service", "").strip()
    state = request.query.get("state", "")
    raw_before = request.query.get("before", "")
    before = _cursor(raw_before) if raw_before else None
    error = None
    if not _field(service):
        error = f"The service name must be at most {MAX_SEARCH_CHARS} printable characters."
    elif state and state not in CALLBACK_FILTERS:
        error = f"State must be one of: {', '.join(CALLBACK_FILTERS)}."
    elif raw_before and before is None:
        error = "That is not a page of this list: start again from the first page."
    page = queries.CallbackPage([], None)
    if error is None:
        page = await request.config_dict[DATABASE].read(
            lambda conn: queries.search_callbacks(
                conn, service_name=service or None, state=state or None, before=before
            )
        )
    older = None
    if page.older is not None:
        query = {"service": service, "state": state, "before": "{}.{}".format(*page.older)}
        older = (
            request.app.router["callbacks"]
            .url_for()
            .with_query({name: value for name, value in query.items() if value})
        )
    context = {
        "page": page,
        "service": service,
        "state": state,
        "states": CALLBACK_FILTERS,
        "paged": before is not None,
        "older": older,
        "error": error,
        "limit": queries.CALLBACK_PAGE,
    }
    return _render(request, "callbacks.html", context, status=400 if error else 200)


async def _callback_page(
    request: web.Request, callback_id: str, *, status: int = 200, error: str | None = None
) -> web.Response:
    service = request.config_dict[CALLBACKS]
    record = await service.get(callback_id)
    if record is None:
        raise NotFound(Code.INVALID_PARAMETER, f"There is no callback {callback_id[:64]!r}.")
    options, route = service.in_effect(record)
    found = await request.config_dict[DATABASE].read(
        queries.callback_trail, record.id, key_of(record)
    )
    context = {
        "record": record,
        "wire": record.wire(),
        "device_hash": queries.token_hash(record.device.id) if record.device else None,
        "options": options,
        "route": route,
        "found": found,
        "cancellable": record.state not in ("COMPLETED", "PROCESSING"),
        "error": error,
        "note_chars": MAX_NOTE_CHARS,
        "trail_limit": queries.CALLBACK_TRAIL_ROWS,
    }
    return _render(request, "callback.html", context, status=status)


async def callback(request: web.Request) -> web.Response:
    return await _callback_page(request, request.match_info["callback_id"])


async def cancel_callback(request: web.Request) -> web.Response:
    """CALLBACKS §3 admin cancel, for one callback: ``CANCELLED_BY_ADMIN``, the same code as
    ``POST /genesys/1/admin/callback/cancel``; a callback it cannot cancel is a 409 message."""
    callback_id = request.match_info["callback_id"]
    form = await request.post()
    raw_note = form.get("note")
    note = raw_note.strip() if isinstance(raw_note, str) else ""
    if len(note) > MAX_NOTE_CHARS or not note.isprintable():
        error = f"The note must be at most {MAX_NOTE_CHARS} printable characters. Nothing changed."
        return await _callback_page(request, callback_id, status=400, error=error)
    service = request.config_dict[CALLBACKS]
    cancelled, _skipped = await service.admin_cancel([callback_id], note or None)
    if not cancelled:
        record = await service.get(callback_id)
        if record is None:
            raise CallbackNotFound(callback_id)
        why = (
            "it is being handled by an agent (PROCESSING)"
            if record.state == "PROCESSING"
            else f"it is completed already ({record.reason or 'no reason'})"
        )
        error = f"This callback cannot be cancelled: {why}. Nothing was changed."
        return await _callback_page(request, callback_id, status=409, error=error)
    log.info(
        "callback %s cancelled from the admin console",
        callback_id,
        extra={"action": "callback_admin_cancelled", "callback_id": callback_id},
    )
    _flash(request, "ok", f"Callback cancelled ({CANCELLED_BY_ADMIN}).")
    raise web.HTTPSeeOther(request.app.router["callback"].url_for(callback_id=callback_id))


# -- agents ----------------------------------------------------------------------------------------


async def agents(request: web.Request) -> web.Response:
    prefix = request.query.get("q", "").strip()
    after = request.query.get("after", "")
    error = None
    if not (_field(prefix) and _field(after)):
        error = f"The agent id must be at most {MAX_SEARCH_CHARS} printable characters."

    def read(conn: Any) -> tuple[queries.AgentPage, list[tuple[str, int]]]:
        found = (
            queries.agents_with_devices(conn, prefix=prefix, after=after)
            if error is None
            else queries.AgentPage([], None)
        )
        return found, queries.recent_conversations(conn)

    page, recent = await request.config_dict[DATABASE].read(read)
    following = None
    if page.next_after is not None:
        query = {"after": page.next_after, **({"q": prefix} if prefix else {})}
        following = request.app.router["agents"].url_for().with_query(query)
    context = {
        "page": page,
        "recent": recent,
        "q": prefix,
        "paged": bool(after),
        "following": following,
        "error": error,
        "limit": queries.AGENT_PAGE,
        "hash_chars": queries.TOKEN_HASH_CHARS,
    }
    return _render(request, "agents.html", context, status=400 if error else 200)


async def delete_device(request: web.Request) -> web.Response:
    """Remove one registered device: the API's ``DELETE /api/v1/agents/{user}/devices/{id}``."""
    user_id, device_id = request.match_info["user_id"], request.match_info["device_id"]
    try:
        await request.config_dict[AGENTS].delete(user_id, device_id)
    except BadRequest:
        raise NotFound(
            Code.INVALID_PARAMETER, "There is no such agent. Nothing was changed."
        ) from None
    log.info(
        "device %s of agent %s removed from the admin console",
        device_id,
        user_id,
        extra={"action": "agent_device_removed", "user_id": user_id},
    )
    _flash(request, "ok", f"Device {device_id} of agent {user_id} removed.")
    raise web.HTTPSeeOther(request.app.router["agents"].url_for().with_query({"q": user_id}))


async def find_conversation(request: web.Request) -> web.Response:
    """The agents page's "Open" form: on to the conversation's page."""
    conversation_id = request.query.get("id", "").strip()
    if not conversation_id:
        raise web.HTTPSeeOther(request.app.router["agents"].url_for())
    if not _field(conversation_id):
        raise NotFound(Code.INVALID_PARAMETER, "There is no such conversation.")
    raise web.HTTPSeeOther(
        request.app.router["conversation"].url_for(conversation_id=conversation_id)
    )


async def conversation(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    missing = NotFound(
        Code.INVALID_PARAMETER, f"No agent alert of conversation {conversation_id[:128]!r}."
    )
    try:
        valid_conversation_id(conversation_id)
    except BadRequest:
        raise missing from None
    view = await request.config_dict[AGENTS].conversation(conversation_id)
    if not view.rings and not view.trail:
        raise missing
    rings = [
        {
            "user_id": ring.user_id,
            "device_id": ring.device_id,
            "platform": ring.device_type,
            "token_hash": queries.token_hash(ring.token),
            "message_id": ring.message_id,
            "rung_at_ms": ring.rung_at_ms,
            "ended_at_ms": ring.cancelled_at_ms,
        }
        for ring in view.rings
    ]
    context = {
        "conversation_id": conversation_id,
        "rings": rings,
        "trail": [entry for _row_id, entry in view.trail],
        "trail_limit": MAX_TRAIL_PAGE,
    }
    return _render(request, "conversation.html", context)


# -- credentials ---------------------------------------------------------------------------------


def _targets(request: web.Request) -> list[tuple[str, str | None]]:
    """Every (group, named provider) that may hold credentials."""
    groups = request.config_dict[SETTINGS].groups
    return [
        (name, provider)
        for name, group in sorted(groups.items())
        for provider in [None, *sorted(group.providers)]
    ]


def _selection(request: web.Request, values: Any) -> tuple[str, str | None, CredentialKind] | str:
    """(group, provider, kind) named by a form or query, or what is wrong with it."""
    group = values.get("group") or ""
    provider = values.get("provider") or None
    kind = values.get("kind") or "fcm"
    if kind not in kinds():
        return "Choose FCM or APNs."
    if (group, provider) not in _targets(request):
        return "Choose a node group (and named provider) of this service."
    return group, provider, kind


async def credentials_page(request: web.Request) -> web.Response:
    targets = _targets(request)
    chosen = (
        _selection(request, request.query)
        if "group" in request.query
        else (targets[0] + ("fcm",) if targets else "No node group is configured.")
    )
    return await _credentials(request, chosen)


async def _credentials(
    request: web.Request,
    chosen: tuple[str, str | None, CredentialKind] | str,
    *,
    status: int = 200,
    error: str | None = None,
    typed: dict[str, str] | None = None,
    verdict: SendResult | None = None,
    token: str = "",
    sandbox: bool = False,
) -> web.Response:
    vault = request.config_dict[VAULT]
    stored_all = await vault.show_all()
    context: dict[str, Any] = {
        "targets": _targets(request),
        "stored_all": stored_all,
        "vault_ready": vault.configured,
        "labels": FIELD_LABELS,
        "kind_labels": KIND_LABELS,
        "error": error,
        "typed": typed or {},
        "verdict": verdict,
        "token": token,
        "sandbox": sandbox,
        "group": None,
        "provider": None,
        "kind": None,
    }
    if isinstance(chosen, str):
        context["error"] = error or chosen
        status = 400 if status == 200 and "group" in request.query else status
    else:
        group, provider, kind = chosen
        context.update(
            group=group,
            provider=provider,
            kind=kind,
            fields=fields_of(kind),
            stored=await vault.show(kind, group, provider),
        )
    return _render(request, "credentials.html", context, status=status)


async def save_credentials(request: web.Request) -> web.Response:
    form = await request.post()
    chosen = _selection(request, form)
    if isinstance(chosen, str):
        return await _credentials(request, chosen, status=400)
    group, provider, kind = chosen
    # A browser sends a textarea's lines ending in CRLF: a PEM key is stored with LF, as typed.
    given = {
        name: value.strip() if name != "private_key" else value.replace("\r\n", "\n").strip() + "\n"
        for name in fields_of(kind)
        if isinstance(value := form.get(name), str) and value.strip()
    }
    typed = {name: value for name, value in given.items() if name != "private_key"}
    if any(len(value) > MAX_FIELD_CHARS for value in given.values()):
        error = f"A field is longer than {MAX_FIELD_CHARS} characters. Nothing was saved."
        return await _credentials(request, chosen, status=400, error=error, typed=typed)
    try:
        fields = credential_fields(kind, given, request.config_dict[SETTINGS].mobile)
    except ValueError as exc:
        error = f"{kind.upper()} credentials: {exc}. Nothing was saved."
        return await _credentials(request, chosen, status=400, error=error, typed=typed)
    try:
        await request.config_dict[VAULT].put(kind, group, provider, fields)
    except ChatpushError as exc:
        return await _credentials(
            request, chosen, status=exc.http_status, error=f"{exc} Nothing was saved.", typed=typed
        )
    log.info(
        "%s credentials of group %s saved from the admin console",
        kind,
        group,
        extra={"action": "credentials_saved", "group": group},
    )
    _flash(request, "ok", f"{kind.upper()} credentials saved.")
    query = {"group": group, "kind": kind, **({"provider": provider} if provider else {})}
    raise web.HTTPSeeOther(request.app.router["credentials"].url_for().with_query(query))


async def test_credentials(request: web.Request) -> web.Response:
    form = await request.post()
    chosen = _selection(request, form)
    if isinstance(chosen, str):
        return await _credentials(request, chosen, status=400)
    group, provider, kind = chosen
    raw_token = form.get("device_token")
    token = raw_token.strip() if isinstance(raw_token, str) else ""
    sandbox = form.get("environment") == "sandbox"
    if not token or len(token) > 4096 or not token.isprintable():
        error = "Type the device token to send the test notification to."
        return await _credentials(request, chosen, status=400, error=error, sandbox=sandbox)
    fields = await request.config_dict[VAULT].lookup(kind, group, provider)
    if fields is None:
        error = f"No {kind.upper()} credentials are stored for this group to test."
        return await _credentials(
            request, chosen, status=400, error=error, token=token, sandbox=sandbox
        )
    verdict = await send_test(request.config_dict[DISPATCHER], kind, fields, token, sandbox=sandbox)
    return await _credentials(request, chosen, verdict=verdict, token=token, sandbox=sandbox)


# -- routes --------------------------------------------------------------------------------------


def add_routes(admin: web.Application) -> None:
    admin.router.add_get("/login", login_page, name="login")
    admin.router.add_post("/login", login)
    admin.router.add_post("/logout", logout)
    admin.router.add_get("/", overview, name="overview")
    admin.router.add_get("/nodes", nodes, name="nodes")
    admin.router.add_post("/nodes/{node}/drain", drain)
    admin.router.add_post("/nodes/{node}/undrain", undrain)
    admin.router.add_get("/chats", chats, name="chats")
    admin.router.add_get("/chats/{chat_id}", chat, name="chat")
    admin.router.add_post("/chats/{chat_id}/redrive", redrive)
    admin.router.add_get("/callbacks", callbacks, name="callbacks")
    admin.router.add_get("/callbacks/{callback_id}", callback, name="callback")
    admin.router.add_post("/callbacks/{callback_id}/cancel", cancel_callback)
    admin.router.add_get("/agents", agents, name="agents")
    admin.router.add_post("/agents/{user_id}/devices/{device_id}/delete", delete_device)
    admin.router.add_get("/conversations", find_conversation)
    admin.router.add_get("/conversations/{conversation_id}", conversation, name="conversation")
    admin.router.add_get("/credentials", credentials_page, name="credentials")
    admin.router.add_post("/credentials/save", save_credentials)
    admin.router.add_post("/credentials/test", test_credentials)
