"""``rules.decide`` on send outcomes (docs/push.md, "Outcomes"), and reading ``Retry-After``."""

from __future__ import annotations

import email.utils

import pytest

from chatpush.providers.outbound import retry_after_seconds
from chatpush.push.rules import (
    Event,
    EventsAppended,
    Policy,
    SendDeferred,
    SendFailed,
    Sent,
    State,
    Subscription,
    Trigger,
    decide,
    deferral_ms,
    retry_after_ms,
)

T0 = 1_700_000_000_000
S = 1000
POLICY = Policy(resend_delays_s=(5,), resend_attempts=3)
SENT_AT_0 = State(
    ack_position=1,
    notifiable_last=2,
    outstanding=Trigger(position=2, attempt=0, held=False),
    wake_at_ms=T0 + 5 * S,
)
TRIGGER = Sent(2, 0)


def sub(state: State = SENT_AT_0, *, reliable: bool = True) -> Subscription:
    return Subscription(state, reliable=reliable, notify_requestor=False, include_payload=False)


@pytest.mark.parametrize("reliable", [True, False])
def test_a_permanent_failure_ends_the_series_and_the_next_event_starts_one(reliable: bool) -> None:
    decision = decide(sub(reliable=reliable), [SendFailed(TRIGGER, True)], T0, POLICY)
    assert decision.state.status == "failed" and decision.failed_permanently
    assert decision.state.outstanding is None and decision.state.wake_at_ms is None
    assert decision.drop_unsent_triggers and not decision.drop_outbox
    later = decide(
        sub(decision.state, reliable=reliable),
        [EventsAppended((Event(3, by_customer=False),))],
        T0 + 60 * S,
        POLICY,
    )
    assert later.state.status == "active"
    assert later.trigger is not None or later.notify_events == (3,)


def test_a_temporary_failure_moves_the_resend_to_retry_after_never_earlier() -> None:
    late = decide(sub(), [SendFailed(TRIGGER, False, 30 * S)], T0, POLICY)
    assert late.state.wake_at_ms == T0 + 30 * S and late.state.status == "active"
    early = decide(sub(), [SendFailed(TRIGGER, False, 1 * S)], T0, POLICY)
    assert early.state.wake_at_ms == T0 + 5 * S  # the timetable's own wait is longer
    plain = decide(sub(), [SendFailed(TRIGGER, False)], T0, POLICY)
    assert plain.state == SENT_AT_0


def test_an_outcome_of_a_trigger_no_longer_outstanding_moves_nothing() -> None:
    stale = decide(sub(), [SendFailed(Sent(2, 1), False, 60 * S)], T0, POLICY)
    assert stale.state == SENT_AT_0
    payload = decide(sub(), [SendDeferred(Sent(), T0 + 60 * S)], T0, POLICY)
    assert payload.state == SENT_AT_0


def test_a_deferral_is_not_an_attempt_the_timetable_counts_from_its_end() -> None:
    decision = decide(sub(), [SendDeferred(TRIGGER, T0 + 60 * S)], T0, POLICY)
    assert decision.state.outstanding == SENT_AT_0.outstanding  # attempt 0 still
    assert decision.state.wake_at_ms == T0 + 65 * S
    assert decision.resent == 0 and not decision.exhausted


def test_without_push_resend_temporary_outcomes_change_nothing() -> None:
    state = State(ack_position=1, notifiable_last=2)
    for fact in (SendFailed(Sent(), False, 30 * S), SendDeferred(Sent(), T0 + 60 * S)):
        assert decide(sub(state, reliable=False), [fact], T0, None).state == state


def test_retry_after_and_deferrals_are_bounded() -> None:
    assert retry_after_ms(None) is None and retry_after_ms(30) == 30_000
    assert retry_after_ms(10**9) == 3_600_000  # an hour at most
    assert deferral_ms(0) == 1_000 and deferral_ms(None) == 1_000  # never a busy loop
    assert deferral_ms(120) == 120_000


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now_s = T0 / 1000
    assert retry_after_seconds("30", now_s) == 30
    assert retry_after_seconds(email.utils.formatdate(now_s + 45, usegmt=True), now_s) == 45
    assert retry_after_seconds(email.utils.formatdate(now_s - 45, usegmt=True), now_s) == 0
    for unreadable in (None, "", "soon", "-5", "1.5e3", "Wed, 99 Foo 2026 00:00:00 GMT"):
        assert retry_after_seconds(unreadable, now_s) is None, unreadable
