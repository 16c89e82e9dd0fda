"""The admin console's callback and agent pages (docs/admin.md) over HTTP on the real app, on
SQLite and PostgreSQL: the lists and their filters and pages, a callback's page and its admin
cancel (the admin API's effect; a 409 message for one it cannot cancel), the agents' devices
(token hashes, never tokens) and their removal, a conversation's trail, bad ids, CSRF."""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatpush.api.keys import DISPATCHER
from chatpush.callbacks.model import format_time
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.agents_support import added, deleted
from tests.conftest import API_KEY
from tests.integration.admin_support import SECURITY, Client, Console, text_of
from tests.integration.callback_support import ack, cc, create, event, gms, pull
from tests.receivers import Receiver

START_MS = FakeClock().now_ms()
LATER = format_time(START_MS + 3_600_000)
TOKEN = "fcm-token-of-agent-1-" + "x" * 40


@pytest.fixture
async def status_rx() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.close()


@pytest.fixture
async def app(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    receiver: Receiver,
    status_rx: Receiver,
) -> Client:
    settings = make_settings(
        admin={"enabled": True},
        security=SECURITY,
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "customhttp.url": receiver.url,
                "pushEnabled": "customhttp,httpcb,fcm,ios,comet",
            }
        },
        provider_options={"httpcb": {"allow_private_addresses": True}},
        callback={
            "httpcb_allowed_prefixes": [status_rx.url.rsplit("/", 1)[0] + "/"],
            "command_lease_s": 30,
        },
        services={
            "samples_dev": {"_ttl": 3600, "_callback_events_list": "Ops_Events"},
            "cti": {"_call_direction": "USERORIGINATED"},
        },
        event_lists={
            "Ops_Events": {
                "properties": {
                    "_enable_status_notification": "subscribe_notify",
                    "_status_notification_target": status_rx.url,
                },
                "_cbe_on_callback_scheduled": {"notify_params": "_service_id"},
                "_cbe_on_callback_submitted": {"notify_params": "_service_id"},
                "_cbe_on_callback_cancelled": {"notify_params": "_service_id"},
            }
        },
    )
    client: Client = await make_client(settings)
    return client


@pytest.fixture
async def console(app: Client) -> Console:
    return await Console(app).logged_in()


# -- callbacks -------------------------------------------------------------------------------------


async def test_the_new_pages_need_a_login(app: Client) -> None:
    callback_id = (await create(app))["_id"]
    for path in (
        "/admin/callbacks",
        f"/admin/callbacks/{callback_id}",
        "/admin/agents",
        "/admin/conversations/conv-abc-123",
    ):
        response = await app.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/admin/login", path
    cancel = await app.post(f"/admin/callbacks/{callback_id}/cancel", allow_redirects=False)
    assert cancel.status == 303
    found = await gms(app, "GET", "/genesys/1/service/callback", params={"_id": callback_id})
    assert found[0]["_callback_state"] == "QUEUED"


async def test_the_callbacks_list_filters_newest_first_and_pages(
    console: Console, app: Client, clock: FakeClock
) -> None:
    made = []
    for number in range(3):
        made.append((await create(app, "cti", _customer_number=f"51{number}"))["_id"])
        clock.advance(1)
    scheduled = (await create(app, _desired_time=LATER))["_id"]

    page = text_of(await console.page("/admin/callbacks"))
    assert page.index(scheduled) < page.index(made[2]) < page.index(made[1]) < page.index(made[0])
    assert "4 callbacks, newest first" in page and "SCHEDULED" in page and "QUEUED" in page

    overview = text_of(await console.page("/admin/"))
    assert "SCHEDULED 1 QUEUED 3 ROUTING 0 PROCESSING 0 Open callbacks 4" in overview

    of_cti = text_of(await console.page("/admin/callbacks?service=cti"))
    assert all(each in of_cti for each in made) and scheduled not in of_cti
    of_state = text_of(await console.page("/admin/callbacks?state=SCHEDULED"))
    assert scheduled in of_state and not any(each in of_state for each in made)
    none = text_of(await console.page("/admin/callbacks?service=cti&state=COMPLETED"))
    assert "No callback matches." in none

    bad = await console.page("/admin/callbacks?state=sleepy", expect=400)
    assert "State must be one of: open, SCHEDULED" in text_of(bad)
    bad_page = await console.page("/admin/callbacks?before=yesterday", expect=400)
    assert "That is not a page of this list" in text_of(bad_page)
    too_long = await console.page("/admin/callbacks?service=" + "s" * 300, expect=400)
    assert "at most 256 printable characters" in text_of(too_long)


async def test_the_callbacks_list_is_bounded_and_pages_by_older(
    console: Console, app: Client, clock: FakeClock
) -> None:
    made = []
    for number in range(52):
        made.append((await create(app, "cti", _customer_number=f"6{number}"))["_id"])
        clock.advance(1)
    first = await console.page("/admin/callbacks?service=cti")
    shown = [each for each in made if each in first]
    assert shown == made[2:]  # the newest 50
    assert "50 callbacks, newest first" in text_of(first)
    link = re.search(r'href="([^"]*)" rel="next"', first)
    assert link is not None
    second = await console.page(html.unescape(link.group(1)))
    assert [each for each in made if each in second] == made[:2]
    assert 'rel="next"' not in second and "an older page" in text_of(second)


async def test_a_callbacks_page_shows_record_options_commands_and_trail(
    console: Console, app: Client, status_rx: Receiver
) -> None:
    push_keys = {"_device_os": "customhttp", "_device_notification_id": "device-of-5115"}
    made = await create(
        app, _desired_time=LATER, _customer_number="5115", color="blue", **push_keys
    )
    callback_id = made["_id"]
    await app.app[DISPATCHER].settle()
    commands = await pull(app)
    assert [c["type"] for c in commands] == ["callback.created"]

    body = await console.page(f"/admin/callbacks/{callback_id}")
    page = text_of(body)
    assert f"Callback {callback_id}" in page and "State SCHEDULED" in page
    token_hash = hashlib.sha256(b"device-of-5115").hexdigest()[:12]
    assert f"Device type customhttp Token hash {token_hash}" in page
    assert "device-of-5115" not in body
    assert "_customer_number 5115" in page and "color blue" in page  # the record
    assert "_ttl 3600" in page and "_call_direction USERTERMINATED" in page  # options
    assert f"Mode subscribe_notify Type httpcb Target {status_rx.url}" in page
    assert "1 made, 0 acknowledged, 1 not acknowledged yet." in page
    assert "callback.created" in page and "leased until 2023-11-14T22:13:50Z" in page
    # The status notification of the scheduling went to the receiver: its attempt is in the trail.
    assert len(status_rx.received) == 1
    assert "n1 httpcb payload — sent 200" in page.split("Delivery trail")[1]
    assert "Cancel this callback" in page

    await cc(app, "POST", "/callbacks/commands/ack", json={"ids": [commands[0]["id"]]})
    page = text_of(await console.page(f"/admin/callbacks/{callback_id}"))
    assert "1 made, 1 acknowledged, 0 not acknowledged yet." in page


async def test_admin_cancel_has_the_apis_effect_and_a_409_message_when_illegal(
    console: Console, app: Client, status_rx: Receiver
) -> None:
    callback_id = (await create(app))["_id"]
    await app.app[DISPATCHER].settle()
    await ack(app, await pull(app))
    cancelled = await console.post(
        f"/admin/callbacks/{callback_id}/cancel", {"note": "customer asked by phone"}
    )
    assert cancelled.status == 303
    assert cancelled.headers["Location"] == f"/admin/callbacks/{callback_id}"
    found = await gms(app, "GET", "/genesys/1/service/callback", params={"_id": callback_id})
    assert found[0]["_callback_state"] == "COMPLETED"
    assert found[0]["_callback_reason"] == "CANCELLED_BY_ADMIN"
    [command] = await pull(app)
    assert command["type"] == "callback.cancelled" and command["reason"] == "CANCELLED_BY_ADMIN"
    assert command["note"] == "customer asked by phone"
    await app.app[DISPATCHER].settle()
    assert "_cbe_on_callback_cancelled" in [item.body["event_id"] for item in status_rx.received]
    page = text_of(await console.page(f"/admin/callbacks/{callback_id}"))
    assert "Callback cancelled (CANCELLED_BY_ADMIN)." in page
    assert "Cancel this callback" not in page and "Reason CANCELLED_BY_ADMIN" in page

    again = await console.post(f"/admin/callbacks/{callback_id}/cancel")
    assert again.status == 409
    assert "cannot be cancelled: it is completed already (CANCELLED_BY_ADMIN)" in text_of(
        await again.text()
    )
    assert await pull(app) == []  # nothing more told

    busy = (await create(app))["_id"]
    await event(app, busy, 1, "route_to_agent", attributes={"c_agent_id": "a1"})
    refused = await console.post(f"/admin/callbacks/{busy}/cancel")
    assert refused.status == 409
    text = text_of(await refused.text())
    assert "being handled by an agent (PROCESSING)" in text and "Nothing was changed." in text
    found = await gms(app, "GET", "/genesys/1/service/callback", params={"_id": busy})
    assert found[0]["_callback_state"] == "PROCESSING"


async def test_callback_bad_ids_bad_notes_and_csrf(console: Console, app: Client) -> None:
    callback_id = (await create(app))["_id"]
    for path in (
        "/admin/callbacks/NOSUCHCALLBACK",
        "/admin/callbacks/" + "0" * 32,
        "/admin/callbacks/" + "%00" * 3,
        "/admin/callbacks/" + "x" * 5000,
    ):
        body = await console.page(path, expect=404)
        assert "Something could not be done" in body
    unknown = await console.post("/admin/callbacks/" + "0" * 32 + "/cancel")
    assert unknown.status == 404
    for token in ("", "wrong"):
        refused = await console.post(f"/admin/callbacks/{callback_id}/cancel", csrf=token)
        assert refused.status == 403
        assert "missing or wrong CSRF token" in text_of(await refused.text())
    bad_note = await console.post(f"/admin/callbacks/{callback_id}/cancel", {"note": "a\x00b"})
    assert bad_note.status == 400 and "Nothing changed." in text_of(await bad_note.text())
    assert (await app.get(f"/admin/callbacks/{callback_id}/cancel")).status == 405
    found = await gms(app, "GET", "/genesys/1/service/callback", params={"_id": callback_id})
    assert found[0]["_callback_state"] == "QUEUED"


# -- agents ----------------------------------------------------------------------------------------


async def register(app: Client, user: str, platform: str, token: str) -> str:
    response = await app.post(
        f"/api/v1/agents/{user}/devices",
        json={"platform": platform, "token": token},
        headers={"X-API-Key": API_KEY},
    )
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def agent_events(app: Client, *events: Any) -> None:
    response = await app.post(
        "/api/v1/agent-events", json=list(events), headers={"X-API-Key": API_KEY}
    )
    assert response.status == 200, await response.text()
    await app.app[DISPATCHER].settle()


async def test_agents_devices_show_hashes_not_tokens_and_can_be_removed(
    console: Console, app: Client
) -> None:
    android = await register(app, "agent-1", "android", TOKEN)
    desk = await register(app, "agent-1", "customhttp", "desk-7")
    other = await register(app, "agent-2", "comet", "desk-9")
    body = await console.page("/admin/agents")
    page = text_of(body)
    assert TOKEN not in body and "desk-7" not in body and "desk-9" not in body
    assert hashlib.sha256(TOKEN.encode()).hexdigest()[:12] in page
    assert f"agent-1 {android} fcm" in page and desk in page and f"agent-2 {other} comet" in page
    assert "2 agents with devices" in page
    only = text_of(await console.page("/admin/agents?q=agent-2"))
    assert other in only and android not in only
    overview = text_of(await console.page("/admin/"))
    assert "Agent devices 3" in overview

    refused = await console.post(f"/admin/agents/agent-1/devices/{desk}/delete", csrf="wrong")
    assert refused.status == 403
    removed = await console.post(f"/admin/agents/agent-1/devices/{desk}/delete")
    assert removed.status == 303
    response = await app.get("/api/v1/agents/agent-1/devices", headers={"X-API-Key": API_KEY})
    assert [d["id"] for d in (await response.json())["devices"]] == [android]
    page = text_of(await console.page("/admin/agents?q=agent-1"))
    assert (
        f"Device {desk} of agent agent-1 removed." in page and desk not in page.split("removed.")[1]
    )
    # Gone already, another agent's, or no id at all: 404, nothing changes.
    for path in (
        f"/admin/agents/agent-1/devices/{desk}/delete",
        f"/admin/agents/agent-1/devices/{other}/delete",
        "/admin/agents/agent-1/devices/nope/delete",
        f"/admin/agents/{'a' * 300}/devices/{other}/delete",
    ):
        assert (await console.post(path)).status == 404, path
    too_long = await console.page("/admin/agents?q=" + "q" * 300, expect=400)
    assert "at most 256 printable characters" in text_of(too_long)


async def test_a_conversations_trail_rung_suppressed_cancelled_and_dead_token(
    console: Console, app: Client, receiver: Receiver
) -> None:
    receiver.status = 401  # the desk receiver refuses: a dead device id (agents.dead_on_http_401)
    desk = await register(app, "agent-1", "customhttp", "desk-7")
    comet = await register(app, "agent-1", "comet", "desk-8")
    await agent_events(app, added())
    await agent_events(app, added())  # within the dedup window: suppressed
    await agent_events(app, deleted())

    listed = text_of(await console.page("/admin/agents"))
    assert "conv-abc-123" in listed
    body = await console.page("/admin/conversations/conv-abc-123")
    page = text_of(body)
    assert "Conversation conv-abc-123" in page and "desk-7" not in body
    assert hashlib.sha256(b"desk-8").hexdigest()[:12] in page
    trail = page.split("When Agent What Device Platform Reason")[1]
    assert re.findall(r"agent-1 (\w+)", trail) == [
        "rung",
        "rung",
        "dead_token",  # the ring's 401
        "suppressed",
        "cancelled",
        "cancelled",
        "dead_token",  # the cancel's 401: the ring went there, so its cancel does
    ]
    assert f"agent-1 dead_token {desk} customhttp receiver answered 401 Unauthorized" in trail
    assert f"agent-1 rung {comet} comet" in trail and "agent-1 suppressed — — duplicate" in trail

    found = await console.client.get("/admin/conversations?id=conv-abc-123", allow_redirects=False)
    assert found.status == 303 and found.headers["Location"] == "/admin/conversations/conv-abc-123"
    for path in ("/admin/conversations/no-such-conv", "/admin/conversations/" + "c" * 300):
        missing = await console.page(path, expect=404)
        assert "No agent alert of conversation" in text_of(missing)
