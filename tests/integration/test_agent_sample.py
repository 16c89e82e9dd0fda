"""samples/agent_events.py as the README walk-through runs it: against the real app, as its
webhook client (register, ring, answered/deleted) and as the event stream chatpush connects to."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatpush.config import Settings
from tests.agents_support import RecordingOutbox, eventually
from tests.conftest import API_KEY

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "agent_events.py"
GROUPS = {
    "g1": {
        "default": True,
        "nodes": ["n1"],
        "pushEnabled": ["customhttp", "comet"],
        "customhttp.url": "http://127.0.0.1:9/",
    }
}


async def run_sample(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SAMPLE),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_the_webhook_walk_through(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    outbox = RecordingOutbox()
    client = await make_client(make_settings(groups=GROUPS), agent_outbox=outbox)
    url = str(client.make_url("/")).rstrip("/")
    common = ["--chatpush", url, "--api-key", API_KEY, "--agent", "agent-1"]
    out = await run_sample(
        *common,
        "--device",
        "customhttp:desk-1",
        "--device",
        "comet:phone-1",
        "ring",
        "--conversation",
        "conv-1",
        "--then",
        "answered",
        "--after",
        "0",
    )
    assert "'rung': 2" in out and "{'cancelled': 1}" in out
    assert [(p.kind, p.destination.device_id) for _, p in outbox.pushes] == [
        ("alert", "desk-1"),
        ("alert", "phone-1"),
        ("cancel", "phone-1"),
    ]
    outbox.clear()
    out = await run_sample(*common, "ring", "--conversation", "conv-2", "--after", "0")
    assert [p.kind for _, p in outbox.pushes] == ["alert", "alert", "cancel", "cancel"]
    out = await run_sample(*common, "--agents", "3", "load", "--rate", "50", "--seconds", "1")
    assert "50 rings" in out and "p99" in out


async def test_the_stream_walk_through(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SAMPLE),
        "--agent",
        "agent-1",
        "stream",
        "--port",
        str(port),
        "--every",
        "0.2",
        "--after",
        "0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        assert b"event stream on" in await asyncio.wait_for(process.stdout.readline(), 30)
        outbox = RecordingOutbox()
        settings = make_settings(
            groups=GROUPS, agents={"stream_url": f"ws://127.0.0.1:{port}/stream"}
        )
        client = await make_client(settings, agent_outbox=outbox)
        response = await client.post(
            "/api/v1/agents/agent-1/devices",
            json={"platform": "comet", "token": "phone-1"},
            headers={"X-API-Key": API_KEY},
        )
        assert response.status == 201
        await eventually(lambda: len(outbox.of_kind("cancel")) >= 1, timeout_s=30)
        assert outbox.of_kind("alert")
    finally:
        process.terminate()
        await process.wait()
