"""Admin API for FCM and APNs credentials (docs/mobile.md), under ``/api/v1`` with ``X-API-Key``.

- ``PUT /api/v1/groups/{group}/credentials/{kind}``: store (replace) the group's ``fcm`` or
  ``apns`` credentials, or those of one of its named providers with ``?provider=NAME``. They are
  checked (a readable key of the right type, every field present) before anything is written.
- ``GET`` the same path, or ``GET /api/v1/credentials`` for all: never the secrets, only a few
  characters of each field and its length.
- ``DELETE`` the same path.
- ``POST /api/v1/groups/{group}/credentials/{kind}/test``: send one test notification to
  ``deviceToken`` with the stored credentials (or with ``credentials`` given in the body, to try
  them before storing) and answer the provider's verdict, its exact error included.

An FCM ``token_uri`` outside ``mobile.allowed_hosts`` is refused (400) when given, and never
requested when stored; a verdict's error carries only the provider's own error fields, and a
failed connection reads the same whatever the cause (the detail is logged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from chatpush.api.chat_server import json_body
from chatpush.api.keys import DISPATCHER, SETTINGS, VAULT
from chatpush.delivery.dispatcher import Dispatcher
from chatpush.errors import BadRequest, Code, NotFound
from chatpush.providers.base import CredentialKind, SendResult
from chatpush.push.credentials import credential_fields, kinds

MAX_NAME_CHARS = 200


def _address(request: web.Request) -> tuple[CredentialKind, str, str | None]:
    kind = request.match_info["kind"]
    if kind not in kinds():
        known = " or ".join(kinds())
        raise BadRequest(Code.INVALID_PARAMETER, f"unknown credentials kind {kind!r}: {known}")
    group = request.match_info["group"]
    if group not in request.app[SETTINGS].groups:
        raise NotFound(Code.UNKNOWN_GROUP, f"unknown node group {group!r}")
    provider = request.query.get("provider")
    if provider is not None and not (
        0 < len(provider) <= MAX_NAME_CHARS and provider.isprintable()
    ):
        raise BadRequest(Code.INVALID_PARAMETER, "provider must be 1-200 printable characters")
    return kind, group, provider


def _fields(request: web.Request, kind: CredentialKind, body: Any) -> dict[str, str]:
    try:
        return credential_fields(kind, body, request.app[SETTINGS].mobile)
    except ValueError as exc:
        raise BadRequest(Code.INVALID_PARAMETER, f"{kind} credentials: {exc}") from None


async def put_credentials(request: web.Request) -> web.Response:
    kind, group, provider = _address(request)
    fields = _fields(request, kind, await json_body(request))
    stored = await request.app[VAULT].put(kind, group, provider, fields)
    return web.json_response(stored.to_wire())


async def get_credentials(request: web.Request) -> web.Response:
    kind, group, provider = _address(request)
    stored = await request.app[VAULT].show(kind, group, provider)
    if stored is None:
        raise NotFound(Code.INVALID_PARAMETER, f"no {kind} credentials for this group/provider")
    return web.json_response(stored.to_wire())


async def delete_credentials(request: web.Request) -> web.Response:
    kind, group, provider = _address(request)
    if not await request.app[VAULT].remove(kind, group, provider):
        raise NotFound(Code.INVALID_PARAMETER, f"no {kind} credentials for this group/provider")
    return web.json_response({"deleted": True})


async def list_credentials(request: web.Request) -> web.Response:
    stored = await request.app[VAULT].show_all()
    return web.json_response({"credentials": [item.to_wire() for item in stored]})


async def test_credentials(request: web.Request) -> web.Response:
    kind, group, provider = _address(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest(Code.INVALID_PARAMETER, "body must be a JSON object")
    token = body.get("deviceToken")
    if not isinstance(token, str) or not token:
        raise BadRequest(Code.MISSING_PARAMETER, "deviceToken is required")
    sandbox = body.get("sandbox", False)
    if not isinstance(sandbox, bool):
        raise BadRequest(Code.INVALID_PARAMETER, "sandbox must be true or false")
    given = body.get("credentials")
    fields = (
        _fields(request, kind, given)
        if given is not None
        else await request.app[VAULT].lookup(kind, group, provider)
    )
    if fields is None:
        raise NotFound(Code.INVALID_PARAMETER, f"no {kind} credentials for this group/provider")
    result = await send_test(request.app[DISPATCHER], kind, fields, token, sandbox=sandbox)
    return web.json_response(_verdict(result))


async def send_test(
    dispatcher: Dispatcher, kind: str, fields: Mapping[str, str], token: str, *, sandbox: bool
) -> SendResult:
    """Send the test notification to ``token`` with ``fields`` through the registered provider
    that uses credentials of ``kind``: its verdict (this API and the admin console's test pane)."""
    sender = dispatcher.provider_for_credentials(kind)
    return await sender.test_credentials(fields, token, sandbox=sandbox)


def _verdict(result: SendResult) -> dict[str, Any]:
    return {
        "ok": result.outcome == "sent",
        "outcome": result.outcome,
        "httpStatus": result.http_status,
        "error": result.error,
        "latencyMs": result.latency_ms,
    }
