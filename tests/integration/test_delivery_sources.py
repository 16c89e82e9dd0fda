"""A notification source other than chat, on the full app (issue 14): a "test" source queues
notifications with ``chatpush.delivery.enqueue`` and registers hooks; real receivers and a fake
FCM on 127.0.0.1, a fake clock, both stores.

- the default custom HTTP and FCM renderings, and a rendering given by the source;
- per-key order: one key strictly in order, two keys in parallel;
- a temporary failure is tried again with the same ``webhook-id`` after the source's delays and
  never before ``Retry-After``, and dropped after ``max_attempts``; a permanent one ends at once;
- FCM's 429 backoff holds the send (not counted as a try); a dead token is remembered and the
  source's hook is told;
- a lease that runs out (an instance died mid-send) gets the notification sent again with the
  same message id; ``drop_pending`` drops what waits under a key prefix.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import Connection

from chatpush.api.keys import DATABASE, DISPATCHER
from chatpush.config import DatabaseSettings, Settings
from chatpush.delivery import (
    Alert,
    Destination,
    NewNotification,
    Outcome,
    drop_pending,
    enqueue,
)
from chatpush.store import migrate, outbox, tokens
from chatpush.store import trail as trail_store
from chatpush.store.database import Database
from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm
from tests.conftest import API_KEY
from tests.integration._push_support import api, metric
from tests.integration.reliable import start_chat
from tests.receivers import Receiver

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Any]
CREDENTIALS_KEY = Fernet.generate_key().decode()


@dataclass
class AnsweringReceiver(Receiver):
    """A receiver that answers ``status`` with ``headers`` (a ``Retry-After``)."""

    headers: dict[str, str] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        response = await super().handle(request)
        response.headers.update(self.headers)
        return response


@dataclass
class Hooks:
    """The test source's hooks: every outcome it is told, in order."""

    told: list[Outcome] = field(default_factory=list)

    def record(self, conn: Connection, outcomes: Sequence[Outcome], now_ms: int) -> None:
        conn.execute(text("SELECT 1"))  # inside the recording transaction
        self.told.extend(outcomes)


@pytest.fixture
async def receiver() -> AsyncIterator[AnsweringReceiver]:
    receiver = AnsweringReceiver()
    await receiver.start()
    yield receiver
    await receiver.close()


@pytest.fixture
async def fcm(clock: FakeClock) -> AsyncIterator[FakeFcm]:
    server = await FakeFcm(clock).start()
    yield server
    await server.close()


@dataclass
class Source:
    client: Client
    clock: FakeClock
    hooks: Hooks

    async def send(self, *notifications: NewNotification) -> list[str]:
        ids: list[str] = await self.client.app[DATABASE].write(
            enqueue, list(notifications), self.clock.now_ms()
        )
        await self.settle()
        return ids

    async def settle(self) -> None:
        await self.client.app[DISPATCHER].settle()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(ms=round(seconds * 1000))
        await self.settle()

    async def trail(self, key: str) -> list[trail_store.DeliveryRecord]:
        rows = await self.client.app[DATABASE].read(trail_store.deliveries_of, "test", key)
        return [record for _id, record in rows]

    async def queued(self, key: str) -> list[outbox.OutboxRecord]:
        found: list[outbox.OutboxRecord] = await self.client.app[DATABASE].read(
            outbox.pending, "test", key
        )
        return found


@pytest.fixture
async def source(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    receiver: AnsweringReceiver,
    fcm: FakeFcm,
    clock: FakeClock,
) -> Source:
    settings = make_settings(
        security={"api_keys": [API_KEY], "credentials_key": CREDENTIALS_KEY},
        mobile={"fcm_api_url": fcm.base_url, "allowed_hosts": [fcm.base_url]},
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,comet,fcm,ios",
                "customhttp.url": receiver.url,
            }
        },
    )
    client: Client = await make_client(settings)
    hooks = Hooks()
    client.app[DISPATCHER].register_source("test", hooks)
    await api(client, "PUT", "/groups/g1/credentials/fcm", json=fcm.credentials())
    return Source(client, clock, hooks)


def webhook(
    key: str = "k1",
    body: dict[str, Any] | None = None,
    device: str = "dev-1",
    **options: Any,
) -> NewNotification:
    return NewNotification(
        source="test",
        key=key,
        kind="alert",
        body=body if body is not None else {"text": "hello"},
        destination=Destination("customhttp", device, "g1"),
        **options,
    )


async def test_the_default_custom_http_rendering_with_the_message_id_as_webhook_id(
    source: Source, receiver: AnsweringReceiver
) -> None:
    [message_id] = await source.send(webhook(body={"text": "hello", "n": 1}))
    [got] = receiver.received
    assert got.body == {"deviceId": "dev-1", "message": {"text": "hello", "n": 1}}
    assert got.headers["webhook-id"] == message_id
    assert "webhook-timestamp" in got.headers
    [row] = await source.trail("k1")
    assert (row.source, row.key, row.outcome, row.message_id) == ("test", "k1", "sent", message_id)
    assert [(o.result, o.final, o.message_id) for o in source.hooks.told] == [
        ("sent", True, message_id)
    ]
    assert await source.queued("k1") == []
    assert await metric(source.client, "chatpush_deliveries_total", source="test") == 1


async def test_a_rendering_given_by_the_source_replaces_the_default(
    source: Source, receiver: AnsweringReceiver
) -> None:
    given = {"event": "custom", "whole": True}
    await source.send(webhook(renderings={"customhttp": given, "fcm": {"data": {"x": "y"}}}))
    assert [item.body for item in receiver.received] == [given]


async def test_a_row_keeps_only_its_destinations_rendering(tmp_path: Path) -> None:
    """The row is only ever sent to its destination's device type: the renderings of the others
    are not stored (nor read back at each claim); without one of its own, all are kept."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    db = Database(DatabaseSettings(url=url))
    given = {"customhttp": {"event": "custom"}, "fcm": {"data": {"x": "y"}}}
    try:
        await db.write(
            enqueue,
            [
                webhook("own", renderings=given),
                webhook("others", renderings={"fcm": {"data": {"x": "y"}}}),
            ],
            1_000,
        )
        [own] = await db.read(outbox.pending, "test", "own")
        [others] = await db.read(outbox.pending, "test", "others")
    finally:
        await db.close()
    assert own.rendering is not None and own.rendering["renderings"] == {
        "customhttp": {"event": "custom"}
    }
    assert others.rendering is not None
    assert others.rendering["renderings"] == {"fcm": {"data": {"x": "y"}}}


async def test_fcm_default_rendering_and_a_given_one(source: Source, fcm: FakeFcm) -> None:
    alert = Alert("Incoming call", "Alice is calling")
    to = Destination("android", "phone-token-1", "g1")  # an alias of fcm
    await source.send(
        NewNotification("test", "f1", "alert", {"call": 7}, to, alert=alert),
        NewNotification(
            "test",
            "f2",
            "alert",
            {"call": 8},
            to,
            priority="normal",
            renderings={"fcm": {"data": {"only": "data"}, "android": {"priority": "high"}}},
        ),
    )
    by_data = sorted(fcm.sent, key=lambda message: json.dumps(message["data"]))
    assert by_data == [
        {
            "data": {"message": '{"call":7}'},
            "notification": {"title": "Incoming call", "body": "Alice is calling"},
            "android": {"priority": "high"},
            "token": "phone-token-1",
        },
        {"data": {"only": "data"}, "android": {"priority": "high"}, "token": "phone-token-1"},
    ]


async def test_one_key_strictly_in_order_two_keys_in_parallel(
    source: Source, receiver: AnsweringReceiver
) -> None:
    receiver.delay_s = 0.2
    await source.send(
        *(webhook("a", {"n": n}) for n in range(3)), *(webhook("b", {"n": n}) for n in range(3))
    )
    seen = [item.body["message"]["n"] for item in receiver.received]
    assert len({item.headers["webhook-id"] for item in receiver.received}) == 6
    trail_a = await source.trail("a")
    trail_b = await source.trail("b")
    assert [r.outcome for r in trail_a + trail_b] == ["sent"] * 6
    # The receiver saw each key's in order, and the two keys' first ones before either's second.
    ids_a = [o.message_id for o in source.hooks.told if o.key == "a"]
    ids_b = [o.message_id for o in source.hooks.told if o.key == "b"]
    order = {item.headers["webhook-id"]: index for index, item in enumerate(receiver.received)}
    assert [order[i] for i in ids_a] == sorted(order[i] for i in ids_a)
    assert [order[i] for i in ids_b] == sorted(order[i] for i in ids_b)
    assert sorted(seen[:2]) == [0, 0]  # in parallel: both heads first
    assert [r.message_id for r in trail_a] == ids_a


async def test_a_temporary_failure_is_retried_with_the_same_id_then_dropped(
    source: Source, receiver: AnsweringReceiver
) -> None:
    receiver.status, receiver.headers = 500, {"Retry-After": "30"}
    [message_id] = await source.send(webhook(max_attempts=3, retry_delays_s=(5,)))
    assert len(receiver.received) == 1
    await source.advance(29.9)  # the retry delay (5 s) ran out long ago: Retry-After wins
    assert len(receiver.received) == 1
    receiver.headers = {}
    await source.advance(0.1)
    assert len(receiver.received) == 2
    await source.advance(4.9)  # the last delay repeats
    assert len(receiver.received) == 2
    await source.advance(0.1)
    assert [item.headers["webhook-id"] for item in receiver.received] == [message_id] * 3
    await source.advance(600)  # max_attempts: no fourth try
    assert len(receiver.received) == 3
    assert await source.queued("k1") == []
    assert [(o.result, o.final) for o in source.hooks.told] == [
        ("failed", False),
        ("failed", False),
        ("failed", True),
    ]
    trail = await source.trail("k1")
    assert [(r.outcome, r.failure, r.retry_after_ms) for r in trail] == [
        ("failed", "temporary", 30_000),
        ("failed", "temporary", None),
        ("failed", "temporary", None),
    ]
    assert await metric(source.client, "chatpush_notifications_dropped_total", source="test") == 1


async def test_a_later_notification_of_the_key_waits_behind_a_retried_one(
    source: Source, receiver: AnsweringReceiver
) -> None:
    receiver.status = 503
    await source.send(webhook(body={"n": 1}, max_attempts=2, retry_delays_s=(10,)))
    await source.send(webhook(body={"n": 2}), webhook("other", {"n": 3}))
    assert [item.body["message"]["n"] for item in receiver.received] == [1, 3]
    receiver.status = 200
    await source.advance(10)
    assert [item.body["message"]["n"] for item in receiver.received] == [1, 3, 1, 2]


async def test_a_permanent_failure_ends_at_once(
    source: Source, receiver: AnsweringReceiver
) -> None:
    receiver.status = 400
    await source.send(webhook(max_attempts=5, retry_delays_s=(1,)))
    await source.advance(60)
    assert len(receiver.received) == 1
    assert [(o.result, o.final, o.http_status) for o in source.hooks.told] == [
        ("failed", True, 400)
    ]
    [row] = await source.trail("k1")
    assert (row.outcome, row.failure) == ("failed", "permanent")
    assert await source.queued("k1") == []


async def test_an_fcm_backoff_holds_the_send_without_counting_a_try(
    source: Source, fcm: FakeFcm
) -> None:
    fcm.fail("phone-1", 429, "QUOTA_EXCEEDED", retry_after="120")
    to = Destination("fcm", "phone-1", "g1")
    await source.send(NewNotification("test", "k1", "alert", {"n": 1}, to, max_attempts=1))
    assert fcm.sent == []
    [held] = await source.queued("k1")
    assert (held.tries, held.due_at_ms) == (0, source.clock.now_ms() + 120_000)
    del fcm.failures["phone-1"]
    await source.advance(119)
    assert fcm.sent == []
    await source.advance(1)
    assert [message["data"] for message in fcm.sent] == [{"message": '{"n":1}'}]
    assert [(o.result, o.final) for o in source.hooks.told] == [
        ("deferred", False),
        ("sent", True),
    ]
    assert await metric(source.client, "chatpush_sends_deferred_total", source="test") == 1


async def test_a_dead_token_is_remembered_and_the_source_told(source: Source, fcm: FakeFcm) -> None:
    fcm.fail("gone-phone", 404, "UNREGISTERED")
    to = Destination("fcm", "gone-phone", "g1")
    await source.send(NewNotification("test", "k1", "alert", {}, to, max_attempts=3))
    [told] = source.hooks.told
    assert (told.result, told.final, told.destination) == ("rejected", True, to)
    assert await source.client.app[DATABASE].read(tokens.is_dead, "fcm", "gone-phone")
    assert await source.queued("k1") == []


async def test_a_lease_that_runs_out_gets_the_same_message_sent_again(
    source: Source, receiver: AnsweringReceiver
) -> None:
    """Another instance claimed the notification and died before recording it: once its lease
    runs out, this one sends it, with the same message id (at least once)."""
    db, clock = source.client.app[DATABASE], source.clock
    later_ms = clock.now_ms() + 1000  # due a second from now: this instance leaves it till then
    ids = await db.write(enqueue, [webhook()], later_ms)
    claimed = await db.write(outbox.claim_heads, later_ms, 60_000, "dead-instance", 10)
    assert [row.message_id for row in claimed] == ids
    await source.advance(1)
    assert receiver.received == []  # leased by the other
    await source.advance(59.9)  # the lease: 60 s from its claim
    assert receiver.received == []
    await source.advance(0.2)
    assert [item.headers["webhook-id"] for item in receiver.received] == ids


async def test_drop_pending_drops_what_waits_under_a_key_prefix(
    source: Source, receiver: AnsweringReceiver
) -> None:
    db, clock = source.client.app[DATABASE], source.clock
    await db.write(
        enqueue,
        [webhook("cb-1:a"), webhook("cb-1:b"), webhook("CB-1:c"), webhook("cb-2:a")],
        clock.now_ms() + 1000,  # due a second from now
    )
    assert await db.write(drop_pending, "test", "cb-1:") == 2
    assert await db.write(drop_pending, "other-source", "") == 0
    await source.advance(1)
    assert sorted(o.key for o in source.hooks.told) == ["CB-1:c", "cb-2:a"]


async def test_a_notification_the_platform_cannot_send_is_refused_and_nothing_queued(
    source: Source,
) -> None:
    db, clock = source.client.app[DATABASE], source.clock
    cases = [
        NewNotification("test", "k", "alert", {}),  # no destination
        webhook("x" * 201),
        webhook(""),
        webhook(max_attempts=0),
        webhook(retry_delays_s=(-1,)),
        NewNotification("test", "k", "alert", {}, Destination("pager", "p-1")),
        webhook(device=""),
    ]
    for case in cases:
        with pytest.raises(ValueError):
            await db.write(enqueue, [webhook("fine"), case], clock.now_ms())
    await source.settle()
    assert source.hooks.told == []


async def test_many_keys_at_once_each_sent_once_and_told(
    source: Source, receiver: AnsweringReceiver
) -> None:
    await source.send(*(webhook(f"key-{n}", {"n": n}) for n in range(40)))
    assert sorted(item.body["message"]["n"] for item in receiver.received) == list(range(40))
    assert len(source.hooks.told) == 40


async def test_claiming_takes_only_each_keys_head_and_two_claimers_never_share(
    source: Source,
) -> None:
    """The claim of the outbox, on both stores (SKIP LOCKED on PostgreSQL): one head per
    (source, key), in id order; what is leased is no one else's; a key in flight is excluded."""
    db = source.client.app[DATABASE]
    later_ms = source.clock.now_ms() + 10_000  # the app's own dispatcher leaves these alone
    await db.write(
        enqueue,
        [webhook(key, {"n": n}) for n in range(3) for key in ("a", "b", "c")],
        later_ms,
    )

    async def claim(claimer: str, exclude: list[tuple[str, str]]) -> list[tuple[str, int]]:
        rows = await db.write(outbox.claim_heads, later_ms, 60_000, claimer, 10, exclude)
        return [(row.key, row.body["n"]) for row in rows]

    first, second = await asyncio.gather(claim("one", [("test", "b")]), claim("two", []))
    assert sorted(first + second) == [("a", 0), ("b", 0), ("c", 0)]  # the heads, once each
    assert not set(first) & set(second)
    assert ("b", 0) not in first
    assert await claim("three", []) == []  # the next of each key waits behind its leased head


async def test_a_chat_and_another_source_go_out_side_by_side(
    source: Source, receiver: AnsweringReceiver
) -> None:
    """One dispatcher, one group commit: the chat's trigger follows the chat's rules and trail,
    the other source's notification its own; the source's hooks hear only of theirs."""
    receiver.delay_s = 0.1  # both in flight at once, recorded in one batch
    push = await start_chat(source.client, receiver, source.clock, agent=False)
    chat_id = push.chat.chat_id
    joined = asyncio.ensure_future(push.chat.agent_joins())
    [message_id] = await source.send(webhook(chat_id, {"same": "key, another source"}))
    await joined
    await source.settle()
    bodies = [item.body for item in receiver.received]
    other = {"deviceId": "dev-1", "message": {"same": "key, another source"}}
    assert other in bodies
    [trigger] = [body for body in bodies if body != other]
    assert trigger["message"]["messages"][0]["userData"]["notify-position"] == "2"
    assert [d["outcome"] for d in await push.deliveries()] == ["sent"]  # the chat's trail only
    assert [(r.key, r.message_id) for r in await source.trail(chat_id)] == [(chat_id, message_id)]
    assert [o.key for o in source.hooks.told] == [chat_id]


async def test_an_outbox_id_reused_at_once_is_sent_at_once(
    source: Source, receiver: AnsweringReceiver
) -> None:
    """SQLite gives a new row the id of the newest row deleted (INTEGER PRIMARY KEY without
    AUTOINCREMENT). The recording of a finished send, a new notification taking its row's id, and
    the dispatcher's claim of that notification can commit together (group commit): the claim's
    lease must survive the finished send's clean-up, else the new notification is left leased,
    unsent, until the lease runs out (a lost ring of the agent-alerts benchmark, 60 s late)."""
    db, dispatcher = source.client.app[DATABASE], source.client.app[DISPATCHER]
    if not db.is_sqlite:
        pytest.skip("PostgreSQL never reuses an id")
    receiver.delay_s = 0.3  # the first send is in flight while the writer is held below
    [first_id] = await db.write(enqueue, [webhook("a", {"n": 1})], source.clock.now_ms())
    dispatcher.poke()
    for _ in range(500):
        if receiver.received:
            break
        await asyncio.sleep(0.01)
    assert receiver.received, "the first notification was never sent"
    held, release = threading.Event(), threading.Event()

    def hold_the_writer(conn: Connection) -> None:
        held.set()
        release.wait(10)

    blocker = asyncio.create_task(db.write(hold_the_writer))
    await asyncio.to_thread(held.wait, 10)
    await asyncio.sleep(0.6)  # the receiver answered: the recording is queued behind the blocker
    second = asyncio.create_task(db.write(enqueue, [webhook("b", {"n": 2})], source.clock.now_ms()))
    await asyncio.sleep(0.05)
    dispatcher.poke()  # its claim queues behind the new notification
    await asyncio.sleep(0.05)
    release.set()
    await blocker
    [second_id] = await second
    await source.settle()
    assert [item.body["message"]["n"] for item in receiver.received] == [1, 2]
    assert [item.headers["webhook-id"] for item in receiver.received] == [first_id, second_id]
    assert await source.queued("b") == []
