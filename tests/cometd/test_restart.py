"""chatpush restarted under connected CometD clients: each handshakes again and its chat goes on
from its transcript position, nothing lost. Both real clients (aiocometd-noloop, and cometd.js
under Node), both transports, all four connected through the same restart.

chatpush runs as a real ``chatpush serve`` process on a SQLite file; it is stopped (SIGTERM, or
kill -9) while the clients are connected and started again on the same port and file. The agent
writes through the chat-server side API just as chatpush stops (the client may or may not get that
live) and after the restart, before the client is back. The client's own reconnection logic
brings it back (a 402 for its old session, then a new handshake); the app's part, as in a real
app, is ``requestNotifications`` with the position it had shown, which must return both.
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
from tests.cometd.js_client import JsClient, prepare_node_dir
from tests.conftest import API_KEY

CHAT = "/service/chatV2/support"
STARTUP_TIMEOUT_S = 20.0
EVENT_TIMEOUT_S = 15.0
NODE = os.environ.get("CHATPUSH_TEST_NODE", "").lower() != "off"

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

    async def stop(self, how: str) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
        await asyncio.to_thread(self.process.wait, 20)

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
        await served.stop("sigterm")


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


class Follower:
    """One chat client of one kind on one transport; ``label`` names it in failures."""

    label: str

    async def start(self, url: str) -> None:
        raise NotImplementedError

    async def call(self, data: dict[str, Any]) -> None:
        """Publish one chat operation; the reply comes as an envelope."""
        raise NotImplementedError

    async def envelope(self, where: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next envelope on the chat channel that ``where`` accepts."""
        raise NotImplementedError

    async def handshaken_again(self) -> None:
        """Returns once the client has handshaken again by itself (a new clientId)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class JsFollower(Follower):
    def __init__(self, transport: str) -> None:
        self.label = f"cometd.js/{transport}"
        self.transport = transport
        self.client: JsClient | None = None

    async def start(self, url: str) -> None:
        self.client = await JsClient.start(prepare_node_dir(), url, self.transport)
        await self.client.handshake()
        self.client.send("listen", channel=CHAT)

    async def call(self, data: dict[str, Any]) -> None:
        assert self.client is not None
        await self.client.publish(CHAT, data)

    async def envelope(self, where: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        assert self.client is not None
        return await self.client.message(CHAT, where)

    async def handshaken_again(self) -> None:
        assert self.client is not None
        await self.client.expect("handshake", lambda e: e["count"] > 1 and e["successful"])

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


class AioFollower(Follower):
    def __init__(self, connection_type: ConnectionType) -> None:
        self.label = f"aiocometd/{connection_type.value}"
        self.connection_type = connection_type
        self.client: Client | None = None
        self.client_id: str | None = None

    async def start(self, url: str) -> None:
        self.client = Client(url, self.connection_type, connection_timeout=0)
        await self.client.open()
        assert self.client._transport is not None
        self.client_id = self.client._transport.client_id

    async def call(self, data: dict[str, Any]) -> None:
        assert self.client is not None
        reply = await self.client.publish(CHAT, data)
        assert reply["successful"], reply

    async def envelope(self, where: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        assert self.client is not None
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            while True:
                message = await self.client.receive()
                data: dict[str, Any] = message["data"]
                if message["channel"] == CHAT and where(data):
                    return data

    async def handshaken_again(self) -> None:
        def new_client_id() -> bool:
            transport = None if self.client is None else self.client._transport
            return transport is not None and transport.client_id not in (None, self.client_id)

        await until(new_client_id, timeout_s=EVENT_TIMEOUT_S)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


@dataclass
class FollowedChat:
    follower: Follower
    chat_id: str = ""
    secure_key: str = ""
    position: int = 0
    agent: Agent | None = None


async def before_the_restart(chatpush: Chatpush, chat: FollowedChat) -> None:
    """A chat going on: requested over CometD, the agent's message received live."""
    client = chat.follower
    await client.start(f"{chatpush.base_url}/genesys/cometd")
    await client.call({"operation": "requestChat", "nickname": "Ann"})
    started = await client.envelope(lambda d: "chatId" in d)
    chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
    chat.agent = Agent(chatpush.base_url, chat.chat_id)
    await chat.agent.joins()
    await chat.agent.says("before the restart")
    seen = await client.envelope(lambda d: "before the restart" in texts(d))
    chat.position = seen["nextPosition"]  # what the app has shown


async def after_the_restart(chat: FollowedChat) -> None:
    client, agent = chat.follower, chat.agent
    assert agent is not None
    # The client's old session is unknown now: it handshakes again by itself.
    await client.handshaken_again()
    await client.call(
        {
            "operation": "requestNotifications",
            "chatId": chat.chat_id,
            "secureKey": chat.secure_key,
            "transcriptPosition": chat.position,
        }
    )
    resumed = await client.envelope(lambda d: "while you were away" in texts(d))
    assert texts(resumed) == ["as it stopped", "while you were away"], resumed
    await agent.says("welcome back")
    live = await client.envelope(lambda d: "welcome back" in texts(d))
    assert texts(live) == ["welcome back"], live


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
async def test_every_client_carries_on_after_a_restart(chatpush: Chatpush, how: str) -> None:
    followers: list[Follower] = [AioFollower(c) for c in ConnectionType]
    if NODE:
        followers += [JsFollower("long-polling"), JsFollower("websocket")]
    chats = [FollowedChat(follower) for follower in followers]
    try:
        for chat in chats:
            await before_the_restart(chatpush, chat)
        for chat in chats:  # the app has not shown these: they may or may not arrive live
            assert chat.agent is not None
            await chat.agent.says("as it stopped")
        await chatpush.stop(how)
        await chatpush.start()
        for chat in chats:
            assert chat.agent is not None
            await chat.agent.says("while you were away")
        outcomes = await asyncio.gather(
            *(after_the_restart(chat) for chat in chats), return_exceptions=True
        )
        failed = {
            chat.follower.label: f"{type(outcome).__name__}: {outcome}"
            for chat, outcome in zip(chats, outcomes, strict=True)
            if outcome is not None
        }
        assert not failed, failed
    finally:
        for chat in chats:
            await chat.follower.close()
