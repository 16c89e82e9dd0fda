"""The Notification API subset (docs/callbacks.md §6) against real receivers on 127.0.0.1, on
SQLite and PostgreSQL: subscribe, renew, expire, unsubscribe, publish; status events in
``notify`` mode to every matching subscription; ``subscribe_notify``'s stored subscription; the
refusals, which change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import func, select, text

from chatpush.api.callbacks import CALLBACKS
from chatpush.api.keys import DATABASE, DISPATCHER
from chatpush.config import Settings
from chatpush.store.tables import NotificationSubscription
from chatpush.testing import FakeClock
from tests.conftest import API_KEY
from tests.integration.callback_support import Client, cc, create, event, gms, gms_error
from tests.receivers import Receiver

SUBSCRIBE = "/genesys/1/notification/subscription"
PUBLISH = "/genesys/1/notification/publish"


@pytest.fixture
async def rx() -> AsyncIterator[Receiver]:
    """A subscriber's httpcb receiver."""
    receiver = await Receiver().start()
    yield receiver
    await receiver.close()


@pytest.fixture
async def rx2() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.close()


def settings_for(make_settings: Callable[..., Settings], group_url: str) -> Settings:
    return make_settings(
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,httpcb",
                "customhttp.url": group_url,
                "customhttp.authorization": "Bearer the-groups-own",
            }
        },
        provider_options={"httpcb": {"allow_private_addresses": True}},
        callback={"httpcb_allowed_prefixes": ["http://127.0.0.1:"]},
        notification={"max_subscriptions_per_subscriber": 3},
        services={
            "default": {"flex-push-resend-delay": 5},
            "samples_dev": {"_enable_status_notification": "notify"},
            "other": {"_enable_status_notification": "notify"},
            "own": {"_enable_status_notification": "subscribe_notify"},
            "quiet": {},
        },
        texts={"fr": {"push.CALLBACK_UPCOMING.body": "Un agent va vous appeler sous peu."}},
    )


@pytest.fixture
async def client(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    rx: Receiver,
    receiver: Receiver,
) -> Client:
    return await make_client(settings_for(make_settings, receiver.url))  # type: ignore[no-any-return]


def tag(service: str, callback_id: str) -> str:
    return f"callback.{service}.{callback_id}"


def details(url: str, kind: str = "httpcb", **properties: str) -> dict[str, Any]:
    return {"deviceId": url, "type": kind, "properties": properties}


async def subscribe(
    client: Client, expect: int = 200, key: str | None = None, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = await gms(client, "POST", SUBSCRIBE, expect, json=fields, key=key)
    return body


async def delivered(client: Client, rx: Receiver) -> list[dict[str, Any]]:
    await client.app[DISPATCHER].settle()
    return [item.body for item in rx.received]


async def subscription_rows(client: Client) -> int:
    def run(conn: Any) -> int:
        return int(
            conn.execute(select(func.count()).select_from(NotificationSubscription)).scalar()
        )

    return await client.app[DATABASE].read(run)


async def outbox_rows(client: Client) -> int:
    def run(conn: Any) -> int:
        return int(conn.execute(text("SELECT count(*) FROM outbox")).scalar())

    return await client.app[DATABASE].read(run)


async def fire_until(client: Client, count: Callable[[Client], Any], expected: int) -> None:
    """Fire the timers until ``count`` is ``expected`` (real time, 10 s at most): the app's own
    timer task may be firing the same timer (woken by the clock), and on PostgreSQL it then
    holds the row our firing skips (SKIP LOCKED)."""
    for _ in range(200):
        await client.app[CALLBACKS].fire_timers()
        if await count(client) == expected:
            return
        await asyncio.sleep(0.05)
    assert await count(client) == expected


async def test_subscriber_gets_the_exact_body_with_its_authorization(
    client: Client, rx: Receiver, receiver: Receiver, clock: FakeClock
) -> None:
    callback_id = (await create(client))["_id"]
    the_tag = tag("samples_dev", callback_id)
    # Without a key: the filter is exactly the callback's tag. A value without a space is
    # sent as Basic <value>; one with a space as it is (here over the group's own).
    answer = await subscribe(
        client,
        subscriberId="app-42",
        providerName="mobile-app",
        filter=the_tag,
        notificationDetails=details(rx.url, debug="false", language="fr"),
        authorization="ZGVtbzo=",
        expire=60,
    )
    assert len(answer["id"]) == 32 and set(answer) == {"id"}
    await subscribe(
        client,
        subscriberId="app-43",
        filter=the_tag,
        notificationDetails=details("dev-1", "customhttp"),
        authorization="Token abc",
    )
    at_s = clock.now_ms() // 1000 + 5
    attributes = {"c_dialed_number": "5115"}
    await event(client, callback_id, 1, "dial_init", at=at_s * 1000, attributes=attributes)
    expected = {
        "event_id": "_cbe_on_dial_init",
        "timestamp": str(at_s),
        "_callback_state": "ROUTING",
        "_service_id": callback_id,
        "_service_name": "samples_dev",
        "_customer_number": "5115",
        "c_dialed_number": "5115",
    }
    assert await delivered(client, rx) == [expected]
    assert list(rx.received[0].body) == list(expected)  # the keys in §5.4's order
    assert rx.received[0].headers["Authorization"] == "Basic ZGVtbzo="
    assert await delivered(client, receiver) == [{"deviceId": "dev-1", "message": expected}]
    assert receiver.received[0].headers["Authorization"] == "Token abc"


async def test_glob_filters_and_notify_mode_reach_every_matching_subscription(
    client: Client, rx: Receiver, rx2: Receiver
) -> None:
    callback_id = (await create(client))["_id"]
    other_id = (await create(client, "other"))["_id"]
    await subscribe(
        client, subscriberId="a", filter=tag("samples_dev", callback_id),
        notificationDetails=details(rx.url),
    )  # fmt: skip
    await subscribe(
        client, key=API_KEY, subscriberId="ops", filter="callback.samples_dev.*",
        notificationDetails=details(rx2.url),
    )  # fmt: skip
    await subscribe(
        client, key=API_KEY, subscriberId="ops", filter="callback.Samples_dev.*",
        notificationDetails=details(rx2.url + "?case"),
    )  # fmt: skip
    shown = await cc(client, "GET", f"/callbacks/{callback_id}")
    found = shown["statusSubscriptions"]
    listed = sorted((s["subscriberId"], s["filter"], s["own"]) for s in found)
    assert listed == [
        ("a", tag("samples_dev", callback_id), False),
        ("ops", "callback.samples_dev.*", False),
    ]
    await event(client, callback_id, 1, "dial_init")
    await event(client, other_id, 1, "dial_init")  # matches nothing
    first = await delivered(client, rx)
    second = await delivered(client, rx2)
    assert [b["_service_id"] for b in first] == [callback_id]
    assert [b["_service_id"] for b in second] == [callback_id]  # not the case-different one


async def test_renewal_keeps_the_id_and_expiry_ends_a_subscription(
    client: Client, rx: Receiver, clock: FakeClock
) -> None:
    callback_id = (await create(client))["_id"]
    fields = {
        "subscriberId": "app-42",
        "filter": tag("samples_dev", callback_id),
        "notificationDetails": details(rx.url),
    }
    first = (await subscribe(client, **fields, expire=5))["id"]  # 1-29 s: 30 s
    clock.advance(25)
    assert (await subscribe(client, **fields, expire=40))["id"] == first  # renewed
    other = (await subscribe(client, **{**fields, "subscriberId": "app-43"}))["id"]
    assert other != first
    clock.advance(35)  # app-43's 30 s (the default) are over; app-42's renewal is not
    await event(client, callback_id, 1, "dial_init")
    assert len(await delivered(client, rx)) == 1
    clock.advance(10)  # now app-42's are over too
    await event(client, callback_id, 2, "dial_done", attempt=1, connected=True)
    assert len(await delivered(client, rx)) == 1  # never matched once expired
    await fire_until(client, subscription_rows, 0)  # the durable timer deletes them
    body = await gms(client, "DELETE", f"{SUBSCRIBE}/{first}", 404)
    gms_error(body, "SUBSCRIPTION_NOT_FOUND")


async def test_unsubscribe_stops_deliveries(client: Client, rx: Receiver) -> None:
    callback_id = (await create(client))["_id"]
    fields = {"subscriberId": "a", "filter": tag("samples_dev", callback_id)}
    subscription_id = (await subscribe(client, **fields, notificationDetails=details(rx.url)))["id"]
    await event(client, callback_id, 1, "dial_init")
    assert len(await delivered(client, rx)) == 1
    assert await gms(client, "DELETE", f"{SUBSCRIBE}/{subscription_id}") == {"id": subscription_id}
    await event(client, callback_id, 2, "dial_done", attempt=1, connected=True)
    assert len(await delivered(client, rx)) == 1
    gms_error(
        await gms(client, "DELETE", f"{SUBSCRIBE}/{subscription_id}", 404), "SUBSCRIPTION_NOT_FOUND"
    )


async def test_refusals_change_nothing(client: Client, rx: Receiver) -> None:
    callback_id = (await create(client))["_id"]
    good = {
        "subscriberId": "a",
        "filter": tag("samples_dev", callback_id),
        "notificationDetails": details(rx.url),
    }
    response = await client.post(SUBSCRIBE, data={"subscriberId": "a"})
    assert response.status == 415
    gms_error(await response.json(), "UNSUPPORTED_MEDIA_TYPE")
    for broken, name in [
        ({**good, "subscriberId": None}, "BAD_PARAMETER"),
        ({**good, "filter": ""}, "BAD_PARAMETER"),
        ({**good, "notificationDetails": {"deviceId": rx.url}}, "BAD_PARAMETER"),
        ({**good, "notificationDetails": details(rx.url, "telex")}, "BAD_PARAMETER"),
        ({**good, "notificationDetails": details("https://evil.example/")}, "BAD_PARAMETER"),
        ({**good, "expire": -1}, "BAD_PARAMETER"),
        ({**good, "expire": "soon"}, "BAD_PARAMETER"),
    ]:
        gms_error(await subscribe(client, 400, **broken), name)
    for filter_ in (
        "callback.samples_dev.*",
        tag("samples_dev", "0" * 32),
        tag("quiet", callback_id),
    ):
        gms_error(await subscribe(client, 403, **{**good, "filter": filter_}), "API_KEY_REQUIRED")
    gms_error(await gms(client, "DELETE", f"{SUBSCRIBE}/{'A' * 32}", 404), "SUBSCRIPTION_NOT_FOUND")
    gms_error(
        await gms(client, "POST", PUBLISH, 403, json={"tag": good["filter"]}), "API_KEY_REQUIRED"
    )
    gms_error(await gms(client, "POST", PUBLISH, 400, json={"x": 1}, key=API_KEY), "BAD_PARAMETER")
    assert await subscription_rows(client) == 0
    await event(client, callback_id, 1, "dial_init")
    assert await delivered(client, rx) == []


async def test_limits_per_subscriber(client: Client, rx: Receiver) -> None:
    callback_id = (await create(client))["_id"]
    for n in range(3):
        await subscribe(
            client, subscriberId="a", filter=tag("samples_dev", callback_id),
            notificationDetails=details(f"{rx.url}?n={n}"),
        )  # fmt: skip
    body = await subscribe(
        client, 429, subscriberId="a", filter=tag("samples_dev", callback_id),
        notificationDetails=details(f"{rx.url}?n=9"),
    )  # fmt: skip
    gms_error(body, "TOO_MANY_SUBSCRIPTIONS")
    assert await subscription_rows(client) == 3


async def test_subscribe_notify_stores_its_subscription_until_the_purge(
    client: Client, rx: Receiver, rx2: Receiver, clock: FakeClock
) -> None:
    callback_id = (await create(client, "own", _status_notification_target=rx.url))["_id"]
    assert await subscription_rows(client) == 1
    own = (await cc(client, "GET", f"/callbacks/{callback_id}"))["statusSubscriptions"]
    assert [(s["filter"], s["deviceType"], s["own"], s["expireAt"]) for s in own] == [
        (tag("own", callback_id), "httpcb", True, None)
    ]
    await event(client, callback_id, 1, "dial_init")
    # The target in effect is the stored one; an update of the target replaces it.
    await gms(
        client,
        "PUT",
        f"/genesys/1/service/callback/own/{callback_id}",
        json={"_status_notification_target": rx2.url},
    )
    assert await subscription_rows(client) == 1
    await event(client, callback_id, 2, "exit", reason="AGENT_CONNECTED")
    assert [b["event_id"] for b in await delivered(client, rx)] == ["_cbe_on_dial_init"]
    assert [b["event_id"] for b in await delivered(client, rx2)] == ["_cbe_on_service_exit"]
    clock.advance(86_400 + 1)  # [callback] completed_retention_s: the callback is purged
    await fire_until(client, subscription_rows, 0)


async def test_publish_localizes_per_subscriber_and_renders_per_type(
    client: Client, rx: Receiver, rx2: Receiver, receiver: Receiver
) -> None:
    callback_id = (await create(client))["_id"]
    the_tag = tag("samples_dev", callback_id)
    await subscribe(
        client, subscriberId="fr", filter=the_tag,
        notificationDetails=details(rx.url, language="fr-CA"),
    )  # fmt: skip
    await subscribe(client, subscriberId="en", filter=the_tag, notificationDetails=details(rx2.url))
    answer = await gms(
        client,
        "POST",
        PUBLISH,
        json={
            "tag": the_tag,
            "message": "push.CALLBACK_UPCOMING.body",
            "mediatype": "localizestring",
        },
        key=API_KEY,
    )
    assert answer["matched"] == 2 and len(answer["id"]) == 32
    assert await delivered(client, rx) == [{"text": "Un agent va vous appeler sous peu."}]
    assert rx.received[0].headers["Content-Type"].startswith("text/plain")
    assert await delivered(client, rx2) == [{"text": "An agent will call you shortly."}]
    # An object, to the subscriptions and to a direct target (customhttp: wrapped).
    answer = await gms(
        client,
        "POST",
        PUBLISH,
        json={
            "tag": the_tag,
            "body": {"hello": 1},
            "notificationDetails": details("dev-9", "customhttp"),
        },
        key=API_KEY,
    )
    assert answer["matched"] == 3
    assert (await delivered(client, rx))[-1] == {"hello": 1}
    assert await delivered(client, receiver) == [{"deviceId": "dev-9", "message": {"hello": 1}}]
    nothing = await gms(client, "POST", PUBLISH, json={"tag": "no.one"}, key=API_KEY)
    assert nothing["matched"] == 0


async def test_publish_expire_drops_copies_still_undelivered(
    client: Client, rx: Receiver, clock: FakeClock
) -> None:
    callback_id = (await create(client))["_id"]
    the_tag = tag("samples_dev", callback_id)
    await subscribe(client, subscriberId="a", filter=the_tag, notificationDetails=details(rx.url))
    rx.mode = "error"
    for n, expire in ((1, 10), (2, None)):
        body: dict[str, Any] = {"tag": the_tag, "message": {"n": n}}
        if expire is not None:
            body["expire"] = expire
        await gms(client, "POST", PUBLISH, json=body, key=API_KEY)
    await delivered(client, rx)
    assert sorted(item.body["n"] for item in rx.received) == [1, 2]  # tried once each, failed
    clock.advance(11)  # their retries are due: they fail again
    await delivered(client, rx)
    assert len(rx.received) == 4
    await fire_until(client, outbox_rows, 1)  # n=1's 10 s are over: its copy is dropped
    rx.mode = "ok"
    clock.advance(5)
    await delivered(client, rx)
    assert [item.body for item in rx.received[4:]] == [{"n": 2}]
    assert await outbox_rows(client) == 0


async def test_fcm_subscribers_get_data_without_an_alert_and_a_dead_token_ends_them(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    from cryptography.fernet import Fernet

    from chatpush.testing.fcm import FakeFcm
    from tests.integration._push_support import api

    fcm = await FakeFcm(clock).start()
    try:
        settings = make_settings(
            security={"api_keys": [API_KEY], "credentials_key": Fernet.generate_key().decode()},
            mobile={"fcm_api_url": fcm.base_url, "allowed_hosts": [fcm.base_url]},
            groups={"g1": {"default": True, "nodes": ["n1"], "pushEnabled": "fcm"}},
        )
        client = await make_client(settings)
        await api(client, "PUT", "/groups/g1/credentials/fcm", json=fcm.credentials())
        for token in ("tok-1", "tok-2"):
            await subscribe(
                client, key=API_KEY, subscriberId=token, filter="news.*",
                notificationDetails=details(token, "android"),
            )  # fmt: skip
        fcm.fail("tok-2", 404, "UNREGISTERED", "Requested entity was not found.")
        answer = await gms(
            client, "POST", PUBLISH, json={"tag": "news.1", "body": {"a": 1}}, key=API_KEY
        )
        assert answer["matched"] == 2
        await client.app[DISPATCHER].settle()
        [message] = fcm.sent
        assert message["token"] == "tok-1" and "notification" not in message
        assert message["data"] == {"message": '{"a":1}'}
        assert await subscription_rows(client) == 1  # tok-2's ended
        assert (await gms(client, "POST", PUBLISH, json={"tag": "news.2"}, key=API_KEY))[
            "matched"
        ] == 1
    finally:
        await fcm.close()
