"""A whole chat over CometD with the official JavaScript client, cometd 9.0.0 and
cometd-nodejs-client 2.0.0 under Node, against the full app: request the chat, receive the agent's
message live, send a reply that the agent side sees in the transcript.

The npm packages are installed once into ``CHATPUSH_NPM_CACHE`` (``.ci/run`` sets it; default
``.cache/npm`` in the repository). Node and npm are on these machines; without them the test
fails, it does not skip, unless ``CHATPUSH_TEST_NODE=off`` says to leave it out on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("js") / "chat_client.mjs"
PACKAGES = ("cometd@9.0.0", "cometd-nodejs-client@2.0.0")

pytestmark = pytest.mark.skipif(
    os.environ.get("CHATPUSH_TEST_NODE", "").lower() == "off",
    reason="CHATPUSH_TEST_NODE=off",
)


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """A folder with the client packages in node_modules and the test's script beside them (an
    ES module resolves its imports from its own folder)."""
    folder = Path(os.environ.get("CHATPUSH_NPM_CACHE", ROOT / ".cache" / "npm"))
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed (or set CHATPUSH_TEST_NODE=off)", pytrace=False)
    if not all((folder / "node_modules" / p.split("@")[0]).is_dir() for p in PACKAGES):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", *PACKAGES],
            check=True,
            capture_output=True,
            timeout=300,
        )
    shutil.copy(SCRIPT, folder / SCRIPT.name)
    return folder


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
            await node.wait()
    transcript = (await (await client.get(base, headers=headers)).json())["transcript"]
    assert [(e["type"], e.get("text")) for e in transcript if e["type"] == "Message"] == [
        ("Message", "hello from the agent"),
        ("Message", "thanks, bye"),
    ]
