"""``rules.Redriven``: an operator's redrive of a subscription, decided by ``rules.decide``."""

from __future__ import annotations

import pytest

from chatpush.push.rules import Policy, Redriven, State, Subscription, Trigger, decide

T0 = 1_700_000_000_000
POLICY = Policy(resend_delays_s=(15,), resend_attempts=3)


def reliable(state: State) -> Subscription:
    return Subscription(state, reliable=True, notify_requestor=False, include_payload=False)


def test_a_failed_subscription_with_unread_events_gets_a_fresh_trigger() -> None:
    failed = State(status="failed", ack_position=3, notifiable_last=7)
    decision = decide(reliable(failed), [Redriven(chat_ended=False)], T0, POLICY)
    assert decision.state.status == "active"
    assert decision.trigger == Trigger(position=4, attempt=0, final=False, held=True)
    assert decision.state.outstanding == Trigger(position=4, attempt=0, held=False)
    assert decision.state.wake_at_ms == T0 + 15_000
    assert decision.unpark and decision.drop_unsent_triggers


def test_a_failed_subscription_of_an_ended_chat_gets_a_final_trigger() -> None:
    failed = State(status="failed", ack_position=5, notifiable_last=5)
    decision = decide(reliable(failed), [Redriven(chat_ended=True)], T0, POLICY)
    assert decision.state.status == "active"
    assert decision.trigger == Trigger(position=6, attempt=0, final=True)


def test_a_failed_subscription_with_nothing_unread_becomes_active_without_a_trigger() -> None:
    failed = State(status="failed", ack_position=5, notifiable_last=5)
    decision = decide(reliable(failed), [Redriven(chat_ended=False)], T0, POLICY)
    assert decision.state == State(status="active", ack_position=5, notifiable_last=5)
    assert decision.trigger is None


@pytest.mark.parametrize(
    "state",
    [
        State(
            status="active",
            ack_position=1,
            notifiable_last=4,
            outstanding=Trigger(2, 1, held=False),
            wake_at_ms=T0 + 9,
        ),
        State(status="done", ack_position=4, notifiable_last=4),
        State(status="rejected"),
    ],
)
def test_any_other_subscription_is_left_as_it_is(state: State) -> None:
    decision = decide(reliable(state), [Redriven(chat_ended=False)], T0, POLICY)
    assert decision.state == state and decision.trigger is None
