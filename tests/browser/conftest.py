"""Browser tests: Debian's Chromium (``scripts/browser-up`` installs it) driven by Playwright's
synchronous Python API, against a real ``chatpush serve`` process on SQLite.

One chatpush per test worker and one browser per test file (see ``browser``); each test gets a
fresh browser context (its own sessionStorage and cookies) and page. Playwright's ``launch`` gives
the browser a fresh temporary user-data directory of its own. Every test saves screenshots under
``tests/browser/artifacts/`` (gitignored): the steps it names, and its final state, pass or fail;
the paths are printed at the end of the run.

Without Chromium the tests fail and say how to get it, as the PostgreSQL and Node tests do, unless
``CHATPUSH_TEST_BROWSER=off`` says to leave them out on purpose.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from chatpush.api.widget import ROOT as WIDGET_ROOT
from tests.fault.support import API_KEY, Chatpush, free_port, write_config

CHROMIUM = Path(os.environ.get("CHATPUSH_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).with_name("artifacts")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000
"""How long an expectation on the page may take to come true (a loaded machine)."""

expect.set_options(timeout=WAIT_MS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("CHATPUSH_TEST_BROWSER", "").lower() == "off":
        skip = pytest.mark.skip(reason="CHATPUSH_TEST_BROWSER=off")
        for item in items:
            if Path(str(item.fspath)).parent == Path(__file__).parent:
                item.add_marker(skip)


_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List this run's screenshots (the workers wrote them; this runs in the controller)."""
    shots = sorted(p for p in ARTIFACTS.glob("*.png") if p.stat().st_mtime >= _STARTED - 1)
    if shots:
        terminalreporter.write_sep("-", f"browser screenshots ({len(shots)})")
        for shot in shots:
            terminalreporter.write_line(str(shot))


# -- the service ------------------------------------------------------------------------------


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Service:
    """chatpush serving the widget, and a second origin serving a copy of its files pointed at
    chatpush by ``data-service-url`` (a company's site embedding the widget)."""

    base: str
    other_origin: str
    chatpush: Chatpush

    def restart(self) -> None:
        """Stop chatpush (SIGTERM) and start it again on the same port and database."""
        self.chatpush.stop()
        self.chatpush.start()
        wait_ready(self.chatpush)


def company_site(folder: Path, service_url: str) -> Path:
    """The widget's files as a company copies them to its site, pointed at chatpush."""
    shutil.copytree(WIDGET_ROOT, folder)
    page = folder / "index.html"
    html = page.read_text()
    assert html.count("data-chatpush-widget") == 1
    page.write_text(
        html.replace(
            "data-chatpush-widget", f'data-chatpush-widget data-service-url="{service_url}"'
        )
    )
    return folder


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("browser-chatpush")
    port = free_port()
    site = company_site(workdir / "site", f"http://127.0.0.1:{port}")
    static = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_StaticHandler, directory=str(site))
    )
    other_origin = f"http://127.0.0.1:{static.server_address[1]}"
    threading.Thread(target=static.serve_forever, daemon=True).start()
    server: dict[str, Any] = {"widget": True, "cors_origins": [other_origin]}
    config = write_config(
        workdir / "chatpush.toml",
        port=port,
        database=workdir / "chatpush.db",
        groups={},
        service={},
        server=server,
    )
    chatpush = Chatpush(config, port, workdir).start()
    try:
        wait_ready(chatpush)
        yield Service(chatpush.base, other_origin, chatpush)
        assert not chatpush.problems(), chatpush.log_tail()
    finally:
        chatpush.stop()
        static.shutdown()
        static.server_close()


def wait_ready(chatpush: Chatpush, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert chatpush.process is not None
        if chatpush.process.poll() is not None:
            raise AssertionError(f"chatpush exited:\n{chatpush.log_tail()}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{chatpush.base}/readyz", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"chatpush not ready after {timeout_s} s:\n{chatpush.log_tail()}")


class Agent:
    """The chat-server side API, as an agent's desktop or a bot uses it."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=10)

    def joins(self, chat_id: str, nickname: str = "Bob") -> int:
        reply = self.http.post(
            f"/api/v1/chats/{chat_id}/parties", json={"type": "Agent", "nickname": nickname}
        )
        assert reply.status_code == 201, reply.text
        return int(reply.json()["party"]["participantId"])

    def event(self, chat_id: str, participant_id: int, kind: str, text: str | None = None) -> None:
        body: dict[str, Any] = {"participantId": participant_id, "type": kind}
        if text is not None:
            body["text"] = text
        reply = self.http.post(f"/api/v1/chats/{chat_id}/events", json=body)
        assert reply.status_code == 201, reply.text

    def says(self, chat_id: str, participant_id: int, text: str) -> None:
        self.event(chat_id, participant_id, "Message", text)

    def ends(self, chat_id: str) -> None:
        reply = self.http.post(f"/api/v1/chats/{chat_id}/end", json={})
        assert reply.status_code == 200, reply.text

    def chat(self, chat_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/api/v1/chats/{chat_id}")
        assert reply.status_code == 200, reply.text
        chat: dict[str, Any] = reply.json()
        return chat

    def sees(self, chat_id: str, kind: str, text: str | None = None) -> dict[str, Any]:
        """Until the transcript holds an event of ``kind`` (with ``text``); it, from the API."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            for event in self.chat(chat_id)["transcript"]:
                if event["type"] == kind and (text is None or event.get("text") == text):
                    return dict(event)
            assert time.monotonic() < deadline, f"no {kind} {text!r} in chat {chat_id}"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def agent(service: Service) -> Iterator[Agent]:
    agent = Agent(service.base)
    yield agent
    agent.http.close()


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser for a test file (with ``--dist loadfile`` a worker runs a file whole).

    Not per session: while Playwright's synchronous API is open, its event loop counts as
    running in this thread, and the asyncio tests that a worker runs next could not start
    theirs."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run scripts/browser-up (or set CHATPUSH_TEST_BROWSER=off)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


class Shots:
    """Screenshots of one test, ``artifacts/<test>-<n>-<step>.png``."""

    def __init__(self, page: Page, test: str) -> None:
        self.page = page
        self.stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test).strip("_")
        self.taken: list[Path] = []

    def __call__(self, step: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.stem}-{len(self.taken) + 1}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path


@dataclass
class Tab:
    """A fresh browser context's page, and its test's screenshots."""

    page: Page
    shoot: Shots


@pytest.fixture
def tab(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A fresh context and page; the page's uncaught JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 800, "height": 720})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    shots = Shots(page, request.node.name)
    try:
        yield Tab(page, shots)
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        with contextlib.suppress(Exception):
            shots("final")
        context.close()


def stored_chat(page: Page) -> dict[str, Any] | None:
    """What the widget keeps in the tab's sessionStorage, or None."""
    raw = page.evaluate(
        "() => Object.keys(sessionStorage).filter(k => k.startsWith('chatpush-widget'))"
        ".map(k => sessionStorage.getItem(k))[0] || null"
    )
    return None if raw is None else dict(json.loads(raw))
