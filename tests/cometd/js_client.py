"""The official JavaScript CometD client (cometd 9.0.0 + cometd-nodejs-client 2.0.0) under Node,
driven from Python through tests/cometd/js/driver.mjs: commands in, events out, one JSON per line.

The npm packages are installed once into ``CHATPUSH_NPM_CACHE`` (``.ci/run`` sets it; default
``.cache/npm`` in the repository). Node and npm are on these machines; without them the tests
fail, they do not skip, unless ``CHATPUSH_TEST_NODE=off`` says to leave them out on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).with_name("js")
PACKAGES = ("cometd@9.0.0", "cometd-nodejs-client@2.0.0")
EVENT_TIMEOUT_S = 10.0

needs_node = pytest.mark.skipif(
    os.environ.get("CHATPUSH_TEST_NODE", "").lower() == "off",
    reason="CHATPUSH_TEST_NODE=off",
)


def prepare_node_dir() -> Path:
    """A folder with the client packages in node_modules and the scripts beside them (an ES
    module resolves its imports from its own folder)."""
    folder = Path(os.environ.get("CHATPUSH_NPM_CACHE", ROOT / ".cache" / "npm"))
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed (or set CHATPUSH_TEST_NODE=off)", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    # Test workers (pytest-xdist) may get here at once: one installs, the others wait for it.
    with (folder / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((folder / "node_modules" / p.split("@")[0]).is_dir() for p in PACKAGES):
            subprocess.run(
                ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", *PACKAGES],
                check=True,
                capture_output=True,
                timeout=300,
            )
        for script in SCRIPTS.glob("*.mjs"):
            shutil.copy(script, folder / script.name)
    return folder


class JsClient:
    """One CometD client in a Node process. ``expect`` waits for an event the client printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.events: list[dict[str, Any]] = []
        self._taken = 0
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, node_dir: Path, url: str, transport: str, *, ack: bool = False
    ) -> JsClient:
        args = [str(node_dir / "driver.mjs"), url, transport, *(["ack"] if ack else [])]
        process = await asyncio.create_subprocess_exec(
            "node",
            *args,
            cwd=node_dir,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self._process.stdout is not None
        while raw := await self._process.stdout.readline():
            self.events.append(json.loads(raw))
            self._arrived.set()
        self._arrived.set()

    def send(self, op: str, **fields: Any) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())

    async def expect(
        self, event: str, where: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        """The first event of this kind (and ``where``) not yet returned by ``expect``; the
        events before it that do not match stay available."""
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            while True:
                for index, item in enumerate(self.events):
                    if index >= self._taken and item["event"] == event and where(item):
                        self.events[index] = {**item, "event": f"taken:{event}"}
                        return item
                if self._reader.done():
                    stderr = await self._stderr()
                    raise AssertionError(f"the client ended; waiting for {event}: {stderr}")
                self._arrived.clear()
                await self._arrived.wait()

    def seen(self, event: str) -> list[dict[str, Any]]:
        """Events of this kind printed so far (returned by ``expect`` or not)."""
        return [item for item in self.events if item["event"] in (event, f"taken:{event}")]

    async def handshake(self, **ext: Any) -> dict[str, Any]:
        self.send("handshake", **({"ext": ext} if ext else {}))
        reply = await self.expect("handshake")
        assert reply["successful"], reply
        return reply

    async def publish(self, channel: str, data: Any) -> None:
        self.send("publish", channel=channel, data=data)
        reply = await self.expect("publish", lambda e: e["channel"] == channel)
        assert reply["successful"], reply

    async def message(
        self, channel: str, where: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        """The data of the next message on ``channel`` that ``where`` accepts."""
        item = await self.expect("message", lambda e: e["channel"] == channel and where(e["data"]))
        data: dict[str, Any] = item["data"]
        return data

    async def _stderr(self) -> str:
        if self._process.stderr is None:
            return ""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                return (await self._process.stderr.read()).decode(errors="replace")[-2000:]
        return ""

    async def close(self) -> None:
        if self._process.returncode is None:
            self._process.kill()
            async with asyncio.timeout(EVENT_TIMEOUT_S):  # a hang here would stall the run
                await self._process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
