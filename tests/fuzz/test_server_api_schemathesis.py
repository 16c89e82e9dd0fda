"""Schemathesis against the chat-server side API's OpenAPI document, driving the real app.

The app runs for the whole module on 127.0.0.1 (port 0) in a thread of its own, on a migrated
SQLite file, with a push group whose node delivers to a real receiver. Schemathesis generates
requests for every documented operation from ``chatpush/api/openapi.json`` (examples, coverage
and fuzzing phases; valid and invalid data) and checks every answer: never a 5xx, status code,
content type, headers and body as documented, invalid data refused, and (ours) no Python
traceback in any body.

Before each operation's run, real chats are seeded (an active chat with an agent, one with a push
subscription and deliveries, an ended one), and the generated ``{chatId}``, ``{participantId}``
and ``{node}`` are often replaced by those, so requests reach existing objects and not only 404s.
``X-API-Key`` is usually the configured key, sometimes a wrong one or none.

``CHATPUSH_FUZZ_EXAMPLES`` sets the fuzzing phase's examples per operation (see
tests/fuzz/common.py). The requests sent, by operation and status, are in pytest's terminal
summary ("fuzz cases"), and in ``CHATPUSH_FUZZ_REPORT`` (JSON) if that names a file.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.openapi.checks import RejectedPositiveData

from chatpush.app import create_app
from chatpush.config import load_settings
from chatpush.store import migrate
from chatpush.testing import FakeClock
from tests.fuzz.common import EXAMPLES, record_count, traceback_in
from tests.receivers import RELIABLE_PUSH, Receiver

API_KEY = "fuzz-api-key"
NODE = "n1"
DOCUMENT_FILE = Path(str(resources.files("chatpush.api").joinpath("openapi.json")))

T = TypeVar("T")

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": EXAMPLES.schemathesis,
            "with-security-parameters": False,
        },
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}},
        "auth": {"openapi": {"apiKey": {"api_key": API_KEY}}},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    }
)
SCHEMA = schemathesis.openapi.from_path(DOCUMENT_FILE, config=CONFIG)


@dataclass
class Known:
    """Objects that exist in the live database, for the hooks to aim at."""

    chat_ids: list[str] = field(default_factory=list)
    active_chat_ids: list[str] = field(default_factory=list)
    participants: list[int] = field(default_factory=lambda: [1, 2, 3])
    nodes: list[str] = field(default_factory=lambda: [NODE])


KNOWN = Known()


class LiveServer:
    """The real app on 127.0.0.1, port 0, served from an event loop in a thread of its own."""

    def __init__(self, data_dir: Path) -> None:
        self.url_db = f"sqlite+aiosqlite:///{data_dir / 'chatpush.db'}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.base_url = ""
        self.session = requests.Session()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def start(self) -> LiveServer:
        migrate.upgrade(self.url_db)
        self.thread.start()
        self.base_url = self.run(self._start())
        return self

    async def _start(self) -> str:
        self.receiver = await Receiver().start()
        settings = load_settings(
            None,
            database={"url": self.url_db},
            security={"api_keys": [API_KEY]},
            groups={"g1": {"default": True, "nodes": [NODE], "customhttp.url": self.receiver.url}},
        )
        app = create_app(settings, clock=FakeClock(), housekeeping=False)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        async def stop() -> None:
            await self.runner.cleanup()
            await self.receiver.close()

        self.session.close()
        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    # -- seeding through the public APIs -------------------------------------------------------

    def post_form(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        response = self.session.post(f"{self.base_url}/genesys/2/chat/support{path}", data=form)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def api(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        response = self.session.request(
            method, f"{self.base_url}/api/v1{path}", json=json, headers={"X-API-Key": API_KEY}
        )
        assert response.status_code < 300, response.text
        body: dict[str, Any] = response.json()
        return body

    def seed(self) -> list[str]:
        """An active chat with two agent-side parties and a transcript, a push-subscribed chat
        with deliveries, and an ended chat."""
        active = self.post_form("", {"nickname": "Ann", "userData[a]": "1"})
        chat_id, key = active["chatId"], active["secureKey"]
        for kind, nickname in (("Agent", "Bob"), ("Supervisor", "Sue")):
            self.api("POST", f"/chats/{chat_id}/parties", {"type": kind, "nickname": nickname})
        self.api(
            "POST",
            f"/chats/{chat_id}/events",
            {"participantId": 2, "type": "Message", "text": "hi"},
        )
        self.post_form(f"/{chat_id}/send", {"secureKey": key, "message": "hello"})

        pushed = self.post_form("", {"nickname": "Pia", **RELIABLE_PUSH})
        self.api("POST", f"/chats/{pushed['chatId']}/parties", {"type": "Agent", "nickname": "Al"})
        self.api(
            "POST",
            f"/chats/{pushed['chatId']}/events",
            {"participantId": 2, "type": "Message", "text": "ping"},
        )

        ended = self.post_form("", {"nickname": "Ed"})
        self.api("POST", f"/chats/{ended['chatId']}/parties", {"type": "Agent", "nickname": "Al"})
        self.api("POST", f"/chats/{ended['chatId']}/end")
        return [chat_id, pushed["chatId"], ended["chatId"]]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("schemathesis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seeded(live: LiveServer) -> LiveServer:
    """Fresh objects for each operation's run: earlier runs may have ended or emptied the old."""
    fresh = live.seed()
    KNOWN.active_chat_ids = fresh[:2]
    KNOWN.chat_ids = fresh + KNOWN.chat_ids[:6]
    return live


# -- aiming generated values at existing objects ------------------------------------------------


MAX_INT32 = 2**31 - 1


def _valid_id(value: Any) -> bool:
    """Whether a generated value is already valid (a positive integer in range)."""
    return type(value) is int and 1 <= value <= MAX_INT32


def _valid_name(value: Any) -> bool:
    return isinstance(value, str) and value != ""


# Substitutes replace only values that are valid already: a negative case (schemathesis's invalid
# data, which must be refused) stays invalid, whatever part of it is.


@SCHEMA.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    if not path_parameters:
        return st.just(path_parameters)
    choices: dict[str, st.SearchStrategy[Any]] = {}
    for name, value in path_parameters.items():
        generated = st.just(value)
        if name == "chatId" and KNOWN.chat_ids and _valid_name(value):
            # Mostly a chat that exists, and then mostly one that is still active.
            active = st.sampled_from(KNOWN.active_chat_ids)
            choices[name] = st.one_of(generated, st.sampled_from(KNOWN.chat_ids), active, active)
        elif name == "participantId" and _valid_id(value):
            choices[name] = st.one_of(generated, st.sampled_from(KNOWN.participants))
        elif name == "node" and _valid_name(value):
            choices[name] = st.one_of(generated, st.sampled_from(KNOWN.nodes))
        else:
            choices[name] = generated
    return st.fixed_dictionaries(choices)


@SCHEMA.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if isinstance(body, dict) and _valid_id(body.get("participantId")):
        known = st.sampled_from([2, 3, 2, 3, 1]).map(lambda pid: {**body, "participantId": pid})
        return st.one_of(st.just(body), known)
    return st.just(body)


# Mostly the configured key (set by schemathesis itself, from CONFIG's auth); sometimes a wrong key
# or none, which every secured operation must refuse. The choice travels in a marker header that
# the test removes (a `given` argument would switch schemathesis's coverage phase off).
KEY_CHOICE = "X-Fuzz-Key-Choice"
WRONG_KEYS = ["wrong-key", "", API_KEY + "x", API_KEY.upper(), API_KEY[:-1], "\u00e9" * 8]
KEY_CHOICES = st.sampled_from(["right"] * 40 + ["none"] + [f"wrong:{key}" for key in WRONG_KEYS])


@SCHEMA.hook
def flatmap_headers(
    context: schemathesis.HookContext, headers: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any]]:
    return KEY_CHOICES.map(lambda choice: {**(headers or {}), KEY_CHOICE: choice})


# Refusals that the document does not express, by design (docs/decisions.md): NUL characters and
# lone surrogates anywhere (107), and the text limits, some of them configured (101).
DELIBERATE = re.compile(r"longer than|userData keys must be|userData has more than")


@SCHEMA.hook
def filter_failure(
    context: schemathesis.HookContext, failure: Any, case: Case, response: Response
) -> bool:
    """Keep every failure but a schema-valid body refused for one of those reasons."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return True
    try:
        errors = json.loads(response.content)["errors"]
    except (ValueError, KeyError, TypeError):
        return True
    deliberate = [
        entry["code"] == 107 or (entry["code"] == 101 and DELIBERATE.search(entry["advice"]))
        for entry in errors
    ]
    return not (deliberate and all(deliberate))


def no_traceback_in_the_body(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    found = traceback_in(response.content)
    if found:
        raise AssertionError(f"the body holds Python traceback text: {found!r}")
    return None


# -- the run ------------------------------------------------------------------------------------


@SCHEMA.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_server_api_answers_as_documented(case: Case, seeded: LiveServer) -> None:
    headers = case.headers if case.headers is not None else {}
    choice = headers.pop(KEY_CHOICE, "right")
    secured = case.operation.definition.raw.get("security") != []
    if secured and choice != "right":
        for name in [name for name in headers if name.lower() == "x-api-key"]:
            del headers[name]
        if choice.startswith("wrong:"):
            headers["X-API-Key"] = choice.removeprefix("wrong:")
    case.headers = headers
    response = case.call_and_validate(
        base_url=seeded.base_url,
        session=seeded.session,
        additional_checks=[no_traceback_in_the_body],
    )
    record_count(f"schemathesis {case.operation.label}", response.status_code)
    if secured and choice != "right":
        assert response.status_code == 403, f"{case.operation.label} with key {choice!r}"
