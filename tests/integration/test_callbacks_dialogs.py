"""The dialogs a GMS app fetches for a callback (docs/callbacks.md §8), GET and POST alike, and
their effects: connect, snooze, cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chatpush.callbacks.model import format_time
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.integration.callback_support import (
    Client,
    ack,
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
        services={
            "samples_dev": {"_snooze_duration": 600},
            "cti": {"_call_direction": "USERORIGINATED", "_provide_code": True},
        },
        callback={"external_base_url": "https://gms.example.com/genesys"},
    )
    return await make_client(settings)  # type: ignore[no-any-return]


def dialog_path(callback_id: str, action: str) -> str:
    return f"/genesys/1/service/{callback_id}/{action}"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_user_confirmation_menu(client: Client, method: str) -> None:
    callback_id = (await create(client))["_id"]
    menu = await gms(
        client, method, dialog_path(callback_id, "get-dialog-user-confirmation-provide_code-true")
    )
    base = f"https://gms.example.com/genesys/1/service/{callback_id}"
    assert menu["_action"] == "DisplayMenu"
    assert menu["_id"] == callback_id
    assert menu["_expires"] == format_time(START_MS + 30_000)
    assert menu["_resource_url"] == f"{base}/get-dialog-user-confirmation"
    assert menu["_user_action_url"] == f"{base}/not-used"
    items = menu["_content"][0]["_group_content"]
    assert [item["_user_action_url"] for item in items] == [
        f"{base}/connect",
        f"{base}/snooze",
        f"{base}/cancel",
    ]
    assert items[1]["_label"] == "No, try again in 10 minutes"
    assert "_confirmation_dialog" in items[0]
    plain = await gms(
        client, method, dialog_path(callback_id, "get-dialog-user-confirmation-provide_code-false")
    )
    assert "_confirmation_dialog" not in plain["_content"][0]["_group_content"][0]
    # Without the suffix: the one of the callback's _provide_code (false here).
    assert (
        await gms(client, method, dialog_path(callback_id, "get-dialog-user-confirmation")) == plain
    )


async def test_start_chat_and_confirmations(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    response = await client.get(
        dialog_path(callback_id, "get-dialog-start-chat"), headers={"gms_user": "ann"}
    )
    chat = await response.json()
    assert chat["_action"] == "StartChat"
    assert chat["_comet_url"] == "https://gms.example.com/genesys/cometd"
    assert chat["_user_header"] == "ann"
    assert chat["_id"] == callback_id
    outbound = await gms(client, "GET", dialog_path(callback_id, "connect-outbound"))
    assert outbound == {
        "_id": callback_id,
        "_dialog_id": "0",
        "_action": "ConfirmationDialog",
        "_text": "You will receive the call shortly",
        "_ok_title": "Ok",
    }
    waiting = await gms(client, "POST", dialog_path(callback_id, "wait-for-agent"))
    assert waiting["_text"] == "We will notify you when agent is available"


async def test_connect_inbound_before_and_after_call_in(client: Client) -> None:
    callback_id = (await create(client, "cti"))["_id"]
    before = await gms(client, "GET", dialog_path(callback_id, "connect-inbound"))
    assert (before["_tel_url"], before["_access_code"]) == ("n/a", "n/a")
    await event(client, callback_id, 1, "ready")
    await event(client, callback_id, 2, "call_in", accessNumber="+18005550100", accessCode="4711")
    await ack(client, await pull(client))
    # connect from a USERORIGINATED callback: the call-in dialog, and the CC side is told.
    answer = await gms(client, "POST", dialog_path(callback_id, "connect"))
    assert answer == {
        "_dialog_id": "0",
        "_label": "Connecting ...",
        "_action": "DialNumber",
        "_tel_url": "tel:+18005550100",
        "_access_code": "4711",
        "_id": callback_id,
    }
    [command] = await pull(client)
    assert (command["type"], command["action"]) == ("callback.user_action", "connect")


async def test_snooze_and_cancel(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    await ack(client, await pull(client))
    answer = await gms(client, "GET", dialog_path(callback_id, "snooze"))
    assert answer["_text"] == "We will try again in 10 minutes"
    found = await record(client, callback_id)
    assert found["_callback_state"] == "SCHEDULED"
    assert found["_desired_time"] == format_time(START_MS + 600_000)
    [command] = await pull(client)
    assert (command["type"], command["action"]) == ("callback.rescheduled", "snooze")
    await ack(client, [command])
    # Snooze from SCHEDULED: 409; cancel: COMPLETED / CANCELLED, then everything is 409.
    body = await gms(client, "POST", dialog_path(callback_id, "snooze"), 409)
    gms_error(body, "ILLEGAL_STATE")
    answer = await gms(client, "POST", dialog_path(callback_id, "cancel"))
    assert answer["_text"] == "Your callback has been cancelled"
    found = await record(client, callback_id)
    assert (found["_callback_state"], found["_callback_reason"]) == ("COMPLETED", "CANCELLED")
    [command] = await pull(client)
    assert command["type"] == "callback.cancelled"
    for action in ("connect", "snooze", "cancel"):
        body = await gms(client, "POST", dialog_path(callback_id, action), 409)
        gms_error(body, "ILLEGAL_STATE")
        assert body["_callback_state"] == "COMPLETED"
    # Reading dialogs still works.
    await gms(client, "GET", dialog_path(callback_id, "connect-outbound"))


async def test_unknown_callbacks_and_actions(client: Client) -> None:
    callback_id = (await create(client))["_id"]
    for action in ("not-used", "ixn/chat", "fly", "get-dialog-user-confirmation-provide_code-x"):
        response = await client.get(dialog_path(callback_id, action))
        assert response.status == 404, action
        if "/" not in action:
            gms_error(await response.json(), "UNKNOWN_ACTION")
    for unknown in ("F" * 32, "nope"):
        body = await gms(client, "GET", dialog_path(unknown, "connect-outbound"), 404)
        gms_error(body, "CALLBACK_NOT_FOUND")
        body = await gms(client, "POST", dialog_path(unknown, "connect"), 404)
        gms_error(body, "CALLBACK_NOT_FOUND")
