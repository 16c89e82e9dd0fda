"""The Notification API's pure rules (docs/callbacks.md §6): glob filters, expiry, the
Authorization header, and what a subscription or publish request may be."""

from __future__ import annotations

from typing import Any

import pytest

from chatpush.callbacks.errors import BadParameter
from chatpush.callbacks.notifications import (
    authorization_header,
    callback_of_tag,
    expiry_s,
    matches,
    parse_publish,
    parse_subscribe,
)

TAG = "callback.samples_dev.8F3A0C6E2B9D4F17A1C5E0B2D3F4A5B6"


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("callback.samples_dev.*", TAG, True),
        ("callback.*", TAG, True),  # dots too
        ("*", TAG, True),
        ("*", "", True),
        ("callback.*.8F3A0C6E2B9D4F17A1C5E0B2D3F4A5B6", TAG, True),
        ("callback.samples_dev.*", "callback.samples_dev.", True),  # an empty run
        ("callback.samples_dev.*", "callback.samples_devX", False),
        ("callback.Samples_dev.*", TAG, False),  # case-sensitive
        ("callback.samples_dev", TAG, False),  # the whole tag
        ("samples_dev.*", TAG, False),  # from its start
        ("*.8F3A", TAG, False),  # to its end
        ("callback.samples?dev.*", TAG, False),  # ? is itself
        ("callback.samples_dev.[8]*", TAG, False),  # so are [ and ]
        ("callback.samples_dev.8F3A0C6E2B9D4F17A1C5E0B2D3F4A5B6", TAG, True),
        ("callback.**.*", TAG, True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXbY", False),
        ("a.c", "abc", False),  # . is itself
    ],
)
def test_glob_table(pattern: str, tag: str, expected: bool) -> None:
    assert matches(pattern, True, tag) is expected


def test_a_filter_without_a_key_is_literal() -> None:
    assert matches("callback.*", False, "callback.*")
    assert not matches("callback.*", False, TAG)


def test_a_long_pattern_matches_in_linear_time() -> None:
    pattern = "*a" * 200 + "*b"
    assert not matches(pattern, True, "a" * 400)  # no catastrophic backtracking to wait out


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, 30), (0, 30), (1, 30), (29, 30), (30, 30), (31, 31), (2_592_000, 2_592_000)],
)
def test_expiry(given: int | None, expected: int) -> None:
    assert expiry_s(given, 30) == expected


def test_expiry_is_cut_to_thirty_days_and_uses_the_default() -> None:
    assert expiry_s(10**9, 30) == 2_592_000
    assert expiry_s(None, 120) == 120


def test_authorization_header() -> None:
    assert authorization_header("ZGVtbzo=") == "Basic ZGVtbzo="
    assert authorization_header("Bearer abc") == "Bearer abc"


def test_tags_name_their_callback() -> None:
    assert callback_of_tag(TAG) == ("samples_dev", "8F3A0C6E2B9D4F17A1C5E0B2D3F4A5B6")
    assert callback_of_tag("callback.a.b.C") == ("a.b", "C")
    assert callback_of_tag("callback.X") is None
    assert callback_of_tag("other.a.B") is None


GOOD: dict[str, Any] = {
    "subscriberId": "app-42",
    "providerName": "mobile-app",
    "filter": TAG,
    "notificationDetails": {
        "deviceId": "https://rx.example.com/cb",
        "type": "httpcb",
        "properties": {"debug": "false", "language": "fr"},
    },
    "authorization": "ZGVtbzo=",
    "expire": 30,
}


def subscribe(body: Any) -> Any:
    return parse_subscribe(
        body,
        default_expire_s=30,
        max_filter_chars=400,
        allowed_prefixes=("https://rx.example.com/",),
    )


def test_the_contracts_sample_subscription() -> None:
    request = subscribe(GOOD)
    assert (request.subscriber_id, request.provider, request.filter) == (
        "app-42",
        "mobile-app",
        TAG,
    )
    assert (request.target.device_type, request.target.language) == ("httpcb", "fr")
    assert request.authorization == "Basic ZGVtbzo="
    assert request.expire_s == 30
    android = subscribe({**GOOD, "notificationDetails": {"deviceId": "t", "type": "android"}})
    assert android.target.device_type == "fcm"


@pytest.mark.parametrize(
    "change",
    [
        {"subscriberId": None},
        {"subscriberId": 42},
        {"filter": ""},
        {"filter": "x" * 401},
        {"notificationDetails": None},
        {"notificationDetails": {"deviceId": "https://rx.example.com/cb"}},
        {"notificationDetails": {"type": "httpcb"}},
        {"notificationDetails": {"deviceId": "https://other.example/", "type": "httpcb"}},
        {"notificationDetails": {"deviceId": "d", "type": "orscb"}},
        {"notificationDetails": {"deviceId": "d", "type": "comet", "properties": []}},
        {"notificationDetails": {"deviceId": "d", "type": "comet", "properties": {"debug": 2}}},
        {"authorization": "Bearer caf\u00e9"},
        {"authorization": "a\r\nX-Injected: 1"},
        {"expire": -1},
        {"expire": 1.5},
        {"expire": True},
    ],
)
def test_bad_subscriptions(change: dict[str, Any]) -> None:
    with pytest.raises(BadParameter):
        subscribe({**GOOD, **change})


def publish(body: Any) -> Any:
    return parse_publish(body, max_tag_chars=400, allowed_prefixes=())


def test_publish_requests() -> None:
    assert publish({"tag": "t", "message": "hi"}).message == "hi"
    assert publish({"tag": "t", "body": {"a": 1}}).message == {"a": 1}
    localized = publish(
        {"tag": "t", "message": "push.CALLBACK_READY.body", "mediaType": "localizestring"}
    )
    assert localized.localize
    assert publish({"tag": "t", "expire": 0}).expire_s is None
    for bad in (
        {},
        {"tag": "t", "message": 3},
        {"tag": "t", "message": "a", "body": "b"},
        {"tag": "t", "mediaType": "html"},
        {"tag": "t", "message": "no.such.key", "mediaType": "localizestring"},
        {"tag": "t", "notificationDetails": {"deviceId": "https://x/", "type": "httpcb"}},
        [],
    ):
        with pytest.raises(BadParameter):
            publish(bad)
