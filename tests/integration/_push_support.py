"""Shared by the push integration tests: subscription forms, receivers, the app's push state."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.api.keys import DISPATCHER
from tests.conftest import API_KEY
from tests.receivers import Receiver

Client = TestClient[web.Request, web.Application]


def push_form(device_id: str = "device-1", **keys: str | None) -> dict[str, str]:
    """A Request Chat form subscribing ``device_id``; ``keys`` are GCTI_* userData without prefix.

    ``push_form(NodeGroup="g2")`` adds ``userData[GCTI_GMS_NodeGroup]=g2``; a key given as ``None``
    is left out (for the defaults).
    """
    form = {
        "nickname": "Customer",
        "userData[GCTI_Chat_PushSubscribe]": "true",
        "userData[GCTI_GMS_PushDeviceId]": device_id,
        "userData[GCTI_GMS_PushDeviceType]": "customhttp",
    }
    for key, value in keys.items():
        prefix = "GCTI_Chat_" if key == "PushSubscribe" else "GCTI_GMS_"
        name = f"userData[{prefix}{key}]"
        if value is None:
            form.pop(name, None)
        else:
            form[name] = value
    return form


class Receivers:
    """Starts real receivers on demand and closes them all on exit."""

    def __init__(self) -> None:
        self.started: list[Receiver] = []

    async def start(self, **options: Any) -> Receiver:
        receiver = await Receiver(**options).start()
        self.started.append(receiver)
        return receiver

    async def __aenter__(self) -> Receivers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for receiver in self.started:
            await receiver.close()


async def api(client: Client, method: str, path: str, expect: int = 200, json: Any = None) -> Any:
    response = await client.request(
        method, f"/api/v1{path}", json=json, headers={"X-API-Key": API_KEY}
    )
    body = await response.json()
    assert response.status == expect, body
    return body


async def trail(client: Client, chat_id: str) -> list[dict[str, Any]]:
    body = await api(client, "GET", f"/chats/{chat_id}/deliveries")
    return list(body["deliveries"])


async def settle(client: Client) -> None:
    await client.app[DISPATCHER].settle()


async def metric(client: Client, name: str, **labels: str) -> float:
    """The sum of the /metrics series of ``name`` whose labels include ``labels``."""
    response = await client.get("/metrics", headers={"X-API-Key": API_KEY})
    assert response.status == 200
    total = 0.0
    for line in (await response.text()).splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(3))
    return total
