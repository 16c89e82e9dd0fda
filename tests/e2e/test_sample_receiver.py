"""samples/customhttp_receiver.py as an operator runs it (issue 19): with --signing-secret it
refuses a POST whose Standard Webhooks signature is bad (401), and acts on each webhook-id once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from chatpush.providers.customhttp import sign
from tests.e2e.test_serve import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TIMEOUT = aiohttp.ClientTimeout(total=10)


@contextmanager
def sample_receiver(sample: str, path: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``samples/<sample>`` run as an operator runs it, with the signing secret: (its URL for
    ``path``, its log) once it says it listens."""
    port = free_port()
    log = tmp_path / "receiver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "samples" / sample),
                *("--port", str(port), "--signing-secret", SECRET),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "receiver listening" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}{path}", log
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with sample_receiver("customhttp_receiver.py", "/push", tmp_path) as started:
        yield started


def signed(payload: bytes, message_id: str, secret: str = SECRET) -> dict[str, str]:
    now_s = int(time.time())
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(now_s),
        "webhook-signature": sign(secret, message_id, now_s, payload),
    }


async def test_a_bad_signature_is_401_and_a_duplicate_is_acted_on_once(
    receiver: tuple[str, Path],
) -> None:
    url, log = receiver
    body = {
        "deviceId": "phone-1",
        "message": {"messages": [{"index": 3, "type": "Message", "text": "hello there"}]},
    }
    payload = json.dumps(body).encode()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        other_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
        for headers in (
            {"Content-Type": "application/json"},  # unsigned
            signed(payload, "msg_1", other_secret),  # signed with another secret
            {**signed(payload, "msg_1"), "webhook-timestamp": str(int(time.time()) - 3600)},
        ):
            async with http.post(url, data=payload, headers=headers) as answer:
                assert answer.status == 401, await answer.text()
        tampered = payload.replace(b"hello there", b"pay me now!")
        async with http.post(url, data=tampered, headers=signed(payload, "msg_1")) as answer:
            assert answer.status == 401

        for _ in range(2):  # one attempt arriving twice (a sender died before recording it)
            async with http.post(url, data=payload, headers=signed(payload, "msg_1")) as answer:
                assert answer.status == 200
        async with http.post(url, data=payload, headers=signed(payload, "msg_2")) as answer:
            assert answer.status == 200
    output = log.read_text()
    assert output.count("event #3 Message: hello there") == 2  # msg_1 once, msg_2 once
    assert output.count("refused a POST") == 4
    assert "duplicate msg_1: acknowledged again, not acted on" in output
