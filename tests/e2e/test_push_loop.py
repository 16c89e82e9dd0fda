"""The README's push loop, as a newcomer runs it: `chatpush serve` plus the sample receiver."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-push-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def processes(tmp_path: Path, ports: tuple[int, int]) -> Iterator[list[subprocess.Popen[str]]]:
    chatpush_port, receiver_port = ports
    config = tmp_path / "push.toml"
    config.write_text(
        f"""
[server]
port = {chatpush_port}
[security]
api_keys = ["{API_KEY}"]
[services.default]
flex-push-resend-delay = 1
flex-push-resend-attempts = 5
flex-push-content = "session-id, user-id, secure-key"
[groups.cluster]
default = true
nodes = ["node-1"]
"customhttp.url" = "http://127.0.0.1:{receiver_port}/push"
"""
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "chatpush.cli", "--config", str(config), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = [serve]
    yield started
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_until_up(url: str, process: subprocess.Popen[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            if process.poll() is not None:
                pytest.fail(f"process exited: {process.stdout.read() if process.stdout else ''}")
            try:
                async with session.get(url) as reply:
                    if reply.status in (200, 404, 405):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"{url} never answered")


async def test_trigger_is_resent_until_the_sample_receiver_refreshes(
    processes: list[subprocess.Popen[str]], ports: tuple[int, int], tmp_path: Path
) -> None:
    chatpush_port, receiver_port = ports
    base = f"http://127.0.0.1:{chatpush_port}"
    await wait_until_up(f"{base}/healthz", processes[0])
    headers = {"X-API-Key": API_KEY}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/genesys/2/chat/customer-support",
            data={
                "nickname": "Ann",
                "userData[GCTI_Chat_PushSubscribe]": "true",
                "userData[GCTI_GMS_PushDeviceId]": "phone-1",
                "userData[GCTI_GMS_PushDeviceType]": "customhttp",
                "userData[GCTI_GMS_PushResend]": "true",
            },
        ) as reply:
            chat_id = (await reply.json())["chatId"]
        async with http.post(
            f"{base}/api/v1/chats/{chat_id}/parties",
            json={"type": "Agent", "nickname": "Bob"},
            headers=headers,
        ) as reply:
            assert reply.status == 201
        # No receiver yet: the trigger fails and is resent every second.
        await asyncio.sleep(2.5)
        async with http.get(f"{base}/api/v1/chats/{chat_id}/deliveries", headers=headers) as reply:
            failed = [d for d in (await reply.json())["deliveries"] if d["outcome"] == "failed"]
        assert [d["notifyAttempt"] for d in failed][:2] == [0, 1]

        receiver = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [
                sys.executable,
                str(ROOT / "samples" / "customhttp_receiver.py"),
                "--chatpush",
                base,
                "--service",
                "customer-support",
                "--port",
                str(receiver_port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(receiver)
        for _ in range(100):
            async with http.get(
                f"{base}/api/v1/chats/{chat_id}/subscription", headers=headers
            ) as reply:
                subscription = await reply.json()
            if subscription["outstandingTrigger"] is None:
                break
            await asyncio.sleep(0.1)
        assert subscription["outstandingTrigger"] is None, subscription
        assert subscription["acknowledgedPosition"] == 2
    receiver.terminate()
    output, _ = receiver.communicate(timeout=10)
    assert "trigger for device phone-1: notify-position 2" in output
    assert "#2 ParticipantJoined" in output and "acknowledged up to 2" in output
