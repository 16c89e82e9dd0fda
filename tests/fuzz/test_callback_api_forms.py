"""Hypothesis-generated requests against the GMS Callback API (the customer's side).

Each example sends one request to one of the routes (create, query by id / properties / across
services, reschedule, cancel, queue position, availability v1/v2, admin cancel) built from:
parameters drawn from the record's keys, the three push-key styles, the option overrides, junk
keys and values (any Unicode, empty, long, ISO times right and wrong); an encoding (urlencoded,
multipart, text/plain, a JSON object of scalars or not, another content type, arbitrary bytes);
an id (an existing callback, a completed one, an unknown or malformed one).

Properties, for every answer: never a 5xx (but 501 where availability is off), never a Python
traceback; JSON; every error in GMS's shape (``exception``, ``message``, ``error``, ``phrase``)
with one of the contract's names; a refused request changes nothing (the callbacks, read by
queries with a key, are the same before and after).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from aiohttp import web
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from chatpush.app import create_app
from chatpush.callbacks.dialogs import ACTIONS
from chatpush.config import load_settings
from chatpush.store import migrate
from chatpush.testing import FakeClock
from tests.fuzz.common import EXAMPLES, record_count, traceback_in

API_KEY = "fuzz-api-key"
SERVICE = "support"
GMS = "/genesys/1/service/callback"
T = TypeVar("T")

NAMES = {
    "BAD_PARAMETER": 400,
    "INVALID_PUSH_KEY": 400,
    "API_KEY_REQUIRED": 403,
    "SERVICE_NOT_FOUND": 404,
    "CALLBACK_NOT_FOUND": 404,
    "UNKNOWN_ACTION": 404,
    "ILLEGAL_STATE": 409,
    "SLOT_NOT_AVAILABLE": 409,
    "BODY_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "NOT_IMPLEMENTED": 501,
}

KEYS = [
    "_customer_number",
    "_desired_time",
    "_new_desired_time",
    "_id",
    "_callback_state",
    "_service_name",
    "_url",
    "_call_direction",
    "_wait_for_agent",
    "_wait_for_user_confirm",
    "_provide_code",
    "_media_type",
    "_device_os",
    "_device_notification_id",
    "_provider_name",
    "_push_notification_debug",
    "push_notification_type",
    "push_notification_deviceid",
    "pushNotificationType",
    "pushNotificationDeviceId",
    "pushNotificationDebug",
    "first_name",
    "operand",
    "start",
    "end",
    "number-of-days",
    "max-time-slots",
    "start-ms",
    "report-busy",
    "timezone",
]
TIMES = st.sampled_from(
    [
        "2023-11-14T22:30:00.000Z",
        "2023-11-15T10:00:00+02:00",
        "2023-11-14T22:13:20Z",
        "2020-01-01T00:00:00Z",
        "2023-11-14T22:30:00",
        "9999-12-31T23:59:59.999Z",
        "0000-01-01T00:00:00Z",
        "2023-02-30T00:00:00Z",
        "tomorrow",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "5115",
            "gcm",
            "ios",
            "fcm",
            "comet",
            "true",
            "false",
            "USERORIGINATED",
            "AND",
            "OR",
            "!x",
            "",
            "1",
            "-1",
            "Europe/Paris",
            "Mars/Base",
            "0" * 32,
        ]
    ),
    TIMES,
    st.text(max_size=80),
    st.text(min_size=60, max_size=70).map(lambda s: s * 2),
)
PARAMS = st.tuples(
    st.booleans(),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), VALUES, max_size=8),
).map(lambda drawn: {"_customer_number": "5115", **drawn[1]} if drawn[0] else drawn[1])
ENCODINGS = st.sampled_from(
    ["form", "multipart", "text", "json", "json-nested", "json-list", "xml", "bytes"]
)
TARGETS = st.sampled_from(["open", "completed", "unknown", "malformed"])
ROUTES = st.sampled_from(
    [
        "create",
        "create-other",
        "query-id",
        "query-service",
        "query-all",
        "update",
        "cancel",
        "position-get",
        "position-post",
        "availability-1",
        "availability-2",
        "admin-cancel",
        "dialog-get",
        "dialog-post",
    ]
)


DIALOG_ACTIONS = st.one_of(
    st.sampled_from([*sorted(ACTIONS), "not-used", "check-queue-position"]),
    st.text(alphabet=st.characters(blacklist_characters="/?#%"), min_size=1, max_size=30).filter(
        lambda text: text.strip(".") != ""  # "." and ".." are path steps, not actions
    ),
)


class Live:
    """The real app on 127.0.0.1 in a thread of its own, on a migrated SQLite file."""

    def __init__(self, data_dir: Path) -> None:
        self.url_db = f"sqlite+aiosqlite:///{data_dir / 'chatpush.db'}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.session = requests.Session()
        self.base_url = ""

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def start(self) -> Live:
        migrate.upgrade(self.url_db)
        self.thread.start()
        self.base_url = self.run(self._start())
        return self

    async def _start(self) -> str:
        settings = load_settings(
            None,
            database={"url": self.url_db},
            security={"api_keys": [API_KEY]},
            services={SERVICE: {"_max_request_by_time_bucket": 2}},
            callback={"max_query_results": 10_000},
        )
        self.runner = web.AppRunner(create_app(settings, clock=FakeClock(), housekeeping=False))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.session.close()
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def snapshot(self) -> list[dict[str, str]]:
        response = self.session.get(
            f"{self.base_url}{GMS}",
            params={"_service_name": "!none"},
            headers={"X-API-Key": API_KEY},
        )
        assert response.status_code == 200
        return sorted(response.json(), key=lambda record: record["_id"])

    def make(self, completed: bool) -> str:
        response = self.session.post(
            f"{self.base_url}{GMS}/{SERVICE}", data={"_customer_number": "1"}
        )
        assert response.status_code == 200, response.text
        callback_id: str = response.json()["_id"]
        if completed:
            self.session.delete(f"{self.base_url}{GMS}/{SERVICE}/{callback_id}")
        return callback_id


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("callback-fuzz")).start()
    try:
        yield server
    finally:
        server.stop()


def _body(
    encoding: str, params: dict[str, str]
) -> tuple[bytes | dict[str, Any] | None, dict[str, str], Any]:
    """(data, headers, files) for requests."""
    if encoding == "form":
        return params, {}, None  # type: ignore[return-value]
    if encoding == "multipart":
        return None, {}, {key: (None, value) for key, value in params.items()} or {"x": (None, "")}
    if encoding == "text":
        from urllib.parse import urlencode

        return urlencode(params).encode(), {"Content-Type": "text/plain"}, None
    if encoding == "json":
        return json.dumps(params).encode(), {"Content-Type": "application/json"}, None
    if encoding == "json-nested":
        return (
            json.dumps({**params, "n": {"a": [1]}}).encode(),
            {"Content-Type": "application/json"},
            None,
        )
    if encoding == "json-list":
        return json.dumps(list(params)).encode(), {"Content-Type": "application/json"}, None
    if encoding == "xml":
        return b"<callback/>", {"Content-Type": "application/xml"}, None
    return bytes(range(256)), {"Content-Type": "application/x-www-form-urlencoded"}, None


@settings(
    max_examples=EXAMPLES.forms,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=ROUTES,
    params=PARAMS,
    encoding=ENCODINGS,
    target=TARGETS,
    keyed=st.booleans(),
    action=DIALOG_ACTIONS,
)
def test_callback_requests(
    live: Live,
    route: str,
    params: dict[str, str],
    encoding: str,
    target: str,
    keyed: bool,
    action: str,
) -> None:
    callback_id = {
        "open": live.make(False),
        "completed": live.make(True),
        "unknown": "F" * 32,
        "malformed": "not-an-id%00",
    }[target]
    before = live.snapshot()
    assert before, "the snapshot reads the callbacks"
    data, headers, files = _body(encoding, params)
    if keyed:
        headers["X-API-Key"] = API_KEY
    url = live.base_url
    method, path, query = {
        "create": ("POST", f"{GMS}/{SERVICE}", None),
        "create-other": ("POST", f"{GMS}/other%20service", None),
        "query-id": ("GET", GMS, {"_id": callback_id}),
        "query-service": ("GET", f"{GMS}/{SERVICE}", params),
        "query-all": ("GET", GMS, params),
        "update": ("PUT", f"{GMS}/{SERVICE}/{callback_id}", None),
        "cancel": ("DELETE", f"{GMS}/{SERVICE}/{callback_id}", None),
        "position-get": ("GET", f"/genesys/1/service/{callback_id}/check-queue-position", None),
        "position-post": ("POST", f"/genesys/1/service/{callback_id}/check-queue-position", None),
        "availability-1": ("GET", f"{GMS}/{SERVICE}/availability", params),
        "availability-2": ("GET", f"/genesys/2/service/callback/{SERVICE}/availability", params),
        "admin-cancel": ("POST", "/genesys/1/admin/callback/cancel", None),
        "dialog-get": ("GET", f"/genesys/1/service/{callback_id}/{action}", params),
        "dialog-post": ("POST", f"/genesys/1/service/{callback_id}/{action}", None),
    }[route]
    if route == "admin-cancel" and encoding.startswith("json"):
        data = json.dumps({"reason": params.get("first_name", "x"), "ids": [callback_id]}).encode()
    note(f"{method} {path} {query} {encoding} {data!r:.300}")
    response = live.session.request(
        method, url + path, params=query, data=data, files=files, headers=headers, timeout=30
    )
    record_count(f"callbacks {route}", response.status_code)
    assert response.status_code < 500 or response.status_code == 501, response.text
    assert not traceback_in(response.content), response.text
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict), body
        name = body.get("error")
        assert name in NAMES, body
        assert NAMES[name] == response.status_code, body
        assert body["phrase"] == name and body["exception"] == f"chatpush.callback.{name}"
        assert isinstance(body["message"], str) and body["message"]
        assert live.snapshot() == before, "a refused request changed something"
