"""Helpers of the callback tests: a customer app and a contact-centre side over real HTTP."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import API_KEY

Client = TestClient[web.Request, web.Application]

GMS = "/genesys/1/service/callback"


async def gms(
    client: Client,
    method: str,
    path: str,
    expect: int = 200,
    *,
    data: Any = None,
    json: Any = None,
    key: str | None = None,
    params: Any = None,
) -> Any:
    headers = {} if key is None else {"X-API-Key": key}
    response = await client.request(
        method, path, data=data, json=json, headers=headers, params=params
    )
    body = await response.json()
    assert response.status == expect, (response.status, body)
    return body


async def create(client: Client, service: str = "samples_dev", **form: str) -> dict[str, Any]:
    form.setdefault("_customer_number", "5115")
    body: dict[str, Any] = await gms(client, "POST", f"{GMS}/{service}", data=form)
    return body


async def record(client: Client, callback_id: str) -> dict[str, Any]:
    found = await gms(client, "GET", GMS, params={"_id": callback_id})
    assert len(found) == 1, found
    return dict(found[0])


async def cc(
    client: Client, method: str, path: str, expect: int = 200, json: Any = None, **params: Any
) -> Any:
    response = await client.request(
        method, f"/api/v1{path}", json=json, params=params, headers={"X-API-Key": API_KEY}
    )
    body = await response.json()
    assert response.status == expect, (response.status, body)
    return body


async def event(
    client: Client, callback_id: str, seq: int, kind: str, expect: int = 200, **fields: Any
) -> Any:
    return await cc(
        client,
        "POST",
        f"/callbacks/{callback_id}/events",
        expect,
        {"seq": seq, "type": kind, **fields},
    )


async def pull(client: Client, **params: Any) -> list[dict[str, Any]]:
    body = await cc(client, "GET", "/callbacks/commands", **params)
    return list(body["commands"])


async def ack(client: Client, commands: list[dict[str, Any]]) -> Any:
    return await cc(
        client, "POST", "/callbacks/commands/ack", json={"ids": [c["id"] for c in commands]}
    )


def gms_error(body: dict[str, Any], name: str) -> None:
    assert body["error"] == name, body
    assert body["phrase"] == name
    assert body["exception"] == f"chatpush.callback.{name}"
    assert body["message"]
