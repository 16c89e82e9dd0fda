"""API keys with scopes: each caller gets what its key's scopes allow and nothing more.

A real app on 127.0.0.1 with four scoped keys and one old-style ``api_keys`` key (every scope);
CometD bridges are real aiocometd-noloop clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiocometd_noloop import Client, ConnectionType
from aiocometd_noloop.exceptions import ServerError
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.api.access import ROUTE_ACCESS
from chatpush.config import ConfigError, Settings, load_settings
from chatpush.errors import Code
from tests.cometd.test_comet_device import HandshakeExt
from tests.conftest import API_KEY, ChatDriver

AppClient = TestClient[web.Request, web.Application]

KEYS = {
    "chat-server": "agents-key-0123456789",
    "admin": "admin-key-0123456789",
    "bridge": "bridge-key-0123456789",
    "metrics": "metrics-key-0123456789",
}

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # aiocometd-noloop


def scoped(**extra: Any) -> dict[str, Any]:
    keys = [{"name": scope, "key": key, "scopes": [scope]} for scope, key in KEYS.items()]
    return {"keys": keys, "api_keys": [API_KEY], **extra}


@pytest.fixture
async def app(make_settings: Callable[..., Settings], make_client: Any) -> AppClient:
    settings = make_settings(
        security=scoped(),
        groups={"g1": {"nodes": ["n1"], "pushEnabled": "comet"}},
    )
    client: AppClient = await make_client(settings)
    return client


async def status(app: AppClient, method: str, path: str, key: str | None, **kw: Any) -> int:
    headers = {} if key is None else {"X-API-Key": key}
    response = await app.request(method, path, headers=headers, **kw)
    if response.status == 403:
        body = await response.json()
        codes = [entry["code"] for entry in body["errors"]]
        assert codes == [Code.MISSING_SCOPE if key in KEYS.values() else Code.INVALID_API_KEY]
    return response.status


async def test_each_key_reaches_only_its_scopes(app: AppClient) -> None:
    chat = ChatDriver(app)
    await chat.request_chat()
    cid = chat.chat_id
    party = {"type": "Agent", "nickname": "Bob"}
    event = {"participantId": 2, "type": "Message", "text": "hi"}
    calls: list[tuple[str, str, dict[str, Any], set[str]]] = [
        ("POST", f"/api/v1/chats/{cid}/parties", {"json": party}, {"chat-server"}),
        ("POST", f"/api/v1/chats/{cid}/events", {"json": event}, {"chat-server"}),
        ("GET", f"/api/v1/chats/{cid}", {}, {"chat-server", "admin"}),
        ("GET", "/api/v1/chats", {}, {"chat-server", "admin"}),
        ("GET", f"/api/v1/chats/{cid}/deliveries", {}, {"admin"}),
        ("GET", "/api/v1/nodes", {}, {"admin"}),
        ("GET", "/api/v1/credentials", {}, {"admin"}),
        ("GET", "/metrics", {}, {"metrics"}),
    ]
    for method, path, kw, allowed in calls:
        for scope, key in KEYS.items():
            answer = await status(app, method, path, key, **kw)
            expected = {200, 201} if scope in allowed else {403}
            assert answer in expected, (scope, method, path, answer)
        assert await status(app, method, path, API_KEY, **kw) in {200, 201}  # every scope
        assert await status(app, method, path, None, **kw) == 403
        assert await status(app, method, path, "wrong-key-0123456789", **kw) == 403
    # The admin key cannot end a chat; the chat-server key can.
    assert await status(app, "POST", f"/api/v1/chats/{cid}/end", KEYS["admin"]) == 403
    assert await status(app, "POST", f"/api/v1/chats/{cid}/end", KEYS["chat-server"]) == 200
    assert await status(app, "GET", "/api/v1/openapi.json", None) == 200


async def test_metrics_take_a_bearer_token_or_are_public_when_configured(
    app: AppClient, make_settings: Callable[..., Settings], make_client: Any
) -> None:
    bearer = {"Authorization": f"Bearer {KEYS['metrics']}"}
    assert (await app.get("/metrics", headers=bearer)).status == 200
    wrong = {"Authorization": f"Bearer {KEYS['admin']}"}
    assert (await app.get("/metrics", headers=wrong)).status == 403
    public: AppClient = await make_client(make_settings(security=scoped(public_metrics=True)))
    assert (await public.get("/metrics")).status == 200
    assert (await public.get("/api/v1/nodes")).status == 403  # nothing else opens


async def test_only_a_bridge_key_subscribes_to_every_device(app: AppClient) -> None:
    url = str(app.server.make_url("/genesys/cometd"))
    for scope, key in KEYS.items():
        ext = HandshakeExt({"apiKey": key})
        async with Client(
            url, ConnectionType.LONG_POLLING, connection_timeout=0, extensions=[ext]
        ) as client:
            if scope == "bridge":
                await client.subscribe("/_genesys/push/*")
                await client.subscribe("/_genesys/push/phone-1")
                continue
            for channel in ("/_genesys/push/*", "/_genesys/push/phone-1"):
                with pytest.raises(ServerError) as refused:
                    await client.subscribe(channel)
                assert refused.value.error == "403::subscription_denied", scope


def test_every_keyed_route_names_its_scopes(settings: Settings) -> None:
    from chatpush.app import create_app

    app = create_app(settings, housekeeping=False)
    table = app[ROUTE_ACCESS]  # filled from chatpush/api/routes.py
    unlisted = []
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or not (canonical.startswith("/api/") or canonical == "/metrics"):
            continue
        if (route.method, canonical) not in table.scopes and canonical not in table.public:
            unlisted.append(f"{route.method} {canonical}")
    assert not unlisted, f"routes without scopes in chatpush/api/routes.py: {unlisted}"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ({"name": "x", "key": "short", "scopes": ["admin"]}, "at least 16 characters"),
        ({"name": "x", "key": "k" * 20, "scopes": ["root"]}, "security.keys.0.scopes.0"),
        ({"name": "x", "key": "k" * 20, "scopes": []}, "security.keys.0.scopes"),
    ],
)
def test_bad_keys_stop_start_up_with_the_key_named(key: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(None, security={"keys": [key]})


async def test_refusals_are_counted_by_error_code(app: AppClient) -> None:
    for _ in range(3):
        assert await status(app, "GET", "/api/v1/nodes", "wrong-key-0123456789") == 403
    assert await status(app, "GET", "/api/v1/nodes", KEYS["chat-server"]) == 403
    answer = await app.get("/metrics", headers={"X-API-Key": KEYS["metrics"]})
    text = await answer.text()
    assert 'chatpush_requests_refused_total{code="110"} 3' in text
    assert f'chatpush_requests_refused_total{{code="{Code.MISSING_SCOPE}"}} 1' in text
