"""Hypothesis-generated requests against the Notification API subset (docs/callbacks.md §6):
subscribe, unsubscribe, publish.

Each example sends one request built from: the members of a subscription and a publish with
right and wrong values (strings of any Unicode, numbers, booleans, nulls, nested objects and
lists; filters that are a callback's tag, a glob, junk; device types right and wrong; httpcb URLs
inside and outside the allow-list); an encoding (a JSON object, a JSON list, a form, XML,
arbitrary bytes); with or without an API key; an id to unsubscribe (a live subscription, an
unknown or malformed one).

Properties, for every answer: never a 5xx, never a traceback; JSON; every error in GMS's shape
with one of the contract's names and its status; a refused request changes nothing (the
subscriptions and the outbox, read from the database, are the same before and after).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from chatpush.app import create_app
from chatpush.config import load_settings
from chatpush.testing import FakeClock
from tests.fuzz.common import EXAMPLES, record_count, traceback_in
from tests.fuzz.test_callback_api_forms import API_KEY, NAMES, SERVICE, Live

SUBSCRIBE = "/genesys/1/notification/subscription"
PUBLISH = "/genesys/1/notification/publish"
ALLOWED = "https://rx.example.com/"
ERRORS = {**NAMES, "SUBSCRIPTION_NOT_FOUND": 404, "TOO_MANY_SUBSCRIPTIONS": 429}

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=60),
    st.sampled_from(["", "0", "30", "-1", "true", "fr", "fr-CA", "x" * 500]),
)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
TYPES = st.sampled_from(["httpcb", "customhttp", "comet", "fcm", "android", "ios", "orscb", ""])
DEVICE_IDS = st.one_of(
    st.sampled_from(
        [ALLOWED + "cb", "https://evil.example/", "http://127.0.0.1/x", "dev-1", "", "\x00"]
    ),
    st.text(max_size=40),
)
DETAILS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "deviceId": st.one_of(DEVICE_IDS, JSON_VALUES),
            "type": st.one_of(TYPES, JSON_VALUES),
            "properties": st.one_of(
                JSON_VALUES,
                st.fixed_dictionaries({}, optional={"debug": JSON_VALUES, "language": JSON_VALUES}),
            ),
        },
    ),
)
FILTERS = st.sampled_from(["tag", "glob", "junk", "other-service", "unknown-id"])
MEMBERS = st.fixed_dictionaries(
    {},
    optional={
        "subscriberId": st.one_of(st.sampled_from(["app-1", "app-2"]), JSON_VALUES),
        "providerName": JSON_VALUES,
        "notificationDetails": DETAILS,
        "authorization": st.one_of(st.sampled_from(["ZGVtbzo=", "Bearer x", "a\r\nb"]), SCALARS),
        "expire": st.one_of(st.integers(-5, 3_000_000), JSON_VALUES),
        "tag": st.one_of(st.just("tag"), JSON_VALUES),
        "message": JSON_VALUES,
        "body": st.one_of(JSON_VALUES, st.dictionaries(st.text(max_size=5), SCALARS, max_size=3)),
        "mediaType": st.one_of(
            st.sampled_from(["string", "localizestring", "push.title", "html"]), JSON_VALUES
        ),
        "mediatype": st.sampled_from(["string", "localizestring"]),
        "junk": JSON_VALUES,
    },
)


class LiveNotifications(Live):
    async def _start(self) -> str:
        settings = load_settings(
            None,
            database={"url": self.url_db},
            security={"api_keys": [API_KEY]},
            services={SERVICE: {"_enable_status_notification": "notify"}},
            callback={"httpcb_allowed_prefixes": [ALLOWED]},
            notification={"max_subscriptions_per_subscriber": 3},
        )
        self.runner = web.AppRunner(create_app(settings, clock=FakeClock(), housekeeping=False))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def _db_path(self) -> str:
        return self.url_db.split("///", 1)[1]

    def state(self) -> tuple[list[Any], list[Any]]:
        """The subscriptions and the outbox, as rows."""
        with sqlite3.connect(self._db_path()) as conn:
            subscriptions = conn.execute(
                "SELECT * FROM notification_subscriptions ORDER BY id"
            ).fetchall()
            outbox = conn.execute("SELECT id, key FROM outbox ORDER BY id").fetchall()
        return subscriptions, outbox


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNotifications]:
    server = LiveNotifications(tmp_path_factory.mktemp("notification-fuzz"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _filter(kind: str, callback_id: str) -> str:
    return {
        "tag": f"callback.{SERVICE}.{callback_id}",
        "glob": f"callback.{SERVICE}.*",
        "junk": "no*such\u00e9tag",
        "other-service": f"callback.other.{callback_id}",
        "unknown-id": f"callback.{SERVICE}.{'F' * 32}",
    }[kind]


@settings(
    max_examples=EXAMPLES.forms,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(["subscribe", "unsubscribe", "publish"]),
    members=MEMBERS,
    filter_kind=FILTERS,
    encoding=st.sampled_from(["json", "json", "json", "json-list", "form", "xml", "bytes"]),
    keyed=st.booleans(),
    target=st.sampled_from(["live", "unknown", "malformed"]),
)
def test_notification_requests(
    live: LiveNotifications,
    route: str,
    members: dict[str, Any],
    filter_kind: str,
    encoding: str,
    keyed: bool,
    target: str,
) -> None:
    callback_id = live.make(False)
    members = {**members, "filter": _filter(filter_kind, callback_id)}
    if members.get("tag") == "tag":
        members["tag"] = members["filter"]
    subscription_id = {"unknown": "F" * 32, "malformed": "not-an-id%00"}.get(target)
    if subscription_id is None:
        made = live.session.post(
            f"{live.base_url}{SUBSCRIBE}",
            json={
                "subscriberId": f"fuzz-{callback_id}",
                "filter": f"callback.{SERVICE}.{callback_id}",
                "notificationDetails": {"deviceId": "dev-1", "type": "customhttp"},
            },
        )
        assert made.status_code == 200, made.text
        subscription_id = made.json()["id"]
    before = live.state()
    headers = {"X-API-Key": API_KEY} if keyed else {}
    data: bytes | None = None
    if encoding == "json":
        data, headers["Content-Type"] = json.dumps(members).encode(), "application/json"
    elif encoding == "json-list":
        data, headers["Content-Type"] = json.dumps(list(members)).encode(), "application/json"
    elif encoding == "form":
        data = "&".join(f"{key}=1" for key in members).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif encoding == "xml":
        data, headers["Content-Type"] = b"<subscription/>", "application/xml"
    else:
        data, headers["Content-Type"] = bytes(range(256)), "application/json"
    method, path = {
        "subscribe": ("POST", SUBSCRIBE),
        "unsubscribe": ("DELETE", f"{SUBSCRIBE}/{subscription_id}"),
        "publish": ("POST", PUBLISH),
    }[route]
    note(f"{method} {path} {encoding} keyed={keyed} {data!r:.300}")
    response = live.session.request(
        method, live.base_url + path, data=data, headers=headers, timeout=30
    )
    record_count(f"notifications {route}", response.status_code)
    assert response.status_code < 500, response.text
    assert not traceback_in(response.content), response.text
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict), body
        name = body.get("error")
        assert name in ERRORS, body
        assert ERRORS[name] == response.status_code, body
        assert body["phrase"] == name and body["exception"] == f"chatpush.callback.{name}"
        assert live.state() == before, "a refused request changed something"
    elif route == "unsubscribe":
        assert body == {"id": subscription_id}
    else:
        assert isinstance(body["id"], str) and len(body["id"]) == 32
