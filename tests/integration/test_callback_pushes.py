"""Callback device pushes through the delivery platform (docs/callbacks.md §7, §9): a real custom
HTTP receiver on 127.0.0.1, the real dispatcher, both stores, the fake clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chatpush.api.callbacks import CALLBACKS
from chatpush.api.keys import DISPATCHER
from chatpush.callbacks.model import format_time
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.integration.callback_support import Client, cc, create, event, gms, record
from tests.receivers import Receiver

START_MS = FakeClock().now_ms()
PHONE = {"_device_os": "customhttp", "_device_notification_id": "phone-1"}


@pytest.fixture
async def client(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], receiver: Receiver
) -> Client:
    settings = make_settings(
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,comet,fcm,ios",
                "customhttp.url": receiver.url,
            }
        },
        services={
            "samples_dev": {"_ttl": 3600, "flex-push-resend-delay": 5},
            "cti": {"_call_direction": "USERORIGINATED", "_provide_code": True},
        },
    )
    return await make_client(settings)  # type: ignore[no-any-return]


async def pushed(client: Client, receiver: Receiver) -> list[dict[str, Any]]:
    """The payloads the phone got so far, in order."""
    await client.app[DISPATCHER].settle()
    for item in receiver.received:
        assert item.body["deviceId"] == "phone-1"
    return [item.body["message"] for item in receiver.received]


async def test_attempt_failed_per_attempt_and_final_once(
    client: Client, receiver: Receiver
) -> None:
    callback_id = (await create(client, **PHONE))["_id"]
    await event(client, callback_id, 1, "dial_init")
    await event(client, callback_id, 2, "dial_done", attempt=1, at=START_MS)
    await event(client, callback_id, 2, "dial_done", attempt=1)  # a duplicate: nothing
    await event(client, callback_id, 3, "dial_init")
    await event(client, callback_id, 4, "dial_done", attempt=1)  # the same attempt again
    await event(client, callback_id, 5, "dial_init")
    await event(client, callback_id, 6, "dial_done", attempt=3)
    payloads = await pushed(client, receiver)
    assert [(p["event"], p["attempt"], p["maxAttempts"]) for p in payloads] == [
        ("CALLBACK_ATTEMPT_FAILED", 1, 3),
        ("CALLBACK_FINAL_ATTEMPT_FAILED", 3, 3),
    ]
    first = payloads[0]
    assert first == {
        "event": "CALLBACK_ATTEMPT_FAILED",
        "callbackId": callback_id,
        "_id": callback_id,
        "serviceName": "samples_dev",
        "state": "QUEUED",
        "desiredTime": format_time(START_MS),
        "ewt": None,
        "position": None,
        "at": START_MS,
        "attempt": 1,
        "maxAttempts": 3,
    }
    assert payloads[1]["state"] == "COMPLETED"
    # One webhook-id per push (the platform's retries keep it); the callback's trail shows them.
    assert len({item.headers["webhook-id"] for item in receiver.received}) == 2
    trail = await cc(client, "GET", f"/callbacks/{callback_id}/deliveries")
    assert [(d["deviceType"], d["outcome"]) for d in trail["deliveries"]] == [
        ("customhttp", "sent"),
        ("customhttp", "sent"),
    ]


async def test_upcoming_goes_once_across_ewt_jitter(client: Client, receiver: Receiver) -> None:
    callback_id = (await create(client, **PHONE))["_id"]
    waits = [600, 400, 200, 100, 500, 50, 20]
    for n, ewt_s in enumerate(waits):
        update = {"callbackId": callback_id, "ewt": ewt_s, "position": 9 - n, "at": START_MS + n}
        await cc(client, "POST", "/callbacks/ewt", json={"updates": [update]})
    payloads = await pushed(client, receiver)
    assert [(p["event"], p["ewt"], p["position"]) for p in payloads] == [
        ("CALLBACK_UPCOMING", 200, 7)
    ]
    state = await cc(client, "GET", f"/callbacks/{callback_id}")
    assert state["upcoming"] == "sent"


async def test_upcoming_is_suppressed_when_already_low_or_not_completing(
    client: Client, receiver: Receiver
) -> None:
    low = (await create(client, **PHONE))["_id"]
    doomed = (await create(client, **PHONE))["_id"]
    updates = [
        {"callbackId": low, "ewt": 60, "at": START_MS + 1},
        {"callbackId": doomed, "ewt": 900, "at": START_MS + 1},
    ]
    await cc(client, "POST", "/callbacks/ewt", json={"updates": updates})
    updates = [
        {"callbackId": low, "ewt": 10, "at": START_MS + 2},
        {"callbackId": doomed, "ewt": 900, "willNotComplete": True, "at": START_MS + 2},
    ]
    await cc(client, "POST", "/callbacks/ewt", json={"updates": updates})
    await cc(
        client,
        "POST",
        "/callbacks/ewt",
        json={"updates": [{"callbackId": doomed, "ewt": 10, "at": START_MS + 3}]},
    )
    assert await pushed(client, receiver) == []
    for callback_id in (low, doomed):
        assert (await cc(client, "GET", f"/callbacks/{callback_id}"))["upcoming"] == "suppressed"


async def test_purged_on_ttl(client: Client, receiver: Receiver, clock: FakeClock) -> None:
    callback_id = (await create(client, **PHONE))["_id"]
    clock.advance(3600)
    for _ in range(50):
        await client.app[CALLBACKS].fire_timers()
        if (await record(client, callback_id))["_callback_state"] == "COMPLETED":
            break
    payloads = await pushed(client, receiver)
    assert [(p["event"], p["reason"], p["state"]) for p in payloads] == [
        ("CALLBACK_PURGED", "FAIL_TIMEOUT_TTL", "COMPLETED")
    ]


async def test_ready_and_call_in_for_click_to_call_in(client: Client, receiver: Receiver) -> None:
    callback_id = (await create(client, "cti", **PHONE))["_id"]
    # No failure pushes for USERORIGINATED; READY once, its call-in follow-up once.
    await event(client, callback_id, 1, "dial_done", attempt=1)
    await event(client, callback_id, 2, "ready")
    await event(client, callback_id, 3, "ready")
    await event(client, callback_id, 4, "call_in", accessNumber="+18005550100", accessCode="4711")
    await event(client, callback_id, 5, "dialog", action="get-dialog-start-chat")
    payloads = await pushed(client, receiver)
    assert [(p["event"], p.get("_action")) for p in payloads] == [
        ("CALLBACK_READY", "get-dialog-user-confirmation-provide_code-true"),
        ("CALLBACK_READY", "connect-inbound"),
        ("CALLBACK_DIALOG", "get-dialog-start-chat"),
    ]
    assert (payloads[1]["accessNumber"], payloads[1]["accessCode"]) == ("+18005550100", "4711")
    # The app follows the push: GET /genesys/1/service/{_id}/{_action}.
    dialog = await gms(client, "GET", f"/genesys/1/service/{callback_id}/{payloads[1]['_action']}")
    assert dialog["_tel_url"] == "tel:+18005550100"


async def test_no_push_without_push_keys(client: Client, receiver: Receiver) -> None:
    callback_id = (await create(client))["_id"]
    await event(client, callback_id, 1, "dial_done", attempt=3)
    assert await pushed(client, receiver) == []


async def test_fcm_pushes_and_a_dead_token_ends_the_subscription_not_the_callback(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    from cryptography.fernet import Fernet

    from chatpush.testing.fcm import FakeFcm
    from tests.integration._push_support import api

    fcm = await FakeFcm(clock).start()
    try:
        settings = make_settings(
            security={
                "api_keys": ["test-api-key"],
                "credentials_key": Fernet.generate_key().decode(),
            },
            mobile={"fcm_api_url": fcm.base_url, "allowed_hosts": [fcm.base_url]},
            groups={
                "g1": {
                    "default": True,
                    "nodes": ["n1"],
                    "pushEnabled": "fcm",
                    "fcm.title": "Acme callbacks",
                }
            },
        )
        client = await make_client(settings)
        await api(client, "PUT", "/groups/g1/credentials/fcm", json=fcm.credentials())
        alive = (await create(client, _device_os="gcm", _device_notification_id="tok-1"))["_id"]
        dead = (await create(client, _device_os="android", _device_notification_id="tok-2"))["_id"]
        fcm.fail("tok-2", 404, "UNREGISTERED", "Requested entity was not found.")
        for callback_id in (alive, dead):
            await event(client, callback_id, 1, "dial_done", attempt=1)
        await client.app[DISPATCHER].settle()
        [message] = fcm.sent
        assert message["token"] == "tok-1"
        assert message["notification"]["title"] == "Acme callbacks"
        payload = __import__("json").loads(message["data"]["message"])
        assert (payload["event"], payload["_id"], payload["attempt"]) == (
            "CALLBACK_ATTEMPT_FAILED",
            alive,
            1,
        )
        state = await cc(client, "GET", f"/callbacks/{dead}")
        assert state["subscription"] is None
        assert state["callback"]["_callback_state"] == "QUEUED"  # the callback goes on
        await event(client, dead, 2, "dial_done", attempt=2)
        await client.app[DISPATCHER].settle()
        assert [m["token"] for m in fcm.sent] == ["tok-1"]
    finally:
        await fcm.close()
