"""The OpenAPI document of the chat-server side API, and live responses checked against it.

``Conformance`` reads everything it needs from the document: which path template and operation a
request hits, which statuses that operation may answer, and the JSON Schema of each answer and
request body (Draft 2020-12, ``$ref`` resolved into ``components`` through a ``referencing``
registry). A route, status or member that the document does not describe makes these tests fail.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from yarl import URL

from chatpush.api.bayeux import PATH as COMETD_PATH
from chatpush.api.chat_server import AddEvent, AddParty
from chatpush.api.keys import DATABASE, DISPATCHER
from chatpush.api.routes import MOUNTED, ROUTES
from chatpush.chat.model import EVENT_TYPES, PARTY_TYPES
from chatpush.config import Settings
from chatpush.errors import Code
from chatpush.testing import FakeClock
from chatpush.testing.fcm import rsa_private_pem
from tests.conftest import API_KEY, ChatDriver
from tests.receivers import RELIABLE_PUSH, Receiver

Client = TestClient[web.Request, web.Application]

DOCUMENT_FILE = Path(str(resources.files("chatpush.api").joinpath("openapi.json")))
DOCUMENT_URI = "urn:chatpush:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_MISSING: Any = object()


def load_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT_FILE.read_text(encoding="utf-8"))
    return document


def _pointer_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class Conformance:
    """Checks requests and live responses against the document; remembers what it has seen."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource(
            DOCUMENT_URI, DRAFT202012.create_resource(document)
        )
        self._templates = [
            (re.compile("".join(self._template_regex(template))), template)
            for template in document["paths"]
        ]
        self.seen: set[tuple[str, str, str]] = set()

    @staticmethod
    def _template_regex(template: str) -> Iterator[str]:
        for part in re.split(r"(\{[^}]+\})", template):
            if part.startswith("{"):
                yield f"(?P<{part[1:-1]}>[^/]+)"
            else:
                yield re.escape(part)

    # -- the document -----------------------------------------------------------------------------

    def operations(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for template, item in self.document["paths"].items():
            for method, operation in item.items():
                if method in HTTP_METHODS:
                    yield template, method, operation

    def documented_statuses(self) -> set[tuple[str, str, str]]:
        return {
            (template, method, status)
            for template, method, operation in self.operations()
            for status in operation["responses"]
        }

    def resolve(self, pointer: str) -> tuple[str, Any]:
        """Follow OpenAPI ``$ref``s from a JSON pointer; return the final pointer and object."""
        for _ in range(10):
            node: Any = self.document
            for token in pointer.split("/")[1:]:
                token = token.replace("~1", "/").replace("~0", "~")
                node = node[int(token)] if isinstance(node, list) else node[token]
            if not (isinstance(node, dict) and "$ref" in node):
                return pointer, node
            ref = node["$ref"]
            assert ref.startswith("#/"), f"only local references are used: {ref}"
            pointer = ref[1:]
        raise AssertionError(f"reference loop at {pointer}")

    def validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=self.registry)

    def match(self, method: str, raw_path: str) -> tuple[str, str, dict[str, str]]:
        """The documented template and operation pointer of a request, and its path values."""
        hits = [
            (template, found)
            for rx, template in self._templates
            if (found := rx.fullmatch(raw_path))
        ]
        # OpenAPI 3.1 ("Path Templating Matching"): concrete paths match before templated ones
        # (/api/v1/callbacks/commands before /api/v1/callbacks/{callbackId}).
        if len(hits) > 1:
            fewest = min(template.count("{") for template, _ in hits)
            hits = [hit for hit in hits if hit[0].count("{") == fewest]
        assert len(hits) == 1, f"{method} {raw_path}: matches {len(hits)} documented paths"
        template, found = hits[0]
        method = method.lower()
        assert method in self.document["paths"][template], (
            f"{method.upper()} {template} is not documented"
        )
        values = {name: unquote(value) for name, value in found.groupdict().items()}
        return template, f"/paths/{_pointer_token(template)}/{method}", values

    def parameters(self, operation_pointer: str) -> dict[tuple[str, str], tuple[str, Any]]:
        """(in, name) -> (pointer, parameter object), path-level first, operation-level over it."""
        item_pointer = operation_pointer.rsplit("/", 1)[0]
        found: dict[tuple[str, str], tuple[str, Any]] = {}
        for owner in (item_pointer, operation_pointer):
            _, node = self.resolve(owner)
            for index, _param in enumerate(node.get("parameters", [])):
                pointer, param = self.resolve(f"{owner}/parameters/{index}")
                found[(param["in"], param["name"])] = (pointer, param)
        return found

    # -- one exchange -----------------------------------------------------------------------------

    def check(
        self,
        method: str,
        url: URL,
        status: int,
        content_type: str,
        body: bytes,
        request_json: Any = _MISSING,
    ) -> Any:
        template, op_pointer, path_values = self.match(method, url.raw_path)
        _, operation = self.resolve(op_pointer)
        where = f"{method.upper()} {template} -> {status}"
        params = self.parameters(op_pointer)
        for name in url.query:
            assert ("query", name) in params, f"{where}: query parameter {name!r} is undocumented"
        for name in path_values:
            assert ("path", name) in params, f"{where}: path parameter {name!r} is undocumented"

        responses = operation["responses"]
        assert str(status) in responses, f"{where}: status not documented ({body[:300]!r})"
        self.seen.add((template, method.lower(), str(status)))

        if 200 <= status < 300:
            # Whatever succeeded must have been a documented, in-bounds request.
            values = [("path", name, value) for name, value in path_values.items()]
            values += [("query", name, value) for name, value in url.query.items() if value != ""]
            for location, name, value in values:
                pointer, param = params[(location, name)]
                errors = self._errors(f"{pointer}/schema", _coerce(param["schema"], value))
                assert not errors, f"{where}: {location} {name}={value!r} accepted but {errors}"
            if "requestBody" in operation:
                body_pointer, request_body = self.resolve(f"{op_pointer}/requestBody")
                if request_json is not _MISSING:
                    errors = self._errors(
                        f"{body_pointer}/content/application~1json/schema", request_json
                    )
                    assert not errors, f"{where}: request body accepted but {errors}"
                elif "application/json" in request_body["content"]:
                    # A form body (the Chat API v2 document) is checked by its own test.
                    assert not request_body.get("required"), f"{where}: body required"

        response_pointer, response = self.resolve(f"{op_pointer}/responses/{status}")
        content = response.get("content")
        if not content:
            assert body == b"", f"{where}: documented without a body, got {body[:200]!r}"
            return None
        assert content_type in content, f"{where}: undocumented content type {content_type}"
        text = body.decode("utf-8")
        parsed = json.loads(text) if content_type.endswith("json") else text
        schema_pointer = f"{response_pointer}/content/{_pointer_token(content_type)}/schema"
        errors = self._errors(schema_pointer, parsed)
        assert not errors, f"{where}: body does not match the document: {errors}\n{parsed}"
        return parsed

    def _errors(self, pointer: str, instance: Any) -> list[str]:
        return [
            f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in self.validator(pointer).iter_errors(instance)
        ]


def _coerce(schema: dict[str, Any], raw: str) -> Any:
    """A query or path value as its schema's type would read it (unchanged if it cannot)."""
    if schema.get("type") == "integer" and re.fullmatch(r"-?[0-9]+", raw):
        return int(raw)
    return raw


class CheckedApi:
    """Sends requests to the live app and checks every answer against the document."""

    def __init__(self, client: Client, conformance: Conformance) -> None:
        self.client = client
        self.conformance = conformance

    async def call(
        self,
        method: str,
        path: str,
        expect: int,
        *,
        json: Any = _MISSING,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        api_key: str | None = API_KEY,
    ) -> Any:
        headers = {} if api_key is None else {"X-API-Key": api_key}
        if data is not None:
            headers["Content-Type"] = "application/json"
        response = await self.client.request(
            method,
            path,
            params=params,
            json=None if json is _MISSING else json,
            data=data,
            headers=headers,
        )
        body = await response.read()
        assert response.status == expect, f"{method} {path}: {response.status} {body[:300]!r}"
        return self.conformance.check(
            method, response.url, response.status, response.content_type, body, json
        )


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """The service's settings with a commands pull's wait capped at 0 s: the bounds test sends the
    document's largest ``wait_s`` (25), which is accepted and would otherwise hold the call 25 s."""
    return make_settings(callback={"max_wait_s": 0})


@pytest.fixture
def document() -> dict[str, Any]:
    return load_document()


@pytest.fixture
def conformance(document: dict[str, Any]) -> Conformance:
    return Conformance(document)


@pytest.fixture
def api(client: Client, conformance: Conformance) -> CheckedApi:
    return CheckedApi(client, conformance)


def _strip(node: Any, keys: tuple[str, ...] = ("title", "description")) -> Any:
    if isinstance(node, dict):
        return {key: _strip(value, keys) for key, value in node.items() if key not in keys}
    if isinstance(node, list):
        return [_strip(value, keys) for value in node]
    return node


# -- (a) the served document is the one in the repository ---------------------------------------


async def test_the_served_document_is_the_file_in_the_repository(client: Client) -> None:
    expected = DOCUMENT_FILE.read_bytes  # read after the request: no blocking call in between
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = await client.get("/api/v1/openapi.json", headers=headers)
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == expected()


def test_the_file_is_pretty_printed_with_two_spaces(document: dict[str, Any]) -> None:
    text = DOCUMENT_FILE.read_text(encoding="utf-8")
    assert text == json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# -- (b) a structurally valid OpenAPI 3.1 document ---------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    errors = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert not errors, errors


def test_every_schema_is_valid_draft_2020_12_and_every_reference_resolves(
    conformance: Conformance, document: dict[str, Any]
) -> None:
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        # Compiling and using the schema resolves its $refs, or raises.
        conformance.validator(f"/components/schemas/{_pointer_token(name)}").is_valid({})

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(document):
        assert ref.startswith("#/"), ref
        conformance.resolve(ref[1:])


def test_operations_are_named_and_secured(conformance: Conformance) -> None:
    names = [operation["operationId"] for _, _, operation in conformance.operations()]
    assert len(names) == len(set(names))
    assert conformance.document["security"] == [{"apiKey": []}]
    scheme = conformance.document["components"]["securitySchemes"]["apiKey"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-Key"}
    for template, method, operation in conformance.operations():
        keyed = template.startswith("/api/") or template == "/metrics"
        public = not keyed or template == "/api/v1/openapi.json"
        assert ("security" in operation and operation["security"] == []) == public, template
        if not public:
            assert "403" in operation["responses"], f"{method} {template}"


async def test_every_route_of_the_app_is_documented_and_nothing_else(
    client: Client, conformance: Conformance
) -> None:
    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    live = {
        (shape(route.resource.canonical), route.method.lower())
        for route in client.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not route.resource.canonical.startswith("/genesys/")
    }
    documented = {(shape(template), method) for template, method, _ in conformance.operations()}
    assert live == documented


def test_the_route_table_documents_exactly_the_operations_of_the_document(
    conformance: Conformance,
) -> None:
    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    documented = {(shape(route.path), route.method.lower()) for route in ROUTES if route.documented}
    operations = {(shape(template), method) for template, method, _ in conformance.operations()}
    assert documented == operations
    assert all(route.path.startswith("/genesys/") for route in ROUTES if not route.documented)


async def test_every_route_the_app_serves_is_mounted_from_a_route_table(client: Client) -> None:
    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    served = {
        (shape(route.resource.canonical), route.method)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not route.resource.canonical.startswith(COMETD_PATH)
    }
    mounted = {(shape(route.path), route.method) for route in client.app[MOUNTED]}
    assert served == mounted


def test_request_bodies_are_the_pydantic_models(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model in (AddParty, AddEvent):
        generated = model.model_json_schema(by_alias=True)
        assert _strip(schemas[model.__name__]) == _strip(generated), model.__name__


def test_enumerations_follow_the_code(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    codes = sorted(v for k, v in vars(Code).items() if k.isupper() and isinstance(v, int))
    assert schemas["ErrorEntry"]["properties"]["code"]["enum"] == codes
    assert schemas["Event"]["properties"]["type"]["enum"] == list(EVENT_TYPES)
    assert schemas["EventAuthor"]["properties"]["type"]["enum"] == list(PARTY_TYPES)
    assert schemas["Party"]["properties"]["type"]["enum"] == list(PARTY_TYPES)


# -- (c) live responses conform ------------------------------------------------------------------


def _agent_event(participant_id: int, kind: str = "Message", **extra: Any) -> dict[str, Any]:
    return {"participantId": participant_id, "type": kind, **extra}


PUSH = RELIABLE_PUSH


async def test_a_realistic_session_conforms_to_the_document(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clock: FakeClock,
    receiver: Receiver,
    conformance: Conformance,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = make_settings(
        database={"url": f"sqlite+aiosqlite:///{data_dir / 'chatpush.db'}"},
        groups={"g1": {"default": True, "nodes": ["n1"], "customhttp.url": receiver.url}},
        security={"api_keys": [API_KEY], "credentials_key": Fernet.generate_key().decode()},
        mobile={"fcm_api_url": "http://127.0.0.1:9", "fcm_token_uri": "http://127.0.0.1:9/t"},
    )
    client: Client = await make_client(settings)
    dispatcher = client.app[DISPATCHER]
    api = CheckedApi(client, conformance)

    await api.call("GET", "/api/v1/openapi.json", 200, api_key=None)
    await api.call("GET", "/healthz", 200, api_key=None)
    await api.call("GET", "/readyz", 200, api_key=None)

    # A customer requests a push-subscribed chat through Chat API v2; an agent and a supervisor
    # join and write; the customer answers; the supervisor leaves.
    chat = ChatDriver(client)
    await chat.request_chat(
        nickname="Ann", subject="billing", emailAddress="ann@example.com", **PUSH
    )
    cid = chat.chat_id
    started = clock.now_ms()
    added = await api.call(
        "POST", f"/api/v1/chats/{cid}/parties", 201, json={"type": "Agent", "nickname": "Bob"}
    )
    agent = added["party"]["participantId"]
    added = await api.call(
        "POST", f"/api/v1/chats/{cid}/parties", 201, json={"type": "Supervisor", "nickname": "Sue"}
    )
    supervisor = added["party"]["participantId"]
    events = f"/api/v1/chats/{cid}/events"
    await api.call("POST", events, 201, json=_agent_event(agent, "TypingStarted"))
    await api.call(
        "POST",
        events,
        201,
        json=_agent_event(agent, text="Hello Ann", messageType="greeting", userData={"k": "v"}),
    )
    await api.call(
        "POST",
        events,
        201,
        json=_agent_event(agent, "Notice", text=None, messageType=None, userData=None),
    )
    await chat.op("send", message="Hi Bob")
    await api.call("DELETE", f"/api/v1/chats/{cid}/parties/{supervisor}", 200)

    # Push state: a trigger went out and is outstanding; then, with the only node drained, the
    # next one is parked for want of a node.
    await dispatcher.settle()
    subscription = await api.call("GET", f"/api/v1/chats/{cid}/subscription", 200)
    assert subscription["outstandingTrigger"] is not None
    await chat.op("refresh")
    await api.call("GET", "/api/v1/nodes", 200)
    await api.call("POST", "/api/v1/nodes/n1/drain", 200)
    await api.call("POST", events, 201, json=_agent_event(agent, text="Still there?"))
    await dispatcher.settle()
    subscription = await api.call("GET", f"/api/v1/chats/{cid}/subscription", 200)
    assert [q["parked"] for q in subscription["queued"]] == [True]
    trail = await api.call("GET", f"/api/v1/chats/{cid}/deliveries", 200)
    assert [d["outcome"] for d in trail["deliveries"]] == ["sent", "no_node"]
    first_id = trail["deliveries"][0]["id"]
    later = await api.call(
        "GET", f"/api/v1/chats/{cid}/deliveries", 200, params={"after": str(first_id)}
    )
    assert [d["outcome"] for d in later["deliveries"]] == ["no_node"]
    await api.call("POST", "/api/v1/nodes/n1/undrain", 200)
    await api.call("GET", "/metrics", 200)
    await api.call("GET", "/metrics", 403, api_key=None)

    # Another chat, later, on another service, without push, for the filters and paging.
    clock.advance(60)
    other = ChatDriver(client, service="sales")
    await other.request_chat(nickname="Carl")
    await api.call("POST", f"/api/v1/chats/{other.chat_id}/end", 200)
    await api.call("GET", f"/api/v1/chats/{other.chat_id}/subscription", 404)

    listing = await api.call("GET", "/api/v1/chats", 200)
    assert {c["chatId"] for c in listing["chats"]} == {cid, other.chat_id}
    filtered = await api.call(
        "GET",
        "/api/v1/chats",
        200,
        params={
            "service": "support",
            "status": "active",
            "createdAfter": str(started),
            "createdBefore": str(started + 1),
            "limit": "10",
            "after": "",
        },
    )
    assert [c["chatId"] for c in filtered["chats"]] == [cid]
    first = await api.call("GET", "/api/v1/chats", 200, params={"limit": "1"})
    second = await api.call(
        "GET", "/api/v1/chats", 200, params={"limit": "1", "after": first["next"]}
    )
    assert first["next"] and second["chats"] and second["chats"][0]["chatId"] > first["next"]
    await api.call("GET", "/api/v1/chats", 200, params={"status": "ended"})

    detail = await api.call("GET", f"/api/v1/chats/{cid}", 200, params={"fromPosition": "3"})
    assert detail["transcript"][0]["index"] == 3
    await api.call("GET", f"/api/v1/chats/{cid}", 200)

    # Callbacks, the contact-centre side: a callback made through the GMS API, its commands
    # pulled and acknowledged, its events (a duplicate, a refusal, an illegal one) and waits.
    made = await client.post("/genesys/1/service/callback/samples", data={"_customer_number": "1"})
    callback = (await made.json())["_id"]
    pulled = await api.call("GET", "/api/v1/callbacks/commands", 200, params={"limit": "10"})
    assert [c["type"] for c in pulled["commands"]] == ["callback.created"]
    await api.call("GET", "/api/v1/callbacks/commands", 400, params={"limit": "0"})
    ids = [c["id"] for c in pulled["commands"]]
    await api.call("POST", "/api/v1/callbacks/commands/ack", 200, json={"ids": ids})
    await api.call("POST", "/api/v1/callbacks/commands/ack", 400, json={"ids": "all"})
    cb_events = f"/api/v1/callbacks/{callback}/events"
    await api.call("POST", cb_events, 200, json={"seq": 1, "type": "dial_init", "at": started})
    await api.call("POST", cb_events, 200, json={"seq": 1, "type": "dial_init"})
    await api.call("POST", cb_events, 400, json={"seq": 2, "type": "exit"})
    await api.call("POST", cb_events, 200, json={"seq": 2, "type": "route_to_agent"})
    await api.call("POST", cb_events, 409, json={"seq": 3, "type": "resubmitted"})
    await api.call("POST", "/api/v1/callbacks/0000/events", 404, json={"seq": 1, "type": "exit"})
    waits = {"updates": [{"callbackId": callback, "ewt": 30, "position": 1, "totalWaiting": 2}]}
    await api.call("POST", "/api/v1/callbacks/ewt", 200, json=waits)
    await api.call("POST", "/api/v1/callbacks/ewt", 400, json={"updates": [{}]})
    await api.call("GET", f"/api/v1/callbacks/{callback}", 200)
    await api.call("GET", f"/api/v1/callbacks/{callback}/deliveries", 200)
    await api.call("GET", f"/api/v1/callbacks/{callback}/deliveries", 400, params={"after": "x"})
    await api.call("GET", "/api/v1/callbacks/0000/deliveries", 404)
    await api.call("GET", "/api/v1/callbacks/0000", 404)
    await api.call(
        "POST", cb_events, 200, json={"seq": 3, "type": "exit", "reason": "AGENT_CONNECTED"}
    )

    # Agent alerts: a device registry, a ring, a cancel, the trail.
    agent_device = await _agent_session(api, clock)

    def path_of(template: str) -> str:
        return template.format(
            chatId=cid,
            participantId=agent,
            node="n1",
            group="g1",
            kind="fcm",
            callbackId=callback,
            userId="agent-1",
            deviceId=agent_device,
            conversationId="conv-1",
        )

    # FCM credentials: stored, shown masked, tested (FCM is unreachable here), deleted.
    creds = "/api/v1/groups/g1/credentials"
    put = {"operationId": "putCredentials", "requestBody": {}}
    await api.call("PUT", f"{creds}/fcm", 200, json=_example(put))
    await api.call("PUT", f"{creds}/fcm", 400, json={"project_id": "p"})
    await api.call("PUT", "/api/v1/groups/nowhere/credentials/fcm", 404, json={})
    await api.call("GET", f"{creds}/fcm", 200)
    await api.call("GET", f"{creds}/fcm", 404, params={"provider": "acme"})  # none of its own
    await api.call("GET", f"{creds}/bogus", 400)
    await api.call("GET", f"{creds}/apns", 404)
    await api.call("GET", "/api/v1/credentials", 200)
    tried = await api.call("POST", f"{creds}/fcm/test", 200, json={"deviceToken": "phone-1"})
    assert tried["ok"] is False and tried["error"].startswith("token endpoint:")
    await api.call("POST", f"{creds}/fcm/test", 400, json={"sandbox": True})
    await api.call("POST", f"{creds}/apns/test", 404, json={"deviceToken": "phone-1"})
    await api.call("DELETE", f"{creds}/bogus", 400)
    await api.call("DELETE", f"{creds}/fcm", 200)
    await api.call("DELETE", f"{creds}/fcm", 404)

    # Every secured operation refuses a missing and a wrong key.
    for template, method, operation in conformance.operations():
        if operation.get("security") == []:
            continue
        for key in (None, "wrong-key", API_KEY[:-1], API_KEY + "x"):
            await api.call(
                method.upper(), path_of(template), 403, api_key=key, json=_example(operation)
            )

    unknown = "0000000000000000"
    await api.call("GET", f"/api/v1/chats/{unknown}", 404)
    await api.call(
        "POST", f"/api/v1/chats/{unknown}/parties", 404, json={"type": "Agent", "nickname": "X"}
    )
    await api.call("POST", f"/api/v1/chats/{unknown}/events", 404, json=_agent_event(2))
    await api.call("DELETE", f"/api/v1/chats/{unknown}/parties/2", 404)
    await api.call("POST", f"/api/v1/chats/{unknown}/end", 404)
    await api.call("GET", f"/api/v1/chats/{unknown}/subscription", 404)
    await api.call("GET", f"/api/v1/chats/{unknown}/deliveries", 404)
    await api.call("DELETE", f"/api/v1/chats/{cid}/parties/99", 404)
    await api.call("POST", events, 404, json=_agent_event(99))
    await api.call("POST", "/api/v1/nodes/nowhere/drain", 404)
    await api.call("POST", "/api/v1/nodes/nowhere/undrain", 404)

    await api.call("GET", "/api/v1/chats", 400, params={"limit": "0"})
    await api.call("GET", f"/api/v1/chats/{cid}", 400, params={"fromPosition": "-1"})
    await api.call("GET", f"/api/v1/chats/{cid}/deliveries", 400, params={"after": "x"})
    await api.call("DELETE", f"/api/v1/chats/{cid}/parties/0", 400)
    await api.call(
        "POST", f"/api/v1/chats/{cid}/parties", 400, json={"type": "Client", "nickname": "X"}
    )
    await api.call("POST", f"/api/v1/chats/{cid}/parties", 400, data=b"{not json")
    await api.call("POST", events, 400, json=_agent_event(agent, "Bogus"))
    await api.call("POST", events, 400, json=_agent_event(agent, extra=1))
    await api.call("POST", events, 400, data=b"\xff\xfe")

    # The supervisor has left (409); then the chat ends and refuses changes (409).
    await api.call("POST", events, 409, json=_agent_event(supervisor))
    await api.call("DELETE", f"/api/v1/chats/{cid}/parties/{supervisor}", 409)
    ended = await api.call("POST", f"/api/v1/chats/{cid}/end", 200)
    assert ended["chat"]["status"] == "ended"
    await api.call("POST", f"/api/v1/chats/{cid}/end", 200)
    await api.call(
        "POST", f"/api/v1/chats/{cid}/parties", 409, json={"type": "Agent", "nickname": "Y"}
    )
    await api.call("POST", events, 409, json=_agent_event(agent))
    await api.call("DELETE", f"/api/v1/chats/{cid}/parties/1", 409)
    await api.call("GET", f"/api/v1/chats/{cid}", 200, params={"fromPosition": "0"})
    await dispatcher.settle()
    final = await api.call("GET", f"/api/v1/chats/{cid}/subscription", 200)
    assert final["outstandingTrigger"]["chatEnded"] is True
    await chat.op("refresh")
    settled = await api.call("GET", f"/api/v1/chats/{cid}/subscription", 200)
    assert settled["status"] == "done" and settled["outstandingTrigger"] is None

    # Commands by webhook: pull and acknowledge are 409 (another app, on its own database).
    webhook = await make_client(make_settings(callback={"cc_webhook_url": receiver.url}))
    webhook_api = CheckedApi(webhook, conformance)
    await webhook_api.call("GET", "/api/v1/callbacks/commands", 409)
    await webhook_api.call("POST", "/api/v1/callbacks/commands/ack", 409, json={"ids": ["x"]})

    # Storage goes away: every operation answers what the document says (503 where it needs it).
    await client.app[DATABASE].drop_connections()
    shutil.rmtree(data_dir)
    for template, method, operation in conformance.operations():
        public = operation.get("security") == []
        expect = 503 if "503" in operation["responses"] else 200
        await api.call(
            method.upper(),
            path_of(template),
            expect,
            json=_example(operation),
            api_key=None if public else API_KEY,
        )

    missing = conformance.documented_statuses() - conformance.seen
    assert not missing, f"documented but never observed: {sorted(missing)}"


_RSA_KEY = rsa_private_pem()


async def _agent_session(api: CheckedApi, clock: FakeClock) -> str:
    """Every agent-alerts operation and status but 403 and 503 (the session's loops see those);
    returns the id of a registered device."""
    devices = "/api/v1/agents/agent-1/devices"
    first = await api.call("POST", devices, 201, json={"platform": "customhttp", "token": "desk-1"})
    clock.advance(ms=1)
    await api.call(
        "POST", devices, 201, json={"platform": "customhttp", "token": "desk-0", "topic": "t"}
    )
    await api.call("POST", devices, 400, json={"platform": "pager", "token": "x"})
    await api.call("POST", devices, 404, json={"platform": "ios", "token": "x", "group": "g9"})
    for n in range(8):
        await api.call("POST", devices, 201, json={"platform": "customhttp", "token": f"d{n}"})
    await api.call("POST", devices, 409, json={"platform": "customhttp", "token": "one-more"})
    listing = await api.call("GET", devices, 200)
    assert len(listing["devices"]) == 10
    await api.call("GET", "/api/v1/agents/" + "u" * 65 + "/devices", 400)
    for entry in listing["devices"][2:]:
        await api.call("DELETE", f"{devices}/{entry['id']}", 200)
    await api.call("DELETE", f"{devices}/{listing['devices'][2]['id']}", 404)
    await api.call("DELETE", "/api/v1/agents/" + "u" * 65 + "/devices/x", 400)

    ring = {
        "eventType": "routing.queue.member.added",
        "timestamp": "2023-10-27T10:00:00.000Z",
        "data": {
            "queueId": "q1",
            "memberId": "agent-1",
            "memberType": "user",
            "conversationId": "conv-1",
            "mediaType": "voice",
        },
    }
    intake = await api.call("POST", "/api/v1/agent-events", 200, json=[ring, {"eventType": "x"}])
    assert intake["rung"] == 2 and intake["dropped"] == 1
    await api.call(
        "POST",
        "/api/v1/agent-events",
        400,
        json={"eventType": "routing.conversation.deleted", "data": 1},
    )
    await api.call("POST", "/api/v1/agent-events", 400, json=[{"eventType": ""}])
    answered = "/api/v1/agents/agent-1/answered/conv-1"
    done = await api.call("POST", answered, 200, json={"deviceId": first["id"]})
    assert done == {"cancelled": 1}
    await api.call("POST", answered, 404, json={"deviceId": "0" * 32})
    await api.call("POST", answered, 400, json={"deviceId": 1})
    trail = await api.call("GET", "/api/v1/agent-conversations/conv-1", 200)
    assert [e["action"] for e in trail["trail"]] == ["rung", "rung", "answered", "cancelled"]
    await api.call("GET", "/api/v1/agent-conversations/conv-1", 200, params={"after": "1"})
    await api.call("GET", "/api/v1/agent-conversations/conv-1", 400, params={"after": "x"})
    return str(first["id"])


def _example(operation: dict[str, Any]) -> Any:
    """A valid body for the operations that take one."""
    examples: dict[str, Any] = {
        "addParty": {"type": "Agent", "nickname": "Zed"},
        "addEvent": _agent_event(2, text="x"),
        "putCredentials": {
            "project_id": "acme-app",
            "client_email": "push@acme-app.iam.gserviceaccount.com",
            "private_key": _RSA_KEY,
        },
        "testCredentials": {"deviceToken": "phone-1"},
        "ackCallbackCommands": {"ids": ["F" * 32]},
        "postCallbackEvent": {"seq": 99, "type": "exit", "reason": "AGENT_CONNECTED"},
        "postCallbackEwt": {"updates": [{"callbackId": "F" * 32, "ewt": 1}]},
        "registerAgentDevice": {"platform": "customhttp", "token": "desk-2"},
        "agentAnswered": {"deviceId": "0" * 32},
        "postAgentEvents": {
            "eventType": "routing.conversation.deleted",
            "data": {"conversationId": "c"},
        },
    }
    if "requestBody" in operation:
        assert operation["operationId"] in examples, (
            f"add an example for {operation['operationId']}"
        )
        return examples[operation["operationId"]]
    return _MISSING


# -- bounds of every integer and enumerated parameter, read from the document -------------------


# Cases that fail because of a known bug; strict, so a fix shows up as XPASS.
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


def _bound_cases() -> Iterator[Any]:
    conformance = Conformance(load_document())
    for template, method, _operation in conformance.operations():
        _, op_pointer, _ = conformance.match(method, template)
        for (location, name), (_, param) in conformance.parameters(op_pointer).items():
            schema = param["schema"]
            accepted: list[str] = []
            refused: list[str] = []
            if schema.get("type") == "integer":
                low, high = schema["minimum"], schema["maximum"]
                accepted += [str(low), str(high)]
                refused += [str(low - 1), str(high + 1), "1.5", "x", "\u00b2", "--1"]
            elif "enum" in schema:
                accepted += list(schema["enum"])
                refused += ["bogus"]
            else:
                continue
            for value in accepted + refused:
                marks: tuple[Any, ...] = ()
                bug = KNOWN_BUGS.get((template, name, value))
                if bug:
                    marks = (pytest.mark.xfail(reason=bug, strict=True),)
                yield pytest.param(
                    method,
                    template,
                    location,
                    name,
                    value,
                    value in refused,
                    id=f"{method} {template} {name}={value!r}",
                    marks=marks,
                )


@pytest.mark.parametrize(
    ("method", "template", "location", "name", "value", "refused"), list(_bound_cases())
)
async def test_parameter_bounds_are_what_the_document_says(
    chat: ChatDriver,
    api: CheckedApi,
    method: str,
    template: str,
    location: str,
    name: str,
    value: str,
    refused: bool,
) -> None:
    await chat.request_chat()
    # An unknown group: a credentials call stops at its 404 once the kind is accepted.
    values = {
        "chatId": chat.chat_id,
        "participantId": "2",
        "group": "no-such-group",
        "callbackId": "F" * 32,  # unknown: an accepted value ends at its 404
    }
    values.update(userId="agent-1", deviceId="0" * 32, conversationId="conv-1")
    params = None
    if location == "path":
        values[name] = value
    else:
        params = {name: value}
    path = template.format(**values)
    response = await api.client.request(
        method.upper(), path, params=params, headers={"X-API-Key": API_KEY}
    )
    body = await response.read()
    if refused:
        assert response.status == 400, body
    else:
        assert response.status != 400, body
    api.conformance.check(method, response.url, response.status, response.content_type, body)
