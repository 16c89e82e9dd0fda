"""Callback status notifications (docs/callbacks.md §5, §9) to a real httpcb receiver on
127.0.0.1 through the delivery platform: the default and named event lists, the exact bodies,
the Standard Webhooks headers (the same webhook-id on every try), per-destination order, the
create's 400s; and the httpcb provider's own rules (allow-list, private addresses, Authorization).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatpush.api.callbacks import CALLBACKS
from chatpush.api.keys import DATABASE, DISPATCHER, SETTINGS
from chatpush.callbacks.model import format_time
from chatpush.config import Settings
from chatpush.delivery import Destination, NewNotification, enqueue
from chatpush.providers.customhttp import sign
from chatpush.store import callbacks as callback_store
from chatpush.store import trail
from chatpush.testing import FakeClock
from tests.integration.callback_support import Client, cc, create, event, gms
from tests.receivers import Receiver

START_MS = FakeClock().now_ms()
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SCHEDULED_AT = format_time(START_MS + 3_600_000)


@pytest.fixture
async def status_rx() -> AsyncIterator[Receiver]:
    """The customer's status receiver (an httpcb URL)."""
    receiver = await Receiver().start()
    yield receiver
    await receiver.close()


def settings_for(
    make_settings: Callable[..., Settings],
    status_url: str,
    device_url: str,
    reminder: dict[str, Any] | None = None,
) -> Settings:
    prefix = status_url.rsplit("/", 1)[0] + "/"
    return make_settings(
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,httpcb",
                "customhttp.url": device_url,
                "customhttp.signing_secret": SECRET,
                "customhttp.authorization": "Bearer the-groups-own",
            }
        },
        provider_options={"httpcb": {"allow_private_addresses": True}},
        callback={"httpcb_allowed_prefixes": [prefix]},
        services={
            "samples_dev": {
                "_enable_status_notification": "subscribe_notify",
                "_status_notification_target": status_url,
                "flex-push-resend-delay": 5,
                **(reminder or {}),
            },
            "listed": {"_callback_events_list": "GMS_Events", "flex-push-resend-delay": 5},
            "quiet": {},
        },
        event_lists={
            "GMS_Events": {
                "properties": {
                    "_enable_status_notification": "subscribe_notify",
                    "_status_notification_target": status_url,
                    "_status_notification_attempts": 4,
                },
                "_cbe_on_callback_scheduled": {
                    "notify_params": "_customer_number,_phone_number,_desired_time",
                    "notify_custom": {"state": "scheduled"},
                },
                "_cbe_on_callback_rescheduled": {
                    "notify_params": ["_customer_number", "_phone_number", "_desired_time"],
                    "notify_custom": '{"state": "rescheduled"}',
                },
                "_cbe_on_callback_cancelled": {"notify_params": "_service_id,_v_queue"},
                "_cbe_on_callback_status_updated": {
                    "notify_params": "_service_id,_callback_state,_callback_reason",
                    "notify_custom": {"_callback_state": "never written twice", "n": 1},
                },
                "_cbe_on_dial_done": {"notify_params": "c_call_result"},
            }
        },
    )


@pytest.fixture
async def client(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    status_rx: Receiver,
    receiver: Receiver,
) -> Client:
    return await make_client(settings_for(make_settings, status_rx.url, receiver.url))  # type: ignore[no-any-return]


async def delivered(client: Client, rx: Receiver) -> list[dict[str, Any]]:
    await client.app[DISPATCHER].settle()
    return [item.body for item in rx.received]


def check_signature(item: Any) -> None:
    headers = item.headers
    expected = sign(SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]), item.raw)
    assert headers["webhook-signature"] == expected


async def test_default_list_sends_the_scxml_events_with_exact_bodies(
    client: Client, status_rx: Receiver
) -> None:
    callback_id = (await create(client))["_id"]
    # The default list has no _cbe_on_callback_* events: the create sends nothing.
    assert await delivered(client, status_rx) == []
    at_s = START_MS // 1000 + 7
    attributes = {"c_dialed_number": "5115", "c_call_result": 0, "_urs_virtual_queue": "VQ_1"}
    await event(client, callback_id, 1, "session_started", at=at_s * 1000, attributes=attributes)
    await event(client, callback_id, 2, "dial_init", at=at_s * 1000)
    await event(client, callback_id, 3, "dial_done", at=at_s * 1000, attempt=1, connected=True)
    await event(client, callback_id, 4, "update", attributes={"x": 1})  # no status event
    await event(client, callback_id, 5, "exit", at=at_s * 1000, reason="AGENT_CONNECTED")
    bodies = await delivered(client, status_rx)
    common = {"timestamp": str(at_s), "_service_id": callback_id, "_service_name": "samples_dev"}
    assert bodies == [
        {
            "event_id": "_cbe_on_service_create",
            "timestamp": str(at_s),
            "_callback_state": "QUEUED",
            "_service_id": callback_id,
            "_service_name": "samples_dev",
            "_customer_number": "5115",
            "_urs_virtual_queue": "VQ_1",
        },
        {
            "event_id": "_cbe_on_dial_init",
            **common,
            "_callback_state": "ROUTING",
            "_customer_number": "5115",
            "c_dialed_number": "5115",
        },
        {
            "event_id": "_cbe_on_dial_done",
            **common,
            "_callback_state": "ROUTING",
            "_customer_number": "5115",
            "c_dialed_number": "5115",
            "c_call_result": 0,
            "c_call_num_attempt": 1,
        },
        {
            "event_id": "_cbe_on_service_exit",
            **common,
            "_callback_state": "COMPLETED",
            "c_dialed_number": "5115",
            "c_termination_type": "COMPLETED.AGENT_CONNECTED",
        },
    ]
    assert list(bodies[0])[:3] == ["event_id", "timestamp", "_callback_state"]
    # Standard Webhooks headers, one webhook-id each, signed with the group's secret; never
    # the group's Authorization (the URL is the customer's).
    assert len({item.headers["webhook-id"] for item in status_rx.received}) == 4
    for item in status_rx.received:
        check_signature(item)
        assert "Authorization" not in item.headers


async def test_named_list_chatpush_events_and_custom_values(
    client: Client, status_rx: Receiver, clock: FakeClock
) -> None:
    created = await create(client, "listed", _desired_time=SCHEDULED_AT, _phone_number="+331234")
    callback_id = created["_id"]
    later = format_time(START_MS + 7_200_000)
    await gms(
        client,
        "PUT",
        f"/genesys/1/service/callback/listed/{callback_id}",
        data={"_new_desired_time": later},
    )
    await gms(client, "DELETE", f"/genesys/1/service/callback/listed/{callback_id}")
    bodies = await delivered(client, status_rx)
    now = str(START_MS // 1000)
    assert bodies == [
        {
            "event_id": "_cbe_on_callback_scheduled",
            "timestamp": now,
            "_callback_state": "SCHEDULED",
            "_customer_number": "5115",
            "_phone_number": "+331234",
            "_desired_time": SCHEDULED_AT,
            "state": "scheduled",
        },
        {
            "event_id": "_cbe_on_callback_rescheduled",
            "timestamp": now,
            "_callback_state": "SCHEDULED",
            "_customer_number": "5115",
            "_phone_number": "+331234",
            "_desired_time": later,
            "state": "rescheduled",
        },
        {
            "event_id": "_cbe_on_callback_cancelled",
            "timestamp": now,
            "_callback_state": "COMPLETED",
            "_service_id": callback_id,
        },
        {
            "event_id": "_cbe_on_callback_status_updated",
            "timestamp": now,
            "_callback_state": "COMPLETED",
            "_service_id": callback_id,
            "_callback_reason": "CANCELLED",
            "n": 1,
        },
    ]


async def test_due_timer_and_ttl_cause_their_events(
    client: Client, status_rx: Receiver, clock: FakeClock
) -> None:
    callback_id = (await create(client, "listed", _desired_time=SCHEDULED_AT))["_id"]
    clock.advance(3600)
    await client.app[CALLBACKS].fire_timers()
    bodies = await delivered(client, status_rx)
    # submitted and queued are not in the list; status_updated is.
    assert [(b["event_id"], b["_callback_state"]) for b in bodies] == [
        ("_cbe_on_callback_scheduled", "SCHEDULED"),
        ("_cbe_on_callback_status_updated", "QUEUED"),
    ]
    assert bodies[1]["_service_id"] == callback_id


async def test_retries_keep_the_webhook_id_and_the_head_blocks_its_destination(
    client: Client, status_rx: Receiver, receiver: Receiver, clock: FakeClock
) -> None:
    callback_id = (await create(client))["_id"]
    status_rx.mode = "error"
    await event(client, callback_id, 1, "dial_init")
    await event(client, callback_id, 2, "dial_done", attempt=1, connected=True)
    await delivered(client, status_rx)
    # The head failed once; the next waits behind it (one at a time per destination).
    assert [item.body["event_id"] for item in status_rx.received] == ["_cbe_on_dial_init"]
    status_rx.mode = "ok"
    clock.advance(5)
    await delivered(client, status_rx)
    assert [item.body["event_id"] for item in status_rx.received] == [
        "_cbe_on_dial_init",
        "_cbe_on_dial_init",
        "_cbe_on_dial_done",
    ]
    first, again, _ = status_rx.received
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert first.raw == again.raw
    check_signature(again)


async def test_exhausted_notifications_are_dropped_and_the_next_goes(
    client: Client, status_rx: Receiver, clock: FakeClock
) -> None:
    callback_id = (await create(client))["_id"]
    status_rx.mode = "error"
    await event(client, callback_id, 1, "dial_init")
    for _ in range(3):  # _max_notify_delivery_attempts = 3
        await delivered(client, status_rx)
        clock.advance(5)
    status_rx.mode = "ok"
    await event(client, callback_id, 2, "customer_queued")
    await delivered(client, status_rx)
    assert [item.body["event_id"] for item in status_rx.received] == [
        "_cbe_on_dial_init",
        "_cbe_on_dial_init",
        "_cbe_on_dial_init",
        "_cbe_on_customer_queued",
    ]


async def test_no_events_when_off_and_create_parameters_override(
    client: Client, status_rx: Receiver
) -> None:
    quiet = (await create(client, "quiet"))["_id"]
    await event(client, quiet, 1, "dial_init")
    assert await delivered(client, status_rx) == []
    # A create turns them on for its callback (its target within the allowed prefixes)...
    loud = (
        await create(
            client,
            "quiet",
            _enable_status_notification="subscribe_notify",
            _status_notification_target=status_rx.url,
        )
    )["_id"]
    await event(client, loud, 1, "dial_init")
    # ... or off, over the service's configuration.
    off = (await create(client, _enable_status_notification="false"))["_id"]
    await event(client, off, 1, "dial_init")
    bodies = await delivered(client, status_rx)
    assert [(b["event_id"], b["_service_id"]) for b in bodies] == [("_cbe_on_dial_init", loud)]


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"_enable_status_notification": "subscribe_notify"}, "needs a target"),
        ({"_enable_status_notification": "yes"}, "_enable_status_notification"),
        ({"_status_notification_type": "orscb"}, "_status_notification_type"),
        ({"_status_notification_debug": "maybe"}, "_status_notification_debug"),
        (
            {
                "_enable_status_notification": "notify",
                "_status_notification_target": "http://169.254.169.254/latest",
            },
            "httpcb_allowed_prefixes",
        ),
        ({"_device_os": "httpcb", "_device_notification_id": "https://evil.example/"}, "push"),
    ],
)
async def test_create_refuses_bad_status_parameters(
    client: Client, form: dict[str, str], words: str
) -> None:
    body = await gms(
        client,
        "POST",
        "/genesys/1/service/callback/quiet",
        400,
        data={
            "_customer_number": "5115",
            **form,
        },
    )
    assert words in body["message"], body
    assert await client.app[DATABASE].read(callback_store.count_open) == 0


async def test_httpcb_device_pushes_go_bare_to_the_url(client: Client, status_rx: Receiver) -> None:
    callback_id = (
        await create(client, "quiet", _device_os="httpcb", _device_notification_id=status_rx.url)
    )["_id"]
    await event(client, callback_id, 1, "dial_done", attempt=1)
    bodies = await delivered(client, status_rx)
    assert [(b["event"], b["_id"], b["attempt"]) for b in bodies] == [
        ("CALLBACK_ATTEMPT_FAILED", callback_id, 1)
    ]
    assert "Authorization" not in status_rx.received[0].headers
    check_signature(status_rx.received[0])


async def test_private_addresses_are_refused_unless_allowed(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    status_rx: Receiver,
    receiver: Receiver,
) -> None:
    settings = settings_for(make_settings, status_rx.url, receiver.url)
    strict = settings.model_copy(update={"provider_options": {}})
    client = await make_client(strict)
    callback_id = (await create(client))["_id"]
    await event(client, callback_id, 1, "dial_init")
    assert await delivered(client, status_rx) == []
    key = (
        f"samples_dev.{callback_id}.s"
        + hashlib.sha256(f"httpcb\n{status_rx.url}".encode()).hexdigest()[:8]
    )
    rows = await client.app[DATABASE].read(trail.deliveries_of, "callback", key, 0)
    assert [(r.device_type, r.outcome, r.failure) for _id, r in rows] == [
        ("httpcb", "failed", "permanent")
    ]
    assert "private" in (rows[0][1].error or "")


async def test_httpcb_sends_only_the_destinations_own_authorization(
    client: Client, status_rx: Receiver, clock: FakeClock
) -> None:
    """The platform hands a provider the destination's own Authorization apart from the group's
    (``Target.destination_authorization``): httpcb sends that one or none."""
    notifications = [
        NewNotification(
            source="test",
            key="k1",
            kind="payload",
            body={"n": n},
            destination=Destination("httpcb", status_rx.url, authorization=authorization),
        )
        for n, authorization in ((1, "Basic ZGVtbzo="), (2, None))
    ]
    ids = await client.app[DATABASE].write(enqueue, notifications, clock.now_ms())
    bodies = await delivered(client, status_rx)
    assert bodies == [{"n": 1}, {"n": 2}]
    first, second = status_rx.received
    assert first.headers["Authorization"] == "Basic ZGVtbzo="
    assert "Authorization" not in second.headers  # not the group's "Bearer the-groups-own"
    assert [first.headers["webhook-id"], second.headers["webhook-id"]] == ids


async def test_httpcb_refuses_a_chats_notification(
    client: Client, status_rx: Receiver, clock: FakeClock
) -> None:
    from chatpush.providers.base import Notification, Target
    from chatpush.providers.httpcb import HttpcbProvider

    provider = HttpcbProvider(client.app[SETTINGS].delivery)
    await provider.start()
    try:
        target = Target(None, None, None, None, device_id=status_rx.url)
        chat = Notification("chat", "c1", "payload", "m1", {"x": 1})
        result = await provider.send(target, chat, now_s=1)
        assert (result.outcome, result.temporary) == ("failed", False)
        other = Notification("test", "c1", "payload", "m2", {"x": 1})
        refused = await provider.send(target, other, now_s=1)  # loopback, not allowed here
        assert "private" in (refused.error or "") and refused.temporary is False
        assert status_rx.received == []
    finally:
        await provider.close()


async def test_reminder_goes_once_per_desired_time_while_scheduled(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    status_rx: Receiver,
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    reminder = {"_enable_notification_reminder": True, "_notification_reminder_buffer": 600}
    client = await make_client(settings_for(make_settings, status_rx.url, receiver.url, reminder))
    timers = client.app[CALLBACKS]
    first = (await create(client, _desired_time=SCHEDULED_AT))["_id"]
    # Within the buffer already: the reminder's time is past, nothing goes.
    soon = (await create(client, _desired_time=format_time(START_MS + 300_000)))["_id"]
    cancelled = (await create(client, _desired_time=SCHEDULED_AT))["_id"]
    await gms(client, "DELETE", f"/genesys/1/service/callback/samples_dev/{cancelled}")
    clock.advance(3000)  # 50 min: the reminders of 60-min callbacks are due
    await timers.fire_timers()
    # Rescheduled later: the reminder is armed again, for the new time.
    later = format_time(START_MS + 7_200_000)
    await gms(
        client,
        "PUT",
        f"/genesys/1/service/callback/samples_dev/{first}",
        data={"_new_desired_time": later},
    )
    clock.advance(3600)
    await timers.fire_timers()
    bodies = await delivered(client, status_rx)
    reminders = [b for b in bodies if b["event_id"] == "_cbe_on_callback_reminder"]
    assert reminders == [
        {
            "event_id": "_cbe_on_callback_reminder",
            "timestamp": str(START_MS // 1000 + 3000),
            "_callback_state": "SCHEDULED",
            "_service_id": first,
            "_service_name": "samples_dev",
            "_desired_time": SCHEDULED_AT,
            "_customer_number": "5115",
        },
        {
            "event_id": "_cbe_on_callback_reminder",
            "timestamp": str(START_MS // 1000 + 6600),
            "_callback_state": "SCHEDULED",
            "_service_id": first,
            "_service_name": "samples_dev",
            "_desired_time": later,
            "_customer_number": "5115",
        },
    ]
    state = await cc(client, "GET", f"/callbacks/{soon}")
    assert state["timers"]["reminderAt"] is None
