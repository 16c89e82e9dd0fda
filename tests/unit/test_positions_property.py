"""Property: refresh and send return exactly the events the transcriptPosition asks for.

For any sequence of customer sends, agent messages and refreshes, each with any transcriptPosition
(absent, 0, or n >= 1), every answer of the real app holds exactly the events with index >= n
(all of them for a refresh without a position, none for 0 or for a send without a position), with
their text, author and time, and nextPosition is the last returned index + 1, or, when nothing is
returned, the index after the last one the customer has retrieved so far (CONTRACT §2-4).

One event loop and one migrated app serve the whole module; every example starts its own chat,
which shares nothing with the chats of other examples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from chatpush.app import create_app
from chatpush.config import load_settings
from chatpush.store import migrate
from chatpush.testing import FakeClock

API_KEY = "property-api-key"
SERVICE = "support"

Client = TestClient[web.Request, web.Application]
Position = int | None
Step = tuple[str, Position]


@dataclass
class Harness:
    runner: asyncio.Runner
    client: Client
    clock: FakeClock


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('positions')) / 'chatpush.db'}"
    migrate.upgrade(url)
    app_settings = load_settings(None, database={"url": url}, security={"api_keys": [API_KEY]})
    clock = FakeClock()
    with asyncio.Runner() as runner:

        async def start() -> Client:
            app = create_app(app_settings, clock=clock, housekeeping=False)
            client: Client = TestClient(TestServer(app))
            await client.start_server()
            return client

        client = runner.run(start())
        try:
            yield Harness(runner, client, clock)
        finally:
            runner.run(client.close())


positions = st.one_of(st.none(), st.just(0), st.integers(min_value=1, max_value=30))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), positions),
        st.tuples(st.just("agent"), st.none()),
        st.tuples(st.just("refresh"), positions),
    ),
    max_size=14,
)


@dataclass
class Expected:
    """What the customer's transcript holds, by the model: index -> (author id, text, time)."""

    events: dict[int, tuple[int, str | None, int]]
    retrieved: int  # the highest index any answer has returned to the customer

    @property
    def last(self) -> int:
        return max(self.events)

    def check(self, what: str, body: dict[str, Any], position: Position, *, send: bool) -> None:
        if position == 0 or (position is None and send):
            wanted: list[int] = []
        else:
            wanted = list(range(position or 1, self.last + 1))
        got = [event["index"] for event in body["messages"]]
        assert got == wanted, f"{what}: returned {got}, expected {wanted}"
        for event in body["messages"]:
            participant, text, utc_time = self.events[event["index"]]
            assert event["from"]["participantId"] == participant, event
            assert event.get("text") == text, event
            assert event["utcTime"] == utc_time, event
        if wanted:
            self.retrieved = max(self.retrieved, wanted[-1])
            next_position = wanted[-1] + 1
        else:
            next_position = self.retrieved + 1
        assert body["nextPosition"] == next_position, f"{what}: nextPosition"
        assert body["statusCode"] == 0 and body["chatEnded"] is False


async def scenario(harness: Harness, plan: list[Step], final: Position) -> None:
    client, clock = harness.client, harness.clock
    base = f"/genesys/2/chat/{SERVICE}"
    headers = {"X-API-Key": API_KEY}

    async def post(path: str, form: dict[str, str]) -> dict[str, Any]:
        response = await client.post(base + path, data=form)
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body

    created = await post("", {"nickname": "Ann"})
    chat_id, key = created["chatId"], created["secureKey"]
    model = Expected(events={1: (1, None, clock.now_ms())}, retrieved=0)
    model.check("request chat", created, None, send=False)
    response = await client.post(
        f"/api/v1/chats/{chat_id}/parties",
        json={"type": "Agent", "nickname": "Bo"},
        headers=headers,
    )
    assert response.status == 201
    agent = (await response.json())["party"]["participantId"]
    model.events[2] = (agent, None, clock.now_ms())

    def with_position(form: dict[str, str], position: Position) -> dict[str, str]:
        if position is not None:
            form["transcriptPosition"] = str(position)
        return form

    for number, (kind, position) in enumerate(plan):
        clock.advance(ms=7)
        what = f"step {number}: {kind} {position}"
        if kind == "agent":
            text = f"agent says {number}"
            response = await client.post(
                f"/api/v1/chats/{chat_id}/events",
                json={"participantId": agent, "type": "Message", "text": text},
                headers=headers,
            )
            assert response.status == 201
            index = (await response.json())["event"]["index"]
            assert index == model.last + 1, what
            model.events[index] = (agent, text, clock.now_ms())
        elif kind == "send":
            text = f"customer says {number}"
            model.events[model.last + 1] = (1, text, clock.now_ms())
            form = with_position({"secureKey": key, "message": text}, position)
            model.check(what, await post(f"/{chat_id}/send", form), position, send=True)
        else:
            form = with_position({"secureKey": key}, position)
            model.check(what, await post(f"/{chat_id}/refresh", form), position, send=False)

    form = with_position({"secureKey": key}, final)
    model.check(
        f"final refresh {final}", await post(f"/{chat_id}/refresh", form), final, send=False
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=steps, final=positions)
def test_refresh_and_send_return_exactly_the_events_from_the_position(
    harness: Harness, plan: list[Step], final: Position
) -> None:
    note(f"plan={plan} final={final}")
    harness.runner.run(scenario(harness, plan, final))
