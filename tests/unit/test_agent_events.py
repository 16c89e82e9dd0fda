"""Agent alerts' pure parts: routing events checked and filtered, and what a device is sent."""

from __future__ import annotations

from typing import Any

import pytest

from chatpush.agents import alerts, events
from chatpush.config import AGENT_EVENT_TYPES, AgentSettings
from chatpush.store.agents import Device
from chatpush.store.agents import Ring as RingRecord
from tests.agents_support import added, connected, deleted, event, removed


def parse(event_: Any, media_types: tuple[str, ...] = ()) -> events.Parsed:
    return events.parse(event_, event_types=AGENT_EVENT_TYPES, media_types=media_types)


def test_each_routing_event_becomes_its_action() -> None:
    assert parse(added()) == events.Ring(
        "conv-abc-123",
        "agent-1",
        "12345678-1234-1234-1234-123456789012",
        "voice",
        "2023-10-27T10:00:00.000Z",
    )
    assert parse(removed()) == events.Cancel("conv-abc-123", "agent-1", "removed")
    assert parse(deleted()) == events.Cancel("conv-abc-123", None, "deleted")
    assert parse(connected()) == events.Cancel("conv-abc-123", "agent-1", "connected")


@pytest.mark.parametrize(
    ("event_", "reason"),
    [
        ({"eventType": "routing.interaction.updated"}, "unknown_type"),
        (
            {"eventType": "routing.interaction.updated", "data": "anything", "timestamp": 5},
            "unknown_type",
        ),
        (added(member_type="queue"), "not_user"),
        (removed(member_type="group"), "not_user"),
        (event("routing.conversation.updated", status="alerting"), "not_connected"),
        (event("routing.conversation.updated"), "not_connected"),
    ],
)
def test_events_not_for_agent_alerts_are_dropped(event_: Any, reason: str) -> None:
    dropped = parse(event_)
    assert isinstance(dropped, events.Dropped) and dropped.reason == reason


def test_filters() -> None:
    only_added = events.parse(
        deleted(), event_types=("routing.queue.member.added",), media_types=()
    )
    assert isinstance(only_added, events.Dropped) and only_added.reason == "type_filtered"
    chat = parse(added(media_type="chat"), media_types=("voice",))
    assert isinstance(chat, events.Dropped) and chat.reason == "media_filtered"
    assert isinstance(parse(added(media_type=None), media_types=("voice",)), events.Dropped)
    # A cancel is never filtered by media type: it only reaches what rang.
    assert isinstance(parse(removed(media_type="chat"), media_types=("voice",)), events.Cancel)


@pytest.mark.parametrize(
    "event_",
    [
        None,
        [],
        {"data": {}},
        {"eventType": 5},
        {"eventType": "routing.conversation.deleted"},
        {"eventType": "routing.conversation.deleted", "data": {}},
        {"eventType": "routing.conversation.deleted", "data": {"conversationId": ""}},
        {"eventType": "routing.conversation.deleted", "data": {"conversationId": 12}},
        {"eventType": "routing.conversation.deleted", "data": {"conversationId": "a/b"}},
        {"eventType": "routing.conversation.deleted", "data": {"conversationId": "c\u00e9"}},
        {"eventType": "routing.conversation.deleted", "data": {"conversationId": "c" * 101}},
        {**deleted(), "timestamp": None},
        added(member_id="m" * 65),
        added(member_id="has space"),
        event("routing.queue.member.added", member_id=None),
        event("routing.queue.member.added", queueId=["q"]),
        event("routing.queue.member.added", media_type="v" * 129),
    ],
)
def test_malformed_events_of_known_types_are_invalid(event_: Any) -> None:
    assert isinstance(parse(event_), events.Invalid)


DEVICE = Device("d" * 32, "agent-1", "ios", "a" * 64, None, "g1", "acme", 0)


def test_a_ring_for_each_device_type_and_its_key() -> None:
    ring = parse(added())
    assert isinstance(ring, events.Ring)
    push = alerts.ring_push(AgentSettings(), ring, DEVICE, "g1")
    assert push.key == f"conv-abc-123/agent-1/{'d' * 32}" and len(push.key) <= 200
    assert push.kind == "alert" and push.source == "agent_alert" and push.priority == "high"
    assert push.destination.group_name == "g1" and push.destination.provider == "acme"
    assert push.max_attempts == 3 and tuple(push.retry_delays_s) == (0.5, 1.0)
    assert set(push.renderings) == {"ios", "fcm", "customhttp", "comet"}
    assert push.renderings["ios"]["aps"]["content-available"] == 1
    assert push.renderings["fcm"]["data"]["media_type"] == "voice"


def test_the_longest_ids_make_a_key_the_platform_takes() -> None:
    ring = events.Ring("c" * 100, "u" * 64, None, None, None)
    push = alerts.ring_push(AgentSettings(), ring, DEVICE, "g1")
    assert len(push.key) == 198
    # Missing optional fields: FCM data values stay strings.
    assert all(isinstance(v, str) for v in push.renderings["fcm"]["data"].values())


def test_a_cancel_goes_where_the_ring_went() -> None:
    record = RingRecord("c1", "agent-1", "d" * 32, "fcm", "tok", "g1", None, "m1", 0, None)
    push = alerts.cancel_push(
        AgentSettings(cancel_title="Stop {conversation_id}"), record, "deleted"
    )
    assert push.kind == "cancel" and push.key == f"c1/agent-1/{'d' * 32}"
    assert (push.destination.device_type, push.destination.device_id) == ("fcm", "tok")
    assert push.alert is not None and push.alert.title == "Stop c1"
    assert push.alert.category == "CALL_CANCEL"
    assert push.body["action"] == "cancel_ring" and push.body["reason"] == "deleted"
