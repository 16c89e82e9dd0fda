"""A whole chat over CometD with the official JavaScript client, cometd 9.0.0 and
cometd-nodejs-client 2.0.0 under Node, against the full app: request the chat, receive the agent's
message live, send a reply that the agent side sees in the transcript.

The npm packages are installed once (tests/cometd/js_client.py says where).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.cometd.js_client import needs_node, prepare_node_dir
from tests.conftest import API_KEY

SCRIPT = Path(__file__).with_name("js") / "chat_client.mjs"

pytestmark = needs_node


@pytest.fixture(scope="session")
def node_dir() -> Path:
    return prepare_node_dir()


async def _line(stream: asyncio.StreamReader) -> dict[str, Any]:
    raw = await asyncio.wait_for(stream.readline(), 20)
    assert raw, "the JavaScript client ended without a word"
    line: dict[str, Any] = json.loads(raw)
    assert line["step"] != "failed", line
    return line


@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
async def test_a_chat_with_the_official_javascript_client(
    transport: str, node_dir: Path, client: Any
) -> None:
    url = str(client.make_url("/genesys/cometd"))
    node = await asyncio.create_subprocess_exec(
        "node",
        str(node_dir / SCRIPT.name),
        url,
        "support",
        transport,
        cwd=node_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert node.stdout is not None
    try:
        chat = await _line(node.stdout)
        assert chat["step"] == "chat" and chat["transport"] == transport
        headers = {"X-API-Key": API_KEY}
        base = f"/api/v1/chats/{chat['chatId']}"
        party = await client.post(
            f"{base}/parties", json={"type": "Agent", "nickname": "Ann"}, headers=headers
        )
        agent = (await party.json())["party"]["participantId"]
        said = await client.post(
            f"{base}/events",
            json={"participantId": agent, "type": "Message", "text": "hello from the agent"},
            headers=headers,
        )
        assert said.status == 201
        assert (await _line(node.stdout))["step"] == "agent"
        assert (await _line(node.stdout))["step"] == "sent"
        assert await asyncio.wait_for(node.wait(), 20) == 0
    finally:
        if node.returncode is None:
            node.kill()
            await asyncio.wait_for(node.wait(), 20)
    transcript = (await (await client.get(base, headers=headers)).json())["transcript"]
    assert [(e["type"], e.get("text")) for e in transcript if e["type"] == "Message"] == [
        ("Message", "hello from the agent"),
        ("Message", "thanks, bye"),
    ]
