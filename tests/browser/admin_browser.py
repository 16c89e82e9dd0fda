"""What the admin console's browser scenarios (test_admin.py) run against, private to them.

A real ``chatpush serve`` on SQLite with the console enabled, a custom HTTP receiver that fails
or answers when told (a thread), the fake FCM (its own event loop in a thread), and Debian's
Chromium driven by Playwright's synchronous API (the ``browser`` fixture of conftest.py).
Screenshots go to ``tests/browser/artifacts/`` (gitignored) and their paths are printed.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from chatpush.clock import SystemClock
from chatpush.testing.fcm import FakeFcm
from tests.browser.conftest import ARTIFACTS, wait_ready
from tests.fault.support import API_KEY, Chatpush, free_port

WAIT_MS = 15_000
"""How long an expectation on a page may take to come true (a loaded machine)."""
ADMIN_KEY = "browser-admin-key-0123456789"
RESEND_DELAY_S = 1

expect.set_options(timeout=WAIT_MS)


class Receiver:
    """A custom HTTP receiver in a thread: answers ``status`` (500 to fail, 200 to recover)."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ThreadedFcm:
    """The fake FCM (chatpush/testing/fcm.py) on an event loop of its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        started = FakeFcm(SystemClock()).start()  # type: ignore[arg-type]
        self.fcm: FakeFcm = asyncio.run_coroutine_threadsafe(started, self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fcm.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _config(path: Path, port: int, receiver: Receiver, fcm: FakeFcm) -> Path:
    def q(value: Any) -> str:
        return json.dumps(value)

    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_timeout_s = 2.0

[database]
url = {q(f"sqlite+aiosqlite:///{path.with_name('chatpush.db')}")}

[security]
api_keys = [{q(API_KEY)}]
credentials_key = {q(Fernet.generate_key().decode())}

[[security.keys]]
name = "operator"
key = {q(ADMIN_KEY)}
scopes = ["admin"]

[logging]
level = "WARNING"
format = "json"

[mobile]
fcm_api_url = {q(fcm.base_url)}
allowed_hosts = [{q(fcm.base_url)}]

[admin]
enabled = true

[services.default]
flex-push-resend-delay = {RESEND_DELAY_S}
flex-push-resend-attempts = 30

[groups.g1]
default = true
nodes = ["n1", "n2"]
pushEnabled = "customhttp,fcm"
"customhttp.url" = {q(receiver.url)}
"""
    )
    return path


@dataclass
class Console:
    """chatpush with the console enabled, its receiver, the fake FCM, and the chat-server API."""

    base: str
    receiver: Receiver
    fcm: FakeFcm
    api: httpx.Client

    def new_push_chat(self, device_id: str) -> str:
        """A chat with a reliable custom HTTP subscription; an agent joins (a trigger is due)."""
        form = {
            "nickname": "Customer",
            "subject": "My parcel",
            "userData[GCTI_Chat_PushSubscribe]": "true",
            "userData[GCTI_GMS_PushDeviceId]": device_id,
            "userData[GCTI_GMS_PushDeviceType]": "customhttp",
            "userData[GCTI_GMS_PushResend]": "true",
        }
        reply = httpx.post(f"{self.base}/genesys/2/chat/support", data=form, timeout=10)
        assert reply.status_code == 200, reply.text
        chat_id = str(reply.json()["chatId"])
        joined = self.api.post(
            f"/api/v1/chats/{chat_id}/parties", json={"type": "Agent", "nickname": "Smith"}
        )
        assert joined.status_code == 201, joined.text
        return chat_id

    def new_callback(self, service: str, customer_number: str) -> str:
        """An immediate callback of ``service`` (QUEUED), as a customer's app asks for one."""
        form = {"_customer_number": customer_number}
        reply = httpx.post(
            f"{self.base}/genesys/1/service/callback/{service}", data=form, timeout=10
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["_id"])

    def callback(self, callback_id: str) -> dict[str, Any]:
        found = httpx.get(
            f"{self.base}/genesys/1/service/callback", params={"_id": callback_id}, timeout=10
        ).json()
        [record] = found
        return dict(record)

    def register_device(self, user: str, platform: str, token: str) -> str:
        body = {"platform": platform, "token": token}
        reply = self.api.post(f"/api/v1/agents/{user}/devices", json=body)
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    def devices(self, user: str) -> list[str]:
        found = self.api.get(f"/api/v1/agents/{user}/devices").json()["devices"]
        return [str(device["id"]) for device in found]

    def node(self, name: str) -> dict[str, Any]:
        nodes = self.api.get("/api/v1/nodes").json()["nodes"]
        [found] = [node for node in nodes if node["name"] == name]
        return dict(found)


@pytest.fixture(scope="module")
def console_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    workdir = tmp_path_factory.mktemp("admin-console")
    receiver, fcm = Receiver(), ThreadedFcm()
    port = free_port()
    chatpush = Chatpush(_config(workdir / "chatpush.toml", port, receiver, fcm.fcm), port, workdir)
    api = httpx.Client(base_url=chatpush.base, headers={"X-API-Key": API_KEY}, timeout=10)
    try:
        chatpush.start()
        wait_ready(chatpush)
        yield Console(chatpush.base, receiver, fcm.fcm, api)
        assert not chatpush.problems(), chatpush.log_tail()
    finally:
        api.close()
        chatpush.stop()
        receiver.close()
        fcm.close()


@dataclass
class Screen:
    """A fresh browser context's page, and the screenshots of its test."""

    page: Page
    stem: str
    taken: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def shoot(self, step: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"admin-{self.stem}-{len(self.taken) + 1}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def screen(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Screen]:
    """A fresh context (no cookies) and page; uncaught JavaScript errors and CSP violations on
    the page fail the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    screen = Screen(page, stem)
    page.on("pageerror", lambda error: screen.errors.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        # A 401 or 404 answer is logged as "Failed to load resource": the wrong key's page and
        # the favicon the browser asks for are expected; a CSP violation or a script error not.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            screen.errors.append(message.text)

    page.on("console", on_console)
    try:
        yield screen
        assert not screen.errors, f"errors on the page: {screen.errors}"
    finally:
        context.close()


def log_in(screen: Screen, base: str, key: str = ADMIN_KEY) -> None:
    """Log in with the keyboard only, as a screen-reader or keyboard user would."""
    page = screen.page
    page.goto(f"{base}/admin/")
    expect(page).to_have_url(f"{base}/admin/login")
    page.get_by_label("Admin API key").focus()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
