"""Two instances in one process on one PostgreSQL database (docs/callbacks.md §9): each timer
fires once, one callback's events apply one at a time, pullers take disjoint commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from chatpush.api.callbacks import CALLBACKS
from chatpush.api.keys import DISPATCHER
from chatpush.callbacks.model import format_time
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.integration.callback_support import GMS, Client, ack, cc, create, gms, pull, record

START_MS = FakeClock().now_ms()


@pytest.fixture
def db_url(pg_url: str) -> str:
    """PostgreSQL only: several instances on one SQLite file is not a supported set-up."""
    return pg_url


async def instances(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> tuple[Client, Client]:
    def settings(name: str) -> Settings:
        return make_settings(server={"instance_id": f"instance-{name}", "alias": name})

    return await make_client(settings("a")), await make_client(settings("b"))


async def test_each_timer_fires_once(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    a, b = await instances(make_client, make_settings)
    ids = [
        (await create(a if n % 2 else b, _desired_time=format_time(START_MS + 60_000)))["_id"]
        for n in range(20)
    ]
    await ack(a, await pull(a, limit=100))
    clock.advance(60)
    for _ in range(3):  # both instances (and their timer tasks) fire at once, several times
        await asyncio.gather(a.app[CALLBACKS].fire_timers(), b.app[CALLBACKS].fire_timers())
    assert {(await record(a, each))["_callback_state"] for each in ids} == {"QUEUED"}
    commands = []
    while batch := await pull(b, limit=7):
        commands += batch
        await ack(b, batch)
    assert sorted(c["callbackId"] for c in commands) == sorted(ids)
    assert {(c["type"], c["seq"]) for c in commands} == {("callback.queued", 2)}


async def test_one_callbacks_events_serialise_and_pullers_share(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    a, b = await instances(make_client, make_settings)
    callback_id = (await create(a))["_id"]
    path = f"/callbacks/{callback_id}/events"
    # The same seq posted to both instances at once: exactly one applies it.
    answers = await asyncio.gather(
        *(cc(client, "POST", path, json={"seq": 1, "type": "dial_init"}) for client in (a, b, a, b))
    )
    assert sorted(answer["duplicate"] for answer in answers) == [False, True, True, True]
    state = await cc(a, "GET", f"/callbacks/{callback_id}")
    assert state["lastSeq"] == 1
    # Commands of many callbacks, pulled from both instances at once: each handed out once.
    for _ in range(10):
        await create(b)
    pulled = await asyncio.gather(pull(a, limit=4), pull(b, limit=4), pull(a, limit=4))
    ids = [c["id"] for batch in pulled for c in batch]
    assert len(ids) == len(set(ids)) == 11


async def test_webhook_commands_go_once_each_and_in_order_from_two_instances(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], receiver: Any
) -> None:
    def settings(name: str) -> Settings:
        return make_settings(
            server={"instance_id": f"instance-{name}", "alias": name, "nodes": [f"n-{name}"]},
            groups={"g": {"default": True, "nodes": ["n-a", "n-b"], "pushEnabled": "customhttp"}},
            callback={"cc_webhook_url": receiver.url},
        )

    a, b = await make_client(settings("a")), await make_client(settings("b"))
    ids = [(await create(a if n % 2 else b))["_id"] for n in range(12)]
    for n, callback_id in enumerate(ids):
        client = b if n % 2 else a
        await gms(client, "DELETE", f"{GMS}/samples_dev/{callback_id}")
    for _ in range(50):
        await asyncio.gather(a.app[DISPATCHER].settle(), b.app[DISPATCHER].settle())
        if len(receiver.received) >= 2 * len(ids):
            break
        await asyncio.sleep(0.1)
    got = [(item.body["callbackId"], item.body["seq"]) for item in receiver.received]
    assert sorted(got) == sorted((each, seq) for each in ids for seq in (1, 2))  # once each
    for each in ids:
        assert [seq for callback_id, seq in got if callback_id == each] == [1, 2]
