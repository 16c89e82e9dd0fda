"""Helpers for the reliable-delivery tests: one push-subscribed chat, its receiver, its clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.api.keys import DISPATCHER
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver
from tests.receivers import RELIABLE_PUSH, Receiver

Client = TestClient[web.Request, web.Application]

PUSH = RELIABLE_PUSH


def push_settings(
    make_settings: Callable[..., Settings],
    receiver: Receiver,
    *,
    delay: int | str = 15,
    attempts: int = 3,
    **overrides: Any,
) -> Settings:
    return make_settings(
        groups={"g1": {"default": True, "nodes": ["n1"], "customhttp.url": receiver.url}},
        services={
            "default": {"flex-push-resend-delay": delay, "flex-push-resend-attempts": attempts}
        },
        **overrides,
    )


@dataclass
class Seen:
    """One trigger as the receiver saw it."""

    position: str
    attempt: str
    ended: bool


@dataclass
class Push:
    """A push-subscribed chat driven from both sides, plus what its receiver saw."""

    client: Client
    chat: ChatDriver
    receiver: Receiver
    clock: FakeClock
    agent: int = 0

    async def settle(self) -> None:
        await self.client.app[DISPATCHER].settle()

    async def advance(self, seconds: float) -> None:
        """Move the fake clock (in whole milliseconds) and let every due timer and delivery run."""
        self.clock.advance(ms=round(seconds * 1000))
        await self.settle()

    def seen(self) -> list[tuple[str, str]]:
        """(notify-position, notify-attempt) of every trigger the receiver got, in order."""
        return self.receiver.triggers()

    def seen_full(self) -> list[Seen]:
        out = []
        for item in self.receiver.received:
            message = item.body["message"]
            [event] = message["messages"]
            assert event["type"] == "PushUrl" and event["text"] == "PUSH-NOTIFICATION"
            assert item.body["deviceId"] == "device-1"
            user_data = event["userData"]
            assert isinstance(user_data["notify-position"], str)
            assert isinstance(user_data["notify-attempt"], str)
            out.append(
                Seen(
                    user_data["notify-position"], user_data["notify-attempt"], message["chatEnded"]
                )
            )
        return out

    async def subscription(self) -> dict[str, Any]:
        return await self.chat.api("GET", f"/chats/{self.chat.chat_id}/subscription")

    async def deliveries(self) -> list[dict[str, Any]]:
        body = await self.chat.api("GET", f"/chats/{self.chat.chat_id}/deliveries")
        return list(body["deliveries"])

    async def metric(self, name: str) -> float:
        response = await self.client.get("/metrics", headers={"X-API-Key": API_KEY})
        assert response.status == 200
        total = 0.0
        for line in (await response.text()).splitlines():
            if line.startswith(name) and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                if series == name or series.startswith(name + "{"):
                    total += float(value)
        return total

    async def agent_says(self, text: str) -> int:
        """An agent message; returns its transcript index."""
        event = await self.chat.agent_says(self.agent, text)
        return int(event["index"])

    async def refresh(self, position: int | None = None) -> dict[str, Any]:
        form = {} if position is None else {"transcriptPosition": str(position)}
        return await self.chat.op("refresh", expect=200, **form)


async def start_chat(
    client: Client,
    receiver: Receiver,
    clock: FakeClock,
    *,
    notify_requestor: bool = False,
    agent: bool = True,
) -> Push:
    """Request Chat with a reliable subscription (acknowledged position 1 by its own reply).

    With ``agent`` an agent joins: its ParticipantJoined (index 2) sends the trigger ("2", "0").
    """
    chat = ChatDriver(client)
    form = dict(PUSH)
    if notify_requestor:
        form["userData[GCTI_GMS_NotifyRequestor]"] = "true"
    reply = await chat.request_chat(**form)
    assert [event["index"] for event in reply["messages"]] == [1]
    push = Push(client, chat, receiver, clock)
    if agent:
        push.agent = await chat.agent_joins()
    await push.settle()
    return push
