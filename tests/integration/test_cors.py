"""CORS as a browser sees it: real HTTP requests to the running app, with the headers a browser
sends (``Origin``, preflight ``OPTIONS``), and the answers it needs to let a page read them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.config import Settings
from tests.conftest import API_KEY, ChatDriver

Client = TestClient[web.Request, web.Application]

SHOP = "https://shop.example.com"
ADMIN_PAGE = "https://ops.example.com"
STRANGER = "https://evil.example.net"
CHAT = "/genesys/2/chat/support"


def preflight_headers(origin: str, method: str = "POST", headers: str = "") -> dict[str, str]:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return asked


def vary(response: Any) -> set[str]:
    return {part.strip().lower() for part in response.headers.get("Vary", "").split(",")}


@pytest.fixture
async def shop_client(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> Client:
    settings = make_settings(
        server={"cors_origins": [SHOP + ":443"], "cors_max_age_s": 120},
        chat={"chats_per_address_burst": 3, "chats_per_address_per_minute": 1},
    )
    client: Client = await make_client(settings)
    return client


async def _chats(client: Client) -> list[Any]:
    response = await client.get("/api/v1/chats", headers={"X-API-Key": API_KEY})
    assert response.status == 200
    return list((await response.json())["chats"])


# -- preflight ------------------------------------------------------------------------------------


async def test_a_preflight_from_an_allowed_origin_is_answered(shop_client: Client) -> None:
    for path in (CHAT, f"{CHAT}/0123456789ABCDEF/send", f"{CHAT}/x/no-such-operation"):
        response = await shop_client.options(
            path, headers=preflight_headers(SHOP, "POST", "Content-Type, X-Requested-With")
        )
        assert response.status == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == SHOP
        assert response.headers["Access-Control-Allow-Methods"] == "POST"
        allowed = response.headers["Access-Control-Allow-Headers"].lower().split(", ")
        assert {"content-type", "x-requested-with"} <= set(allowed)
        assert response.headers["Access-Control-Max-Age"] == "120"
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert {"origin", "access-control-request-method"} <= vary(response)
        assert await response.read() == b""


async def test_preflights_take_no_token_and_write_nothing(shop_client: Client) -> None:
    # The Request Chat limit here is 3 at once: twenty preflights must not spend them.
    for _ in range(20):
        response = await shop_client.options(CHAT, headers=preflight_headers(SHOP))
        assert response.status == 204
    assert await _chats(shop_client) == []
    for _ in range(3):
        response = await shop_client.post(CHAT, data={"nickname": "Ann"}, headers={"Origin": SHOP})
        assert response.status == 200


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        (STRANGER, "POST", ""),
        ("null", "POST", ""),
        (SHOP + ".evil.example.net", "POST", ""),
        ("http://shop.example.com", "POST", ""),  # another scheme is another origin
        (SHOP, "PUT", ""),
        (SHOP, "POST", "Content-Type, X-Custom"),
    ],
)
async def test_a_refused_preflight_carries_no_cors_header(
    shop_client: Client, origin: str, method: str, headers: str
) -> None:
    response = await shop_client.options(CHAT, headers=preflight_headers(origin, method, headers))
    assert response.status == 403
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert "origin" in vary(response)
    assert await _chats(shop_client) == []


# -- answers --------------------------------------------------------------------------------------


async def test_answers_to_an_allowed_origin_are_readable(shop_client: Client) -> None:
    response = await shop_client.post(CHAT, data={"nickname": "Ann"}, headers={"Origin": SHOP})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert "retry-after" in response.headers["Access-Control-Expose-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "origin" in vary(response)
    body = await response.json()
    refresh = await shop_client.post(
        f"{CHAT}/{body['chatId']}/refresh",
        data={"secureKey": body["secureKey"]},
        headers={"Origin": SHOP},
    )
    assert refresh.status == 200
    assert refresh.headers["Access-Control-Allow-Origin"] == SHOP


async def test_answers_to_another_origin_say_nothing_but_vary(shop_client: Client) -> None:
    for headers in ({"Origin": STRANGER}, {}):
        response = await shop_client.post(CHAT, data={"nickname": "Ann"}, headers=headers)
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "origin" in vary(response)


async def test_error_answers_are_readable_by_the_page(shop_client: Client) -> None:
    chat = ChatDriver(shop_client)
    await chat.request_chat(nickname="Ann")
    origin = {"Origin": SHOP}
    cases = [
        (CHAT, {}, 400),  # no nickname (every attempt takes a token: the second)
        (f"{CHAT}/{chat.chat_id}/send", {"secureKey": "0" * 32, "message": "x"}, 403),
        (f"{CHAT}/0000000000000000/refresh", {"secureKey": "0" * 32}, 404),
        (
            f"{CHAT}/{chat.chat_id}/send",
            {"secureKey": chat.secure_key, "message": "x" * 70_000},
            413,
        ),
        (CHAT, {"nickname": "Ann"}, 200),  # the third and last token of the burst
        (CHAT, {"nickname": "Ann"}, 429),
    ]
    for path, form, status in cases:
        response = await shop_client.post(path, data=form, headers=origin)
        assert response.status == status, await response.text()
        assert response.headers["Access-Control-Allow-Origin"] == SHOP, status
        body = await response.json()
        assert ("errors" in body) == (status != 200)
    assert response.headers["Retry-After"].isdigit()
    assert "retry-after" in response.headers["Access-Control-Expose-Headers"].lower()
    # A method the router refuses (405) is readable too.
    response = await shop_client.get(CHAT, headers=origin)
    assert response.status == 405
    assert response.headers["Access-Control-Allow-Origin"] == SHOP


# -- never elsewhere -----------------------------------------------------------------------------


async def test_the_chat_server_side_metrics_and_health_have_no_cors(shop_client: Client) -> None:
    for path, method in (("/api/v1/chats", "GET"), ("/metrics", "GET"), ("/healthz", "GET")):
        response = await shop_client.options(
            path, headers=preflight_headers(SHOP, method, "X-API-Key")
        )
        assert response.status in (403, 404, 405), path
        assert "Access-Control-Allow-Origin" not in response.headers, path
        response = await shop_client.request(
            method, path, headers={"Origin": SHOP, "X-API-Key": API_KEY}
        )
        assert response.status == 200, path
        assert "Access-Control-Allow-Origin" not in response.headers, path


async def test_without_origins_nothing_changes(client: Client) -> None:
    response = await client.options(CHAT, headers=preflight_headers(SHOP))
    assert response.status == 405
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.post(CHAT, data={"nickname": "Ann"}, headers={"Origin": SHOP})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "origin" not in vary(response)


# -- CometD ---------------------------------------------------------------------------------------

HANDSHAKE = [
    {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling"],
        "id": "1",
    }
]


async def test_a_cometd_handshake_from_a_page_of_an_allowed_origin(shop_client: Client) -> None:
    # What the cometd JavaScript client does over long-polling: a preflight (its JSON body is not
    # a "simple" request), then the handshake with credentials (it sets withCredentials).
    for path in ("/genesys/cometd", "/genesys/cometd/handshake"):
        response = await shop_client.options(
            path, headers=preflight_headers(SHOP, "POST", "content-type")
        )
        assert response.status == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == SHOP
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
    response = await shop_client.post(
        "/genesys/cometd/handshake", json=HANDSHAKE, headers={"Origin": SHOP}
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    [reply] = await response.json()
    assert reply["successful"] is True
    refused = await shop_client.options(
        "/genesys/cometd/handshake", headers=preflight_headers(STRANGER, "POST", "content-type")
    )
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_any_origin_is_never_with_credentials(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client: Client = await make_client(make_settings(server={"cors_origins": ["*"]}))
    for path in (CHAT, "/genesys/cometd/handshake"):
        response = await client.options(
            path, headers=preflight_headers(STRANGER, "POST", "content-type")
        )
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in response.headers
    response = await client.post(CHAT, data={"nickname": "Ann"}, headers={"Origin": STRANGER})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    response = await client.get("/api/v1/chats", headers={"Origin": STRANGER, "X-API-Key": API_KEY})
    assert "Access-Control-Allow-Origin" not in response.headers


# -- the chat-server side API, when configured -------------------------------------------------


async def test_admin_origins_open_the_api_to_their_pages_only(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client: Client = await make_client(
        make_settings(server={"cors_origins": [SHOP], "cors_admin_origins": [ADMIN_PAGE]})
    )
    response = await client.options(
        "/api/v1/nodes/n1/drain", headers=preflight_headers(ADMIN_PAGE, "POST", "x-api-key")
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ADMIN_PAGE
    assert "x-api-key" in response.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    response = await client.get(
        "/api/v1/chats", headers={"Origin": ADMIN_PAGE, "X-API-Key": API_KEY}
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ADMIN_PAGE
    # A wrong key's 403 is readable by the admin page, so it can say what went wrong.
    response = await client.get("/api/v1/chats", headers={"Origin": ADMIN_PAGE, "X-API-Key": "x"})
    assert response.status == 403
    assert response.headers["Access-Control-Allow-Origin"] == ADMIN_PAGE
    # The shop's widget may not call the API, the admin page is not a widget, /metrics is closed.
    for origin, path in ((SHOP, "/api/v1/chats"), (ADMIN_PAGE, CHAT), (ADMIN_PAGE, "/metrics")):
        response = await client.options(path, headers=preflight_headers(origin, "GET"))
        assert "Access-Control-Allow-Origin" not in response.headers, (origin, path)


async def test_a_websocket_from_a_listed_page_still_works(shop_client: Client) -> None:
    # Browsers apply no CORS to websockets; marking the upgrade's answer must not break it.
    async with shop_client.ws_connect("/genesys/cometd", headers={"Origin": SHOP}) as socket:
        await socket.send_json([{**HANDSHAKE[0], "supportedConnectionTypes": ["websocket"]}])
        [reply] = await socket.receive_json(timeout=10)
        assert reply["successful"] is True
