"""CONTRACT §8 as a pure function: every rule of chatpush.push.rules, with a fake ``now``.

Each case is a state, a list of (input, now) steps, and what the state must be afterwards. The
helpers below name the states so that a table row reads like the rule it checks.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from chatpush.push.rules import (
    REMOVED_POSITION,
    ChatEnded,
    EventsAdded,
    Foreground,
    Input,
    Outcome,
    Policy,
    Retrieved,
    State,
    Status,
    Step,
    TimerFired,
    Trigger,
    sent,
    step,
)

T0 = 1_700_000_000_000
S = 1000  # one second in ms
POLICY = Policy(resend_delays_s=(15,), resend_attempts=3)


def run(
    state: State, steps: list[tuple[Input, int]], policy: Policy = POLICY
) -> tuple[State, list[Outcome]]:
    """Feed ``steps`` (input, now_ms) through ``step`` as the pipeline does within one batch."""
    outcomes = []
    for item, now_ms in steps:
        decision = step(state, item, now_ms, policy)
        assert isinstance(decision, Step)
        state = decision.state
        outcomes.append(decision.outcome)
    return state, outcomes


def waiting(
    position: int,
    attempt: int = 0,
    *,
    ack: int,
    notifiable: int,
    wake: int,
    final: bool = False,
    held: bool = False,
) -> State:
    """An active subscription with a trigger outstanding."""
    return State(
        status="active",
        ack_position=ack,
        notifiable_last=notifiable,
        outstanding=Trigger(position, attempt, final=final, held=held),
        wake_at_ms=wake,
    )


def idle(ack: int, notifiable: int, status: Status = "active") -> State:
    return State(status=status, ack_position=ack, notifiable_last=notifiable)


def retrieved(first: int, last: int, up_to_date: bool = False) -> Retrieved:
    return Retrieved(first=first, last=last, up_to_date=up_to_date)


# -- rule 1: retrieval ---------------------------------------------------------------------------

RETRIEVALS = [
    # (ack before, returned first..last, ack after)
    pytest.param(0, (1, 1), 1, id="request-chat-reply-acks-index-1"),
    pytest.param(1, (2, 5), 5, id="contiguous-range-advances-to-last"),
    pytest.param(3, (1, 7), 7, id="overlapping-range-advances-to-last"),
    pytest.param(3, (4, 4), 4, id="exactly-ack-plus-one"),
    pytest.param(3, (5, 7), 3, id="gap-does-not-advance"),
    pytest.param(3, (9, 9), 3, id="far-gap-does-not-advance"),
    pytest.param(6, (1, 4), 6, id="older-range-never-moves-ack-back"),
    pytest.param(6, (0, 0), 6, id="no-events-acknowledge-nothing"),
]


@pytest.mark.parametrize(("ack", "returned", "expected"), RETRIEVALS)
def test_retrieval_advances_ack_only_without_a_gap(
    ack: int, returned: tuple[int, int], expected: int
) -> None:
    state, [outcome] = run(idle(ack, notifiable=ack), [(retrieved(*returned), T0)])
    assert state == idle(expected, notifiable=ack)
    assert outcome == Outcome()


def test_retrieval_with_a_gap_does_not_acknowledge_the_outstanding_trigger() -> None:
    before = waiting(4, 1, ack=3, notifiable=6, wake=T0 + 15 * S)
    state, [outcome] = run(before, [(retrieved(5, 6), T0)])
    assert state == before
    assert not outcome.acknowledged


# -- rule 2: first trigger -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ack", "notifiable_last", "delays", "wake_after_s"),
    [
        pytest.param(1, 2, (15,), 15, id="one-event"),
        pytest.param(1, 5, (15,), 15, id="many-events-point-at-the-first-unretrieved"),
        pytest.param(3, 9, (5, 15, 60), 5, id="comma-list-first-delay"),
        pytest.param(0, 1, (7,), 7, id="nothing-retrieved-yet"),
    ],
)
def test_first_trigger_points_at_ack_plus_one_with_attempt_0(
    ack: int, notifiable_last: int, delays: tuple[int, ...], wake_after_s: int
) -> None:
    policy = Policy(delays, 3)
    state, [outcome] = run(idle(ack, ack), [(EventsAdded(notifiable_last), T0)], policy)
    assert state == waiting(
        ack + 1, 0, ack=ack, notifiable=notifiable_last, wake=T0 + wake_after_s * S, held=True
    )
    assert outcome == Outcome()
    state, trigger = sent(state, T0)
    assert trigger == Trigger(ack + 1, 0, held=True)
    assert state.outstanding == Trigger(ack + 1, 0, held=False)


@pytest.mark.parametrize(
    "notifiable_last",
    [
        pytest.param(0, id="no-notifiable-event-in-the-batch"),
        pytest.param(4, id="event-already-retrieved"),
        pytest.param(3, id="event-not-above-what-is-known"),
    ],
)
def test_no_trigger_without_an_unretrieved_notifiable_event(notifiable_last: int) -> None:
    before = idle(ack=4, notifiable=3)
    state, _ = run(before, [(EventsAdded(notifiable_last), T0)])
    assert state.outstanding is None and state.wake_at_ms is None
    assert sent(state, T0) == (state, None)


# -- rule 3: while outstanding -------------------------------------------------------------------


def test_events_while_outstanding_send_nothing_new_and_keep_the_timer() -> None:
    before = waiting(4, 1, ack=3, notifiable=4, wake=T0 + 15 * S)
    state, outcomes = run(before, [(EventsAdded(5), T0 + 2 * S), (EventsAdded(6), T0 + 9 * S)])
    assert state == replace(before, notifiable_last=6)
    assert outcomes == [Outcome(), Outcome()]
    assert sent(state, T0)[1] is None


# -- rule 4: acknowledgement ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returned", "notifiable_last"),
    [
        pytest.param((4, 4), 4, id="exactly-notify-position"),
        pytest.param((1, 6), 6, id="range-covering-everything"),
        pytest.param((4, 9), 6, id="beyond-the-notifiable-events"),
    ],
)
def test_trigger_acknowledged_when_ack_reaches_notify_position(
    returned: tuple[int, int], notifiable_last: int
) -> None:
    before = waiting(4, 2, ack=3, notifiable=notifiable_last, wake=T0 + 45 * S)
    state, [outcome] = run(before, [(retrieved(*returned), T0 + 50 * S)])
    assert state == idle(returned[1], notifiable_last)
    assert outcome == Outcome(acknowledged=True)


def test_older_range_is_not_an_acknowledgement() -> None:
    # The trigger points at ack + 1; a reply that ends at or below ack leaves it outstanding.
    before = waiting(4, 0, ack=3, notifiable=6, wake=T0 + 15 * S)
    state, [outcome] = run(before, [(retrieved(1, 3), T0)])
    assert state == before
    assert not outcome.acknowledged


def test_fresh_trigger_at_once_when_notifiable_events_remain_after_the_ack() -> None:
    before = waiting(4, 2, ack=3, notifiable=8, wake=T0 + 45 * S)
    now = T0 + 50 * S
    state, [outcome] = run(before, [(retrieved(4, 6), now)])
    assert outcome == Outcome(acknowledged=True)
    assert state == waiting(7, 0, ack=6, notifiable=8, wake=now + 15 * S, held=True)
    assert sent(state, T0)[1] == Trigger(7, 0)


# -- rule 5: resend and exhaustion ---------------------------------------------------------------

TIMETABLES = [
    # (delays, attempts, resend times after the first send in s, exhaustion time in s)
    pytest.param((15,), 3, [15, 30, 45], 60, id="integer-15-x3"),
    pytest.param((15,), 1, [15], 30, id="integer-15-x1"),
    pytest.param((5, 15, 60), 3, [5, 20, 80], 140, id="list-last-repeats-for-exhaustion"),
    pytest.param((5, 15, 60), 5, [5, 20, 80, 140, 200], 260, id="list-last-repeats"),
    pytest.param((2, 4), 2, [2, 6], 10, id="list-exactly-as-long"),
    pytest.param((10,), 0, [], 10, id="attempts-0-never-resends"),
]


@pytest.mark.parametrize(("delays", "attempts", "resends_s", "exhausted_s"), TIMETABLES)
def test_resend_timetable_and_exhaustion(
    delays: tuple[int, ...], attempts: int, resends_s: list[int], exhausted_s: int
) -> None:
    policy = Policy(delays, attempts)
    state, _ = run(idle(1, 1), [(EventsAdded(3), T0)], policy)
    state, first = sent(state, T0)
    assert first == Trigger(2, 0)
    handed_out = []
    due_times = [*resends_s, exhausted_s]
    previous = 0
    for number, due_s in enumerate(due_times, start=1):
        # One millisecond early: nothing happens at all.
        early, [outcome] = run(state, [(TimerFired(), T0 + due_s * S - 1)], policy)
        assert early == state and outcome == Outcome()
        assert state.wake_at_ms == T0 + due_s * S
        state, [outcome] = run(state, [(TimerFired(), T0 + due_s * S)], policy)
        if number <= attempts:
            assert outcome == Outcome(resent=True)
            state, trigger = sent(state, T0)
            assert trigger is not None
            handed_out.append((trigger.position, trigger.attempt))
            assert state.status == "active"
        else:
            assert outcome == Outcome(exhausted=True)
        assert due_s > previous
        previous = due_s
    assert handed_out == [(2, attempt) for attempt in range(1, attempts + 1)]
    assert state == idle(1, 3, status="failed")
    assert sent(state, T0)[1] is None
    # A failed subscription stays quiet: the timer has nothing left to fire.
    later, [outcome] = run(state, [(TimerFired(), T0 + 10_000 * S)], policy)
    assert later == state and outcome == Outcome()


def test_timer_without_outstanding_trigger_does_nothing() -> None:
    state, [outcome] = run(idle(3, 3), [(TimerFired(), T0)])
    assert state == idle(3, 3) and outcome == Outcome()


def test_resend_waits_from_when_it_fired_not_from_when_it_was_due() -> None:
    # A late wake-up (the dispatcher was busy) does not squeeze the next wait.
    before = waiting(2, 0, ack=1, notifiable=2, wake=T0 + 15 * S)
    state, [outcome] = run(before, [(TimerFired(), T0 + 17 * S)])
    assert outcome.resent
    assert state.wake_at_ms == T0 + 32 * S


@pytest.mark.parametrize(
    ("ack", "new_last", "position"),
    [
        pytest.param(1, 4, 2, id="nothing-retrieved-since"),
        pytest.param(1, 9, 2, id="points-at-first-unretrieved-not-the-new-event"),
    ],
)
def test_next_notifiable_event_after_failure_restarts_at_rule_2(
    ack: int, new_last: int, position: int
) -> None:
    failed = idle(ack, 3, status="failed")
    state, _ = run(failed, [(EventsAdded(new_last), T0)])
    assert state == waiting(position, 0, ack=ack, notifiable=new_last, wake=T0 + 15 * S, held=True)
    assert state.status == "active"


def test_failed_subscription_ignores_non_notifiable_batches_and_retrievals_only_move_ack() -> None:
    failed = idle(1, 3, status="failed")
    state, _ = run(failed, [(EventsAdded(0), T0), (retrieved(2, 3), T0)])
    assert state == idle(3, 3, status="failed")
    # After the refresh nothing is unretrieved; the next notifiable event points past it.
    state, _ = run(state, [(EventsAdded(4), T0 + S)])
    assert state == waiting(4, 0, ack=3, notifiable=4, wake=T0 + 16 * S, held=True)


# -- rule 7: end and removal ---------------------------------------------------------------------

END_CASES = [
    # (state before, ChatEnded, expected final position)
    pytest.param(
        waiting(4, 2, ack=3, notifiable=5, wake=T0 + 5 * S),
        ChatEnded(customer_removed=False, notify=True),
        4,
        id="replaces-outstanding-at-ack-plus-one",
    ),
    pytest.param(
        idle(6, 6), ChatEnded(customer_removed=False, notify=True), 7, id="nothing-outstanding"
    ),
    pytest.param(
        idle(2, 5, status="failed"),
        ChatEnded(customer_removed=False, notify=True),
        3,
        id="after-failure",
    ),
    pytest.param(
        waiting(4, 1, ack=3, notifiable=5, wake=T0 + 5 * S),
        ChatEnded(customer_removed=True, notify=True),
        -1,
        id="customer-removed",
    ),
]


@pytest.mark.parametrize(("before", "end", "position"), END_CASES)
def test_end_of_chat_sends_a_final_trigger(before: State, end: ChatEnded, position: int) -> None:
    now = T0 + 3 * S
    state, _ = run(before, [(end, now)])
    assert state.status == "active"
    assert state.outstanding == Trigger(position, 0, final=True, held=True)
    assert state.wake_at_ms == now + 15 * S
    assert state.ack_position == before.ack_position


def test_final_trigger_replaces_the_trigger_made_in_the_same_batch() -> None:
    # end_chat: the agents' ParticipantLeft events, then the end, in one transaction.
    state, _ = run(
        idle(3, 3),
        [(EventsAdded(5), T0), (ChatEnded(customer_removed=False, notify=True), T0)],
    )
    state, trigger = sent(state, T0)
    assert trigger == Trigger(4, 0, final=True)
    assert sent(state, T0)[1] is None


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(waiting(4, 1, ack=3, notifiable=5, wake=T0 + 5 * S), id="outstanding"),
        pytest.param(idle(3, 3), id="idle"),
    ],
)
def test_no_final_trigger_when_the_end_is_not_notified(before: State) -> None:
    state, _ = run(before, [(EventsAdded(6), T0), (ChatEnded(False, notify=False), T0)])
    assert state.status == "done"
    assert state.outstanding is None and state.wake_at_ms is None
    assert sent(state, T0)[1] is None


@pytest.mark.parametrize("position", [5, REMOVED_POSITION])
def test_final_trigger_acknowledged_only_by_an_up_to_date_retrieval(position: int) -> None:
    final = waiting(position, 1, ack=4, notifiable=7, wake=T0 + 30 * S, final=True)
    # ack reaches the notify-position, but the reply stopped short of the end: not acknowledged.
    state, [outcome] = run(final, [(retrieved(5, 6, up_to_date=False), T0)])
    assert state == replace(final, ack_position=6)
    assert not outcome.acknowledged
    # Reaches the end, but from beyond the acknowledged position: indexes 5..6 were skipped.
    skipped, [outcome] = run(final, [(retrieved(7, 7, up_to_date=True), T0)])
    assert skipped == final and not outcome.acknowledged
    # Returns nothing: acknowledges nothing (a position-0 reply is not even reported).
    state2, [outcome] = run(final, [(retrieved(0, 0, up_to_date=False), T0)])
    assert state2 == final and not outcome.acknowledged
    # Up to date: the subscription is done.
    state, [outcome] = run(state, [(retrieved(7, 7, up_to_date=True), T0)])
    assert outcome == Outcome(acknowledged=True)
    assert state == State(status="done", ack_position=7, notifiable_last=7)


def test_final_trigger_is_resent_like_any_other() -> None:
    final = waiting(5, 0, ack=4, notifiable=5, wake=T0 + 15 * S, final=True)
    state, [outcome] = run(final, [(TimerFired(), T0 + 15 * S)])
    assert outcome == Outcome(resent=True)
    assert sent(state, T0)[1] == Trigger(5, 1, final=True)
    assert state.wake_at_ms == T0 + 30 * S


def test_final_trigger_exhaustion_ends_the_subscription() -> None:
    final = waiting(5, 3, ack=4, notifiable=5, wake=T0 + 60 * S, final=True)
    state, [outcome] = run(final, [(TimerFired(), T0 + 60 * S)])
    assert outcome == Outcome(exhausted=True)
    assert state.outstanding is None and state.wake_at_ms is None
    assert state.status == "failed"


# -- done, and triggers that never leave the batch -----------------------------------------------

DONE = State(status="done", ack_position=4, notifiable_last=5)


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(EventsAdded(9), id="events"),
        pytest.param(retrieved(5, 9, up_to_date=True), id="retrieval"),
        pytest.param(TimerFired(), id="timer"),
        pytest.param(ChatEnded(customer_removed=False, notify=True), id="end"),
        pytest.param(ChatEnded(customer_removed=True, notify=True), id="removal"),
    ],
)
def test_done_ignores_everything(item: Input) -> None:
    state, [outcome] = run(DONE, [(item, T0 + 10_000 * S)])
    assert state == DONE and outcome == Outcome()
    assert sent(state, T0)[1] is None


def test_trigger_created_and_acknowledged_within_one_batch_is_never_sent() -> None:
    # Request Chat with NotifyRequestor: the customer's ParticipantJoined (index 1) is notifiable,
    # and the reply returns it in the same transaction.
    state, outcomes = run(State(), [(EventsAdded(1), T0), (retrieved(1, 1, up_to_date=True), T0)])
    assert outcomes[1] == Outcome(acknowledged=True)
    assert state == idle(1, 1)
    assert sent(state, T0) == (state, None)


def test_resend_acknowledged_in_the_same_batch_is_never_sent() -> None:
    before = waiting(2, 0, ack=1, notifiable=2, wake=T0)
    state, outcomes = run(before, [(TimerFired(), T0), (retrieved(2, 2), T0)])
    assert outcomes == [Outcome(resent=True), Outcome(acknowledged=True)]
    assert sent(state, T0)[1] is None


def test_a_sent_trigger_is_handed_out_once() -> None:
    state, _ = run(idle(1, 1), [(EventsAdded(2), T0)])
    state, first = sent(state, T0)
    assert first == Trigger(2, 0)
    again, second = sent(state, T0)
    assert second is None and again == state
    # A later event in another batch does not hand it out again (rule 3).
    state, _ = run(state, [(EventsAdded(3), T0 + S)])
    assert sent(state, T0)[1] is None


def test_policy_delay_for_each_resend() -> None:
    policy = Policy((5, 15, 60), 10)
    assert [policy.delay_ms(n) for n in range(1, 6)] == [5000, 15000, 60000, 60000, 60000]
    assert Policy((15,), 3).delay_ms(4) == 15000


# -- the client in the foreground (CometD, CONTRACT §10) --------------------------------------

LEASE = 30 * S


def test_in_the_foreground_a_trigger_is_decided_but_held_until_the_lease_ends() -> None:
    state, _ = run(idle(1, 1), [(Foreground(T0 + LEASE), T0), (EventsAdded(2), T0 + S)])
    assert state.outstanding == Trigger(2, 0, held=True)
    assert state.wake_at_ms == T0 + LEASE
    assert sent(state, T0 + S) == (state, None)
    # More events send nothing new either (rule 3), and the trigger still points at the first.
    state, _ = run(state, [(EventsAdded(3), T0 + 2 * S)])
    assert state.outstanding == Trigger(2, 0, held=True)


def test_going_to_background_sends_the_held_trigger_at_once() -> None:
    state, _ = run(idle(1, 1), [(Foreground(T0 + LEASE), T0), (EventsAdded(2), T0 + S)])
    state, _ = run(state, [(Foreground(None), T0 + 5 * S)])
    state, trigger = sent(state, T0 + 5 * S)
    assert trigger == Trigger(2, 0)
    assert state.wake_at_ms == T0 + 5 * S + POLICY.delay_ms(1)  # then its resend timetable
    assert state.foreground_until_ms is None


def test_background_with_a_position_acknowledges_what_the_client_saw_live() -> None:
    # Events 2 and 3 arrived live; the client reports position 3 (it holds 1..2) as it leaves.
    state, _ = run(idle(1, 1), [(Foreground(T0 + LEASE), T0), (EventsAdded(3), T0 + S)])
    state, outcomes = run(state, [(Foreground(None), T0 + 5 * S), (retrieved(1, 2), T0 + 5 * S)])
    assert outcomes[1] == Outcome(acknowledged=True)
    state, trigger = sent(state, T0 + 5 * S)
    assert trigger == Trigger(3, 0)  # only what it had not seen is notified
    # With everything seen, nothing is sent at all.
    state, _ = run(idle(1, 1), [(Foreground(T0 + LEASE), T0), (EventsAdded(3), T0 + S)])
    state, _ = run(state, [(Foreground(None), T0 + 5 * S), (retrieved(1, 3), T0 + 5 * S)])
    assert state.outstanding is None and sent(state, T0 + 5 * S)[1] is None


def test_a_renewed_lease_keeps_holding_and_a_lapsed_one_sends() -> None:
    state, _ = run(idle(1, 1), [(Foreground(T0 + LEASE), T0), (EventsAdded(2), T0 + S)])
    # The instance renewed the lease (a plain update of foreground_until_ms) before it ran out.
    state = replace(state, foreground_until_ms=T0 + 2 * LEASE)
    state, outcomes = run(state, [(TimerFired(), T0 + LEASE)])
    assert outcomes == [Outcome()] and state.wake_at_ms == T0 + 2 * LEASE
    assert sent(state, T0 + LEASE)[1] is None
    # No renewal since (the instance died): the trigger goes when the timer fires, as attempt 0.
    state, outcomes = run(state, [(TimerFired(), T0 + 2 * LEASE)])
    assert outcomes == [Outcome()]
    state, trigger = sent(state, T0 + 2 * LEASE)
    assert trigger == Trigger(2, 0)
    assert state.wake_at_ms == T0 + 2 * LEASE + POLICY.delay_ms(1)


def test_resends_of_a_trigger_sent_before_pause_in_the_foreground() -> None:
    before = waiting(2, 1, ack=1, notifiable=2, wake=T0 + 10 * S)
    state, _ = run(before, [(Foreground(T0 + LEASE), T0)])
    assert state.wake_at_ms == T0 + LEASE
    state, outcomes = run(state, [(TimerFired(), T0 + 10 * S)])
    assert outcomes == [Outcome()] and sent(state, T0 + 10 * S)[1] is None
    # Back in background: the resend comes on the timetable, as the next attempt.
    state, _ = run(state, [(Foreground(None), T0 + 20 * S)])
    assert state.wake_at_ms == T0 + 20 * S + POLICY.delay_ms(2)
    state, outcomes = run(state, [(TimerFired(), T0 + 35 * S)])
    assert outcomes == [Outcome(resent=True)]
    assert sent(state, T0 + 35 * S)[1] == Trigger(2, 2)


def test_the_end_of_the_chat_in_the_foreground_is_held_and_acknowledged_on_leaving() -> None:
    state, _ = run(idle(3, 3), [(Foreground(T0 + LEASE), T0)])
    state, _ = run(state, [(ChatEnded(customer_removed=False, notify=True), T0 + S)])
    assert state.outstanding == Trigger(4, 0, final=True, held=True)
    assert sent(state, T0 + S)[1] is None
    # The client saw the end live and leaves with its position past it: nothing is ever sent.
    state, outcomes = run(
        state, [(Foreground(None), T0 + 2 * S), (retrieved(1, 4, up_to_date=True), T0 + 2 * S)]
    )
    assert outcomes[1] == Outcome(acknowledged=True)
    assert state.status == "done" and sent(state, T0 + 2 * S)[1] is None


def test_leaving_a_foreground_that_held_nothing_changes_no_timer() -> None:
    before = waiting(2, 0, ack=1, notifiable=2, wake=T0 + 10 * S)
    state, _ = run(before, [(Foreground(None), T0)])
    assert state == before
