"""Commands to the contact-centre side by signed webhook (docs/callbacks.md §4.2) to a real
receiver on 127.0.0.1 through the delivery platform: the exact body and Standard Webhooks headers,
``Authorization``, retries with the same ``webhook-id`` after ``cc_webhook_retry_delay`` on the
fake clock, one callback's commands strictly in order while others go, dropping after
``command_retention_s``, pull's 409, and a restart (also one that switches between pull and
webhook) keeping every pending command. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from chatpush.api.keys import DISPATCHER
from chatpush.config import Settings
from chatpush.providers.customhttp import sign
from chatpush.testing import FakeClock
from tests.integration.callback_support import GMS, Client, cc, create, gms, pull
from tests.receivers import Received, Receiver

START_MS = FakeClock().now_ms()
SECRET = "whsec_" + base64.b64encode(b"cc-side-secret-0123456789abcdef!").decode()
AUTHORIZATION = "Bearer cc-side-token"


class CcSide(Receiver):
    """The contact-centre side's webhook: answers 500 for the callbacks in ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        self.refusal = 500

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw)
        self.received.append(Received(body, dict(request.headers), raw))
        if body["callbackId"] in self.failing:
            return web.Response(status=self.refusal, text="not now")
        return web.Response(status=204)

    def seen(self) -> list[tuple[str, str, int]]:
        """(type, callback id, seq) of every POST, in arrival order."""
        return [
            (item.body["type"], item.body["callbackId"], item.body["seq"]) for item in self.received
        ]


@pytest.fixture
async def cc_side() -> AsyncIterator[CcSide]:
    side = CcSide()
    await side.start()
    yield side
    await side.close()


def webhook_settings(
    make_settings: Callable[..., Settings], url: str | None, **callback: Any
) -> Settings:
    if url is not None:
        callback.update(
            cc_webhook_url=url,
            cc_webhook_signing_secret=SECRET,
            cc_webhook_authorization=AUTHORIZATION,
        )
    return make_settings(
        groups={"g1": {"default": True, "nodes": ["n1"], "pushEnabled": "customhttp"}},
        services={"samples_dev": {"_ttl": 3600}},
        callback={"cc_webhook_retry_delay": "5,15,60", **callback},
    )


@pytest.fixture
async def client(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], cc_side: CcSide
) -> Client:
    return await make_client(webhook_settings(make_settings, cc_side.url))  # type: ignore[no-any-return]


async def settle(client: Client) -> None:
    await client.app[DISPATCHER].settle()


def check_signed(item: Received) -> None:
    headers = item.headers
    expected = sign(SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]), item.raw)
    assert headers["webhook-signature"] == expected
    assert headers["Authorization"] == AUTHORIZATION


async def test_each_command_is_posted_signed_and_pull_answers_409(
    client: Client, cc_side: CcSide
) -> None:
    callback_id = (await create(client))["_id"]
    await settle(client)
    [item] = cc_side.received
    body = item.body
    assert body["type"] == "callback.created"
    assert (body["callbackId"], body["serviceName"], body["seq"]) == (callback_id, "samples_dev", 1)
    assert body["at"] == START_MS
    assert body["callback"]["_callback_state"] == "QUEUED"
    assert body["callback"]["_ttl"] == 3600
    assert len(body["id"]) == 32
    check_signed(item)
    assert item.headers["webhook-timestamp"] == str(START_MS // 1000)
    # 2xx acknowledged it: nothing is pending, nothing goes again.
    state = await cc(client, "GET", f"/callbacks/{callback_id}")
    assert state["commands"] == []
    # Pull and ack are refused with their own code, and change nothing.
    refused = await cc(client, "GET", "/callbacks/commands", 409)
    assert [entry["code"] for entry in refused["errors"]] == [117]
    assert "cc_webhook_url" in refused["errors"][0]["advice"]
    refused = await cc(client, "POST", "/callbacks/commands/ack", 409, json={"ids": [body["id"]]})
    assert [entry["code"] for entry in refused["errors"]] == [117]
    await gms(client, "DELETE", f"{GMS}/samples_dev/{callback_id}")
    await settle(client)
    assert [entry[:2] for entry in cc_side.seen()] == [
        ("callback.created", callback_id),
        ("callback.cancelled", callback_id),
    ]
    assert cc_side.received[1].body["reason"] == "CANCELLED"
    check_signed(cc_side.received[1])


async def test_refused_commands_are_retried_with_the_same_id_after_the_delays_and_in_order(
    client: Client, cc_side: CcSide, clock: FakeClock
) -> None:
    first = (await create(client))["_id"]
    cc_side.failing.add(first)
    await settle(client)
    await gms(client, "DELETE", f"{GMS}/samples_dev/{first}")  # its 2nd command: waits
    second = (await create(client))["_id"]  # another callback's: goes at once
    await settle(client)
    assert cc_side.seen() == [
        ("callback.created", first, 1),
        ("callback.created", second, 1),
    ]
    clock.advance(4.9)
    await settle(client)
    assert len(cc_side.received) == 2  # "5,15,60": not before 5 s
    clock.advance(0.1)
    await settle(client)
    clock.advance(14)
    await settle(client)
    assert len(cc_side.received) == 3  # then 15 s
    cc_side.failing.clear()
    clock.advance(1)
    await settle(client)
    assert cc_side.seen() == [
        ("callback.created", first, 1),
        ("callback.created", second, 1),
        ("callback.created", first, 1),
        ("callback.created", first, 1),
        ("callback.cancelled", first, 2),
    ]
    tries = [item for item in cc_side.received if item.body["callbackId"] == first][:3]
    assert len({item.headers["webhook-id"] for item in tries}) == 1
    assert len({item.raw for item in tries}) == 1
    assert [int(item.headers["webhook-timestamp"]) - START_MS // 1000 for item in tries] == [
        0,
        5,
        20,
    ]
    for item in tries:
        check_signed(item)
    assert cc_side.received[-1].headers["webhook-id"] != tries[0].headers["webhook-id"]
    clock.advance(600)  # (before the second callback's TTL of an hour)
    await settle(client)
    assert len(cc_side.received) == 5  # acknowledged: never again
    # The callback's trail shows each try.
    trail = (await cc(client, "GET", f"/callbacks/{first}/deliveries"))["deliveries"]
    assert [
        (row["kind"], row["deviceType"], row["outcome"], row["httpStatus"]) for row in trail
    ] == [
        ("command", "ccwebhook", "failed", 500),
        ("command", "ccwebhook", "failed", 500),
        ("command", "ccwebhook", "sent", 204),
        ("command", "ccwebhook", "sent", 204),
    ]


async def test_a_command_refused_past_the_retention_is_dropped_and_the_next_goes(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    cc_side: CcSide,
    clock: FakeClock,
) -> None:
    settings = webhook_settings(make_settings, cc_side.url, command_retention_s=60)
    client: Client = await make_client(settings)
    callback_id = (await create(client))["_id"]
    cc_side.failing.add(callback_id)
    await settle(client)
    await gms(client, "DELETE", f"{GMS}/samples_dev/{callback_id}")
    for wait_s in (5, 15):
        clock.advance(wait_s)
        await settle(client)
    # Tries at 0, 5 and 20 s; the next (20 + 60 s) would come after the 60 s retention: the
    # first command is dropped and the next is tried at once.
    created = [("callback.created", callback_id, 1)]
    cancelled = [("callback.cancelled", callback_id, 2)]
    assert cc_side.seen() == created * 3 + cancelled
    cc_side.failing.clear()
    clock.advance(5)
    await settle(client)
    assert cc_side.seen() == created * 3 + cancelled * 2
    clock.advance(3600)
    await settle(client)
    assert len(cc_side.received) == 5


async def test_pending_commands_survive_a_restart_and_a_switch_between_pull_and_webhook(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    cc_side: CcSide,
    clock: FakeClock,
) -> None:
    webhook = webhook_settings(make_settings, cc_side.url)
    client: Client = await make_client(webhook)
    callback_id = (await create(client))["_id"]
    cc_side.failing.add(callback_id)
    await settle(client)
    await client.close()
    client = await make_client(webhook)  # a new app on the same database
    cc_side.failing.clear()
    clock.advance(5)
    await settle(client)
    first, again = cc_side.received
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert again.body == first.body
    # Queued for the webhook, then started without one: the command is pulled instead.
    cc_side.failing.add(callback_id)
    await gms(client, "DELETE", f"{GMS}/samples_dev/{callback_id}")
    await settle(client)
    cancelled = cc_side.received[-1].body
    await client.close()
    client = await make_client(webhook_settings(make_settings, None))
    assert await pull(client) == [cancelled]
    # Pulled but not acknowledged, then started with the webhook again: POSTed, same command.
    await client.close()
    cc_side.failing.clear()
    client = await make_client(webhook)
    await settle(client)
    assert cc_side.received[-1].body == cancelled
    assert (await cc(client, "GET", f"/callbacks/{callback_id}"))["commands"] == []


async def test_no_request_can_name_the_webhooks_device_type(
    client: Client, cc_side: CcSide
) -> None:
    refused = await gms(
        client,
        "POST",
        f"{GMS}/samples_dev",
        400,
        data={
            "_customer_number": "5115",
            "_device_os": "ccwebhook",
            "_device_notification_id": "x",
        },
    )
    assert "unknown device type 'ccwebhook'" in refused["message"]
    assert "ccwebhook" not in refused["message"].split("known:")[1]
    response = await client.post(
        "/genesys/2/chat/support",
        data={
            "nickname": "Customer",
            "userData[GCTI_Chat_PushSubscribe]": "true",
            "userData[GCTI_GMS_PushDeviceId]": "device-1",
            "userData[GCTI_GMS_PushDeviceType]": "ccwebhook",
        },
    )
    assert response.status == 400, await response.text()
    await settle(client)
    assert cc_side.received == []


@pytest.mark.parametrize("refusal", [401, 404, 302])
async def test_any_refusal_is_retried_not_dropped(
    client: Client, cc_side: CcSide, clock: FakeClock, refusal: int
) -> None:
    cc_side.refusal = refusal  # permanent for custom HTTP; a CC side's may be passing
    callback_id = (await create(client))["_id"]
    cc_side.failing.add(callback_id)
    await settle(client)
    clock.advance(5)
    await settle(client)
    cc_side.failing.clear()
    clock.advance(15)
    await settle(client)
    assert cc_side.seen() == [("callback.created", callback_id, 1)] * 3
    assert len({item.headers["webhook-id"] for item in cc_side.received}) == 1
