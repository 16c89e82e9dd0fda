"""CONTRACT §8.6: reliable-delivery state lives in the database. Stop the app in the middle of a
timetable, start a new one on the same SQLite file and the same clock: resends go on with the
right attempt numbers, none skipped; a notification not yet delivered at the stop is delivered
after the restart (at-least-once: a repeat is allowed, a gap is not).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatpush.api.keys import DISPATCHER
from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.integration.reliable import Client, Push, push_settings, start_chat
from tests.receivers import Receiver

MakeClient = Callable[[Settings], Any]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.close()


async def restart(push: Push, make_client: MakeClient, settings: Settings) -> None:
    """Stop the app cleanly (the SQLite file stays) and start a new one on the same file."""
    await push.client.close()
    push.client = await make_client(settings)
    push.chat.client = push.client
    await push.settle()


async def test_resends_continue_after_a_restart_with_the_next_attempt_number(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    settings = push_settings(make_settings, receiver, delay=15, attempts=5)
    client: Client = await make_client(settings)
    push = await start_chat(client, receiver, clock)
    await push.advance(15)
    await push.advance(5)
    assert push.seen() == [("2", "0"), ("2", "1")]

    # Restart before the next resend is due: it goes out at its original time.
    await restart(push, make_client, settings)
    assert push.seen() == [("2", "0"), ("2", "1")]
    sub = await push.subscription()
    assert sub["outstandingTrigger"] == {
        "notifyPosition": 2,
        "notifyAttempt": 1,
        "chatEnded": False,
        "held": False,
    }
    await push.advance(9.9)
    assert len(push.seen()) == 2
    await push.advance(0.1)
    assert push.seen()[2:] == [("2", "2")]
    await push.advance(15)
    assert push.seen()[2:] == [("2", "2"), ("2", "3")]

    # Down while a resend fell due (and the one after it too): one resend at start, not a burst,
    # with the next attempt number; then the timetable goes on from there.
    await push.client.close()
    clock.advance(40)
    await restart(push, make_client, settings)
    assert push.seen()[4:] == [("2", "4")]
    await push.advance(14.9)
    assert len(push.seen()) == 5
    await push.advance(0.1)
    assert push.seen()[4:] == [("2", "4"), ("2", "5")]
    await push.advance(15)
    assert (await push.subscription())["status"] == "failed"
    assert push.seen() == [("2", str(attempt)) for attempt in range(6)]


async def test_acknowledgement_survives_a_restart(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    settings = push_settings(make_settings, receiver, delay=15, attempts=3)
    client: Client = await make_client(settings)
    push = await start_chat(client, receiver, clock)
    await push.refresh(2)
    await restart(push, make_client, settings)
    await push.advance(600)
    assert push.seen() == [("2", "0")]
    # The acknowledged position came back too: the next trigger points after it.
    await push.agent_says("after the restart")  # index 3
    await push.settle()
    assert push.seen() == [("2", "0"), ("3", "0")]


async def test_notification_in_flight_at_the_stop_is_delivered_after_the_restart(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    # The receiver takes the trigger and never answers; the app stops meanwhile.
    settings = push_settings(
        make_settings, receiver, delay=15, attempts=3, delivery={"total_timeout_s": 60}
    )
    receiver.mode = "hang"
    client: Client = await make_client(settings)
    push = await start_chat(client, receiver, clock, agent=False)
    await push.chat.agent_joins()  # index 2: trigger ("2", "0"), sent, never answered
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    assert push.seen() == [("2", "0")]

    receiver.mode = "ok"
    push.client.app[DISPATCHER].stop_grace_s = 0.2  # the default waits 5 s
    await restart(push, make_client, settings)
    # Delivered again at start, before any resend is due: the same position and attempt.
    assert push.seen() == [("2", "0"), ("2", "0")]
    trail = await push.deliveries()
    assert [(d["notifyAttempt"], d["outcome"]) for d in trail][-1] == (0, "sent")
    # The timetable is the one stored before the stop.
    await push.advance(15)
    assert push.seen()[2:] == [("2", "1")]
