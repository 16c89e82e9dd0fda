"""The GMS Callback API, the customer's side (docs/callbacks.md §2, §3): real app, real database
(SQLite and PostgreSQL), the fake clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chatpush.callbacks.model import format_time
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.conftest import API_KEY
from tests.integration.callback_support import (
    GMS,
    Client,
    cc,
    create,
    event,
    gms,
    gms_error,
    pull,
    record,
)

START_MS = FakeClock().now_ms()


@pytest.fixture
async def client(make_client: Callable[..., Any], make_settings: Callable[..., Settings]) -> Client:
    settings = make_settings(
        services={"samples_dev": {"_ttl": 3600}, "slots": {"_max_request_by_time_bucket": 1}}
    )
    return await make_client(settings)  # type: ignore[no-any-return]


async def test_an_immediate_callback_is_queued_and_answers_the_connect_outbound_dialog(
    client: Client,
) -> None:
    dialog = await create(client, first_name="Ann")
    callback_id = dialog["_id"]
    assert dialog == {
        "_id": callback_id,
        "_dialog_id": "0",
        "_action": "ConfirmationDialog",
        "_text": "You will receive the call shortly",
        "_ok_title": "Ok",
    }
    assert len(callback_id) == 32 and callback_id == callback_id.upper()
    found = await record(client, callback_id)
    host = f"http://{client.host}:{client.port}/genesys"
    assert found == {
        "_id": callback_id,
        "_service_name": "samples_dev",
        "_customer_number": "5115",
        "_callback_state": "QUEUED",
        "_desired_time": format_time(START_MS),
        "_expiration_time": format_time(START_MS + 3600_000),
        "_url": f"{host}/1/service/callback/samples_dev/{callback_id}",
        "first_name": "Ann",
    }
    assert list(found) == list(found)  # keys in the contract's order (dicts keep it)
    assert list(found)[:8] == [
        "_id",
        "_service_name",
        "_customer_number",
        "_callback_state",
        "_desired_time",
        "_expiration_time",
        "_url",
        "first_name",
    ]


async def test_a_later_desired_time_schedules_it(client: Client) -> None:
    later = format_time(START_MS + 3_600_000)
    dialog = await create(client, _desired_time=later)
    assert dialog["_text"] == "Your callback is scheduled"
    found = await record(client, dialog["_id"])
    assert found["_callback_state"] == "SCHEDULED"
    assert found["_desired_time"] == later


async def test_the_gms_android_sample_create_shape(client: Client) -> None:
    """What GMS's Android demo posts (JSON with nulls; _callback_state it may send is ignored)."""
    body = {
        "_customer_number": "5115",
        "_callback_state": None,
        "_urs_virtual_queue": None,
        "_request_queue_time_stat": None,
        "_call_direction": "USERORIGINATED",
        "_wait_for_agent": "false",
        "_wait_for_user_confirm": "true",
        "_media_type": "voice",
        "_device_os": "gcm",
        "_device_notification_id": "APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx",
        "first_name": "Ann",
        "last_name": "Lee",
    }
    dialog = await gms(client, "POST", f"{GMS}/samples_dev", json=body)
    assert dialog["_text"] == "We will notify you when agent is available"
    found = await record(client, dialog["_id"])
    assert found["_callback_state"] == "QUEUED"
    assert "_device_os" not in found and "_device_notification_id" not in found
    assert found["_call_direction"] == "USERORIGINATED"
    state = await cc(client, "GET", f"/callbacks/{dialog['_id']}")
    assert state["subscription"] == {
        "deviceType": "fcm",
        "provider": None,
        "debug": False,
        "language": None,
    }


@pytest.mark.parametrize(
    "keys",
    [
        {
            "_device_os": "ios",
            "_device_notification_id": "ab12",
            "_push_notification_debug": "true",
        },
        {
            "push_notification_type": "apple",
            "push_notification_deviceid": "ab12",
            "push_notification_debug": "true",
        },
        {
            "pushNotificationType": "ios",
            "pushNotificationDeviceId": "ab12",
            "pushNotificationDebug": "true",
        },
    ],
)
async def test_the_three_push_key_styles_make_one_subscription(
    client: Client, keys: dict[str, str]
) -> None:
    dialog = await create(client, **keys)
    state = await cc(client, "GET", f"/callbacks/{dialog['_id']}")
    assert state["subscription"]["deviceType"] == "ios"
    assert state["subscription"]["debug"] is True
    assert not set(keys) & set(await record(client, dialog["_id"]))


async def test_push_keys_that_disagree_or_lack_a_part_are_refused(client: Client) -> None:
    body = await gms(
        client,
        "POST",
        f"{GMS}/samples_dev",
        400,
        data={
            "_customer_number": "1",
            "_device_os": "ios",
            "_device_notification_id": "a",
            "pushNotificationDeviceId": "b",
        },
    )
    gms_error(body, "INVALID_PUSH_KEY")
    body = await gms(
        client,
        "POST",
        f"{GMS}/samples_dev",
        400,
        data={"_customer_number": "1", "_device_os": "ios"},
    )
    gms_error(body, "BAD_PARAMETER")
    body = await gms(
        client,
        "POST",
        f"{GMS}/samples_dev",
        400,
        data={"_customer_number": "1", "_device_os": "pager", "_device_notification_id": "a"},
    )
    gms_error(body, "INVALID_PUSH_KEY")


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "_customer_number is missing"),
        ({"_customer_number": "x" * 65}, "_customer_number"),
        ({"_customer_number": "1", "_desired_time": "tomorrow"}, "_desired_time"),
        ({"_customer_number": "1", "_desired_time": "2024-05-02T14:30:00"}, "offset"),
        ({"_customer_number": "1", "_desired_time": format_time(START_MS - 301_000)}, "past"),
        ({"_customer_number": "1", "_call_direction": "SIDEWAYS"}, "_call_direction"),
        ({"_customer_number": "1", "_wait_for_agent": "maybe"}, "_wait_for_agent"),
    ],
)
async def test_bad_creates_are_400_bad_parameter(
    client: Client, form: dict[str, str], message: str
) -> None:
    body = await gms(client, "POST", f"{GMS}/samples_dev", 400, data=form)
    gms_error(body, "BAD_PARAMETER")
    assert message in body["message"]
    assert await gms(client, "GET", GMS, params={"_customer_number": "1"}, key=API_KEY) == []


async def test_other_bodies_are_415_and_json_must_be_flat(client: Client) -> None:
    response = await client.post(
        f"{GMS}/samples_dev", data=b"<x/>", headers={"Content-Type": "application/xml"}
    )
    assert response.status == 415
    gms_error(await response.json(), "UNSUPPORTED_MEDIA_TYPE")
    body = await gms(client, "POST", f"{GMS}/samples_dev", 400, json={"_customer_number": {"a": 1}})
    gms_error(body, "BAD_PARAMETER")
    body = await gms(client, "POST", f"{GMS}/samples_dev", 400, json=["_customer_number"])
    gms_error(body, "BAD_PARAMETER")
    response = await client.post(
        f"{GMS}/samples_dev", data=b"x" * 70_000, headers={"Content-Type": "text/plain"}
    )
    assert response.status == 413
    gms_error(await response.json(), "BODY_TOO_LARGE")


async def test_json_scalars_become_strings_and_empty_values_are_absent(client: Client) -> None:
    dialog = await gms(
        client,
        "POST",
        f"{GMS}/samples_dev",
        json={"_customer_number": 5115, "vip": True, "score": 2.0, "note": "", "gone": None},
    )
    found = await record(client, dialog["_id"])
    assert found["_customer_number"] == "5115"
    assert found["vip"] == "true" and found["score"] == "2"
    assert "note" not in found and "gone" not in found


async def test_restricted_services(make_client: Callable[..., Any], make_settings: Any) -> None:
    client = await make_client(
        make_settings(callback={"restrict_services": True}, services={"known": {}})
    )
    body = await gms(client, "POST", f"{GMS}/other", 404, data={"_customer_number": "1"})
    gms_error(body, "SERVICE_NOT_FOUND")
    await create(client, "known")


async def test_queries_by_id_properties_and_across_services(client: Client) -> None:
    first = (await create(client, _customer_number="111", color="red"))["_id"]
    second = (await create(client, _customer_number="222", color="blue"))["_id"]
    third = (await create(client, "other", _customer_number="111"))["_id"]
    assert await gms(client, "GET", GMS, params={"_id": "0" * 32}) == []
    assert await gms(client, "GET", GMS, params={"_id": "not an id"}) == []

    def ids(records: list[dict[str, str]]) -> list[str]:
        return [each["_id"] for each in records]

    by_number = await gms(client, "GET", GMS, params={"_customer_number": "111"}, key=API_KEY)
    assert sorted(ids(by_number)) == sorted([first, third])
    in_service = await gms(
        client, "GET", f"{GMS}/samples_dev", params={"_customer_number": "111"}, key=API_KEY
    )
    assert ids(in_service) == [first]
    either = await gms(
        client,
        "GET",
        f"{GMS}/samples_dev",
        params={"color": "red", "_customer_number": "222", "operand": "OR"},
        key=API_KEY,
    )
    assert sorted(ids(either)) == sorted([first, second])
    not_red = await gms(client, "GET", f"{GMS}/samples_dev", params={"color": "!red"}, key=API_KEY)
    assert ids(not_red) == [second]
    await gms(client, "DELETE", f"{GMS}/samples_dev/{second}")
    open_ones = await gms(client, "GET", GMS, params={"_callback_state": "!COMPLETED"}, key=API_KEY)
    assert sorted(ids(open_ones)) == sorted([first, third])
    cancelled = await gms(client, "GET", GMS, params={"_callback_reason": "CANCELLED"}, key=API_KEY)
    assert ids(cancelled) == [second]
    # Without a key: 403 (customer numbers are personal data); a bad operand: 400.
    body = await gms(client, "GET", GMS, 403, params={"_customer_number": "111"})
    gms_error(body, "API_KEY_REQUIRED")
    body = await gms(client, "GET", GMS, 400, params={"a": "1", "operand": "XOR"}, key=API_KEY)
    gms_error(body, "BAD_PARAMETER")


async def test_open_queries(make_client: Callable[..., Any], make_settings: Any) -> None:
    client = await make_client(make_settings(callback={"open_queries": True}))
    callback_id = (await create(client))["_id"]
    found = await gms(client, "GET", GMS, params={"_customer_number": "5115"})
    assert [each["_id"] for each in found] == [callback_id]


async def test_reschedule_update_and_their_commands(client: Client, clock: FakeClock) -> None:
    callback_id = (await create(client))["_id"]
    later = format_time(START_MS + 7_200_000)
    updated = await gms(
        client,
        "PUT",
        f"{GMS}/samples_dev/{callback_id}",
        json={"_new_desired_time": later, "_callback_state": "ROUTING", "note": "after lunch"},
    )
    assert updated["_callback_state"] == "SCHEDULED"
    assert updated["_desired_time"] == later
    assert updated["_expiration_time"] == format_time(START_MS + 7_200_000 + 3_600_000)
    assert updated["note"] == "after lunch"
    # Back to now: QUEUED again (submitted).
    now = format_time(START_MS)
    back = await gms(
        client, "PUT", f"{GMS}/samples_dev/{callback_id}", data={"_new_desired_time": now}
    )
    assert back["_callback_state"] == "QUEUED"
    kinds = []
    for _ in range(5):
        commands = await pull(client)
        if not commands:
            break
        kinds += [command["type"] for command in commands]
        await cc(
            client, "POST", "/callbacks/commands/ack", json={"ids": [c["id"] for c in commands]}
        )
    assert kinds == [
        "callback.created",
        "callback.rescheduled",
        "callback.updated",
        "callback.queued",
    ]
    # From ROUTING a new time is 409; properties alone still go.
    await event(client, callback_id, 1, "dial_init")
    body = await gms(
        client, "PUT", f"{GMS}/samples_dev/{callback_id}", 409, data={"_new_desired_time": later}
    )
    gms_error(body, "ILLEGAL_STATE")
    assert body["_callback_state"] == "ROUTING"
    await gms(client, "PUT", f"{GMS}/samples_dev/{callback_id}", data={"note": "any time"})
    body = await gms(client, "PUT", f"{GMS}/samples_dev/{callback_id}", 400, data={})
    gms_error(body, "BAD_PARAMETER")
    # Under another service, or unknown: 404.
    body = await gms(client, "PUT", f"{GMS}/other/{callback_id}", 404, data={"note": "x"})
    gms_error(body, "CALLBACK_NOT_FOUND")


async def test_cancel(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    done = await gms(client, "DELETE", f"{GMS}/samples_dev/{callback_id}?discard_ors_failure=true")
    assert done["_callback_state"] == "COMPLETED"
    assert done["_callback_reason"] == "CANCELLED"
    # Again: 200, unchanged (not an error).
    assert await gms(client, "DELETE", f"{GMS}/samples_dev/{callback_id}") == done
    body = await gms(client, "PUT", f"{GMS}/samples_dev/{callback_id}", 409, data={"a": "b"})
    gms_error(body, "ILLEGAL_STATE")
    assert body["_callback_state"] == "COMPLETED"
    commands = await pull(client)
    assert [c["type"] for c in commands] == ["callback.created"]  # one at a time per callback
    await cc(client, "POST", "/callbacks/commands/ack", json={"ids": [commands[0]["id"]]})
    [cancelled] = await pull(client)
    assert cancelled["type"] == "callback.cancelled"
    assert cancelled["reason"] == "CANCELLED"
    assert cancelled["seq"] == 2


async def test_a_callback_in_progress_cannot_be_cancelled(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    await event(client, callback_id, 1, "route_to_agent")
    body = await gms(client, "DELETE", f"{GMS}/samples_dev/{callback_id}", 409)
    gms_error(body, "ILLEGAL_STATE")
    assert body["_callback_state"] == "PROCESSING"
    body = await gms(client, "DELETE", f"{GMS}/samples_dev/{'0' * 32}", 404)
    gms_error(body, "CALLBACK_NOT_FOUND")


async def test_queue_position(client: Client, clock: FakeClock) -> None:
    callback_id = (await create(client))["_id"]
    path = f"/genesys/1/service/{callback_id}/check-queue-position"
    assert await gms(client, "GET", path) == {
        "_position": -1,
        "_eta": -1,
        "_total_waiting": -1,
        "_agent_ready_threshold_passed": False,
        "ewt": -1,
    }
    update = {"callbackId": callback_id, "ewt": 240, "position": 3, "totalWaiting": 12}
    answer = await cc(client, "POST", "/callbacks/ewt", json={"updates": [update]})
    assert answer == {"applied": 1, "ignored": []}
    assert await gms(client, "POST", path) == {
        "_position": 3,
        "_eta": 240,
        "_total_waiting": 12,
        "_agent_ready_threshold_passed": True,  # below 5 minutes
        "ewt": 240,
    }
    body = await gms(client, "GET", f"/genesys/1/service/{'0' * 32}/check-queue-position", 404)
    gms_error(body, "CALLBACK_NOT_FOUND")


async def test_admin_cancel(client: Client) -> None:
    first = (await create(client))["_id"]
    second = (await create(client))["_id"]
    await event(client, second, 1, "route_to_agent")
    path = "/genesys/1/admin/callback/cancel"
    payload = {"reason": "storm", "ids": [first, second, "0" * 32]}
    body = await gms(client, "POST", path, 403, json=payload)
    gms_error(body, "API_KEY_REQUIRED")
    answer = await gms(client, "POST", path, json=payload, key=API_KEY)
    assert answer == {"cancelled": [first], "skipped": [second, "0" * 32]}
    found = await record(client, first)
    assert found["_callback_reason"] == "CANCELLED_BY_ADMIN"
    body = await gms(client, "POST", path, 400, json={"ids": "all"}, key=API_KEY)
    gms_error(body, "BAD_PARAMETER")


async def test_availability(client: Client, clock: FakeClock) -> None:
    # 1_700_000_000_000 is 2023-11-14T22:13:20Z: slots of 15 minutes from 22:00.
    body = await gms(client, "GET", f"{GMS}/samples_dev/availability", 501)
    gms_error(body, "NOT_IMPLEMENTED")
    slots = await gms(client, "GET", f"{GMS}/slots/availability", params={"max-time-slots": "3"})
    assert slots == {
        "2023-11-14T22:00:00.000Z": 1,
        "2023-11-14T22:15:00.000Z": 1,
        "2023-11-14T22:30:00.000Z": 1,
    }
    await create(client, "slots", _desired_time="2023-11-14T22:20:00.000Z")
    slots = await gms(client, "GET", f"{GMS}/slots/availability", params={"max-time-slots": "2"})
    assert slots == {"2023-11-14T22:00:00.000Z": 1, "2023-11-14T22:30:00.000Z": 1}
    busy = await gms(
        client,
        "GET",
        "/genesys/2/service/callback/slots/availability",
        params={"max-time-slots": "3", "report-busy": "1"},
    )
    assert busy == {
        "2023-11-14T22:00:00.000Z": 1,
        "2023-11-14T22:15:00.000Z": 0,
        "2023-11-14T22:30:00.000Z": 1,
    }
    # The slot is full: 409 SLOT_NOT_AVAILABLE with the next free ones.
    body = await gms(
        client,
        "POST",
        f"{GMS}/slots",
        409,
        data={"_customer_number": "1", "_desired_time": "2023-11-14T22:25:00.000Z"},
    )
    gms_error(body, "SLOT_NOT_AVAILABLE")
    assert list(body["availability"])[:2] == [
        "2023-11-14T22:30:00.000Z",
        "2023-11-14T22:45:00.000Z",
    ]
    assert len(body["availability"]) == 10
    # Immediate callbacks take no slot.
    await create(client, "slots")
    body = await gms(client, "GET", f"{GMS}/slots/availability", 400, params={"start": "soon"})
    gms_error(body, "BAD_PARAMETER")


async def test_open_hours_close_slots(make_client: Callable[..., Any], make_settings: Any) -> None:
    options = {
        "_max_request_by_time_bucket": 2,
        "_request_time_bucket": 60,
        "_timezone": "Europe/Paris",
        "_open_hours": "mon-fri 08:00-18:00",
    }
    client = await make_client(make_settings(services={"shop": options}))
    # Tuesday 2023-11-14 23:13 in Paris: the next open slot is Wednesday 08:00 (07:00Z).
    slots = await gms(client, "GET", f"{GMS}/shop/availability", params={"max-time-slots": "2"})
    assert slots == {"2023-11-15T07:00:00.000Z": 2, "2023-11-15T08:00:00.000Z": 2}
    body = await gms(
        client,
        "POST",
        f"{GMS}/shop",
        409,
        data={"_customer_number": "1", "_desired_time": "2023-11-15T03:00:00.000Z"},
    )
    gms_error(body, "SLOT_NOT_AVAILABLE")
