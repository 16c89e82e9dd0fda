"""CONTRACT §8 (reliable delivery) as the receiver sees it: the real app, a real HTTP receiver on
127.0.0.1 and a fake clock, so that a 15-second resend timetable runs in milliseconds.

Every chat starts the same way (``start_chat``): Request Chat with ``GCTI_GMS_PushResend=true``
(its reply returns index 1, so the acknowledged position is 1), then an agent joins: index 2 is
notifiable and sends the trigger ("2", "0").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.integration.reliable import Client, Push, Seen, push_settings, start_chat
from tests.receivers import Receiver

MakeClient = Callable[[Settings], Any]
MakeSettings = Callable[..., Settings]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.close()


@pytest.fixture
def start(
    make_settings: MakeSettings, make_client: MakeClient, receiver: Receiver, clock: FakeClock
) -> Callable[..., Any]:
    """start(delay=15, attempts=3, notify_requestor=False, agent=True, **settings) -> Push."""

    async def go(
        *,
        delay: int | str = 15,
        attempts: int = 3,
        notify_requestor: bool = False,
        agent: bool = True,
        **overrides: Any,
    ) -> Push:
        settings = push_settings(
            make_settings, receiver, delay=delay, attempts=attempts, **overrides
        )
        client: Client = await make_client(settings)
        return await start_chat(
            client, receiver, clock, notify_requestor=notify_requestor, agent=agent
        )

    return go


Start = Callable[..., Any]


# -- rules 2 and 5: first trigger, resends, exhaustion, restart --------------------------------


async def test_resends_exactly_attempts_times_then_fails_and_the_next_event_restarts(
    start: Start,
) -> None:
    push: Push = await start(delay=15, attempts=3)
    assert push.seen_full() == [Seen("2", "0", False)]
    sub = await push.subscription()
    assert sub["status"] == "active"
    assert sub["outstandingTrigger"] == {
        "notifyPosition": 2,
        "notifyAttempt": 0,
        "chatEnded": False,
        "held": False,
    }
    assert sub["nextResendAt"] == push.clock.now_ms() + 15_000

    for attempt in ("1", "2", "3"):
        await push.advance(14.999)
        assert push.seen()[-1] != ("2", attempt), "resent before its delay ran out"
        await push.advance(0.001)
        assert push.seen()[-1] == ("2", attempt)
    assert push.seen() == [("2", "0"), ("2", "1"), ("2", "2"), ("2", "3")]
    assert await push.metric("chatpush_resend_exhausted_total") == 0

    # The delay after the last resend runs out: failed, and nothing more is sent.
    await push.advance(14.999)
    assert (await push.subscription())["status"] == "active"
    await push.advance(0.001)
    sub = await push.subscription()
    assert sub["status"] == "failed"
    assert sub["outstandingTrigger"] is None and sub["nextResendAt"] is None
    assert sub["acknowledgedPosition"] == 1
    assert await push.metric("chatpush_resend_exhausted_total") == 1
    assert await push.metric("chatpush_triggers_resent_total") == 3
    await push.advance(600)
    assert len(push.seen()) == 4

    # The next notifiable event starts again at rule 2: first unretrieved index, attempt 0.
    index = await push.agent_says("are you there?")
    assert index == 3
    await push.settle()
    assert push.seen()[4:] == [("2", "0")]
    sub = await push.subscription()
    assert sub["status"] == "active"
    assert sub["outstandingTrigger"]["notifyAttempt"] == 0
    await push.advance(15)
    assert push.seen()[4:] == [("2", "0"), ("2", "1")]
    trail = await push.deliveries()
    assert [(d["notifyPosition"], d["notifyAttempt"], d["outcome"]) for d in trail] == [
        (2, 0, "sent"),
        (2, 1, "sent"),
        (2, 2, "sent"),
        (2, 3, "sent"),
        (2, 0, "sent"),
        (2, 1, "sent"),
    ]


async def test_attempts_zero_sends_once_and_never_resends(start: Start) -> None:
    push: Push = await start(delay=15, attempts=0)
    assert push.seen() == [("2", "0")]
    await push.advance(15)
    assert (await push.subscription())["status"] == "failed"
    await push.advance(600)
    assert push.seen() == [("2", "0")]
    assert await push.metric("chatpush_resend_exhausted_total") == 1


async def test_comma_list_timetable_resends_at_5_then_15_then_60(start: Start) -> None:
    push: Push = await start(delay="5,15,60", attempts=4)
    assert push.seen() == [("2", "0")]
    # Each wait: 0.1 s short of it sends nothing, the last 0.1 s sends the resend.
    for wait_s, attempt in ((5, "1"), (15, "2"), (60, "3"), (60, "4")):
        before = len(push.seen())
        await push.advance(wait_s - 0.1)
        assert len(push.seen()) == before, f"resend {attempt} went out early"
        await push.advance(0.1)
        assert push.seen()[before:] == [("2", attempt)]
    # The last value repeats for the wait after the last resend too.
    await push.advance(59.9)
    assert (await push.subscription())["status"] == "active"
    await push.advance(0.1)
    assert (await push.subscription())["status"] == "failed"
    assert len(push.seen()) == 5


# -- rule 3: while outstanding ----------------------------------------------------------------


async def test_events_while_outstanding_send_nothing_new_and_keep_the_timetable(
    start: Start,
) -> None:
    push: Push = await start(delay=15, attempts=2)
    await push.advance(10)
    await push.agent_says("one")
    await push.agent_says("two")
    await push.settle()
    assert push.seen() == [("2", "0")]
    # The timer armed by the first trigger is untouched by later events: +15 from the first send.
    await push.advance(4.9)
    assert push.seen() == [("2", "0")]
    await push.advance(0.1)
    assert push.seen() == [("2", "0"), ("2", "1")]


# -- rules 1 and 4: acknowledgement by retrieval ----------------------------------------------


@pytest.mark.parametrize(
    ("operation", "form"),
    [
        pytest.param("refresh", {}, id="refresh-everything"),
        pytest.param("refresh", {"transcriptPosition": "2"}, id="refresh-from-notify-position"),
        pytest.param("refresh", {"transcriptPosition": "1"}, id="refresh-overlapping"),
        pytest.param("send", {"message": "hi", "transcriptPosition": "2"}, id="send-with-position"),
    ],
)
async def test_retrieval_acknowledges_and_resends_stop(
    start: Start, operation: str, form: dict[str, str]
) -> None:
    push: Push = await start(delay=15, attempts=3)
    await push.agent_says("hello")  # index 3
    await push.advance(15)
    assert push.seen() == [("2", "0"), ("2", "1")]
    reply = await push.chat.op(operation, expect=200, **form)
    assert reply["messages"][-1]["index"] == reply["nextPosition"] - 1
    await push.settle()
    sub = await push.subscription()
    assert sub["outstandingTrigger"] is None and sub["nextResendAt"] is None
    assert sub["status"] == "active"
    assert sub["acknowledgedPosition"] == reply["nextPosition"] - 1
    await push.advance(600)
    assert push.seen() == [("2", "0"), ("2", "1")]


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({"transcriptPosition": "0"}, id="position-0-returns-nothing"),
        pytest.param({"transcriptPosition": "3"}, id="gap-after-the-acknowledged-position"),
        pytest.param({"transcriptPosition": "9"}, id="beyond-the-end"),
    ],
)
async def test_retrieval_that_does_not_cover_the_notify_position_does_not_acknowledge(
    start: Start, form: dict[str, str]
) -> None:
    push: Push = await start(delay=15, attempts=3)
    await push.agent_says("hello")  # index 3
    await push.advance(15)
    await push.refresh(int(form["transcriptPosition"]))
    await push.settle()
    sub = await push.subscription()
    assert sub["acknowledgedPosition"] == 1
    assert sub["outstandingTrigger"]["notifyPosition"] == 2
    await push.advance(15)
    await push.advance(15)
    assert push.seen() == [("2", "0"), ("2", "1"), ("2", "2"), ("2", "3")]


async def test_event_after_the_refresh_gets_a_new_trigger_at_once(start: Start) -> None:
    push: Push = await start(delay=15, attempts=3)
    await push.agent_says("first")  # index 3; trigger ("2", "0") still outstanding
    await push.advance(15)
    assert push.seen() == [("2", "0"), ("2", "1")]
    reply = await push.refresh(2)
    assert [event["index"] for event in reply["messages"]] == [2, 3]
    await push.settle()
    assert (await push.subscription())["acknowledgedPosition"] == 3

    # Something the refresh did not cover: a new trigger right away, at 3 + 1, attempt 0,
    # with a timetable of its own.
    await push.advance(3)
    assert await push.agent_says("second") == 4
    await push.settle()
    assert push.seen() == [("2", "0"), ("2", "1"), ("4", "0")]
    sub = await push.subscription()
    assert sub["outstandingTrigger"] == {
        "notifyPosition": 4,
        "notifyAttempt": 0,
        "chatEnded": False,
        "held": False,
    }
    assert sub["nextResendAt"] == push.clock.now_ms() + 15_000
    await push.advance(14.9)
    assert push.seen()[-1] == ("4", "0")
    await push.advance(0.1)
    assert push.seen()[-1] == ("4", "1")


# -- rule 7: end and removal ------------------------------------------------------------------


async def test_server_side_end_sends_a_final_trigger_resent_until_a_refresh(start: Start) -> None:
    push: Push = await start(delay=15, attempts=3)
    await push.refresh(2)  # acknowledged position 2
    await push.settle()
    await push.chat.api("POST", f"/chats/{push.chat.chat_id}/end")  # the agent leaves: index 3
    await push.settle()
    assert push.seen_full() == [Seen("2", "0", False), Seen("3", "0", True)]
    sub = await push.subscription()
    assert sub["outstandingTrigger"] == {
        "notifyPosition": 3,
        "notifyAttempt": 0,
        "chatEnded": True,
        "held": False,
    }
    await push.advance(15)
    await push.advance(15)
    assert push.seen_full()[2:] == [Seen("3", "1", True), Seen("3", "2", True)]

    reply = await push.refresh(3)  # an ended chat stays readable
    assert reply["chatEnded"] is True
    assert [(e["index"], e["type"]) for e in reply["messages"]] == [(3, "ParticipantLeft")]
    await push.settle()
    sub = await push.subscription()
    assert sub["status"] == "done" and sub["outstandingTrigger"] is None
    await push.advance(600)
    assert len(push.seen()) == 4


async def test_end_replaces_the_outstanding_trigger(start: Start) -> None:
    push: Push = await start(delay=15, attempts=3)
    await push.advance(15)
    assert push.seen() == [("2", "0"), ("2", "1")]
    await push.advance(5)
    await push.chat.api("POST", f"/chats/{push.chat.chat_id}/end")
    await push.settle()
    # Nothing was retrieved since index 1: the final trigger points at 2, attempt 0 again,
    # and its own timetable starts now (the old one, due in 10 s, is gone).
    assert push.seen_full()[2:] == [Seen("2", "0", True)]
    await push.advance(10)
    assert len(push.seen()) == 3
    await push.advance(5)
    assert push.seen_full()[3:] == [Seen("2", "1", True)]


async def test_final_trigger_acknowledged_by_a_refresh_that_returns_nothing_new(
    start: Start,
) -> None:
    push: Push = await start(delay=15, attempts=3, agent=False)
    # No agent ever joined: ending adds no event, so the final trigger points past the end.
    await push.chat.api("POST", f"/chats/{push.chat.chat_id}/end")
    await push.settle()
    assert push.seen_full() == [Seen("2", "0", True)]
    reply = await push.refresh(2)
    assert reply["messages"] == [] and reply["chatEnded"] is True
    await push.settle()
    assert (await push.subscription())["status"] == "done"
    await push.advance(600)
    assert len(push.seen()) == 1


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(0, id="position-0-returns-nothing"),
        pytest.param(3, id="reaches-the-end-but-with-a-gap"),
        pytest.param(9, id="beyond-the-end-returns-nothing"),
    ],
)
async def test_final_trigger_not_acknowledged_by_a_refresh_that_skips_events(
    start: Start, position: int
) -> None:
    push: Push = await start(delay=15, attempts=3)
    await push.agent_says("bye")  # index 3
    await push.chat.api("POST", f"/chats/{push.chat.chat_id}/end")  # index 4
    await push.settle()
    assert push.seen_full()[1:] == [Seen("2", "0", True)]
    # Index 2 was never retrieved: the customer has not seen everything, so the end is not
    # acknowledged, however far the reply reaches.
    await push.refresh(position)
    await push.settle()
    sub = await push.subscription()
    assert sub["outstandingTrigger"] == {
        "notifyPosition": 2,
        "notifyAttempt": 0,
        "chatEnded": True,
        "held": False,
    }
    await push.advance(15)
    assert push.seen_full()[2:] == [Seen("2", "1", True)]
    # Reading from the notify-position does acknowledge it.
    await push.refresh(2)
    await push.settle()
    assert (await push.subscription())["status"] == "done"
    await push.advance(600)
    assert len(push.seen()) == 3


async def test_final_trigger_exhausted_without_refresh(start: Start) -> None:
    push: Push = await start(delay=15, attempts=2)
    await push.refresh()
    await push.chat.api("POST", f"/chats/{push.chat.chat_id}/end")
    await push.settle()
    await push.advance(15)
    await push.advance(15)
    assert push.seen_full()[1:] == [
        Seen("3", "0", True),
        Seen("3", "1", True),
        Seen("3", "2", True),
    ]
    await push.advance(15)
    sub = await push.subscription()
    assert sub["outstandingTrigger"] is None and sub["nextResendAt"] is None
    assert sub["status"] == "failed"
    assert await push.metric("chatpush_resend_exhausted_total") == 1
    await push.advance(600)
    assert len(push.seen()) == 4


async def test_removing_the_customer_sends_minus_one_resent_until_a_refresh(start: Start) -> None:
    push: Push = await start(delay=15, attempts=3)
    await push.chat.api("DELETE", f"/chats/{push.chat.chat_id}/parties/1")
    await push.settle()
    assert push.seen_full() == [Seen("2", "0", False), Seen("-1", "0", True)]
    assert (await push.subscription())["outstandingTrigger"] == {
        "notifyPosition": -1,
        "notifyAttempt": 0,
        "chatEnded": True,
        "held": False,
    }
    await push.advance(15)
    assert push.seen_full()[2:] == [Seen("-1", "1", True)]
    reply = await push.refresh()
    assert reply["chatEnded"] is True
    await push.settle()
    assert (await push.subscription())["status"] == "done"
    await push.advance(600)
    assert len(push.seen()) == 3


async def test_customer_disconnect_without_notify_requestor_sends_no_final_trigger(
    start: Start,
) -> None:
    push: Push = await start(delay=15, attempts=3)
    assert push.seen() == [("2", "0")]
    await push.chat.op("disconnect")
    await push.settle()
    sub = await push.subscription()
    assert sub["status"] == "done" and sub["outstandingTrigger"] is None
    await push.advance(600)
    assert push.seen() == [("2", "0")]


async def test_customer_disconnect_with_notify_requestor_sends_a_final_trigger(
    start: Start,
) -> None:
    push: Push = await start(delay=15, attempts=3, notify_requestor=True, agent=False)
    assert push.seen() == []  # the customer's own join was in the reply that acknowledged it
    await push.chat.op("disconnect")  # ParticipantLeft: index 2
    await push.settle()
    # One trigger only: the final one (the ParticipantLeft's own trigger never left the batch).
    assert push.seen_full() == [Seen("2", "0", True)]
    await push.advance(15)
    assert push.seen_full()[1:] == [Seen("2", "1", True)]
    await push.refresh()
    await push.settle()
    assert (await push.subscription())["status"] == "done"
    await push.advance(600)
    assert len(push.seen()) == 2


# -- the GCTI_GMS_NotifyRequestor filter ------------------------------------------------------


async def test_customer_activity_is_not_notified_without_notify_requestor(start: Start) -> None:
    push: Push = await start(delay=15, attempts=3, agent=False)
    await push.chat.op("send", message="hello")
    await push.chat.op("startTyping")
    await push.chat.op("customNotice", message="notice")
    await push.chat.op("pushUrl", pushUrl="https://example.com/x")
    await push.settle()
    await push.advance(600)
    assert push.seen() == []
    sub = await push.subscription()
    assert sub["outstandingTrigger"] is None and sub["status"] == "active"
    # The agent's events still are.
    await push.chat.agent_joins()
    await push.settle()
    assert push.seen() == [("2", "0")]


async def test_customer_activity_is_notified_with_notify_requestor(start: Start) -> None:
    push: Push = await start(delay=15, attempts=3, notify_requestor=True, agent=False)
    # send with transcriptPosition returns its own message: acknowledged before it was ever sent.
    reply = await push.chat.op("send", message="seen at once", transcriptPosition="2")
    assert [event["index"] for event in reply["messages"]] == [2]
    await push.settle()
    assert push.seen() == []
    # send without it returns nothing: a trigger for index 3.
    await push.chat.op("send", message="hello")
    await push.settle()
    assert push.seen() == [("3", "0")]
    await push.advance(15)
    assert push.seen() == [("3", "0"), ("3", "1")]


# -- failed deliveries do not move the timetable -----------------------------------------------


async def test_receiver_errors_are_recorded_and_the_timetable_goes_on(
    start: Start, receiver: Receiver
) -> None:
    receiver.mode = "error"
    push: Push = await start(delay=15, attempts=3)
    assert push.seen() == [("2", "0")]  # it arrived, and was answered 500
    sub = await push.subscription()
    assert sub["nextResendAt"] == push.clock.now_ms() + 15_000
    await push.advance(14.9)
    assert push.seen() == [("2", "0")], "a failed delivery must not be retried early"
    await push.advance(0.1)
    assert push.seen() == [("2", "0"), ("2", "1")]
    receiver.mode = "ok"
    await push.advance(15)
    assert push.seen()[-1] == ("2", "2")
    trail = await push.deliveries()
    assert [(d["notifyAttempt"], d["outcome"], d["httpStatus"]) for d in trail] == [
        (0, "failed", 500),
        (1, "failed", 500),
        (2, "sent", 200),
    ]
    assert "500" in trail[0]["error"]
    await push.refresh()
    await push.advance(600)
    assert len(push.seen()) == 3


async def test_receiver_timeouts_are_recorded_and_the_timetable_goes_on(
    start: Start, receiver: Receiver
) -> None:
    receiver.mode = "hang"
    push: Push = await start(delay=15, attempts=1, delivery={"total_timeout_s": 0.3})
    assert push.seen() == [("2", "0")]
    await push.advance(14.9)
    assert len(push.seen()) == 1
    await push.advance(0.1)
    assert push.seen() == [("2", "0"), ("2", "1")]
    trail = await push.deliveries()
    assert [(d["notifyAttempt"], d["outcome"], d["httpStatus"]) for d in trail] == [
        (0, "failed", None),
        (1, "failed", None),
    ]
    assert all("timed out" in d["error"] for d in trail)
    await push.advance(15)
    assert (await push.subscription())["status"] == "failed"
    assert len(push.seen()) == 2
