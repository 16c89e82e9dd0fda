"""Agent alerts end to end through the delivery platform (docs/agents.md): the fake APNs (HTTP/2
over TLS), the fake FCM and a custom HTTP receiver on 127.0.0.1, the fake clock, both stores.

A ring fans out to every device of the agent and is received as documented; a cancel reaches
each device after its ring; dead tokens (APNs 410, FCM UNREGISTERED, a receiver's 401) leave the
registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet

from chatpush.api.keys import DISPATCHER, METRICS
from chatpush.config import Settings
from chatpush.testing import FakeClock
from chatpush.testing.apns import FakeApns, self_signed
from chatpush.testing.fcm import FakeFcm
from tests.agents_support import added, deleted
from tests.conftest import API_KEY
from tests.receivers import Receiver

Client = TestClient[web.Request, web.Application]
APNS_TOKEN = "a0" * 32
FCM_TOKEN = "fcm-registration-token-1"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("apns"))


@pytest.fixture
async def apns(clock: FakeClock, certificate: tuple[Path, Path]) -> AsyncIterator[FakeApns]:
    server = await FakeApns(clock).start(*certificate)
    yield server
    await server.close()


@pytest.fixture
async def fcm(clock: FakeClock) -> AsyncIterator[FakeFcm]:
    server = await FakeFcm(clock).start()
    yield server
    await server.close()


@dataclass
class Gateway:
    client: Client
    apns: FakeApns
    fcm: FakeFcm
    receiver: Receiver

    async def call(self, method: str, path: str, expect: int = 200, body: Any = None) -> Any:
        response = await self.client.request(
            method, f"/api/v1{path}", json=body, headers={"X-API-Key": API_KEY}
        )
        answer = await response.json()
        assert response.status == expect, answer
        return answer

    async def register(self, user: str, platform: str, token: str) -> str:
        body = {"platform": platform, "token": token}
        return str((await self.call("POST", f"/agents/{user}/devices", 201, body))["id"])

    async def events(self, *events: Any) -> Any:
        answer = await self.call("POST", "/agent-events", 200, list(events))
        await self.client.app[DISPATCHER].settle()
        return answer


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings],
    make_client: Callable[..., Any],
    apns: FakeApns,
    fcm: FakeFcm,
    receiver: Receiver,
    certificate: tuple[Path, Path],
) -> Gateway:
    settings = make_settings(
        security={"api_keys": [API_KEY], "credentials_key": Fernet.generate_key().decode()},
        mobile={
            "fcm_api_url": fcm.base_url,
            "apns_host": "127.0.0.1",
            "apns_sandbox_host": "localhost",
            "apns_port": apns.port,
            "apns_ca_file": str(certificate[0]),
            "allowed_hosts": [fcm.base_url, f"127.0.0.1:{apns.port}", f"localhost:{apns.port}"],
        },
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,fcm,ios",
                "customhttp.url": receiver.url,
            }
        },
    )
    client: Client = await make_client(settings)
    gateway = Gateway(client, apns, fcm, receiver)
    await gateway.call("PUT", "/groups/g1/credentials/fcm", 200, fcm.credentials())
    await gateway.call("PUT", "/groups/g1/credentials/apns", 200, apns.credentials())
    return gateway


async def test_a_ring_reaches_every_device_and_a_cancel_follows_it(gateway: Gateway) -> None:
    ios = await gateway.register("agent-1", "ios", APNS_TOKEN)
    android = await gateway.register("agent-1", "android", FCM_TOKEN)
    desk = await gateway.register("agent-1", "customhttp", "desk-1")
    answer = await gateway.events(added(queueId="sales"))
    assert answer["rung"] == 3

    [phone] = gateway.apns.delivered
    assert phone["token"] == APNS_TOKEN
    assert phone["headers"]["apns-push-type"] == "alert"
    assert phone["headers"]["apns-priority"] == "10"
    payload = phone["payload"]
    assert payload["aps"] == {
        "alert": {"title": "Incoming voice", "body": "Conversation conv-abc-123"},
        "sound": "default",
        "content-available": 1,
        "category": "INCOMING_CALL",
    }
    assert payload["genesys_conversation_id"] == "conv-abc-123"
    assert payload["genesys_user_id"] == "agent-1"
    assert payload["media_type"] == "voice" and payload["device_id"] == ios
    assert payload["timestamp"] == "2023-10-27T10:00:00.000Z"

    [message] = gateway.fcm.sent
    assert message["token"] == FCM_TOKEN and "notification" not in message
    assert message["android"]["priority"] == "high"
    assert message["data"]["category"] == "INCOMING_CALL"
    assert message["data"]["genesys_conversation_id"] == "conv-abc-123"
    assert message["data"]["device_id"] == android

    [webhook] = gateway.receiver.received
    assert webhook.body["deviceId"] == "desk-1" and webhook.body["action"] == "ring"
    assert webhook.body["queue_id"] == "sales" and webhook.body["device_id"] == desk
    trail = await gateway.call("GET", "/agent-conversations/conv-abc-123")
    ring_ids = {r["deviceId"]: r["messageId"] for r in trail["rings"]}
    assert webhook.headers["webhook-id"] == ring_ids[desk]

    await gateway.events(deleted())
    cancels = [
        r for r in gateway.apns.delivered if r["payload"]["aps"]["category"] == "CALL_CANCEL"
    ]
    assert len(cancels) == 1 and cancels[0]["payload"]["action"] == "cancel_ring"
    assert gateway.fcm.sent[-1]["data"]["action"] == "cancel_ring"
    assert [r.body["action"] for r in gateway.receiver.received] == ["ring", "cancel_ring"]
    metrics = gateway.client.app[METRICS]
    assert metrics.value("chatpush_agent_rings_total") == 3
    assert metrics.value("chatpush_agent_cancels_total") == 3


async def test_a_cancel_never_overtakes_its_ring(gateway: Gateway) -> None:
    """The receiver takes its time over the ring; the cancel, queued meanwhile, waits for it."""
    await gateway.register("agent-1", "customhttp", "desk-1")
    gateway.receiver.delay_s = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    await gateway.call("POST", "/agent-events", 200, [added()])
    await gateway.call("POST", "/agent-events", 200, [deleted()])
    await gateway.client.app[DISPATCHER].settle()
    assert [r.body["action"] for r in gateway.receiver.received] == ["ring", "cancel_ring"]
    # One after the other (the cancel was sent only once the ring was answered), not together.
    assert loop.time() - started >= 0.6


async def test_dead_tokens_are_removed_from_the_registry(gateway: Gateway) -> None:
    await gateway.register("agent-1", "ios", APNS_TOKEN)
    await gateway.register("agent-1", "android", FCM_TOKEN)
    keep = await gateway.register("agent-2", "customhttp", "desk-2")
    gateway.apns.fail(APNS_TOKEN, 410, "Unregistered")
    gateway.fcm.fail(FCM_TOKEN, 404, "UNREGISTERED")
    await gateway.events(added(), added(member_id="agent-2"))
    assert await gateway.call("GET", "/agents/agent-1/devices") == {"devices": []}
    trail = await gateway.call("GET", "/agent-conversations/conv-abc-123")
    dead = sorted(e["platform"] for e in trail["trail"] if e["action"] == "dead_token")
    assert dead == ["fcm", "ios"]
    metrics = gateway.client.app[METRICS]
    assert metrics.value("chatpush_agent_dead_tokens_total", device_type="ios") == 1
    assert metrics.value("chatpush_agent_dead_tokens_total", device_type="fcm") == 1
    # A receiver answering 401 for a device: removed too (agents.dead_on_http_401).
    gateway.receiver.status = 401
    await gateway.events(added("conv-2", member_id="agent-2"))
    assert await gateway.call("GET", "/agents/agent-2/devices") == {"devices": []}
    assert keep
