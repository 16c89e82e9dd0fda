"""Agent alerts through the real app (docs/agents.md): the device registry, the webhook intake,
rings, the dedup window, cancels and the trail, on SQLite and PostgreSQL.

Rings and cancels go to a :class:`RecordingOutbox` (tests/agents_support.py), which takes them as
the delivery platform's ``enqueue`` does; what each device then receives from the fake APNs and
FCM is for the platform's end-to-end tests once it is wired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.agents import service as service_module
from chatpush.agents.outbound import AgentPush
from chatpush.api.agents import AGENTS
from chatpush.api.keys import DATABASE, METRICS
from chatpush.config import Settings
from chatpush.errors import Code
from chatpush.store import agents as store
from chatpush.testing import FakeClock
from tests.agents_support import RecordingOutbox, added, connected, deleted, event, removed
from tests.conftest import API_KEY

Client = TestClient[web.Request, web.Application]

GROUPS = {
    "g1": {
        "default": True,
        "nodes": ["n1"],
        "pushEnabled": ["customhttp", "comet", "fcm", "ios"],
        "customhttp.url": "http://127.0.0.1:9/push",
        "providers": {"acme": {}},
    },
    "g2": {"nodes": ["n2"], "pushEnabled": ["customhttp"], "customhttp.url": "http://127.0.0.1:9/"},
}
ADMIN_KEY = "admin-only-key-0123456789"
IOS_TOKEN = "a" * 64
FCM_TOKEN = "fcm-token:" + "b" * 140


@dataclass
class Agents:
    client: Client
    outbox: RecordingOutbox
    clock: FakeClock

    async def call(
        self, method: str, path: str, expect: int, json_body: Any = None, *, key: str = API_KEY
    ) -> Any:
        response = await self.client.request(
            method, f"/api/v1{path}", json=json_body, headers={"X-API-Key": key}
        )
        body = await response.json()
        assert response.status == expect, (method, path, response.status, body)
        return body

    async def register(self, user: str, platform: str, token: str, **more: Any) -> str:
        body = await self.call(
            "POST", f"/agents/{user}/devices", 201, {"platform": platform, "token": token, **more}
        )
        return str(body["id"])

    async def events(self, *events: Any, expect: int = 200) -> Any:
        payload = events[0] if len(events) == 1 else list(events)
        return await self.call("POST", "/agent-events", expect, payload)

    async def devices(self, user: str) -> list[dict[str, Any]]:
        body = await self.call("GET", f"/agents/{user}/devices", 200)
        return list(body["devices"])

    async def trail(self, conversation: str = "conv-abc-123") -> dict[str, Any]:
        body: dict[str, Any] = await self.call("GET", f"/agent-conversations/{conversation}", 200)
        return body


@pytest.fixture
def agent_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**agents: Any) -> Settings:
        return make_settings(
            groups=GROUPS,
            agents=agents,
            security={
                "api_keys": [API_KEY],
                "keys": [{"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]}],
            },
        )

    return make


@pytest.fixture
async def agents(
    make_client: Callable[..., Any], agent_settings: Callable[..., Settings], clock: FakeClock
) -> Agents:
    outbox = RecordingOutbox()
    client = await make_client(agent_settings(), agent_outbox=outbox)
    return Agents(client, outbox, clock)


def codes(body: dict[str, Any]) -> list[int]:
    assert set(body) == {"errors"}, body
    assert all(entry["advice"] for entry in body["errors"]), body
    return [entry["code"] for entry in body["errors"]]


# -- the device registry -------------------------------------------------------------------------


async def test_devices_are_registered_listed_and_deleted(agents: Agents) -> None:
    ios = await agents.register("agent-1", "ios", IOS_TOKEN, topic="com.acme.agent")
    android = await agents.register("agent-1", "android", FCM_TOKEN)
    web_hook = await agents.register("agent-1", "customhttp", "desk-7", group="g2")
    listed = await agents.devices("agent-1")
    assert [(d["id"], d["platform"], d["token"], d["group"]) for d in listed] == [
        (ios, "ios", IOS_TOKEN, "g1"),
        (android, "fcm", FCM_TOKEN, "g1"),
        (web_hook, "customhttp", "desk-7", "g2"),
    ]
    assert listed[0]["topic"] == "com.acme.agent" and listed[0]["userId"] == "agent-1"
    assert await agents.devices("agent-2") == []
    await agents.call("DELETE", f"/agents/agent-1/devices/{android}", 200)
    assert [d["id"] for d in await agents.devices("agent-1")] == [ios, web_hook]
    # Gone, another agent's, or not an id at all: 404, nothing changes.
    await agents.call("DELETE", f"/agents/agent-1/devices/{android}", 404)
    await agents.call("DELETE", f"/agents/agent-2/devices/{ios}", 404)
    await agents.call("DELETE", "/agents/agent-1/devices/nope", 404)
    assert len(await agents.devices("agent-1")) == 2


async def test_registering_a_token_again_replaces_its_entry(agents: Agents) -> None:
    first = await agents.register("agent-1", "ios", IOS_TOKEN)
    again = await agents.call(
        "POST", "/agents/agent-1/devices", 201, {"platform": "apple", "token": IOS_TOKEN}
    )
    assert again["id"] == first and again["replaced"] is True
    assert [d["id"] for d in await agents.devices("agent-1")] == [first]
    # The phone passed to another agent: the token moves, with a new id.
    moved = await agents.call(
        "POST", "/agents/agent-2/devices", 201, {"platform": "ios", "token": IOS_TOKEN}
    )
    assert moved["replaced"] is True and moved["id"] != first
    assert await agents.devices("agent-1") == []
    assert [d["id"] for d in await agents.devices("agent-2")] == [moved["id"]]


async def test_an_agent_has_at_most_the_configured_devices(
    make_client: Callable[..., Any], agent_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    client = await make_client(agent_settings(max_devices_per_agent=2))
    agents = Agents(client, RecordingOutbox(), clock)
    await agents.register("agent-1", "ios", IOS_TOKEN)
    await agents.register("agent-1", "android", FCM_TOKEN)
    body = await agents.call(
        "POST", "/agents/agent-1/devices", 409, {"platform": "comet", "token": "x"}
    )
    assert codes(body) == [Code.CONFLICT]
    assert "max_devices_per_agent" in body["errors"][0]["advice"]
    # Re-registering one of the two is no third device.
    await agents.register("agent-1", "ios", IOS_TOKEN)
    assert len(await agents.devices("agent-1")) == 2


async def test_concurrent_registrations_stay_within_the_limit(
    make_client: Callable[..., Any], agent_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    import asyncio

    client = await make_client(agent_settings(max_devices_per_agent=2))
    agents = Agents(client, RecordingOutbox(), clock)
    answers = await asyncio.gather(
        *(
            client.post(
                "/api/v1/agents/agent-1/devices",
                json={"platform": "comet", "token": f"desk-{n}"},
                headers={"X-API-Key": API_KEY},
            )
            for n in range(6)
        )
    )
    assert sorted(answer.status for answer in answers) == [201, 201, 409, 409, 409, 409]
    assert len(await agents.devices("agent-1")) == 2


BAD_REGISTRATIONS: list[tuple[str, Any, int | tuple[int, int]]] = [
    ("agent-1", [], Code.INVALID_PARAMETER),
    ("agent-1", {"token": "t"}, Code.MISSING_PARAMETER),
    ("agent-1", {"platform": "ios"}, Code.MISSING_PARAMETER),
    ("agent-1", {"platform": "blackberry", "token": "t"}, Code.INVALID_PARAMETER),
    ("agent-1", {"platform": 7, "token": "t"}, Code.MISSING_PARAMETER),
    ("agent-1", {"platform": "ios", "token": "t" * 257}, Code.INVALID_PARAMETER),
    ("agent-1", {"platform": "ios", "token": "two words"}, Code.INVALID_PARAMETER),
    ("agent-1", {"platform": "ios", "token": "caf\u00e9"}, Code.INVALID_PARAMETER),
    ("agent-1", {"platform": "ios", "token": "t", "colour": "red"}, Code.INVALID_PARAMETER),
    ("agent-1", {"platform": "ios", "token": "t", "topic": ""}, Code.INVALID_PARAMETER),
    ("agent-1", {"platform": "ios", "token": "t", "topic": 5}, Code.INVALID_PARAMETER),
    ("u" * 65, {"platform": "ios", "token": "t"}, Code.INVALID_PARAMETER),
    ("a%20b", {"platform": "ios", "token": "t"}, Code.INVALID_PARAMETER),
]


BAD_REGISTRATIONS += [
    ("agent-1", {"platform": "ios", "token": "t", "group": "nowhere"}, (404, Code.UNKNOWN_GROUP)),
    ("agent-1", {"platform": "ios", "token": "t", "provider": "x"}, (404, Code.UNKNOWN_GROUP)),
    ("agent-1", {"platform": "ios", "token": "t", "group": "g2"}, (409, Code.CONFLICT)),
]


@pytest.mark.parametrize(("user", "body", "code"), BAD_REGISTRATIONS)
async def test_a_bad_registration_is_a_clear_400_and_changes_nothing(
    agents: Agents, user: str, body: Any, code: int | tuple[int, int]
) -> None:
    status, code = code if isinstance(code, tuple) else (400, code)
    answer = await agents.call("POST", f"/agents/{user}/devices", status, body)
    assert codes(answer) == [code]
    assert await agents.devices("agent-1") == []


async def test_the_registry_needs_a_chat_server_key(agents: Agents) -> None:
    ios = await agents.register("agent-1", "ios", IOS_TOKEN)
    for method, path, body in [
        ("POST", "/agents/agent-1/devices", {"platform": "ios", "token": "t"}),
        ("GET", "/agents/agent-1/devices", None),
        ("DELETE", f"/agents/agent-1/devices/{ios}", None),
        ("POST", "/agent-events", added()),
        ("POST", "/agents/agent-1/answered/c1", {"deviceId": ios}),
    ]:
        for key in (ADMIN_KEY, "wrong"):
            answer = await agents.call(method, path, 403, body, key=key)
            assert codes(answer) in ([Code.INVALID_API_KEY], [Code.MISSING_SCOPE])
    assert [d["id"] for d in await agents.devices("agent-1")] == [ios]
    assert agents.outbox.pushes == []
    # The trail is for operators too.
    await agents.call("GET", "/agent-conversations/c1", 200, key=ADMIN_KEY)


# -- rings ---------------------------------------------------------------------------------------


def destinations(pushes: list[AgentPush]) -> list[tuple[str, str]]:
    return [(p.destination.device_type, p.destination.device_id) for p in pushes]


async def test_a_queue_member_added_rings_every_device_of_the_agent(agents: Agents) -> None:
    ios = await agents.register("agent-1", "ios", IOS_TOKEN)
    android = await agents.register("agent-1", "android", FCM_TOKEN, provider="acme")
    desk = await agents.register("agent-1", "customhttp", "desk-7")
    await agents.register("agent-2", "comet", "someone-else")
    answer = await agents.events(added(queueId="q-sales"))
    assert answer == {"accepted": 1, "rung": 3, "cancelled": 0, "suppressed": 0, "dropped": 0}
    rings = agents.outbox.of_kind("alert")
    assert destinations(rings) == [("ios", IOS_TOKEN), ("fcm", FCM_TOKEN), ("customhttp", "desk-7")]
    assert [p.key for p in rings] == [f"conv-abc-123/agent-1/{d}" for d in (ios, android, desk)]
    assert rings[1].destination.provider == "acme"
    assert all(p.source == "agent_alert" and p.priority == "high" for p in rings)
    assert agents.outbox.pokes == 1

    apns = rings[0].renderings["ios"]
    assert apns["aps"] == {
        "alert": {"title": "Incoming voice", "body": "Conversation conv-abc-123"},
        "sound": "default",
        "content-available": 1,
        "category": "INCOMING_CALL",
    }
    assert apns["genesys_conversation_id"] == "conv-abc-123"
    assert apns["genesys_user_id"] == "agent-1"
    assert apns["media_type"] == "voice"
    assert apns["timestamp"] == "2023-10-27T10:00:00.000Z"
    assert rings[0].apns_push_type == "alert"
    fcm = rings[1].renderings["fcm"]
    assert "notification" not in fcm and fcm["android"]["priority"] == "high"
    assert all(isinstance(value, str) for value in fcm["data"].values())
    assert fcm["data"]["genesys_conversation_id"] == "conv-abc-123"
    assert fcm["data"]["category"] == "INCOMING_CALL" and fcm["data"]["action"] == "ring"
    flat = rings[2].renderings["comet"]
    assert rings[2].renderings["customhttp"] == {"deviceId": "desk-7", **flat}
    assert flat == rings[2].body
    assert flat["action"] == "ring" and flat["queue_id"] == "q-sales"
    assert flat["device_id"] == desk

    trail = await agents.trail()
    assert [(r["deviceId"], r["endedAt"]) for r in trail["rings"]] == sorted(
        [(ios, None), (android, None), (desk, None)]
    )
    ids = {message_id for message_id, _ in agents.outbox.pushes}
    assert {r["messageId"] for r in trail["rings"]} == ids
    assert [e["action"] for e in trail["trail"]] == ["rung"] * 3


async def test_titles_and_bodies_come_from_the_templates(
    make_client: Callable[..., Any], agent_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    outbox = RecordingOutbox()
    settings = agent_settings(ring_title="{media_type} for {user_id}", ring_body="Queue {queue_id}")
    agents = Agents(await make_client(settings, agent_outbox=outbox), outbox, clock)
    await agents.register("agent-1", "ios", IOS_TOKEN)
    await agents.events(added(media_type="chat", queueId="Sales"))
    [ring] = outbox.pushes
    assert ring[1].alert is not None
    assert (ring[1].alert.title, ring[1].alert.body) == ("chat for agent-1", "Queue Sales")
    assert ring[1].renderings["ios"]["aps"]["alert"] == {
        "title": "chat for agent-1",
        "body": "Queue Sales",
    }


async def test_a_second_ring_within_the_window_is_suppressed(agents: Agents) -> None:
    await agents.register("agent-1", "ios", IOS_TOKEN)
    await agents.register("agent-2", "ios", "c" * 64)
    assert (await agents.events(added()))["rung"] == 1
    agents.clock.advance(4.999)
    answer = await agents.events(added(), added(member_id="agent-2"), added("conv-other"))
    # The same conversation for the same agent is a duplicate; another agent or conversation not.
    assert answer == {"accepted": 3, "rung": 2, "cancelled": 0, "suppressed": 1, "dropped": 0}
    agents.clock.advance(0.001)  # 5 s after the first ring: the window is over
    assert (await agents.events(added()))["rung"] == 1
    assert len(agents.outbox.of_kind("alert")) == 4
    actions = [(e["userId"], e["action"], e["reason"]) for e in (await agents.trail())["trail"]]
    assert actions == [
        ("agent-1", "rung", None),
        ("agent-1", "suppressed", "duplicate"),
        ("agent-2", "rung", None),
        ("agent-1", "rung", None),
    ]
    metrics = agents.client.app[METRICS]
    assert metrics.value("chatpush_agent_rings_suppressed_total", reason="duplicate") == 1
    assert metrics.value("chatpush_agent_rings_total") == 4


async def test_an_agent_without_devices_is_not_rung(agents: Agents) -> None:
    answer = await agents.events(added())
    assert answer == {"accepted": 1, "rung": 0, "cancelled": 0, "suppressed": 1, "dropped": 0}
    assert agents.outbox.pushes == []
    [entry] = (await agents.trail())["trail"]
    assert (entry["action"], entry["reason"]) == ("suppressed", "no_devices")


async def test_events_not_acted_on_are_counted_and_dropped(agents: Agents) -> None:
    await agents.register("agent-1", "ios", IOS_TOKEN)
    answer = await agents.events(
        {"eventType": "routing.interaction.mediaUpdated", "data": {"anything": [1, 2]}},
        {"eventType": "v2.users.presence", "timestamp": 5},
        added(member_type="queue"),
        event("routing.conversation.updated", status="alerting"),
    )
    assert answer == {"accepted": 0, "rung": 0, "cancelled": 0, "suppressed": 0, "dropped": 4}
    assert agents.outbox.pushes == []
    metrics = agents.client.app[METRICS]
    assert metrics.value("chatpush_agent_events_total", event_type="other", outcome="unknown") == 2
    text = metrics.render()
    assert 'chatpush_agent_events_total{event_type="routing.queue.member.added"' in text


async def test_event_and_media_type_filters(
    make_client: Callable[..., Any], agent_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    outbox = RecordingOutbox()
    settings = agent_settings(
        media_types=["voice"],
        event_types=["routing.queue.member.added", "routing.conversation.deleted"],
    )
    agents = Agents(await make_client(settings, agent_outbox=outbox), outbox, clock)
    await agents.register("agent-1", "ios", IOS_TOKEN)
    answer = await agents.events(
        added("c-chat", media_type="chat"), added("c-none", media_type=None)
    )
    assert answer["dropped"] == 2 and outbox.pushes == []
    await agents.events(added("c-voice"))
    # member.removed is not among the event types: dropped; deleted cancels.
    assert (await agents.events(removed("c-voice")))["dropped"] == 1
    assert (await agents.events(deleted("c-voice")))["cancelled"] == 1


BAD_BATCHES: list[Any] = [
    "routing.queue.member.added",
    [added(), "not an event"],
    [added(), {"eventType": ""}],
    [added(), {"eventType": "routing.queue.member.added", "data": []}],
    [added(), {"eventType": "routing.queue.member.added", "data": {"memberId": "a"}}],
    [added(), added(conversation_id="c" * 101)],
    [added(), added(conversation_id="has space")],
    [added(), added(member_id="m" * 65)],
    [added(), added(member_id=None)],
    [added(), event("routing.queue.member.added", media_type=None, mediaType=7)],
    [added(), {**added(), "timestamp": 1}],
    [added(), event("routing.conversation.updated", status=None)],
    [added()] * 101,
]


@pytest.mark.parametrize("batch", BAD_BATCHES)
async def test_a_malformed_batch_is_refused_whole(agents: Agents, batch: Any) -> None:
    await agents.register("agent-1", "ios", IOS_TOKEN)
    answer = await agents.call("POST", "/agent-events", 400, batch)
    assert codes(answer) == [Code.INVALID_PARAMETER]
    assert agents.outbox.pushes == []
    # Nothing was marked either: the next ring is no duplicate.
    assert (await agents.events(added()))["rung"] == 1


async def test_a_batch_is_acted_on_in_order(agents: Agents) -> None:
    ios = await agents.register("agent-1", "ios", IOS_TOKEN)
    answer = await agents.events(added(), deleted(), added("c2"))
    assert answer == {"accepted": 3, "rung": 2, "cancelled": 1, "suppressed": 0, "dropped": 0}
    assert [(p.kind, p.key) for _, p in agents.outbox.pushes] == [
        ("alert", f"conv-abc-123/agent-1/{ios}"),
        ("cancel", f"conv-abc-123/agent-1/{ios}"),
        ("alert", f"c2/agent-1/{ios}"),
    ]


# -- cancels -------------------------------------------------------------------------------------


async def test_a_deleted_conversation_cancels_every_device_rung(agents: Agents) -> None:
    ios = await agents.register("agent-1", "ios", IOS_TOKEN)
    android = await agents.register("agent-1", "android", FCM_TOKEN)
    other = await agents.register("agent-2", "comet", "desk-9")
    await agents.events(added(), added(member_id="agent-2"), added("conv-elsewhere"))
    # A device deleted after its ring still hears the cancel.
    await agents.call("DELETE", f"/agents/agent-1/devices/{android}", 200)
    agents.outbox.clear()
    assert (await agents.events(deleted()))["cancelled"] == 3
    cancels = agents.outbox.of_kind("cancel")
    assert sorted(p.key for p in cancels) == sorted(
        [
            f"conv-abc-123/agent-1/{ios}",
            f"conv-abc-123/agent-1/{android}",
            f"conv-abc-123/agent-2/{other}",
        ]
    )
    by_type = {p.destination.device_type: p for p in cancels}
    apns = by_type["ios"].renderings["ios"]
    assert apns["aps"]["category"] == "CALL_CANCEL" and apns["aps"]["content-available"] == 1
    assert apns["aps"]["alert"]["title"] == "Call Cancelled"
    assert apns["action"] == "cancel_ring" and apns["genesys_conversation_id"] == "conv-abc-123"
    assert by_type["fcm"].renderings["fcm"]["data"]["action"] == "cancel_ring"
    assert by_type["comet"].body["action"] == "cancel_ring"
    assert by_type["fcm"].destination.device_id == FCM_TOKEN
    # Cancelled once: a second delete, and a conversation that never rang, send nothing.
    agents.outbox.clear()
    assert (await agents.events(deleted(), deleted("never-rang")))["cancelled"] == 0
    assert agents.outbox.pushes == []
    rings = (await agents.trail())["rings"]
    assert all(ring["endedAt"] is not None for ring in rings)


async def test_member_removed_cancels_that_agent_only(agents: Agents) -> None:
    mine = await agents.register("agent-1", "ios", IOS_TOKEN)
    await agents.register("agent-2", "ios", "d" * 64)
    await agents.events(added(), added(member_id="agent-2"))
    agents.outbox.clear()
    assert (await agents.events(removed()))["cancelled"] == 1
    [cancel] = agents.outbox.pushes
    assert cancel[1].key == f"conv-abc-123/agent-1/{mine}"
    assert cancel[1].body["reason"] == "removed"


async def test_connected_cancels_the_agents_rings(agents: Agents) -> None:
    await agents.register("agent-1", "ios", IOS_TOKEN)
    await agents.register("agent-1", "android", FCM_TOKEN)
    await agents.register("agent-2", "ios", "d" * 64)
    await agents.events(added(), added(member_id="agent-2"))
    agents.outbox.clear()
    assert (await agents.events(connected()))["cancelled"] == 2
    assert {p.key.split("/")[1] for _, p in agents.outbox.pushes} == {"agent-1"}
    # "state" is read as well as "status"; without a member every ring of it stops.
    agents.outbox.clear()
    updated = event("routing.conversation.updated", member_id=None, state="CONNECTED")
    assert (await agents.events(updated))["cancelled"] == 1


async def test_answered_on_one_device_cancels_the_others(agents: Agents) -> None:
    ios = await agents.register("agent-1", "ios", IOS_TOKEN)
    android = await agents.register("agent-1", "android", FCM_TOKEN)
    desk = await agents.register("agent-1", "customhttp", "desk-7")
    await agents.events(added())
    agents.outbox.clear()
    path = "/agents/agent-1/answered/conv-abc-123"
    assert await agents.call("POST", path, 200, {"deviceId": ios}) == {"cancelled": 2}
    assert sorted(p.key for _, p in agents.outbox.pushes) == sorted(
        f"conv-abc-123/agent-1/{d}" for d in (android, desk)
    )
    assert all(p.body["reason"] == "answered_elsewhere" for _, p in agents.outbox.pushes)
    # Again (the app retried), or after the conversation ends: nothing more is sent.
    agents.outbox.clear()
    assert await agents.call("POST", path, 200, {"deviceId": ios}) == {"cancelled": 0}
    assert (await agents.events(deleted()))["cancelled"] == 0
    assert agents.outbox.pushes == []
    actions = [(e["deviceId"], e["action"]) for e in (await agents.trail())["trail"]]
    assert (ios, "answered") in actions and (android, "cancelled") in actions
    # A device that was not rung for it, a bad body, a bad id: refused, nothing sent.
    await agents.call("POST", "/agents/agent-1/answered/never-rang", 404, {"deviceId": ios})
    await agents.call("POST", "/agents/agent-2/answered/conv-abc-123", 404, {"deviceId": ios})
    await agents.call("POST", path, 404, {"deviceId": "f" * 32})
    await agents.call("POST", path, 404, {"deviceId": "nope"})
    await agents.call("POST", path, 400, {"deviceId": 5})
    await agents.call("POST", path, 400, {"device": ios})
    await agents.call("POST", path, 400, [ios])
    await agents.call("POST", "/agents/agent-1/answered/" + "c" * 101, 400, {"deviceId": ios})
    assert agents.outbox.pushes == []


# -- the trail -----------------------------------------------------------------------------------


async def test_the_trail_pages_and_refuses_a_bad_after(agents: Agents) -> None:
    await agents.register("agent-1", "ios", IOS_TOKEN)
    await agents.events(added())
    agents.clock.advance(1)
    await agents.events(added(), deleted())
    trail = (await agents.trail())["trail"]
    assert [e["action"] for e in trail] == ["rung", "suppressed", "cancelled"]
    later = await agents.call(
        "GET", f"/agent-conversations/conv-abc-123?after={trail[0]['id']}", 200
    )
    assert [e["action"] for e in later["trail"]] == ["suppressed", "cancelled"]
    for bad in ("x", "-1", "9" * 20):
        await agents.call("GET", f"/agent-conversations/conv-abc-123?after={bad}", 400)
    await agents.call("GET", "/agent-conversations/" + "c" * 101, 400)
    empty = await agents.trail("unknown")
    assert empty == {"conversationId": "unknown", "rings": [], "trail": []}


async def test_old_rings_and_trail_are_purged(agents: Agents) -> None:
    await agents.register("agent-1", "ios", IOS_TOKEN)
    await agents.events(added())
    agents.clock.advance(7 * 86400 + 1)
    await agents.client.app[AGENTS].purge()
    assert await agents.trail() == {"conversationId": "conv-abc-123", "rings": [], "trail": []}
    # The dedup mark went too; the device stays.
    assert (await agents.events(added()))["rung"] == 1


async def test_a_purge_of_many_goes_in_short_transactions_and_keeps_the_recent(
    agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "PURGE_BATCH_ROWS", 2)
    await agents.register("agent-1", "ios", IOS_TOKEN)
    for n in range(5):
        await agents.events(added(f"old-{n}"))
        agents.clock.advance(1)
    agents.clock.advance(7 * 86400 - 2)  # old-0 .. old-2 are past the retention, 3 and 4 not
    transactions = 0
    write = agents.client.app[DATABASE].write

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal transactions
        transactions += fn is store.purge
        return await write(fn, *args, **kwargs)

    monkeypatch.setattr(agents.client.app[DATABASE], "write", counted)
    await agents.client.app[AGENTS].purge()
    assert transactions == 2  # two, then the last one: never more than two rows a table each
    for n in range(5):
        trail = await agents.trail(f"old-{n}")
        assert (trail["rings"] == []) == (n < 3), n


# -- dead tokens (the platform's SourceHooks) ----------------------------------------------------


@dataclass(frozen=True)
class _Destination:
    device_type: str
    device_id: str


@dataclass(frozen=True)
class _Outcome:
    """The platform's ``Outcome``, as its dispatcher reports a finished send."""

    key: str
    message_id: str
    destination: _Destination
    result: str
    http_status: int | None
    error: str | None
    source: str = "agent_alert"
    kind: str = "alert"
    final: bool = True


async def test_dead_tokens_leave_the_registry(agents: Agents) -> None:
    ios = await agents.register("agent-1", "ios", IOS_TOKEN)
    android = await agents.register("agent-1", "android", FCM_TOKEN)
    desk = await agents.register("agent-1", "customhttp", "desk-7")
    keep = await agents.register("agent-1", "comet", "desk-8")
    await agents.events(added())
    ids = {p.destination.device_id: message_id for message_id, p in agents.outbox.pushes}
    service = agents.client.app[AGENTS]
    key = "conv-abc-123/agent-1/"
    outcomes = [
        _Outcome(
            key + ios,
            ids[IOS_TOKEN],
            _Destination("ios", IOS_TOKEN),
            "rejected",
            410,
            "Unregistered",
        ),
        _Outcome(
            key + android,
            ids[FCM_TOKEN],
            _Destination("fcm", FCM_TOKEN),
            "rejected",
            404,
            "UNREGISTERED",
        ),
        _Outcome(
            key + desk,
            ids["desk-7"],
            _Destination("customhttp", "desk-7"),
            "failed",
            401,
            "unauthorized",
        ),
        # A temporary failure and another source's dead token are none of ours.
        _Outcome(key + keep, ids["desk-8"], _Destination("comet", "desk-8"), "failed", 503, None),
        _Outcome("chat-1", "m", _Destination("comet", "desk-8"), "rejected", 410, None, "chat"),
    ]
    now_ms = agents.clock.now_ms()
    await agents.client.app[DATABASE].write(service.record, outcomes, now_ms)
    assert [d["id"] for d in await agents.devices("agent-1")] == [keep]
    dead = [e for e in (await agents.trail())["trail"] if e["action"] == "dead_token"]
    assert sorted((e["deviceId"], e["platform"]) for e in dead) == sorted(
        [(ios, "ios"), (android, "fcm"), (desk, "customhttp")]
    )
    metrics = agents.client.app[METRICS]
    assert metrics.value("chatpush_agent_dead_tokens_total", device_type="ios") == 1
    assert metrics.value("chatpush_agent_dead_tokens_total", device_type="fcm") == 1
    # The platform may run the transaction again (PostgreSQL retries): counted once.
    await agents.client.app[DATABASE].write(service.record, outcomes[:1], now_ms)
    assert metrics.value("chatpush_agent_dead_tokens_total", device_type="ios") == 1


async def test_401_keeps_the_device_when_configured_so(
    make_client: Callable[..., Any], agent_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    outbox = RecordingOutbox()
    client = await make_client(agent_settings(dead_on_http_401=False), agent_outbox=outbox)
    agents = Agents(client, outbox, clock)
    desk = await agents.register("agent-1", "customhttp", "desk-7")
    outcome = _Outcome(
        f"c/agent-1/{desk}", "m", _Destination("customhttp", "desk-7"), "failed", 401, None
    )
    await client.app[DATABASE].write(client.app[AGENTS].record, [outcome], clock.now_ms())
    assert [d["id"] for d in await agents.devices("agent-1")] == [desk]


# -- the dedup window across instances -----------------------------------------------------------


async def test_two_instances_share_the_dedup_window(
    make_client: Callable[..., Any], agent_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """Two apps on one database (two processes' worth of state: engines, services); concurrent
    rings of one conversation for one agent ring it once."""
    import asyncio

    first_outbox, second_outbox = RecordingOutbox(), RecordingOutbox()
    settings = agent_settings()
    first = Agents(await make_client(settings, agent_outbox=first_outbox), first_outbox, clock)
    second = Agents(await make_client(settings, agent_outbox=second_outbox), second_outbox, clock)
    await first.register("agent-1", "ios", IOS_TOKEN)
    for n in range(10):
        conversation = f"conv-{n}"
        answers = await asyncio.gather(
            *(app.events(added(conversation)) for app in (first, second, first, second))
        )
        assert sorted(a["rung"] for a in answers) == [0, 0, 0, 1], answers
    rung = first_outbox.of_kind("alert") + second_outbox.of_kind("alert")
    assert sorted(p.key.split("/")[0] for p in rung) == [f"conv-{n}" for n in range(10)]
    assert await first.client.app[DATABASE].read(store.rings_of, "conv-3")
