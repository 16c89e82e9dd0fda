"""``rules.decide``: what a transaction's facts mean for a subscription, and what the store must do.

tests/unit/test_rules.py checks the reliable rules one ``step`` at a time; these check what
``decide`` adds around them, each rule that used to live in the pipeline, the store or the chat
service: the NotifyRequestor filter, the customer's own disconnect, the acknowledgement of a reply
(and of an empty one), supersede, unpark, timer disarm, the foreground in both modes, dead tokens.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from chatpush.push.rules import (
    ChatGone,
    Decision,
    Ended,
    Event,
    EventsAppended,
    Fact,
    Foreground,
    Policy,
    State,
    Subscription,
    TimerFired,
    TokenRejected,
    TranscriptRead,
    Trigger,
    decide,
    timed_out,
)

T0 = 1_700_000_000_000
S = 1000
POLICY = Policy(resend_delays_s=(15,), resend_attempts=3)
AGENT, CUSTOMER = False, True


def reliable(state: State, *, notify_requestor: bool = False) -> Subscription:
    return Subscription(
        state, reliable=True, notify_requestor=notify_requestor, include_payload=False
    )


def unreliable(
    state: State, *, notify_requestor: bool = False, payload: bool = False
) -> Subscription:
    return Subscription(
        state, reliable=False, notify_requestor=notify_requestor, include_payload=payload
    )


def events(*by: tuple[int, bool]) -> EventsAppended:
    return EventsAppended(tuple(Event(index, by_customer) for index, by_customer in by))


def read(first: int | None, last: int | None, asked_from: int, last_index: int) -> TranscriptRead:
    return TranscriptRead(first, last, asked_from, last_index)


def sent_trigger(position: int, attempt: int = 0, *, wake: int, final: bool = False) -> State:
    """Acknowledged up to ``position - 1``, with that trigger sent."""
    return State(
        ack_position=position - 1,
        notifiable_last=position,
        outstanding=Trigger(position, attempt, final=final, held=False),
        wake_at_ms=wake,
    )


IDLE = State(ack_position=1, notifiable_last=1)


# -- the NotifyRequestor filter ------------------------------------------------------------------


def test_the_customers_own_events_are_not_notified_without_notify_requestor() -> None:
    decision = decide(reliable(IDLE), [events((2, CUSTOMER), (3, CUSTOMER))], T0, POLICY)
    assert decision.trigger is None and decision.state.notifiable_last == 1
    # Among mixed events, the trigger points at the first unretrieved one; the notifiable last
    # is the agent's.
    decision = decide(reliable(IDLE), [events((2, CUSTOMER), (3, AGENT))], T0, POLICY)
    assert decision.trigger == Trigger(2, 0)
    assert decision.state.notifiable_last == 3


def test_with_notify_requestor_the_customers_own_events_are_notified() -> None:
    subscription = reliable(IDLE, notify_requestor=True)
    decision = decide(subscription, [events((2, CUSTOMER))], T0, POLICY)
    assert decision.trigger == Trigger(2, 0)


def test_the_filter_applies_without_push_resend_too() -> None:
    facts: list[Fact] = [events((2, CUSTOMER), (3, AGENT), (4, CUSTOMER))]
    assert decide(unreliable(IDLE), facts, T0, None).notify_events == (3,)
    with_requestor = unreliable(IDLE, notify_requestor=True)
    assert decide(with_requestor, facts, T0, None).notify_events == (2, 3, 4)


# -- the end of the chat -------------------------------------------------------------------------


def test_the_customers_own_disconnect_without_notify_requestor_sends_no_final_trigger() -> None:
    before = sent_trigger(2, wake=T0 + 10 * S)
    facts: list[Fact] = [events((2, CUSTOMER)), Ended(customer_removed=False, by_customer=True)]
    decision = decide(reliable(before), facts, T0, POLICY)
    assert decision.state.status == "done" and decision.trigger is None
    assert decision.state.wake_at_ms is None
    assert decision.drop_unsent_triggers  # the copy of trigger 2 not yet sent goes too


def test_the_customers_own_disconnect_with_notify_requestor_sends_a_final_trigger() -> None:
    facts: list[Fact] = [Ended(customer_removed=False, by_customer=True)]
    decision = decide(reliable(IDLE, notify_requestor=True), facts, T0, POLICY)
    assert decision.trigger == Trigger(2, 0, final=True)


def test_the_agent_ending_or_removing_the_customer_always_sends_a_final_trigger() -> None:
    ended = decide(reliable(IDLE), [Ended(customer_removed=False, by_customer=False)], T0, POLICY)
    assert ended.trigger == Trigger(2, 0, final=True)
    removed = decide(reliable(IDLE), [Ended(customer_removed=True, by_customer=False)], T0, POLICY)
    assert removed.trigger == Trigger(-1, 0, final=True)


# -- the acknowledgement of a reply --------------------------------------------------------------


def test_a_reply_that_reaches_the_end_acknowledges_the_final_trigger() -> None:
    before = sent_trigger(5, wake=T0 + 10 * S, final=True)
    decision = decide(reliable(before), [read(5, 5, 5, last_index=5)], T0, POLICY)
    assert decision.state.status == "done" and decision.acknowledged == 1


def test_a_reply_that_stops_short_of_the_end_does_not_acknowledge_the_final_trigger() -> None:
    before = sent_trigger(5, wake=T0 + 10 * S, final=True)
    decision = decide(reliable(before), [read(5, 5, 5, last_index=6)], T0, POLICY)
    assert decision.state.outstanding == before.outstanding and decision.acknowledged == 0


def test_an_empty_reply_from_beyond_the_end_proves_nothing() -> None:
    # The client asks from position 9 of a chat whose last event is 5, having acknowledged 4:
    # "nothing new" is no proof it read event 5.
    before = sent_trigger(5, wake=T0 + 10 * S, final=True)
    decision = decide(reliable(before), [read(None, None, 9, last_index=5)], T0, POLICY)
    assert decision.state.outstanding == before.outstanding and decision.acknowledged == 0


def test_an_empty_reply_acknowledges_the_final_trigger_when_everything_was_retrieved() -> None:
    before = replace(sent_trigger(6, wake=T0 + 10 * S, final=True), ack_position=5)
    decision = decide(reliable(before), [read(None, None, 6, last_index=5)], T0, POLICY)
    assert decision.state.status == "done" and decision.acknowledged == 1


def test_the_acknowledged_position_is_read_after_the_facts_before_it() -> None:
    # Within one transaction a reply returns events 2..3, then an empty reply from 4: the second
    # is up to date because the first acknowledged everything.
    before = sent_trigger(4, wake=T0 + 10 * S, final=True)
    before = replace(before, ack_position=1)
    facts: list[Fact] = [read(2, 3, 2, last_index=3), read(None, None, 4, last_index=3)]
    decision = decide(reliable(before), facts, T0, POLICY)
    assert decision.state.status == "done"


# -- supersede and unpark ------------------------------------------------------------------------


def test_an_acknowledged_trigger_drops_its_unsent_copies() -> None:
    before = sent_trigger(2, wake=T0 + 10 * S)
    decision = decide(reliable(before), [read(2, 2, 2, last_index=2)], T0, POLICY)
    assert decision.trigger is None and decision.drop_unsent_triggers


def test_a_new_trigger_drops_the_unsent_copies_of_the_old_one() -> None:
    before = sent_trigger(2, wake=T0)
    decision = decide(reliable(before), [TimerFired()], T0, POLICY)
    assert decision.trigger == Trigger(2, 1) and decision.drop_unsent_triggers
    assert decision.resent == 1


def test_nothing_is_dropped_while_the_trigger_stays_outstanding() -> None:
    before = sent_trigger(2, wake=T0 + 10 * S)
    decision = decide(reliable(before), [events((3, AGENT))], T0, POLICY)
    assert decision.trigger is None and not decision.drop_unsent_triggers


def test_activity_unparks_and_the_timer_or_the_foreground_do_not() -> None:
    for fact in (events((2, CUSTOMER)), read(None, None, 2, 1), Ended(False, by_customer=True)):
        assert decide(reliable(IDLE), [fact], T0, POLICY).unpark, fact
        assert decide(unreliable(IDLE), [fact], T0, None).unpark, fact
    for quiet in (TimerFired(), Foreground(T0 + 30 * S), Foreground(None)):
        assert not decide(reliable(IDLE), [quiet], T0, POLICY).unpark, quiet
        assert not decide(unreliable(IDLE), [quiet], T0, None).unpark, quiet


# -- timers --------------------------------------------------------------------------------------


def test_the_timer_of_an_ended_subscription_is_disarmed() -> None:
    for status in ("done", "rejected"):
        before = State(status=status, wake_at_ms=T0)  # type: ignore[arg-type]
        decision = decide(reliable(before), [TimerFired()], T0, POLICY)
        assert decision == Decision(replace(before, wake_at_ms=None))


def test_without_push_resend_a_timer_is_disarmed_and_nothing_is_resent() -> None:
    decision = decide(unreliable(replace(IDLE, wake_at_ms=T0)), [TimerFired()], T0, None)
    assert decision == Decision(IDLE, with_payload=False)


def test_the_timer_of_a_subscription_whose_chat_is_gone_is_disarmed() -> None:
    before = sent_trigger(2, wake=T0)
    decision = decide(reliable(before), [ChatGone()], T0, None)
    assert decision == Decision(replace(before, wake_at_ms=None))


def test_exhaustion_is_reported() -> None:
    before = sent_trigger(2, attempt=3, wake=T0)
    decision = decide(reliable(before), [TimerFired()], T0, POLICY)
    assert decision.exhausted and decision.state.status == "failed"
    assert decision.drop_unsent_triggers


# -- the foreground ------------------------------------------------------------------------------


def test_without_push_resend_nothing_is_sent_in_the_foreground() -> None:
    facts: list[Fact] = [Foreground(T0 + 30 * S), events((2, AGENT))]
    decision = decide(unreliable(IDLE), facts, T0, None)
    assert decision.notify_events == () and decision.state.foreground_until_ms == T0 + 30 * S
    later = decide(unreliable(decision.state), [events((3, AGENT))], T0 + 31 * S, None)
    assert later.notify_events == (3,)


def test_without_push_resend_leaving_the_foreground_lets_events_go() -> None:
    before = replace(IDLE, foreground_until_ms=T0 + 30 * S)
    decision = decide(
        unreliable(before, payload=True), [Foreground(None), events((2, AGENT))], T0, None
    )
    assert decision.notify_events == (2,) and decision.with_payload


def test_a_renewed_foreground_lease_holds_the_pending_trigger_to_its_new_end() -> None:
    held = decide(reliable(IDLE), [Foreground(T0 + 30 * S), events((2, AGENT))], T0, POLICY)
    assert held.trigger is None and held.state.wake_at_ms == T0 + 30 * S
    renewed = decide(reliable(held.state), [Foreground(T0 + 60 * S)], T0 + 20 * S, POLICY)
    assert renewed.trigger is None and renewed.state.wake_at_ms == T0 + 60 * S


# -- dead tokens ---------------------------------------------------------------------------------


def test_a_dead_token_ends_the_subscription_and_drops_what_waits_for_it() -> None:
    before = sent_trigger(2, wake=T0 + 10 * S)
    for subscription in (reliable(before), unreliable(IDLE)):
        decision = decide(subscription, [TokenRejected()], T0, None)
        assert decision.state.status == "rejected"
        assert decision.state.outstanding is None and decision.state.wake_at_ms is None
        assert decision.drop_outbox and decision.trigger is None


def test_a_dead_token_leaves_an_ended_subscription_as_it_is() -> None:
    done = State(status="done", ack_position=3)
    assert decide(reliable(done), [TokenRejected()], T0, None) == Decision(done)


# -- flex-push-timeout ---------------------------------------------------------------------------


def test_flex_push_timeout() -> None:
    assert not timed_out(T0, T0 + 59_999, 60)
    assert timed_out(T0, T0 + 60_000, 60)


# -- properties ----------------------------------------------------------------------------------

FACTS = st.lists(
    st.one_of(
        st.builds(lambda i, c: events((i, c)), st.integers(1, 20), st.booleans()),
        st.builds(
            lambda first, n, end: read(first, first + n, first, end),
            st.integers(1, 20),
            st.integers(0, 3),
            st.integers(0, 25),
        ),
        st.builds(read, st.none(), st.none(), st.integers(1, 25), st.integers(0, 25)),
        st.builds(Ended, st.booleans(), st.booleans()),
        st.just(TimerFired()),
        st.builds(Foreground, st.one_of(st.none(), st.integers(T0 - 60 * S, T0 + 60 * S))),
    ),
    max_size=6,
)
STATES = st.builds(
    State,
    status=st.sampled_from(["active", "failed", "done", "rejected"]),
    ack_position=st.integers(0, 10),
    notifiable_last=st.integers(0, 10),
    outstanding=st.one_of(
        st.none(),
        st.builds(Trigger, st.integers(-1, 11), st.integers(0, 3), st.booleans(), st.booleans()),
    ),
    wake_at_ms=st.one_of(st.none(), st.integers(T0 - 60 * S, T0 + 60 * S)),
    foreground_until_ms=st.one_of(st.none(), st.integers(T0 - 60 * S, T0 + 60 * S)),
)


@given(STATES, FACTS, st.booleans(), st.booleans())
def test_decisions_are_consistent(
    state: State, facts: list[Fact], is_reliable: bool, notify_requestor: bool
) -> None:
    subscription = Subscription(state, is_reliable, notify_requestor, include_payload=False)
    decision = decide(subscription, facts, T0, POLICY)
    after = decision.state
    if state.status in ("done", "rejected"):
        # An ended subscription only loses its timer.
        assert decision == Decision(replace(state, wake_at_ms=None))
        return
    if after.in_foreground(T0):
        assert decision.trigger is None and decision.notify_events == ()
    if decision.trigger is not None:
        # Handed to the outbox: recorded as sent, superseding any unsent copy.
        assert after.outstanding == replace(decision.trigger, held=False)
        assert decision.drop_unsent_triggers
    if not is_reliable:
        assert decision.trigger is None and decision.acknowledged == decision.resent == 0
        assert after.wake_at_ms == (None if TimerFired() in facts else state.wake_at_ms)
    else:
        assert decision.notify_events == ()
    assert not decision.drop_outbox


@given(STATES, FACTS)
def test_the_order_of_facts_is_that_of_the_transaction(state: State, facts: list[Fact]) -> None:
    """Deciding facts at once equals deciding them one transaction at a time, as far as the
    state goes, when nothing is sent in between (in the foreground, say)."""
    subscription = reliable(replace(state, status="active", foreground_until_ms=T0 + 120 * S))
    quiet = [fact for fact in facts if not isinstance(fact, Foreground)]
    at_once = decide(subscription, quiet, T0, POLICY).state
    one_by_one = subscription.state
    for fact in quiet:
        one_by_one = decide(replace(subscription, state=one_by_one), [fact], T0, POLICY).state
    assert at_once == one_by_one
