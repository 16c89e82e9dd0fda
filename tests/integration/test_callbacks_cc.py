"""The contact-centre side of callbacks (docs/callbacks.md §4) and the durable timers (§9.5): real
app, real database (SQLite and PostgreSQL), the fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from chatpush.api.callbacks import CALLBACKS
from chatpush.callbacks.model import format_time
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.integration.callback_support import (
    GMS,
    Client,
    ack,
    cc,
    create,
    event,
    gms,
    pull,
    record,
)

START_MS = FakeClock().now_ms()


@pytest.fixture
async def client(make_client: Callable[..., Any], make_settings: Callable[..., Settings]) -> Client:
    settings = make_settings(
        services={
            "samples_dev": {"_ttl": 3600},
            "cti": {"_call_direction": "USERORIGINATED"},
        },
        callback={"completed_retention_s": 600, "command_lease_s": 30},
    )
    return await make_client(settings)  # type: ignore[no-any-return]


async def state_of(client: Client, callback_id: str, expected: str) -> dict[str, Any]:
    """The record once it is in ``expected``: the app's own timer task may be firing the timer
    this test fires too (PostgreSQL: the one that locked the row first does it)."""
    found: dict[str, Any] = {}
    for _ in range(100):
        await client.app[CALLBACKS].fire_timers()
        found = await record(client, callback_id)
        if found["_callback_state"] == expected:
            break
        await asyncio.sleep(0.05)
    return found


def errors(body: dict[str, Any]) -> list[int]:
    assert set(body) == {"errors"}, body
    return [entry["code"] for entry in body["errors"]]


async def test_commands_are_leased_handed_out_again_and_acknowledged(
    client: Client, clock: FakeClock
) -> None:
    first = (await create(client))["_id"]
    second = (await create(client, "cti"))["_id"]
    commands = await pull(client)
    assert [(c["type"], c["callbackId"], c["seq"]) for c in commands] == [
        ("callback.created", first, 1),
        ("callback.created", second, 1),
    ]
    created = commands[0]
    assert created["serviceName"] == "samples_dev"
    assert created["at"] == START_MS
    assert created["callback"]["_callback_state"] == "QUEUED"
    assert created["callback"]["_ttl"] == 3600
    assert created["callback"]["_call_direction"] == "USERTERMINATED"
    assert commands[1]["callback"]["_call_direction"] == "USERORIGINATED"
    assert len(created["id"]) == 32
    # Leased: not handed out again until the lease runs out.
    assert await pull(client) == []
    assert [c["callbackId"] for c in await pull(client, service="cti")] == []
    clock.advance(30)
    again = await pull(client, service="cti")
    assert [c["id"] for c in again] == [commands[1]["id"]]
    answer = await ack(client, [*commands, {"id": "F" * 32}])
    assert answer == {"acknowledged": 2, "unknown": ["F" * 32]}
    clock.advance(60)
    assert await pull(client) == []


async def test_a_long_poll_returns_when_a_command_is_made(client: Client) -> None:
    waiting = asyncio.ensure_future(pull(client, wait_s=25))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    callback_id = (await create(client))["_id"]
    commands = await asyncio.wait_for(waiting, 10)
    assert [c["callbackId"] for c in commands] == [callback_id]


async def test_bad_pulls_and_acks(client: Client) -> None:
    assert errors(await cc(client, "GET", "/callbacks/commands", 400, limit="0")) == [101]
    assert errors(await cc(client, "GET", "/callbacks/commands", 400, wait_s="26")) == [101]
    assert errors(await cc(client, "GET", "/callbacks/commands", 400, color="red")) == [101]
    body = await cc(client, "POST", "/callbacks/commands/ack", 400, json={"ids": [1]})
    assert errors(body) == [101]
    response = await client.get("/api/v1/callbacks/commands")
    assert response.status == 403


async def test_a_callback_life_through_events(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    steps = [
        ("session_started", {}, "QUEUED"),
        ("dial_init", {}, "ROUTING"),
        ("dial_done", {"attempt": 1, "connected": False}, "QUEUED"),
        ("dial_init", {}, "ROUTING"),
        (
            "dial_done",
            {"attempt": 2, "connected": True, "attributes": {"c_call_result": 0}},
            "ROUTING",
        ),
        ("customer_queued", {}, "ROUTING"),
        ("route_to_agent", {"attributes": {"c_agent_id": "a1"}}, "PROCESSING"),
        ("exit", {"reason": "AGENT_CONNECTED"}, "COMPLETED"),
    ]
    for seq, (kind, fields, state) in enumerate(steps, start=1):
        answer = await event(client, callback_id, seq, kind, **fields)
        assert answer["state"] == state, (kind, answer)
        assert answer["duplicate"] is False and answer["seq"] == seq
    assert answer["reason"] == "AGENT_CONNECTED"
    found = await record(client, callback_id)
    assert found["_callback_state"] == "COMPLETED"
    assert found["_callback_reason"] == "AGENT_CONNECTED"
    state = await cc(client, "GET", f"/callbacks/{callback_id}")
    assert state["lastSeq"] == 8
    assert state["attributes"] == {"c_call_result": 0, "c_agent_id": "a1"}
    # An exit after completion: 200, nothing changes; anything else: 409.
    answer = await event(client, callback_id, 9, "exit", reason="CANCELLED")
    assert answer["reason"] == "AGENT_CONNECTED"
    body = await event(client, callback_id, 10, "dial_init", expect=409)
    assert errors(body) == [111]


async def test_duplicates_gaps_and_refusals_use_no_seq(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    await event(client, callback_id, 1, "dial_init")
    again = await event(client, callback_id, 1, "nonsense-not-validated")
    assert again == {
        "callbackId": callback_id,
        "seq": 1,
        "duplicate": True,
        "state": "ROUTING",
        "reason": None,
    }
    # A refused event (400 or 409) uses no seq: the same seq is accepted afterwards.
    assert errors(await event(client, callback_id, 2, "exit", expect=400)) == [101]
    answer = await event(client, callback_id, 2, "route_to_agent")
    assert (answer["state"], answer["duplicate"]) == ("PROCESSING", False)
    # PROCESSING -> QUEUED is illegal: 409 naming the state, seq 3 still free.
    body = await event(client, callback_id, 3, "resubmitted", expect=409)
    assert errors(body) == [111]
    assert "PROCESSING" in body["errors"][0]["advice"]
    # A gap is accepted.
    answer = await event(client, callback_id, 7, "exit", reason="AGENT_CONNECTED")
    assert answer["state"] == "COMPLETED"
    # Unknown callback: 404 code 113; bad bodies: 400.
    body = await event(client, "0" * 32, 1, "dial_init", expect=404)
    assert errors(body) == [113]
    assert errors(await cc(client, "POST", f"/callbacks/{callback_id}/events", 400, json=[])) == [
        101
    ]
    assert errors(
        await cc(client, "POST", f"/callbacks/{callback_id}/events", 400, json={"type": "exit"})
    ) == [101]


async def test_failed_dials_requeue_then_complete(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    answer = await event(client, callback_id, 1, "dial_done", attempt=1)
    assert answer["state"] == "QUEUED"
    later = START_MS + 600_000
    answer = await event(client, callback_id, 2, "dial_done", attempt=2, desiredTime=later)
    assert answer["state"] == "SCHEDULED"
    assert (await record(client, callback_id))["_desired_time"] == format_time(later)
    answer = await event(client, callback_id, 3, "dial_done", attempt=3)
    assert (answer["state"], answer["reason"]) == ("COMPLETED", "FAIL_CALL_TO_CUSTOMER")


async def test_event_rules(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    # ready / call_in are for USERORIGINATED callbacks only.
    assert errors(await event(client, callback_id, 1, "ready", expect=400)) == [101]
    # reschedule needs desiredTime; update changes only an explicit state.
    assert errors(await event(client, callback_id, 1, "reschedule", expect=400)) == [101]
    answer = await event(client, callback_id, 1, "update", attributes={"c_target": "x"})
    assert answer["state"] == "QUEUED"
    answer = await event(client, callback_id, 2, "submit_failed")
    assert (answer["state"], answer["reason"]) == ("COMPLETED", "SUBMIT_FAILED")
    cti = (await create(client, "cti"))["_id"]
    await event(client, cti, 1, "ready")
    await event(client, cti, 2, "call_in", accessNumber="+18005550100", accessCode="4711")
    state = await cc(client, "GET", f"/callbacks/{cti}")
    assert state["callback"]["_callback_state"] == "QUEUED"
    answer = await event(client, cti, 3, "update", state="COMPLETED", reason="MY_REASON_1")
    assert answer["reason"] == "MY_REASON_1"
    other = (await create(client))["_id"]
    assert errors(await event(client, other, 1, "exit", 400, reason="lower")) == [101]
    assert errors(await event(client, other, 1, "exit", 400, reason="X", color=1)) == [101]


async def test_ewt_updates_are_last_writer_wins(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    done = (await create(client))["_id"]
    await gms(client, "DELETE", f"{GMS}/samples_dev/{done}")
    updates = [
        {"callbackId": callback_id, "ewt": 600, "position": 9, "at": START_MS + 10},
        {"callbackId": callback_id, "ewt": 900, "position": 12, "at": START_MS + 5},
        {"callbackId": done, "ewt": 1},
        {"callbackId": "0" * 32, "ewt": 1},
    ]
    answer = await cc(client, "POST", "/callbacks/ewt", json={"updates": updates})
    assert answer == {"applied": 1, "ignored": [done, "0" * 32]}
    state = await cc(client, "GET", f"/callbacks/{callback_id}")
    assert (state["ewt"], state["position"]) == (600, 9)
    body = await cc(client, "POST", "/callbacks/ewt", 400, json={"updates": [{"callbackId": "x"}]})
    assert errors(body) == [101]
    many = [{"callbackId": callback_id, "ewt": 1}] * 1001
    assert errors(await cc(client, "POST", "/callbacks/ewt", 400, json={"updates": many})) == [101]


async def test_timers_due_ttl_and_retention(client: Client, clock: FakeClock) -> None:
    service = client.app[CALLBACKS]
    scheduled = (await create(client, _desired_time=format_time(START_MS + 60_000)))["_id"]
    queued = (await create(client))["_id"]
    await ack(client, await pull(client))
    clock.advance(60)
    assert (await state_of(client, scheduled, "QUEUED"))["_callback_state"] == "QUEUED"
    [queued_command] = await pull(client)
    assert (queued_command["type"], queued_command["callbackId"]) == ("callback.queued", scheduled)
    await ack(client, [queued_command])
    # TTL: _ttl (3600 s) after the desired time, FAIL_TIMEOUT_TTL and the CC side told.
    clock.advance(3600 - 60)
    found = await state_of(client, queued, "COMPLETED")
    assert (found["_callback_state"], found["_callback_reason"]) == (
        "COMPLETED",
        "FAIL_TIMEOUT_TTL",
    )
    assert (await record(client, scheduled))["_callback_state"] == "QUEUED"  # 60 s later
    [cancelled] = await pull(client)
    assert (cancelled["type"], cancelled["reason"]) == ("callback.cancelled", "FAIL_TIMEOUT_TTL")
    # Retention: 600 s after completion, gone with all it holds.
    clock.advance(600)
    for _ in range(100):
        await service.fire_timers()
        if await gms(client, "GET", GMS, params={"_id": queued}) == []:
            break
        await asyncio.sleep(0.05)
    assert await gms(client, "GET", GMS, params={"_id": queued}) == []
    # Its unacknowledged commands went with it; the other's TTL (60 s later) has fired too.
    assert [c["callbackId"] for c in await pull(client)] == [scheduled]


async def test_missed_timers_fire_at_start_in_time_order(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make_settings(services={"samples_dev": {"_ttl": 3600}})
    client = await make_client(settings)
    ids = []
    for minutes in (3, 1, 2):
        desired = format_time(START_MS + minutes * 60_000)
        ids.append((await create(client, _desired_time=desired))["_id"])
    await ack(client, await pull(client))
    await client.close()
    clock.advance(600)
    client = await make_client(settings)  # the same database: the timers task fires them
    for _ in range(100):
        states = [(await record(client, each))["_callback_state"] for each in ids]
        if states == ["QUEUED"] * 3:
            break
        await asyncio.sleep(0.05)
    assert states == ["QUEUED"] * 3
    commands = []
    while batch := await pull(client):
        commands += batch
        await ack(client, batch)
    assert [c["callbackId"] for c in commands] == [ids[1], ids[2], ids[0]]
