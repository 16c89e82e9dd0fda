"""The custom HTTP provider's outbound limits against a hostile receiver on 127.0.0.1
(tests/providers/hostile.py): no redirects, answers read up to ``delivery.max_answer_bytes``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chatpush.config import DeliverySettings
from chatpush.providers.base import SendResult
from chatpush.providers.customhttp import CustomHttpProvider
from tests.providers.conftest import chat_notification, target
from tests.providers.hostile import SECRET, Hostile, Mode


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    server = await Hostile().start()
    yield server
    await server.close()


async def post(hostile: Hostile, settings: DeliverySettings | None = None) -> SendResult:
    provider = CustomHttpProvider(settings or DeliverySettings())
    await provider.start()
    try:
        return await provider.send(
            target(url=f"{hostile.base_url}/receiver"),
            chat_notification({"deviceId": "dev-1", "message": "hello"}, "bare", "c1"),
            now_s=0,
        )
    finally:
        await provider.close()


async def test_a_receiver_that_redirects_is_a_permanent_failure_not_followed(
    hostile: Hostile,
) -> None:
    hostile.mode = "redirect"
    result = await post(hostile)
    assert (result.outcome, result.http_status, result.temporary) == ("failed", 302, False)
    assert result.error == "receiver answered 302 Found"
    assert hostile.hits == ["/receiver"]  # not "/landed"


@pytest.mark.parametrize("mode", ["huge", "huge-declared"])
async def test_an_answer_over_max_answer_bytes_is_a_failure_not_a_memory_cost(
    hostile: Hostile, mode: Mode
) -> None:
    hostile.mode = mode
    result = await post(hostile)
    assert (result.outcome, result.http_status, result.temporary) == ("failed", 200, False)
    assert result.error == "receiver: answer (200) over 65536 bytes, not read"
    assert hostile.hits == ["/receiver"]


async def test_an_answer_within_the_limit_is_read_and_the_receivers_words_are_not_shown(
    hostile: Hostile,
) -> None:
    hostile.mode = "html"
    assert (await post(hostile)).outcome == "sent"
    hostile.mode = "html-error"
    failed = await post(hostile, DeliverySettings(max_answer_bytes=1024))
    assert (failed.outcome, failed.error) == (
        "failed",
        "receiver answered 500 Internal Server Error",
    )
    assert SECRET not in repr(failed)
