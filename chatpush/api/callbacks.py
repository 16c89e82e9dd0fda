"""The GMS Callback API, the customer's side (docs/callbacks.md §3): create, query, reschedule,
cancel, queue position, availability, admin cancel. Errors answer in GMS's shape (§3.7) on
these paths. Anonymous, as in GMS: a callback's ``_id`` is the capability for it."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web

from chatpush.api import access
from chatpush.api.access import ADMIN
from chatpush.api.chat_server import json_body
from chatpush.api.errors import count_refusal
from chatpush.api.forms import read_form
from chatpush.api.keys import CLOCK, KEYS, METRICS, SETTINGS
from chatpush.callbacks.availability import MAX_DAYS, MAX_SLOTS, SlotRequest
from chatpush.callbacks.errors import (
    ApiKeyRequired,
    BadParameter,
    CallbackError,
    NotImplementedHere,
    gms_body,
)
from chatpush.callbacks.model import CallbackRecord, parse_time
from chatpush.callbacks.params import as_string
from chatpush.callbacks.service import CallbackService
from chatpush.errors import ChatpushError
from chatpush.store.callbacks import Condition

CALLBACKS = web.AppKey("callbacks", CallbackService)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FORM_TYPES = (
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
    "application/octet-stream",
    "",
)
MAX_QUERY_CONDITIONS = 20
MAX_HOST_CHARS = 255


class UnsupportedMediaType(CallbackError):
    gms_error = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415


def gms_errors(handler: Handler) -> Handler:
    """Answer any chatpush error in the §3.7 shape."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ChatpushError as exc:
            count_refusal(request.app[METRICS], exc)
            response = web.json_response(gms_body(exc), status=exc.http_status)
            if request.content.exception() is not None:
                response.force_close()
            return response

    return wrapped


async def read_params(request: web.Request) -> dict[str, str]:
    """The parameters of a body: a form (as the chat API reads one) or a JSON object of scalars,
    every value a string; ``null`` and ``""`` are absent (§3.1)."""
    content_type = request.content_type
    if content_type == "application/json":
        body = await json_body(request)
        if not isinstance(body, dict):
            raise BadParameter("a JSON body must be an object")
        params = {}
        for name, value in body.items():
            if isinstance(value, dict | list):
                raise BadParameter(f"{name[:60]}: values must be strings, numbers or booleans")
            if value is not None:
                params[name] = as_string(value)
    elif content_type in FORM_TYPES:
        form = await read_form(request)
        params = dict(form.values)
        for name, value in form.user_data.items():
            params.setdefault(f"userData[{name}]", value)
    else:
        raise UnsupportedMediaType(
            "the body must be a form (urlencoded, multipart, text/plain) or a JSON object"
        )
    return {name: value for name, value in params.items() if value != ""}


def base_url(request: web.Request) -> str:
    """``$(ExtURLBase)``: ``[callback] external_base_url``, else ``<scheme>://<Host>/genesys``."""
    configured = request.app[SETTINGS].callback.external_base_url
    if configured is not None:
        return configured
    host = request.host
    if not host or len(host) > MAX_HOST_CHARS or not host.isprintable() or "/" in host:
        raise BadParameter("the Host header is not a host name")
    return f"{request.scheme}://{host}/genesys"


def _records(records: list[CallbackRecord]) -> web.Response:
    return web.json_response([record.wire() for record in records])


def _conditions(request: web.Request) -> tuple[list[Condition], Literal["AND", "OR"]]:
    operand = "AND"
    conditions = []
    for name, value in request.query.items():
        if name == "operand":
            if value not in ("AND", "OR"):
                raise BadParameter("operand must be AND or OR")
            operand = value
            continue
        if not name or len(name) > 200:
            raise BadParameter("a query key is 1-200 characters")
        negated = value.startswith("!")
        conditions.append(Condition(name, value[1:] if negated else value, negated))
    if len(conditions) > MAX_QUERY_CONDITIONS:
        raise BadParameter(f"at most {MAX_QUERY_CONDITIONS} conditions")
    return conditions, operand  # type: ignore[return-value]


def _needs_key(request: web.Request) -> None:
    """Queries by properties show customer numbers: a key unless ``open_queries`` (§3.4)."""
    if request.app[SETTINGS].callback.open_queries:
        return
    if request.app[KEYS].caller(access.given_key(request)) is None:
        raise ApiKeyRequired("queries by properties need an X-API-Key")


@gms_errors
async def create(request: web.Request) -> web.Response:
    service = request.match_info["service"]
    callbacks = request.app[CALLBACKS]
    callbacks.check_service(service)
    params = await read_params(request)
    record = await callbacks.create(service, params, base_url(request))
    return web.json_response(callbacks.create_dialog(record))


@gms_errors
async def query_service(request: web.Request) -> web.Response:
    service = request.match_info["service"]
    request.app[CALLBACKS].check_service(service)
    conditions, operand = _conditions(request)
    _needs_key(request)
    return _records(await request.app[CALLBACKS].query(service, conditions, operand))


@gms_errors
async def query_all(request: web.Request) -> web.Response:
    callbacks = request.app[CALLBACKS]
    if set(request.query) == {"_id"}:
        record = await callbacks.get(request.query["_id"])
        return _records([] if record is None else [record])
    conditions, operand = _conditions(request)
    _needs_key(request)
    return _records(await callbacks.query(None, conditions, operand))


@gms_errors
async def update(request: web.Request) -> web.Response:
    service, callback_id = request.match_info["service"], request.match_info["callback_id"]
    callbacks = request.app[CALLBACKS]
    callbacks.check_service(service)
    params = await read_params(request)
    record = await callbacks.update(service, callback_id, params)
    return web.json_response(record.wire())


@gms_errors
async def cancel(request: web.Request) -> web.Response:
    service, callback_id = request.match_info["service"], request.match_info["callback_id"]
    record = await request.app[CALLBACKS].cancel(service, callback_id)
    return web.json_response(record.wire())


@gms_errors
async def queue_position(request: web.Request) -> web.Response:
    position = await request.app[CALLBACKS].queue_position(request.match_info["callback_id"])
    return web.json_response(position)


def _int_param(request: web.Request, name: str, low: int, high: int, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.lstrip("-").isdigit()) or len(raw) > 20:
        raise BadParameter(f"{name} must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameter(f"{name} must be from {low} to {high}")
    return value


@gms_errors
async def availability(request: web.Request) -> web.Response:
    service = request.match_info["service"]
    version = request.match_info["version"]
    callbacks = request.app[CALLBACKS]
    callbacks.check_service(service)
    if callbacks.options(service).cb_max_request_by_time_bucket is None:
        raise NotImplementedHere("this service has no _max_request_by_time_bucket: no slots")
    now_ms = request.app[CLOCK].now_ms()
    start_ms = now_ms
    end_ms: int | None = None
    if "start" in request.query:
        start_ms = parse_time("start", request.query["start"])
    if "end" in request.query:
        end_ms = parse_time("end", request.query["end"])
    if version == "2":
        limit_ms = 2**53
        if "start-ms" in request.query:
            start_ms = _int_param(request, "start-ms", 0, limit_ms, start_ms)
        if "end-ms" in request.query:
            end_ms = _int_param(request, "end-ms", 0, limit_ms, 0)
        if "timezone" in request.query:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(request.query["timezone"])
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise BadParameter("timezone is not an IANA time zone name") from None
    days = _int_param(request, "number-of-days", 1, MAX_DAYS, 1)
    if end_ms is None:
        end_ms = start_ms + days * 86_400_000
    if end_ms <= start_ms or end_ms - start_ms > MAX_DAYS * 86_400_000:
        raise BadParameter(f"end must be after start, at most {MAX_DAYS} days")
    max_slots = _int_param(request, "max-time-slots", 1, MAX_SLOTS, 100)
    report_busy = version == "2" and _int_param(request, "report-busy", 0, 1, 0) == 1
    slots = await callbacks.availability(
        service, SlotRequest(start_ms, end_ms, max_slots, report_busy)
    )
    return web.json_response(slots)


@gms_errors
async def admin_cancel(request: web.Request) -> web.Response:
    if not request.app[KEYS].has_scope(access.given_key(request), ADMIN):
        raise ApiKeyRequired("admin cancel needs an X-API-Key with the admin scope")
    if request.content_type != "application/json":
        raise UnsupportedMediaType('the body must be JSON: {"reason": "...", "ids": [...]}')
    body: Any = await json_body(request)
    if not isinstance(body, dict) or not set(body) <= {"reason", "ids"}:
        raise BadParameter('the body must be {"reason": "...", "ids": [...]}')
    ids, reason = body.get("ids"), body.get("reason")
    if not isinstance(ids, list) or not all(isinstance(each, str) for each in ids):
        raise BadParameter("ids must be a list of callback ids")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise BadParameter("reason must be a string of at most 1000 characters")
    cancelled, skipped = await request.app[CALLBACKS].admin_cancel(ids, reason)
    return web.json_response({"cancelled": cancelled, "skipped": skipped})


MAX_GMS_USER_CHARS = 256


@gms_errors
async def dialog(request: web.Request) -> web.Response:
    """§8: ``GET`` or ``POST /genesys/1/service/{_id}/{action}`` (GMS's Android sample GETs)."""
    gms_user = request.headers.get("gms_user", "")[:MAX_GMS_USER_CHARS]
    answer = await request.app[CALLBACKS].dialog(
        request.match_info["callback_id"],
        request.match_info["action"],
        base_url(request),
        gms_user if gms_user.isprintable() else "",
    )
    return web.json_response(answer)


# -- §6: the Notification API subset ---------------------------------------------------------------


async def _json_only(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise UnsupportedMediaType("the Notification API takes JSON only (application/json)")
    return await json_body(request)


@gms_errors
async def subscribe(request: web.Request) -> web.Response:
    """``POST /genesys/1/notification/subscription``: ``{"id"}`` (a renewal: the same one)."""
    body = await _json_only(request)
    with_key = request.app[KEYS].caller(access.given_key(request)) is not None
    subscription_id = await request.app[CALLBACKS].subscribe(body, with_key=with_key)
    return web.json_response({"id": subscription_id})


@gms_errors
async def unsubscribe(request: web.Request) -> web.Response:
    """``DELETE /genesys/1/notification/subscription/{id}``: the id is the capability."""
    subscription_id = request.match_info["subscription_id"]
    await request.app[CALLBACKS].unsubscribe(subscription_id)
    return web.json_response({"id": subscription_id})


@gms_errors
async def publish(request: web.Request) -> web.Response:
    """``POST /genesys/1/notification/publish`` (an API key, never a device's call)."""
    if request.app[KEYS].caller(access.given_key(request)) is None:
        raise ApiKeyRequired("publish needs an X-API-Key")
    body = await _json_only(request)
    event_id, matched = await request.app[CALLBACKS].publish(body)
    return web.json_response({"id": event_id, "matched": matched})
