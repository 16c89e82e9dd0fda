"""samples/httpcb_receiver.py as an operator runs it: it prints each status event once, refuses a
POST whose Standard Webhooks signature is bad (401), and prints a retried webhook-id once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_sample_receiver import SECRET, signed
from tests.e2e.test_serve import free_port

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "receiver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "samples" / "httpcb_receiver.py"),
                "--port",
                str(port),
                "--signing-secret",
                SECRET,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "receiver listening" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/callbacks", log
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_prints_signed_events_once_and_refuses_bad_signatures(
    receiver: tuple[str, Path],
) -> None:
    url, log = receiver
    event = {
        "event_id": "_cbe_on_dial_done",
        "timestamp": "1467576012",
        "_callback_state": "ROUTING",
        "_service_id": "8F3A0C6E2B9D4F17A1C5E0B2D3F4A5B6",
        "c_call_result": 0,
    }
    payload = json.dumps(event).encode()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        for headers in (
            {"Content-Type": "application/json"},
            signed(payload, "msg_1", "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"),
        ):
            async with http.post(url, data=payload, headers=headers) as answer:
                assert answer.status == 401
        for _ in range(2):  # a retry with the same webhook-id
            async with http.post(url, data=payload, headers=signed(payload, "msg_1")) as answer:
                assert answer.status == 204
    text = log.read_text()
    printed = [line for line in text.splitlines() if line.startswith("_cbe_on_")]
    assert printed == [
        "_cbe_on_dial_done ROUTING 8F3A0C6E2B9D4F17A1C5E0B2D3F4A5B6 "
        '{"timestamp":"1467576012","c_call_result":0}'
    ]
    assert "repeat of msg_1" in text
    assert text.count("refused (401)") == 2
