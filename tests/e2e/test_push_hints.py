"""Push-key hints and settings from the environment, on a real ``chatpush serve`` (issue 19).

A Request Chat whose push keys are misspelt or sent outside ``userData`` still succeeds (the
contract), with a WARNING line in the log and the hint in ``chatpushWarnings``; over CometD the
real aiocometd client receives the same envelope. The server's settings come from CHATPUSH_*
variables only: a comma list of API keys, a service option per variable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiocometd_noloop import Client, ConnectionType

from tests.e2e.test_operator_cli import Serving
from tests.e2e.test_serve import free_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiocometd-noloop's

TIMEOUT = aiohttp.ClientTimeout(total=10)
ENVIRONMENT = {
    "CHATPUSH_SECURITY__API_KEYS": "first-key,second-key",
    "CHATPUSH_GROUPS__MAIN__NODES": "n1",
    "CHATPUSH_GROUPS__MAIN__CUSTOMHTTP_URL": "http://127.0.0.1:9/unused",
    "CHATPUSH_SERVICES__QUIET__FLEX_PUSH_ENABLED": "false",
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Serving]:
    server = Serving(tmp_path, free_port(), **ENVIRONMENT)
    try:
        server.wait_for("serve_started")
        yield server
    finally:
        server.stop()


async def request_chat(
    http: aiohttp.ClientSession, served: Serving, service: str, form: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{served.port}/genesys/2/chat/{service}"
    async with http.post(url, data=form) as answer:
        return answer.status, await answer.json()


async def test_misspelt_or_unwrapped_push_keys_get_a_hint_and_the_chat_still_starts(
    served: Serving,
) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        status, body = await request_chat(
            http,
            served,
            "support",
            {
                "nickname": "Ann",
                "userData[GCTI_Chat_PushSubscribe]": "true",
                "userData[GCTI_GMS_PushDeviceId]": "phone-1",
                "userData[GCTI_GMS_PushDeviceType]": "customhttp",
                "userData[GCTI_GMS_PushResnd]": "true",  # the typo
                "userData[orderNumber]": "A-17",  # the customer's own: no hint
            },
        )
        assert status == 200 and body["statusCode"] == 0
        assert body["chatpushWarnings"] == [
            "userData[GCTI_GMS_PushResnd] is not a push key and was ignored; "
            "did you mean GCTI_GMS_PushResend?"
        ]
        typo_chat = body["chatId"]

        status, body = await request_chat(
            http,
            served,
            "support",
            {"nickname": "Bob", "GCTI_Chat_PushSubscribe": "true", "GCTI_GMS_PushDeviceId": "p"},
        )
        assert status == 200 and body["statusCode"] == 0
        [hint] = body["chatpushWarnings"]
        assert hint.startswith(
            "GCTI_Chat_PushSubscribe, GCTI_GMS_PushDeviceId sent outside userData and ignored"
        )
        assert "userData[GCTI_Chat_PushSubscribe]=" in hint

        # A correct request carries no extension field at all.
        status, body = await request_chat(http, served, "support", {"nickname": "Cy"})
        assert status == 200 and "chatpushWarnings" not in body

        # The subscription was made (the typo'd key was an extra), and the admin API, reached
        # with the second key of the comma list, shows it.
        url = f"http://127.0.0.1:{served.port}/api/v1/chats/{typo_chat}/subscription"
        async with http.get(url, headers={"X-API-Key": "second-key"}) as answer:
            assert answer.status == 200, await answer.text()
            subscription = await answer.json()
        assert subscription["deviceId"] == "phone-1"

        # A service option from the environment: push is off for "quiet".
        status, body = await request_chat(
            http,
            served,
            "quiet",
            {
                "nickname": "Di",
                "userData[GCTI_Chat_PushSubscribe]": "true",
                "userData[GCTI_GMS_PushDeviceId]": "phone-2",
                "userData[GCTI_GMS_PushDeviceType]": "customhttp",
            },
        )
        assert status == 400
        assert "push is not enabled for this service" in body["errors"][0]["advice"]

    hints = [r for r in served.records() if r.get("action") == "push_key_hint"]
    assert [r["level"] for r in hints] == ["warning", "warning"]
    assert hints[0]["chat_id"] == typo_chat and "GCTI_GMS_PushResnd" in str(hints[0]["message"])


async def test_the_cometd_form_gets_the_same_hint(served: Serving) -> None:
    url = f"http://127.0.0.1:{served.port}/genesys/cometd"
    channel = "/service/chatV2/support"
    async with Client(url, ConnectionType.LONG_POLLING, connection_timeout=0) as client:
        await client.subscribe(channel)
        await client.publish(
            channel,
            {
                "operation": "requestChat",
                "nickname": "Ann",
                "GCTI_Chat_PushSubscribe": "true",
                "userData": {"GCTI_GMS_PushDeviceID": "phone-1"},
            },
        )
        message = await asyncio.wait_for(client.receive(), 10)
    envelope = message["data"]
    assert envelope["statusCode"] == 0 and envelope["chatId"]
    assert envelope["chatpushWarnings"] == [
        "userData[GCTI_GMS_PushDeviceID] is not a push key and was ignored; "
        "did you mean GCTI_GMS_PushDeviceId?",
        "GCTI_Chat_PushSubscribe sent outside userData and ignored: push keys go inside it "
        '(REST: userData[GCTI_Chat_PushSubscribe]=...; CometD: "userData": {...})',
    ]
