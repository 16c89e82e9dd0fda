"""Send outcomes honoured (docs/push.md, "Outcomes"): the real app, real receivers and a fake FCM
on 127.0.0.1, and a fake clock.

- a permanent refusal (401, 400) gets exactly one attempt: the subscription is failed, the trail
  says ``permanent``, and nothing is resent on the timetable;
- a temporary failure with ``Retry-After`` is never resent before it, whatever the resend delay;
- a service-wide backoff (a receiver's 503 with ``Retry-After``, FCM's 429) holds the send: it
  stays queued, is not counted as an attempt, and goes out (the same attempt) when the wait ends.
"""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet

from chatpush.config import Settings
from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm
from tests.conftest import API_KEY, ChatDriver
from tests.integration._push_support import api, metric, push_form, settle, trail
from tests.integration.reliable import Push, push_settings, start_chat
from tests.receivers import Receiver

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Any]
MakeSettings = Callable[..., Settings]


@dataclass
class AnsweringReceiver(Receiver):
    """A receiver that answers ``status`` with ``headers`` (a ``Retry-After``)."""

    headers: dict[str, str] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        response = await super().handle(request)
        response.headers.update(self.headers)
        return response


@pytest.fixture
async def receiver() -> AsyncIterator[AnsweringReceiver]:
    receiver = AnsweringReceiver()
    await receiver.start()
    yield receiver
    await receiver.close()


async def start(
    make_settings: MakeSettings,
    make_client: MakeClient,
    receiver: Receiver,
    clock: FakeClock,
    *,
    delay: int = 5,
    attempts: int = 3,
) -> Push:
    settings = push_settings(make_settings, receiver, delay=delay, attempts=attempts)
    client: Client = await make_client(settings)
    return await start_chat(client, receiver, clock)


def summary(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (d["notifyAttempt"], d["outcome"], d["httpStatus"], d["failure"], d["retryAfterMs"])
        for d in rows
    ]


@pytest.mark.parametrize("status", [401, 400, 403, 404])
async def test_a_permanent_refusal_gets_one_attempt_and_fails_the_subscription(
    make_settings: MakeSettings,
    make_client: MakeClient,
    receiver: AnsweringReceiver,
    clock: FakeClock,
    status: int,
) -> None:
    receiver.status = status
    push = await start(make_settings, make_client, receiver, clock, delay=5, attempts=3)
    assert push.seen() == [("2", "0")]
    sub = await push.subscription()
    assert (sub["status"], sub["outstandingTrigger"], sub["nextResendAt"]) == ("failed", None, None)
    await push.advance(600)  # the whole timetable (5 s x 3) many times over: nothing more
    assert push.seen() == [("2", "0")]
    assert summary(await push.deliveries()) == [(0, "failed", status, "permanent", None)]
    labels = {"failure": "permanent", "reason": f"http_{status}"}
    assert await metric(push.client, "chatpush_delivery_failures_total", **labels) == 1
    assert await metric(push.client, "chatpush_subscriptions_failed_permanently_total") == 1
    assert await metric(push.client, "chatpush_triggers_resent_total") == 0

    # The receiver is mended: the next notifiable event starts a new series, which goes through.
    receiver.status = 200
    await push.agent_says("still there?")
    await push.settle()
    assert push.seen() == [("2", "0"), ("2", "0")]
    assert (await push.subscription())["status"] == "active"


async def test_a_temporary_failure_is_not_resent_before_its_retry_after(
    make_settings: MakeSettings,
    make_client: MakeClient,
    receiver: AnsweringReceiver,
    clock: FakeClock,
) -> None:
    receiver.status, receiver.headers = 500, {"Retry-After": "30"}
    push = await start(make_settings, make_client, receiver, clock, delay=5, attempts=3)
    assert push.seen() == [("2", "0")]
    assert (await push.subscription())["nextResendAt"] == clock.now_ms() + 30_000
    await push.advance(29.9)  # the resend delay (5 s) ran out long ago: Retry-After wins
    assert push.seen() == [("2", "0")]
    receiver.status, receiver.headers = 200, {}
    await push.advance(0.1)
    assert push.seen() == [("2", "0"), ("2", "1")]  # on the timetable: the next attempt
    assert summary(await push.deliveries()) == [
        (0, "failed", 500, "temporary", 30_000),
        (1, "sent", 200, None, None),
    ]


def http_date(at_ms: int) -> str:
    return email.utils.formatdate(at_ms / 1000, usegmt=True)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_a_receivers_503_with_retry_after_holds_the_send_without_counting_it(
    make_settings: MakeSettings,
    make_client: MakeClient,
    receiver: AnsweringReceiver,
    clock: FakeClock,
    form: str,
) -> None:
    wait = "30" if form == "seconds" else http_date(clock.now_ms() + 30_000)
    receiver.status, receiver.headers = 503, {"Retry-After": wait}
    push = await start(make_settings, make_client, receiver, clock, delay=5, attempts=3)
    assert push.seen() == [("2", "0")]
    sub = await push.subscription()
    assert sub["status"] == "active" and sub["outstandingTrigger"]["notifyAttempt"] == 0
    [queued] = sub["queued"]  # held, not failed: still queued
    assert (queued["kind"], queued["notifyAttempt"], queued["parked"]) == ("trigger", 0, False)
    await push.advance(29.9)  # resend-delay is 5 s: no resend, no retry before Retry-After
    assert push.seen() == [("2", "0")]
    receiver.status, receiver.headers = 200, {}
    await push.advance(0.1)
    assert push.seen() == [("2", "0"), ("2", "0")]  # the same attempt, not a resend
    assert summary(await push.deliveries()) == [
        (0, "deferred", 503, "deferred", 30_000),
        (0, "sent", 200, None, None),
    ]
    assert await metric(push.client, "chatpush_sends_deferred_total") == 1
    assert await metric(push.client, "chatpush_triggers_resent_total") == 0
    # The timetable counts from the send that went out: the first resend 5 s after it.
    await push.advance(4.9)
    assert len(push.seen()) == 2
    await push.advance(0.1)
    assert push.seen()[-1] == ("2", "1")


# -- FCM's 429: the project's backoff holds every send to it -----------------------------------

CREDENTIALS_KEY = Fernet.generate_key().decode()
FCM_PATH = "/groups/mobile/credentials/fcm"


@pytest.fixture
async def fcm(clock: FakeClock) -> AsyncIterator[FakeFcm]:
    server = await FakeFcm(clock).start()
    yield server
    await server.close()


async def test_an_fcm_429_holds_the_sends_until_the_backoff_ends(
    make_settings: MakeSettings, make_client: MakeClient, fcm: FakeFcm, clock: FakeClock
) -> None:
    settings = make_settings(
        security={"api_keys": [API_KEY], "credentials_key": CREDENTIALS_KEY},
        mobile={"fcm_api_url": fcm.base_url, "allowed_hosts": [fcm.base_url]},
        groups={"mobile": {"default": True, "nodes": ["n1"], "pushEnabled": "fcm"}},
        services={"default": {"flex-push-resend-delay": 5, "flex-push-resend-attempts": 3}},
    )
    app: Client = await make_client(settings)
    await api(app, "PUT", FCM_PATH, json=fcm.credentials())
    fcm.fail("phone-1", 429, "QUOTA_EXCEEDED", "Quota exceeded", "120")
    chats = []
    for device in ("phone-1", "phone-2"):
        chat = ChatDriver(app)
        await chat.request_chat(**push_form(device, PushDeviceType="fcm", PushResend="true"))
        await chat.agent_joins()
        chats.append(chat)
        await settle(app)
    del fcm.failures["phone-1"]
    # phone-1's 429 put the project in backoff: phone-2's trigger was held untried as well.
    assert fcm.sent == []
    for chat in chats:
        sub = await api(app, "GET", f"/chats/{chat.chat_id}/subscription")
        assert sub["status"] == "active" and sub["outstandingTrigger"]["notifyAttempt"] == 0
        [row] = await trail(app, chat.chat_id)
        assert (row["outcome"], row["failure"]) == ("deferred", "deferred")
    clock.advance(119.9)
    await settle(app)
    assert fcm.sent == []  # not before Retry-After, though the resend delay is 5 s
    clock.advance(0.1)
    await settle(app)
    sent = sorted((m["token"], m["data"]["notify-attempt"]) for m in fcm.sent)
    assert sent == [("phone-1", "0"), ("phone-2", "0")]  # held, not failed: attempt 0 still
    assert await metric(app, "chatpush_triggers_resent_total") == 0
    assert await metric(app, "chatpush_delivery_failures_total") == 0
