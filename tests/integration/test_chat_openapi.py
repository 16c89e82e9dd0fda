"""The OpenAPI document of the Chat API v2 (``chatpush/api/chat_openapi.json``), and live answers
checked against it: every operation of the app is described, every documented status is seen in
a real session, and every answer and every accepted form matches its schema.

It is a second document beside the chat-server side's ``openapi.json``: the Chat API has no API
key, form bodies and its own error envelope, and is served at ``/genesys/2/openapi.json``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from chatpush.api.chat_v2 import OPERATIONS
from chatpush.api.keys import DATABASE
from chatpush.chat.model import EVENT_TYPES, PARTY_TYPES
from chatpush.config import Settings
from chatpush.errors import Code
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver
from tests.integration.test_openapi import Conformance, _strip, load_document

Client = TestClient[web.Request, web.Application]

DOCUMENT_FILE = Path(str(resources.files("chatpush.api").joinpath("chat_openapi.json")))
SERVICE = "support"


def chat_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT_FILE.read_text(encoding="utf-8"))
    return document


class FormApi:
    """Posts forms to the live app and checks each answer (and each accepted form)."""

    def __init__(self, client: Client, conformance: Conformance) -> None:
        self.client = client
        self.conformance = conformance

    async def post(
        self, path: str, expect: int, form: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        response = await self.client.post(path, data=form or {}, **kwargs)
        body = await response.read()
        assert response.status == expect, f"{path}: {response.status} {body[:300]!r}"
        checked = self.conformance.check(
            "POST", response.url, response.status, response.content_type, body
        )
        if 200 <= response.status < 300 and form is not None:
            self._check_form(response.url.raw_path, form)
        if response.status == 429:
            assert response.headers["Retry-After"].isdigit()
        return checked

    def _check_form(self, raw_path: str, form: dict[str, str]) -> None:
        """An accepted form holds only documented parameters, each matching its schema."""
        _, op_pointer, _ = self.conformance.match("POST", raw_path)
        body_pointer, body = self.conformance.resolve(f"{op_pointer}/requestBody")
        for content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            schema_pointer, schema = self.conformance.resolve(
                f"{body_pointer}/content/{content_type.replace('/', '~1')}/schema"
            )
            patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
            for name in form:
                assert name in schema["properties"] or any(p.search(name) for p in patterns), (
                    f"{raw_path}: parameter {name!r} accepted but undocumented"
                )
            errors = self.conformance._errors(schema_pointer, form)
            assert not errors, f"{raw_path}: form accepted but {errors}"
        assert body["required"] is True


# -- the document itself -------------------------------------------------------------------------


async def test_the_served_document_is_the_file_in_the_repository(client: Client) -> None:
    expected = DOCUMENT_FILE.read_bytes  # read after the request: no blocking call in between
    response = await client.get("/genesys/2/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == expected()


def test_the_file_is_valid_openapi_3_1_pretty_printed() -> None:
    document = chat_document()
    text = DOCUMENT_FILE.read_text(encoding="utf-8")
    assert text == json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    errors = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert not errors, errors
    conformance = Conformance(document)
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        conformance.validator(f"/components/schemas/{name}").is_valid({})
    names = [operation["operationId"] for _, _, operation in conformance.operations()]
    assert len(names) == len(set(names))
    assert document["security"] == []


async def test_every_chat_api_route_of_the_app_is_documented_and_nothing_else(
    client: Client,
) -> None:
    document = chat_document()
    live = set()
    for route in client.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or not path.startswith("/genesys/2/"):
            continue
        if path.endswith("/{operation}"):  # one route serves every operation by name
            live |= {
                (f"/genesys/2/chat/{{serviceName}}/{{chatId}}/{name}", "post")
                for name in OPERATIONS
            }
        else:
            live.add((path.replace("{service}", "{serviceName}"), route.method.lower()))
    documented = {(template, method) for template, method, _ in Conformance(document).operations()}
    assert live == documented


def test_shared_schemas_are_those_of_the_chat_server_side_document() -> None:
    """An event is the same on both sides of chatpush; the error codes are the code's."""
    mine = chat_document()["components"]["schemas"]
    theirs = load_document()["components"]["schemas"]
    for name in ("Event", "EventAuthor", "ErrorEntry"):
        assert _strip(mine[name]) == _strip(theirs[name]), name
    codes = sorted(v for k, v in vars(Code).items() if k.isupper() and isinstance(v, int))
    assert mine["ErrorEntry"]["properties"]["code"]["enum"] == codes
    assert mine["Event"]["properties"]["type"]["enum"] == list(EVENT_TYPES)
    assert mine["EventAuthor"]["properties"]["type"]["enum"] == list(PARTY_TYPES)


# -- live answers ---------------------------------------------------------------------------------


async def test_a_realistic_session_conforms_to_the_document(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = make_settings(
        database={"url": f"sqlite+aiosqlite:///{data_dir / 'chatpush.db'}"},
        chat={"chats_per_address_burst": 4, "chats_per_address_per_minute": 1},
        security={"api_keys": [API_KEY]},
    )
    client: Client = await make_client(settings)
    conformance = Conformance(chat_document())
    api = FormApi(client, conformance)
    base = f"/genesys/2/chat/{SERVICE}"

    response = await client.get("/genesys/2/openapi.json")
    conformance.check("GET", response.url, 200, response.content_type, await response.read())

    # A customer starts a chat with every Request Chat parameter; an agent joins and writes.
    started = await api.post(
        base,
        200,
        {
            "nickname": "Ann",
            "firstName": "Ann",
            "lastName": "Lee",
            "subject": "billing",
            "emailAddress": "ann@example.com",
            "userData[order]": "A-17",
        },
    )
    # A misspelt push key: the chat is made, and the answer's chatpushWarnings is documented.
    hinted = await api.post(
        base, 200, {"firstName": "Bo", "lastName": "Ng", "userData[GCTI_GMS_PushDeviceTyp]": "ios"}
    )
    assert hinted["chatpushWarnings"], hinted
    chat = ChatDriver(client, SERVICE)
    chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
    agent = await chat.agent_joins("Bob")
    await chat.agent_says(agent, "How can I help?")
    ops = f"{base}/{chat.chat_id}"
    key = {"secureKey": chat.secure_key, "userId": started["userId"], "alias": "1"}

    page = await api.post(f"{ops}/refresh", 200, {**key, "transcriptPosition": "2"})
    assert [e["type"] for e in page["messages"]] == ["ParticipantJoined", "Message"]
    await api.post(f"{ops}/refresh", 200, {"secureKey": chat.secure_key})
    await api.post(f"{ops}/startTyping", 200, {**key, "message": "My ord"})
    await api.post(f"{ops}/stopTyping", 200, key)
    sent = await api.post(
        f"{ops}/send",
        200,
        {**key, "message": "My order is late", "messageType": "text", "transcriptPosition": "1"},
    )
    assert sent["messages"][-1]["text"] == "My order is late"
    await api.post(f"{ops}/pushUrl", 200, {**key, "pushUrl": "https://shop.example.com/o/17"})
    await api.post(f"{ops}/updateNickname", 200, {**key, "nickname": "Ann L."})
    await api.post(f"{ops}/customNotice", 200, {**key, "message": "left the page"})
    await api.post(f"{ops}/updateData", 200, {**key, "userData[page]": "checkout"})
    everything = await api.post(f"{ops}/refresh", 200, {**key, "transcriptPosition": "1"})
    assert {e["type"] for e in everything["messages"]} >= {
        "ParticipantJoined",
        "Message",
        "TypingStarted",
        "TypingStopped",
        "PushUrl",
        "NicknameUpdated",
        "CustomNotice",
    }

    # Refusals: each operation, each documented status. ``full`` holds what any operation
    # requires, so that only the one thing wrong is refused.
    full = {**key, "message": "x", "pushUrl": "x", "nickname": "x", "userData[k]": "v"}
    for operation in OPERATIONS:
        await api.post(f"{ops}/{operation}", 400, {**full, "message": "a\x00b"})
        await api.post(f"{ops}/{operation}", 403, {**full, "secureKey": "0" * 32})
        await api.post(f"{ops}/{operation}", 403, {**full, "secureKey": ""})
        await api.post(f"{base}/0000000000000000/{operation}", 404, full)
        await api.post(f"/genesys/2/chat/other/{chat.chat_id}/{operation}", 404, full)
        await api.post(f"{ops}/{operation}", 413, {**full, "message": "x" * 70_000})
    await api.post(base, 400, {"subject": "no name"})
    await api.post(base, 413, {"nickname": "x" * 70_000})
    await api.post(f"{ops}/refresh", 400, {**key, "transcriptPosition": "-1"})

    # The chat ends: changes are refused (409), reading and disconnecting again are not.
    await api.post(f"{ops}/disconnect", 200, key)
    for operation in OPERATIONS:
        if operation in ("refresh", "disconnect"):
            ended = await api.post(f"{ops}/{operation}", 200, key)
            assert ended["chatEnded"] is True
        else:
            refused = await api.post(f"{ops}/{operation}", 409, full)
            assert refused["chatEnded"] is True and refused["errors"][0]["code"] == 105

    # The Request Chat burst of 4 is spent (every attempt takes a token, the 400 and the 413
    # too): 429 with Retry-After.
    await api.post(base, 429, {"nickname": "Carl"})

    # A restricted service list: an unknown service is a 404 at Request Chat.
    restricted = FormApi(
        await make_client(make_settings(chat={"restrict_services": True})), conformance
    )
    await restricted.post(base, 404, {"nickname": "Ann"})

    # Storage goes away: every operation answers 503 (a minute later: a token for Request Chat).
    clock.advance(60)
    await client.app[DATABASE].drop_connections()
    shutil.rmtree(data_dir)
    await api.post(base, 503, {"nickname": "Dee"})
    for operation in OPERATIONS:
        await api.post(f"{ops}/{operation}", 503, full)

    missing = {
        seen
        for seen in conformance.documented_statuses()
        if seen[2] != "default" and seen not in conformance.seen
    }
    assert not missing, f"documented but never observed: {sorted(missing)}"
