"""The admin console (/admin/) over HTTP on the real app, on SQLite and PostgreSQL: login and its
refusals, sessions, CSRF, each page, and that its buttons do what the API and CLI do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatpush.api.keys import DISPATCHER, ROUTER
from chatpush.app import create_app
from chatpush.config import ConfigError, Settings
from chatpush.testing import FakeClock
from chatpush.testing.apns import ec_private_pem
from chatpush.testing.fcm import FakeFcm, rsa_private_pem
from tests.conftest import ChatDriver
from tests.integration._push_support import api, metric
from tests.integration.admin_support import (
    ADMIN_KEY,
    BOT_KEY,
    SECURITY,
    Client,
    Console,
    text_of,
)
from tests.integration.reliable import PUSH
from tests.receivers import Receiver


@pytest.fixture
async def fcm(clock: FakeClock) -> AsyncIterator[FakeFcm]:
    server = await FakeFcm(clock).start()
    yield server
    await server.close()


@pytest.fixture
def admin_settings(
    make_settings: Callable[..., Settings], receiver: Receiver, fcm: FakeFcm
) -> Callable[..., Settings]:
    def make(admin: dict[str, Any] | None = None, **overrides: Any) -> Settings:
        overrides.setdefault("security", SECURITY)
        return make_settings(
            admin={"enabled": True, **(admin or {})},
            groups={
                "g1": {
                    "default": True,
                    "nodes": ["n1", "n2"],
                    "customhttp.url": receiver.url,
                    "pushEnabled": "customhttp,fcm,ios",
                    "providers": {"beta": {}},
                },
            },
            services={"default": {"flex-push-resend-delay": 15, "flex-push-resend-attempts": 0}},
            mobile={"fcm_api_url": fcm.base_url, "allowed_hosts": [fcm.base_url]},
            server={"trusted_proxies": ["127.0.0.1"]},
            **overrides,
        )

    return make


@pytest.fixture
async def app(make_client: Callable[..., Any], admin_settings: Callable[..., Settings]) -> Client:
    client: Client = await make_client(admin_settings())
    return client


@pytest.fixture
async def console(app: Client) -> Console:
    return await Console(app).logged_in()


# -- enabling it ---------------------------------------------------------------------------------


async def test_the_console_is_off_by_default(client: Client) -> None:
    response = await client.get("/admin/", allow_redirects=False)
    assert response.status == 404


def test_enabling_it_without_an_admin_key_is_refused_at_start(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        admin={"enabled": True},
        security={"keys": [{"name": "bot", "key": BOT_KEY, "scopes": ["chat-server"]}]},
    )
    with pytest.raises(ConfigError, match="admin scope"):
        create_app(settings)


# -- login, sessions ----------------------------------------------------------------------------


async def test_every_page_needs_a_login(app: Client) -> None:
    for path in ("/admin/", "/admin/nodes", "/admin/chats", "/admin/credentials"):
        response = await app.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/admin/login"
    moved = await app.get("/admin", allow_redirects=False)
    assert moved.headers["Location"] == "/admin/"


async def test_a_wrong_key_or_one_without_the_admin_scope_gets_the_form_again(app: Client) -> None:
    console = Console(app)
    wrong = await console.login("not-a-key")
    assert wrong.status == 401
    assert "That key is not an API key of this service." in text_of(await wrong.text())
    assert 'name="key"' in await wrong.text()
    assert "Set-Cookie" not in wrong.headers
    no_scope = await console.login(BOT_KEY)
    assert no_scope.status == 401
    assert "That key lacks the admin scope." in text_of(await no_scope.text())
    assert await metric(app, "chatpush_requests_refused_total", code="110") == 1
    assert await metric(app, "chatpush_requests_refused_total", code="113") == 1
    assert (await app.get("/admin/", allow_redirects=False)).status == 303


async def test_login_sets_a_strict_http_only_cookie_and_every_page_strict_headers(
    app: Client,
) -> None:
    response = await Console(app).login()
    assert response.status == 303 and response.headers["Location"] == "/admin/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin/" in cookie
    assert "Secure" not in cookie  # plain http here
    page = await app.get("/admin/")
    assert page.status == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    login_page = await app.get("/admin/login")
    assert login_page.headers["X-Frame-Options"] == "DENY"


async def test_the_cookie_is_secure_behind_a_trusted_proxy_saying_https(app: Client) -> None:
    response = await app.post(
        "/admin/login",
        data={"key": ADMIN_KEY},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert "Secure" in response.headers["Set-Cookie"]


async def test_login_attempts_are_rate_limited_per_address(
    make_client: Callable[..., Any], admin_settings: Callable[..., Settings]
) -> None:
    app: Client = await make_client(admin_settings(admin={"login_burst": 3}))
    console = Console(app)
    for _ in range(3):
        assert (await console.login("guess")).status == 401
    limited = await console.login()  # even the right key, until the bucket refills
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "too many admin login attempts" in text_of(await limited.text())
    assert "Set-Cookie" not in limited.headers
    assert await metric(app, "chatpush_rate_limited_total", limit="admin_login") == 1


async def test_a_session_ends_at_logout_after_idling_and_with_a_forged_cookie(
    app: Client, clock: FakeClock
) -> None:
    console = await Console(app).logged_in()
    logout = await console.post("/admin/logout")
    assert logout.status == 303 and logout.headers["Location"] == "/admin/login"
    assert (await app.get("/admin/", allow_redirects=False)).status == 303

    console = await Console(app).logged_in()
    clock.advance(1799)
    await console.page("/admin/nodes")  # use renews the idle timeout
    clock.advance(1799)
    await console.page("/admin/nodes")
    clock.advance(1800)
    assert (await app.get("/admin/nodes", allow_redirects=False)).status == 303

    console = await Console(app).logged_in()
    [cookie] = list(app.session.cookie_jar)
    session_id = cookie.value.split(".")[0]
    app.session.cookie_jar.clear()
    for value in (cookie.value, f"{session_id}.{'0' * 64}", session_id, "x" * 500):
        response = await app.get(
            "/admin/", headers={"Cookie": f"chatpush_admin={value}"}, allow_redirects=False
        )
        assert response.status == (200 if value == cookie.value else 303), value


async def test_a_post_without_the_sessions_csrf_token_changes_nothing(
    console: Console, app: Client
) -> None:
    for token in ("", "wrong-token"):
        refused = await console.post("/admin/nodes/n1/drain", csrf=token)
        assert refused.status == 403
        assert "missing or wrong CSRF token" in text_of(await refused.text())
    nodes = await api(app, "GET", "/nodes")
    assert not any(node["drained"] for node in nodes["nodes"])
    # A GET never changes anything.
    assert (await app.get("/admin/nodes/n1/drain", allow_redirects=False)).status == 405


# -- nodes ---------------------------------------------------------------------------------------


async def test_nodes_page_drain_and_undrain_have_the_apis_effect(
    console: Console, app: Client
) -> None:
    page = text_of(await console.page("/admin/nodes"))
    assert "Group g1" in page and "n1" in page and "n2" in page
    assert "Drain n1" in page and "2023-11-14T22:13:20Z (0 s ago)" in page
    drained = await console.post("/admin/nodes/n1/drain")
    assert drained.status == 303 and drained.headers["Location"] == "/admin/nodes"
    assert app.app[ROUTER].available("n1") is False
    nodes = {node["name"]: node for node in (await api(app, "GET", "/nodes"))["nodes"]}
    assert nodes["n1"]["drained"] and not nodes["n2"]["drained"]
    page = text_of(await console.page("/admin/nodes"))
    assert "Node n1 drained." in page and "Undrain n1" in page
    assert (await console.post("/admin/nodes/n1/undrain")).status == 303
    assert app.app[ROUTER].available("n1") is True
    unknown = await console.post("/admin/nodes/n9/drain")
    assert unknown.status == 404 and "There is no node 'n9'" in text_of(await unknown.text())


# -- chats, trail, redrive, overview --------------------------------------------------------------


async def _failed_chat(app: Client, clock: FakeClock, receiver: Receiver) -> ChatDriver:
    """A reliable chat whose one trigger (no resends) the receiver refused: failed after 15 s."""
    chat = ChatDriver(app)
    receiver.mode = "error"
    await chat.request_chat(**PUSH, subject="Where is my parcel?")
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "Hello, this is Smith")
    await app.app[DISPATCHER].settle()
    clock.advance(15)
    await app.app[DISPATCHER].settle()
    sub = await api(app, "GET", f"/chats/{chat.chat_id}/subscription")
    assert sub["status"] == "failed"
    return chat


async def test_chat_search_page_trail_and_redrive(
    console: Console, app: Client, clock: FakeClock, receiver: Receiver
) -> None:
    chat = await _failed_chat(app, clock, receiver)
    other = ChatDriver(app)
    await other.request_chat()

    by_id = text_of(await console.page(f"/admin/chats?q={chat.chat_id[:6]}&by=chat"))
    assert chat.chat_id in by_id
    by_device = text_of(await console.page("/admin/chats?q=device-1&by=device"))
    assert chat.chat_id in by_device and other.chat_id not in by_device
    failed = text_of(await console.page("/admin/chats?state=failed"))
    assert chat.chat_id in failed and other.chat_id not in failed
    everything = text_of(await console.page("/admin/chats"))
    assert chat.chat_id in everything and other.chat_id in everything
    bad = await console.page("/admin/chats?state=sleepy", expect=400)
    assert "State must be one of" in text_of(bad)

    page = text_of(await console.page(f"/admin/chats/{chat.chat_id}"))
    assert "Hello, this is Smith" in page and "Where is my parcel?" in page
    assert "Status failed" in page
    assert "failed 500" in page  # the trail: outcome and HTTP status of the refused trigger
    assert "2023-11-14T22:13:20Z" in page
    assert "Redrive this subscription" in page

    receiver.mode = "ok"
    before = len(receiver.received)
    redriven = await console.post(f"/admin/chats/{chat.chat_id}/redrive")
    assert redriven.status == 303
    await app.app[DISPATCHER].settle()
    assert len(receiver.received) == before + 1  # a fresh trigger went out, and arrived
    sub = await api(app, "GET", f"/chats/{chat.chat_id}/subscription")
    assert sub["status"] == "active" and sub["outstandingTrigger"]["notifyAttempt"] == 0
    page = text_of(await console.page(f"/admin/chats/{chat.chat_id}"))
    assert "Subscription redriven: it is active again" in page
    assert "Redrive this subscription" not in page
    again = await console.post(f"/admin/chats/{chat.chat_id}/redrive")
    assert again.status == 303
    page = text_of(await console.page(f"/admin/chats/{chat.chat_id}"))
    assert "Only a failed subscription can be redriven; this one is active." in page
    assert (await api(app, "GET", f"/chats/{chat.chat_id}/subscription")) == sub

    unknown = await console.page("/admin/chats/NOSUCHCHAT", expect=404)
    assert "NOSUCHCHAT" in text_of(unknown)


async def test_overview_shows_rates_failing_subscriptions_outbox_and_errors(
    console: Console, app: Client, clock: FakeClock, receiver: Receiver
) -> None:
    empty = text_of(await console.page("/admin/"))
    assert "Notifications waiting 0" in empty and "No failed delivery in the trail." in empty
    chat = await _failed_chat(app, clock, receiver)
    page = text_of(await console.page("/admin/"))
    assert "Failing subscriptions 1" in page
    assert chat.chat_id in page
    assert "failed 500 receiver answered HTTP 500" in page or "failed 500" in page
    # The refused trigger, 15 s ago, counted in its minute: one failed, none sent.
    assert "Minute starting" in page and "0 1 0 1" in page


# -- credentials -----------------------------------------------------------------------------------


async def test_credentials_save_masked_and_test_against_the_fake_fcm(
    console: Console, app: Client, fcm: FakeFcm
) -> None:
    page = text_of(await console.page("/admin/credentials?group=g1&kind=fcm"))
    assert "Update FCM credentials" in page and "None stored" in page
    form = {
        "group": "g1",
        "kind": "fcm",
        "project_id": fcm.project_id,
        "client_email": fcm.client_email,
        "private_key": fcm.private_key,
        "token_uri": fcm.token_uri,
    }
    saved = await console.post("/admin/credentials/save", form)
    assert saved.status == 303
    shown = await console.page(saved.headers["Location"])
    assert "FCM credentials saved." in text_of(shown)
    assert f"Client email push… ({len(fcm.client_email)} characters)" in text_of(shown)
    assert f"Private key (PEM) ----… ({len(fcm.private_key)} characters)" in text_of(shown)
    assert fcm.private_key.splitlines()[1] not in shown and fcm.client_email not in shown
    stored = await api(app, "GET", "/groups/g1/credentials/fcm")
    assert stored["fields"]["client_email"] == f"push… ({len(fcm.client_email)} characters)"

    tested = await console.post(
        "/admin/credentials/test", {"group": "g1", "kind": "fcm", "device_token": "phone-1"}
    )
    assert tested.status == 200
    verdict = text_of(await tested.text())
    assert "Sent: the provider accepted the notification." in verdict
    assert "Provider's HTTP status 200" in verdict
    assert fcm.sent[-1]["token"] == "phone-1"

    fcm.fail("gone-phone", 404, "UNREGISTERED", "Requested entity was not found.")
    tested = await console.post(
        "/admin/credentials/test", {"group": "g1", "kind": "fcm", "device_token": "gone-phone"}
    )
    verdict = text_of(await tested.text())
    assert "Not sent (rejected)." in verdict and "Provider's HTTP status 404" in verdict
    assert "FCM 404 UNREGISTERED: Requested entity was not found." in verdict


async def test_bad_credentials_get_the_form_again_and_nothing_is_stored(
    console: Console, app: Client, fcm: FakeFcm
) -> None:
    await console.page("/admin/credentials")
    form = {
        "group": "g1",
        "kind": "fcm",
        "project_id": fcm.project_id,
        "client_email": fcm.client_email,
        "private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----",
    }
    refused = await console.post("/admin/credentials/save", form)
    assert refused.status == 400
    body = await refused.text()
    assert "FCM credentials: private_key" in text_of(body) and "Nothing was saved." in body
    assert f'value="{fcm.client_email}"' in body  # what was typed is kept, but the key
    for change, status, message in [
        ({"group": "nowhere"}, 400, "Choose a node group"),
        ({"kind": "gcm"}, 400, "Choose FCM or APNs."),
        ({"provider": "nope"}, 400, "Choose a node group"),
        (
            {"private_key": rsa_private_pem(), "token_uri": "http://evil.example/token"},
            400,
            "token_uri",
        ),
        ({"project_id": ""}, 400, "project_id"),
    ]:
        response = await console.post("/admin/credentials/save", {**form, **change})
        assert response.status == status, change
        assert message in text_of(await response.text()), change
    apns = await console.post(
        "/admin/credentials/save",
        {
            "group": "g1",
            "kind": "apns",
            "key_id": "K",
            "team_id": "T",
            "topic": "t",
            "private_key": rsa_private_pem(),
        },
    )
    assert apns.status == 400 and "EC P-256" in text_of(await apns.text())
    assert (await api(app, "GET", "/credentials"))["credentials"] == []
    no_token = await console.post("/admin/credentials/test", {"group": "g1", "kind": "fcm"})
    assert no_token.status == 400 and "Type the device token" in text_of(await no_token.text())
    nothing = await console.post(
        "/admin/credentials/test", {"group": "g1", "kind": "fcm", "device_token": "p"}
    )
    assert nothing.status == 400 and "No FCM credentials are stored" in text_of(
        await nothing.text()
    )


async def test_a_named_provider_has_its_own_credentials(console: Console, fcm: FakeFcm) -> None:
    page = text_of(await console.page("/admin/credentials?group=g1&provider=beta&kind=fcm"))
    assert "provider beta" in page and "the group's own credentials are used" in page
    saved = await console.post(
        "/admin/credentials/save",
        {
            "group": "g1",
            "provider": "beta",
            "kind": "fcm",
            "project_id": fcm.project_id,
            "client_email": fcm.client_email,
            "private_key": fcm.private_key,
            "token_uri": fcm.token_uri,
        },
    )
    assert saved.status == 303
    page = text_of(await console.page(saved.headers["Location"]))
    assert "provider beta" in page and "Client email push…" in page
    own = text_of(await console.page("/admin/credentials?group=g1&kind=fcm"))
    assert "None stored" in own


async def test_without_a_credentials_key_the_page_says_so(
    make_client: Callable[..., Any], admin_settings: Callable[..., Settings], fcm: FakeFcm
) -> None:
    security = {k: v for k, v in SECURITY.items() if k != "credentials_key"}
    app: Client = await make_client(admin_settings(security=security))
    console = await Console(app).logged_in()
    page = text_of(await console.page("/admin/credentials"))
    assert "security.credentials_key is not set" in page
    refused = await console.post(
        "/admin/credentials/save",
        {
            "group": "g1",
            "kind": "fcm",
            "project_id": fcm.project_id,
            "client_email": fcm.client_email,
            "private_key": fcm.private_key,
        },
    )
    assert refused.status == 503 and "Nothing was saved." in text_of(await refused.text())


async def test_hostile_input_gets_a_clear_answer_never_a_500(console: Console, app: Client) -> None:
    pages = [
        "/admin/chats?q=%00&by=chat",
        "/admin/chats?q=" + "A" * 300,
        "/admin/chats?by=everything",
        "/admin/chats/%00",
        "/admin/chats/" + "A" * 100,
        "/admin/chats/%F0%9F%92%A9",
        "/admin/credentials?group=g1&kind=apns&provider=%00",
        "/admin/credentials?group=%ff&kind=fcm",
        "/admin/nodes/n1/drain",
    ]
    for path in pages:
        response = await app.get(path, allow_redirects=False)
        assert 400 <= response.status < 500 or response.status == 200, path
        assert "Traceback" not in await response.text()
    posts: list[tuple[str, Any]] = [
        ("/admin/nodes/%00/drain", {}),
        ("/admin/chats/NOSUCH/redrive", {}),
        ("/admin/credentials/save", {"group": "g1", "kind": "fcm", "project_id": "\x00"}),
        ("/admin/credentials/save", {"group": "g1", "kind": "fcm", "client_email": "x" * 30_000}),
        ("/admin/credentials/test", {"group": "g1", "kind": "fcm", "device_token": "\x00"}),
        ("/admin/credentials/test", {"group": ["g1", "g2"], "kind": "fcm"}),
    ]
    for path, data in posts:
        response = await console.post(path, data)
        assert 400 <= response.status < 500, (path, response.status)
        assert "Traceback" not in await response.text()
    raw = await app.post(
        "/admin/credentials/save",
        data=b"csrf=" + console.csrf.encode() + b"&group=%ff%fe&kind=fcm&project_id=%zz",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert 400 <= raw.status < 500
    login = await app.post(
        "/admin/login",
        data=b"key=%ff%00",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert login.status == 401
    assert (await api(app, "GET", "/credentials"))["credentials"] == []
    nodes = await api(app, "GET", "/nodes")
    assert not any(node["drained"] for node in nodes["nodes"])


async def test_apns_credentials_are_saved_and_shown_masked(console: Console, app: Client) -> None:
    page = text_of(await console.page("/admin/credentials?group=g1&kind=apns"))
    assert "Update APNS credentials" in page and "Environment production sandbox" in page
    key = ec_private_pem()
    form = {
        "group": "g1",
        "kind": "apns",
        "key_id": "ABC123DEFG",
        "team_id": "TEAM456789",
        "topic": "com.example.support",
        "private_key": key.replace("\n", "\r\n"),  # as a browser sends a textarea
    }
    saved = await console.post("/admin/credentials/save", form)
    assert saved.status == 303
    shown = text_of(await console.page(saved.headers["Location"]))
    assert "APNS credentials saved." in shown
    assert (
        "Key ID ABC1… (10 characters)" in shown and "Topic (the app's bundle id) com.… (19" in shown
    )
    assert f"Private key (PEM) ----… ({len(key)} characters)" in shown
    stored = await api(app, "GET", "/groups/g1/credentials/apns")
    assert stored["fields"]["team_id"] == "TEAM… (10 characters)"
