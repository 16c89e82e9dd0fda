"""The real thing: `chatpush serve | migrate | check` as subprocesses, a whole chat over real HTTP.

Each command runs in an empty directory with no configuration file and no CHATPUSH_* variable of
the developer's shell, so these tests see what a newcomer sees. Every wait is bounded, and every
process is stopped (killed, if need be) before its test ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

API_KEY = "e2e-key"
STARTUP_TIMEOUT_S = 30.0  # a cold interpreter importing everything, then migrating SQLite
SHUTDOWN_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 60.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


def chatpush_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatpush.cli", *args]


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHATPUSH_")}
    env.update(extra)
    return env


def run_chatpush(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        chatpush_command(*args),
        cwd=workdir,
        env=clean_environment(**env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    workdir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: the process is gone when this returns."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)


def wait_until_healthy(served: Served) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            pytest.fail(
                f"chatpush serve exited with {served.process.returncode} before answering "
                f"/healthz:\n{served.output()}"
            )
        try:
            with urllib.request.urlopen(f"{served.base_url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(
        f"chatpush serve did not answer /healthz in {STARTUP_TIMEOUT_S} s:\n{served.output()}"
    )


def start_serving(tmp_path: Path, attempt: int) -> Served:
    workdir = tmp_path / "run"
    workdir.mkdir(exist_ok=True)
    log = tmp_path / f"serve-{attempt}.log"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            chatpush_command("serve", "--port", str(port)),
            cwd=workdir,
            env=clean_environment(CHATPUSH_SECURITY__API_KEYS=f'["{API_KEY}"]'),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Served(process, f"http://127.0.0.1:{port}", workdir, log)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`chatpush serve` in an empty directory, answering /healthz. Stopped after the test."""
    for attempt in range(3):
        server = start_serving(tmp_path, attempt)
        try:
            wait_until_healthy(server)
        except BaseException:
            stop(server.process)
            # Another process took the free port between our probe and the bind: try another.
            if attempt < 2 and "address already in use" in server.output().lower():
                continue
            raise
        break
    try:
        yield server
    finally:
        stop(server.process)


class Customer:
    """The widget side: Chat API v2, form-encoded."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, service: str) -> None:
        self.http = http
        self.base = f"{base_url}/genesys/2/chat/{service}"
        self.chat_id = ""
        self.secure_key = ""

    async def request_chat(self, **form: str) -> dict[str, Any]:
        async with self.http.post(self.base, data=form) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == 200, body
        self.chat_id, self.secure_key = body["chatId"], body["secureKey"]
        return body

    async def op(self, operation: str, expect: int = 200, **form: str) -> dict[str, Any]:
        form.setdefault("secureKey", self.secure_key)
        url = f"{self.base}/{self.chat_id}/{operation}"
        async with self.http.post(url, data=form) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == expect, body
        return body


class Agent:
    """The chat-server side: /api/v1 JSON with X-API-Key."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, chat_id: str) -> None:
        self.http = http
        self.base = f"{base_url}/api/v1/chats/{chat_id}"

    async def call(
        self, method: str, path: str = "", expect: int = 200, json: Any = None, key: str = API_KEY
    ) -> dict[str, Any]:
        async with self.http.request(
            method, self.base + path, json=json, headers={"X-API-Key": key}
        ) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == expect, body
        return body


async def test_a_whole_chat_over_http_then_a_clean_sigterm(served: Served) -> None:
    assert (served.workdir / "chatpush.db").is_file(), "serve did not create its SQLite file"
    assert all(path.name.startswith("chatpush.db") for path in served.workdir.iterdir())

    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        customer = Customer(http, served.base_url, "customer-support")
        created = await customer.request_chat(nickname="Ann", subject="My order")
        assert created["statusCode"] == 0
        assert created["chatEnded"] is False
        assert [m["type"] for m in created["messages"]] == ["ParticipantJoined"]
        assert created["nextPosition"] == 2

        agent = Agent(http, served.base_url, customer.chat_id)
        await agent.call("POST", "/parties", 403, {"type": "Agent", "nickname": "x"}, key="wrong")
        joined = await agent.call("POST", "/parties", 201, {"type": "Agent", "nickname": "Smith"})
        agent_id = joined["party"]["participantId"]
        await agent.call(
            "POST", "/events", 201, {"participantId": agent_id, "type": "Message", "text": "Hi Ann"}
        )

        seen = await customer.op("refresh", transcriptPosition="2")
        assert [m["type"] for m in seen["messages"]] == ["ParticipantJoined", "Message"]
        assert seen["messages"][0]["from"]["nickname"] == "Smith"
        assert seen["messages"][1]["text"] == "Hi Ann"
        assert seen["nextPosition"] == 4

        sent = await customer.op("send", message="Where is it?", transcriptPosition="4")
        assert [m["text"] for m in sent["messages"]] == ["Where is it?"]
        assert sent["nextPosition"] == 5

        state = await agent.call("GET")
        assert [event["index"] for event in state["transcript"]] == [1, 2, 3, 4]
        assert state["transcript"][-1]["text"] == "Where is it?"

        await agent.call("POST", "/end")
        ended = await customer.op("refresh", transcriptPosition="5")
        assert ended["chatEnded"] is True
        await customer.op("send", expect=409, message="hello?")

    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(served.process.wait, SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit {SHUTDOWN_TIMEOUT_S} s after SIGTERM:\n{served.output()}")
    output = served.output()
    assert code == 0, output
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S
    assert "Traceback" not in output, output
    # The default loop where uvloop is installed (a dependency off Windows).
    assert '"event_loop": "uvloop"' in output, output


@pytest.mark.parametrize("via", ["--config", "CHATPUSH_CONFIG"])
def test_serve_refuses_a_config_with_an_unknown_key(tmp_path: Path, via: str) -> None:
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = tmp_path / "chatpush.toml"
    config.write_text("[server]\nprot = 8080\n", encoding="utf-8")
    if via == "--config":
        result = run_chatpush(workdir, "--config", str(config), "serve", "--port", "0")
    else:
        result = run_chatpush(workdir, "serve", "--port", "0", CHATPUSH_CONFIG=str(config))
    assert result.returncode != 0
    assert "server.prot: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(workdir.iterdir()) == []  # stopped before touching the database


def test_check_before_and_after_migrate(tmp_path: Path) -> None:
    before = run_chatpush(tmp_path, "check")
    assert before.returncode == 1, before
    assert "config: ok" in before.stdout
    assert "schema at nothing" in before.stdout
    assert "run `chatpush migrate`" in before.stdout
    assert list(tmp_path.iterdir()) == []  # a check leaves no empty database behind

    migrated = run_chatpush(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated
    assert "database at revision head" in migrated.stdout
    assert (tmp_path / "chatpush.db").is_file()

    after = run_chatpush(tmp_path, "check")
    assert after.returncode == 0, after
    # `check` also names the database and summarizes the settings (issue 19): every line of it.
    assert after.stdout.splitlines() == [
        "config: ok (no file: defaults and CHATPUSH_* variables)",
        "groups: none (push notifications have nowhere to go)",
        "nodes hosted by this instance: none",
        "services: 0 configured (any name served; [services.default] not set)",
        "keys: 0 scoped; 0 with every scope (security.api_keys); credentials_key not set",
        "callback commands: pulled (GET /api/v1/callbacks/commands)",
        f"database: sqlite+aiosqlite:///chatpush.db (file {tmp_path / 'chatpush.db'})",
        "database: reachable, schema at head",
    ]


def test_check_names_an_unknown_key_too(tmp_path: Path) -> None:
    config = tmp_path / "chatpush.toml"
    config.write_text('[services.default]\nflex-push-resend-delay = "5,abc"\n', encoding="utf-8")
    result = run_chatpush(tmp_path, "--config", str(config), "check")
    assert result.returncode != 0
    assert "services.default.flex-push-resend-delay: 'abc'" in result.stderr
