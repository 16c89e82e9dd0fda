"""Bugs the fuzz tests found, each kept as a plain example that runs in a second."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import API_KEY, ChatDriver
from tests.integration.test_openapi import load_document

Client = TestClient[web.Request, web.Application]


async def raw_request(client: Client, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (a client library would encode or refuse them)."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_an_api_key_that_is_not_utf8_is_refused_not_a_500(client: Client) -> None:
    # aiohttp keeps a header's non-UTF-8 bytes as surrogate escapes; a strict encode() raised.
    for key in (b"\xe9\xe9\xe9", b"test-api-key\xff", b"\xed\xa0\x80"):
        status, body = await raw_request(
            client,
            b"GET /api/v1/chats HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: "
            + key
            + b"\r\n\r\n",
        )
        assert status == 403, body
        assert json.loads(body)["errors"][0]["code"] == 110


async def test_a_participant_id_written_as_an_integral_number_is_accepted(chat: ChatDriver) -> None:
    # JSON Schema's "integer" (the documented type) takes 2.0; the strict model refused it.
    await chat.request_chat()
    agent = await chat.agent_joins()
    event = {"participantId": float(agent), "type": "Message", "text": "hi"}
    body = await chat.api("POST", f"/chats/{chat.chat_id}/events", 201, event)
    assert body["event"]["from"]["participantId"] == agent
    for bad in (2.5, "2", True):
        await chat.api(
            "POST", f"/chats/{chat.chat_id}/events", 400, {**event, "participantId": bad}
        )


async def test_empty_query_values_are_documented_as_allowed(chat: ChatDriver) -> None:
    # The server reads an empty value as an absent one; the document says so in allowEmptyValue.
    await chat.request_chat()
    listed = await chat.api("GET", "/chats?status=&limit=&createdAfter=&after=")
    assert [c["chatId"] for c in listed["chats"]] == [chat.chat_id]
    document = load_document()
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "query":
                    assert parameter.get("allowEmptyValue") is True, parameter["name"]


async def test_a_multipart_field_name_with_a_control_character_is_a_400(client: Client) -> None:
    # aiohttp's InvalidHeader escaped read_form and became a 500.
    body = (
        b'--xx\r\nContent-Disposition: form-data; name="userData[\x1f]"\r\n\r\nv\r\n'
        b'--xx\r\nContent-Disposition: form-data; name="nickname"\r\n\r\nAnn\r\n--xx--\r\n'
    )
    response = await client.post(
        "/genesys/2/chat/support",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["errors"][0]["code"] == 107


async def test_a_multipart_form_of_many_small_fields_is_not_called_too_large(
    client: Client,
) -> None:
    # More than aiohttp's 1,000 fields in 54 KB was a 413 "larger than 65536 bytes".
    parts = [b'--b\r\nContent-Disposition: form-data; name="nickname"\r\n\r\nAnn\r\n']
    parts += [
        b'--b\r\nContent-Disposition: form-data; name="x%d"\r\n\r\n\r\n' % n for n in range(1001)
    ]
    body = b"".join(parts) + b"--b--\r\n"
    assert len(body) < 65536
    response = await client.post(
        "/genesys/2/chat/support",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    answer: dict[str, Any] = await response.json()
    assert response.status == 400, answer
    assert answer["errors"][0]["code"] == 101 and "fields" in answer["errors"][0]["advice"]


async def test_braces_in_a_path_segment_reach_the_chat_api(client: Client) -> None:
    # aiohttp's default route pattern ([^{}/]+) did not route them: a bare 404 without chatId,
    # and service names with a brace (printable, so valid by decisions.md) were refused.
    created = await client.post("/genesys/2/chat/a%7Bb%7D", data={"nickname": "Ann"})
    assert created.status == 200, await created.text()
    chat_id = (await created.json())["chatId"]
    listed = await client.get("/api/v1/chats", headers={"X-API-Key": API_KEY})
    assert [c["serviceName"] for c in (await listed.json())["chats"]] == ["a{b}"]

    unknown = await client.post("/genesys/2/chat/support/%7B/refresh", data={"secureKey": "k"})
    body = await unknown.json()
    assert unknown.status == 404 and body["chatId"] == "{", body
    wrong_service = await client.post(
        f"/genesys/2/chat/support/{chat_id}/refresh", data={"secureKey": "k"}
    )
    assert wrong_service.status == 404


async def test_a_malformed_multipart_answer_does_not_quote_the_body(chat: ChatDriver) -> None:
    # aiohttp's messages may quote what they could not parse (here LineTooLong, for a first
    # "line" of more than 512 KiB); passed on as advice, they handed the secure key back.
    await chat.request_chat()
    form = f"secureKey={chat.secure_key}&message=".encode() + b"%F0%9F%98%80" * 50_000
    response = await chat.client.post(
        f"/genesys/2/chat/support/{chat.chat_id}/send",
        data=form,
        headers={"Content-Type": "multipart/form-data; boundary="},
    )
    text = await response.text()
    assert response.status == 400, text
    assert chat.secure_key not in text


async def test_a_multipart_part_in_an_unknown_transfer_encoding_is_a_400(client: Client) -> None:
    # aiohttp raises RuntimeError for it (an empty encoding too), which became a 500.
    for header in (b"Content-Transfer-Encoding:", b"Content-Transfer-Encoding: x-rot13"):
        body = (
            b'--xx\r\nContent-Disposition: form-data; name="nickname"\r\n'
            + header
            + b"\r\n\r\nAnn\r\n--xx--\r\n"
        )
        response = await client.post(
            "/genesys/2/chat/support",
            data=body,
            headers={"Content-Type": "multipart/form-data; boundary=xx"},
        )
        assert response.status == 400, await response.text()
        assert (await response.json())["errors"][0]["code"] == 107
