"""chatpush restarted under a connected CometD client: the client handshakes again and the chat
goes on from its transcript position, nothing lost. Both real clients, both transports.

chatpush runs as a real ``chatpush serve`` process on a SQLite file; it is stopped (SIGTERM, or
kill -9) while the client is connected and started again on the same port and file. Meanwhile
the agent writes, through the chat-server side API, before the client is back. The client's own
reconnection logic brings it back (a 402 for its old session, then a new handshake); the app's
part, as in a real app, is ``requestNotifications`` with the position it had reached.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiocometd_noloop import Client, ConnectionType

from tests.cometd.conftest import until
from tests.cometd.js_client import JsClient, needs_node, prepare_node_dir
from tests.conftest import API_KEY

CHAT = "/service/chatV2/support"
STARTUP_TIMEOUT_S = 20.0

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Chatpush:
    """``chatpush serve`` on a fixed port and SQLite file, that can be stopped and started."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        env = {**os.environ, "CHATPUSH_SECURITY__API_KEYS": f'["{API_KEY}"]'}
        env.pop("CHATPUSH_CONFIG", None)
        with (self.workdir / f"serve-{self.starts}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "chatpush.cli", "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        self.process = self._spawn()
        async with aiohttp.ClientSession() as http:
            for _ in range(int(STARTUP_TIMEOUT_S / 0.1)):
                assert self.process.poll() is None, self.output()
                try:
                    async with http.get(f"{self.base_url}/healthz") as reply:
                        if reply.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail(f"chatpush did not start:\n{self.output()}")

    def stop(self, how: str) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
        self.process.wait(timeout=20)

    def output(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.workdir.glob("serve-*.log"))
        )


@pytest.fixture
async def chatpush(tmp_path: Path) -> AsyncIterator[Chatpush]:
    served = Chatpush(tmp_path, free_port())
    await served.start()
    yield served
    if served.process is not None and served.process.poll() is None:
        served.stop("sigterm")


class Agent:
    """The chat-server side, over HTTP."""

    def __init__(self, base_url: str, chat_id: str) -> None:
        self.url = f"{base_url}/api/v1/chats/{chat_id}"
        self.participant = 0

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as http,
            http.post(self.url + path, json=body) as reply,
        ):
            assert reply.status in (200, 201), await reply.text()
            result: dict[str, Any] = await reply.json()
            return result

    async def joins(self) -> None:
        party = await self._post("/parties", {"type": "Agent", "nickname": "Ann"})
        self.participant = party["party"]["participantId"]

    async def says(self, text: str) -> None:
        await self._post(
            "/events", {"participantId": self.participant, "type": "Message", "text": text}
        )


def texts(envelope: dict[str, Any]) -> list[str]:
    return [e["text"] for e in envelope["messages"] if e["type"] == "Message"]


@needs_node
@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_the_javascript_client_carries_on_after_a_restart(
    chatpush: Chatpush, transport: str, how: str
) -> None:
    client = await JsClient.start(
        prepare_node_dir(), f"{chatpush.base_url}/genesys/cometd", transport
    )
    try:
        await client.handshake()
        client.send("listen", channel=CHAT)
        await client.publish(CHAT, {"operation": "requestChat", "nickname": "Ann"})
        started = await client.message(CHAT)
        agent = Agent(chatpush.base_url, started["chatId"])
        await agent.joins()
        await agent.says("before the restart")
        seen = await client.message(CHAT, lambda d: "before the restart" in texts(d))
        position = seen["nextPosition"]

        chatpush.stop(how)
        await chatpush.start()
        await agent.says("while you were away")
        # The client's old session is unknown now: it handshakes again by itself.
        await client.expect("handshake", lambda e: e["count"] == 2 and e["successful"])
        await client.publish(
            CHAT,
            {
                "operation": "requestNotifications",
                "chatId": started["chatId"],
                "secureKey": started["secureKey"],
                "transcriptPosition": position,
            },
        )
        resumed = await client.message(CHAT, lambda d: "while you were away" in texts(d))
        assert texts(resumed) == ["while you were away"]
        await agent.says("welcome back")
        live = await client.message(CHAT, lambda d: "welcome back" in texts(d))
        assert texts(live) == ["welcome back"]
    finally:
        await client.close()


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
@pytest.mark.parametrize("connection_type", [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET])
async def test_aiocometd_carries_on_after_a_restart(
    chatpush: Chatpush, connection_type: ConnectionType, how: str
) -> None:
    url = f"{chatpush.base_url}/genesys/cometd"
    async with Client(url, connection_type, connection_timeout=0) as client:

        async def receive(where: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
            async with asyncio.timeout(10):
                while True:
                    message = await client.receive()
                    data: dict[str, Any] = message["data"]
                    if message["channel"] == CHAT and where(data):
                        return data

        await client.publish(CHAT, {"operation": "requestChat", "nickname": "Ann"})
        started = await receive(lambda d: "chatId" in d)
        agent = Agent(chatpush.base_url, started["chatId"])
        await agent.joins()
        await agent.says("before the restart")
        position = (await receive(lambda d: "before the restart" in texts(d)))["nextPosition"]
        old_client_id = client._transport.client_id  # type: ignore[union-attr]

        chatpush.stop(how)
        await chatpush.start()
        await agent.says("while you were away")
        await until(
            lambda: (
                client._transport is not None
                and client._transport.client_id not in (None, old_client_id)
            ),
            timeout_s=15,
        )
        await client.publish(
            CHAT,
            {
                "operation": "requestNotifications",
                "chatId": started["chatId"],
                "secureKey": started["secureKey"],
                "transcriptPosition": position,
            },
        )
        resumed = await receive(lambda d: "while you were away" in texts(d))
        assert texts(resumed) == ["while you were away"]
        await agent.says("welcome back")
        assert texts(await receive(lambda d: "welcome back" in texts(d))) == ["welcome back"]
