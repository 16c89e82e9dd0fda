"""samples/httpcb_receiver.py as an operator runs it: it prints each status event once, refuses a
POST whose Standard Webhooks signature is bad (401), and prints a retried webhook-id once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_sample_receiver import sample_receiver, signed

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with sample_receiver("httpcb_receiver.py", "/callbacks", tmp_path) as started:
        yield started


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
