"""Reliable delivery (docs/push.md) as a pure function: (subscription, facts, now) -> decision.

This module is the only place that decides what push does. Nothing here touches the database, the
network or the clock. Both callers do the same three things: the chat transaction (``flush``) and
the timer batch load the subscription, call :func:`decide` with what happened (the facts), and
persist exactly what the :class:`Decision` says: the new state, the trigger or the notifications
to enqueue, the unsent triggers to drop, the parked notifications to unpark, and what to report
after the commit. A trigger created and acknowledged within one transaction (a Request Chat whose
own reply covers the event) is never sent: only a trigger still ``held`` (not handed out) after
the last fact is.

The facts are what the transaction saw, unfiltered; :func:`decide` applies the choices made at
subscription: the NotifyRequestor filter (the customer's own events, and its own disconnect, are
not notified without it), and PushResend (without it, one notification per notifiable event,
never resent and never tracked: no timer).

Rules, numbered as in docs/push.md ("Reliable delivery rules"), each one :func:`step` of the
reliable mode:
 1. retrieval without a gap advances the acknowledged position;
 2. a notifiable event above it, with nothing outstanding, sends a trigger (attempt 0);
 3. while a trigger is outstanding, events send nothing new;
 4. the trigger is acknowledged when the position reaches its notify-position; what is left
    unretrieved gets a fresh trigger at once;
 5. the timer resends up to ``attempts`` times, then marks the subscription failed;
 7. the end of the chat replaces the outstanding trigger with a final one (-1 on removal).

An operator's redrive (:class:`Redriven`) gives a ``failed`` subscription a new start: active
again, with a fresh trigger (attempt 0) if events above the acknowledged position wait, or a
final one if the chat has ended; the resends then follow the timetable as for any trigger.

A new trigger supersedes any copy of the previous one still waiting in the outbox, and so does
an acknowledgement (that copy points at what the client has read). New activity in the chat
(events, a retrieval, its end) gives notifications parked for want of a node another chance
(docs/push.md, "Node groups and failover"). A device token the provider reported dead ends the
subscription (``rejected``) and drops whatever waits for it; a subscription made for a dead token
starts so. An ended subscription, or one whose chat is gone, has no timer.

What became of a send feeds back as a fact too (docs/push.md, "Outcomes"): a permanent failure
(the receiver refuses the notification; no resend can succeed) ends the attempt series: the
subscription is ``failed`` and its unsent triggers are dropped, until the next notifiable event
starts a new series. A temporary failure leaves the timetable as it is, except that no resend
goes out before the service's ``Retry-After``. A send deferred by a service-wide backoff was not
an attempt: it stays queued until the backoff ends, and the resend timer counts from then.

While the chat's client is in the foreground (connected over CometD) nothing is
sent: a trigger decided then stays held, and resends wait, until the client goes to background
or its foreground lease (``foreground_until_ms``, renewed while its session lives) runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from chatpush.delivery.retry import MAX_RETRY_AFTER_MS as MAX_RETRY_AFTER_MS
from chatpush.delivery.retry import MIN_DEFERRAL_MS as MIN_DEFERRAL_MS
from chatpush.delivery.retry import SendDeferred as SendDeferred
from chatpush.delivery.retry import SendFailed as SendFailed
from chatpush.delivery.retry import Sent as Sent
from chatpush.delivery.retry import deferral_ms as deferral_ms
from chatpush.delivery.retry import retry_after_ms as retry_after_ms
from chatpush.store.states import State, Status, Trigger

__all__ = ["State", "Status", "Trigger"]  # and what is defined below

ENDED: tuple[Status, ...] = ("done", "rejected")
REMOVED_POSITION = -1


@dataclass(frozen=True, slots=True)
class Policy:
    resend_delays_s: tuple[int, ...]
    resend_attempts: int

    def delay_ms(self, resend_number: int) -> int:
        """The wait before resend ``resend_number`` (1-based); the last value repeats."""
        delays = self.resend_delays_s
        return delays[min(resend_number, len(delays)) - 1] * 1000


@dataclass(frozen=True, slots=True)
class EventsAdded:
    notifiable_last: int
    """The highest index among the new events that pass the NotifyRequestor filter (0: none)."""


@dataclass(frozen=True, slots=True)
class Retrieved:
    first: int
    last: int
    up_to_date: bool
    """The reply reached the end of the transcript: it acknowledges a final trigger."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    pass


@dataclass(frozen=True, slots=True)
class ChatEnded:
    customer_removed: bool
    notify: bool
    """False for the customer's own disconnect without NotifyRequestor: no final trigger."""


@dataclass(frozen=True, slots=True)
class Foreground:
    """The client connected live until ``until_ms``, or (None) went to background."""

    until_ms: int | None


@dataclass(frozen=True, slots=True)
class Redriven:
    """An operator asked to try a ``failed`` subscription again (the admin console's "redrive"):
    the resend timetable starts over from the acknowledged position, with a final trigger when
    the chat has ended. Any other subscription is left as it is."""

    chat_ended: bool


Input = EventsAdded | Retrieved | TimerFired | ChatEnded | Foreground | Redriven


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to the state, for logs and metrics."""

    acknowledged: bool = False
    resent: bool = False
    exhausted: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One rule applied: the state after it, and what happened."""

    state: State
    outcome: Outcome = Outcome()


def step(state: State, event: Input, now_ms: int, policy: Policy) -> Step:
    """Apply one input of the reliable mode (rules 1-7) to the state."""
    if state.status in ENDED:
        return Step(state)
    decision = _step(state, event, now_ms, policy)
    if decision.state.in_foreground(now_ms):
        return replace(decision, state=_hold(decision.state))
    return decision


def _hold(state: State) -> State:
    """In the foreground: a trigger not yet sent waits for the lease's end, and so does a resend."""
    trigger, until = state.outstanding, state.foreground_until_ms
    if trigger is None or until is None:
        return state
    if trigger.held or state.wake_at_ms is None or state.wake_at_ms < until:
        return replace(state, wake_at_ms=until)
    return state


def _step(state: State, event: Input, now_ms: int, policy: Policy) -> Step:
    match event:
        case Retrieved():
            return _retrieved(state, event, now_ms, policy)
        case EventsAdded(notifiable_last=last):
            if last <= state.notifiable_last:
                return Step(state)
            state = replace(state, notifiable_last=last)
            return Step(_trigger_if_due(state, now_ms, policy))
        case TimerFired():
            return _timer(state, now_ms, policy)
        case ChatEnded():
            if not event.notify:
                return Step(replace(state, status="done", outstanding=None, wake_at_ms=None))
            position = REMOVED_POSITION if event.customer_removed else state.ack_position + 1
            final = Trigger(position=position, attempt=0, final=True)
            return Step(
                replace(
                    state,
                    status="active",
                    outstanding=final,
                    wake_at_ms=now_ms + policy.delay_ms(1),
                )
            )
        case Foreground(until_ms=until):
            held_until = state.foreground_until_ms
            state = replace(state, foreground_until_ms=until)
            trigger = state.outstanding
            if (
                trigger is not None
                and not state.in_foreground(now_ms)
                and (trigger.held or state.wake_at_ms == held_until)
            ):
                # Back in background: a held trigger goes now, a held resend on its timetable.
                state = replace(state, wake_at_ms=now_ms + policy.delay_ms(trigger.attempt + 1))
            return Step(state)
        case Redriven(chat_ended=ended):
            if state.status != "failed":
                return Step(state)
            state = replace(state, status="active")
            if ended:
                final = Trigger(position=state.ack_position + 1, attempt=0, final=True)
                return Step(
                    replace(state, outstanding=final, wake_at_ms=now_ms + policy.delay_ms(1))
                )
            return Step(_trigger_if_due(state, now_ms, policy))
    raise AssertionError(f"unknown input {event!r}")


def sent(state: State, now_ms: int) -> tuple[State, Trigger | None]:
    """Take the held trigger for the outbox, if any; the state then records it as sent.
    In the foreground it stays held (and is stored so)."""
    trigger = state.outstanding
    if trigger is None or not trigger.held or state.in_foreground(now_ms):
        return state, None
    return replace(state, outstanding=replace(trigger, held=False)), trigger


def _retrieved(state: State, event: Retrieved, now_ms: int, policy: Policy) -> Step:
    ack = state.ack_position
    if event.first <= ack + 1 and event.last > ack:
        ack = event.last
    state = replace(state, ack_position=ack)
    trigger = state.outstanding
    if trigger is None:
        return Step(state)
    # A final trigger: the reply reached the end of the transcript, and it was taken without a gap
    # (a reply from beyond the acknowledged position proves nothing was read in between).
    acknowledged = (
        event.up_to_date and ack >= event.last if trigger.final else ack >= trigger.position
    )
    if not acknowledged:
        return Step(state)
    if trigger.final:
        return Step(
            replace(state, status="done", outstanding=None, wake_at_ms=None),
            Outcome(acknowledged=True),
        )
    state = replace(state, outstanding=None, wake_at_ms=None)
    return Step(_trigger_if_due(state, now_ms, policy), Outcome(acknowledged=True))


def _trigger_if_due(state: State, now_ms: int, policy: Policy) -> State:
    """Rule 2: a first trigger when notifiable events lie above the acknowledged position."""
    if state.outstanding is not None or state.notifiable_last <= state.ack_position:
        return state
    return replace(
        state,
        status="active",
        outstanding=Trigger(position=state.ack_position + 1, attempt=0),
        wake_at_ms=now_ms + policy.delay_ms(1),
    )


def _timer(state: State, now_ms: int, policy: Policy) -> Step:
    trigger = state.outstanding
    if trigger is None:
        return Step(replace(state, wake_at_ms=None))  # nothing to resend: disarm
    if state.wake_at_ms is None or now_ms < state.wake_at_ms:
        return Step(state)
    if state.in_foreground(now_ms):
        return Step(state)  # the lease was renewed: decide() holds it to the new end
    if trigger.held:
        # Held while the client was in the foreground, whose lease ran out: send it now.
        return Step(replace(state, wake_at_ms=now_ms + policy.delay_ms(trigger.attempt + 1)))
    if trigger.attempt < policy.resend_attempts:
        attempt = trigger.attempt + 1
        return Step(
            replace(
                state,
                outstanding=replace(trigger, attempt=attempt, held=True),
                wake_at_ms=now_ms + policy.delay_ms(attempt + 1),
            ),
            Outcome(resent=True),
        )
    # A final trigger is resent "like any other" (rule 7), so its exhaustion is rule 5's:
    # the subscription is failed, visible as such, not "done" like an acknowledged end.
    return Step(
        replace(state, status="failed", outstanding=None, wake_at_ms=None),
        Outcome(exhausted=True),
    )


# -- the one entry point: what a transaction's facts mean for a subscription ------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    """What :func:`decide` reads of a subscription: its state and the choices made with it."""

    state: State
    reliable: bool
    """``PushResend``: triggers, acknowledged and resent (otherwise one notification per event)."""
    notify_requestor: bool
    """``NotifyRequestor``: the customer's own events and disconnect are notified too."""
    include_payload: bool
    """Without PushResend: each notification carries its event (otherwise a bare one)."""


@dataclass(frozen=True, slots=True)
class Event:
    index: int
    by_customer: bool


@dataclass(frozen=True, slots=True)
class EventsAppended:
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class TranscriptRead:
    """A reply gave the client the events ``first``..``last`` (None: none), asked for from
    position ``asked_from``, when the chat's last event was ``last_index``."""

    first: int | None
    last: int | None
    asked_from: int
    last_index: int


@dataclass(frozen=True, slots=True)
class Ended:
    customer_removed: bool
    by_customer: bool
    """The customer's own disconnect (not notified without NotifyRequestor)."""


@dataclass(frozen=True, slots=True)
class TokenRejected:
    """The provider reported the device token dead."""


@dataclass(frozen=True, slots=True)
class ChatGone:
    """The timer of a subscription whose chat no longer exists fired."""


Fact = (
    EventsAppended
    | TranscriptRead
    | Ended
    | Foreground
    | TimerFired
    | TokenRejected
    | ChatGone
    | Redriven
    | SendFailed
    | SendDeferred
)
_ACTIVITY = (EventsAppended, TranscriptRead, Ended, Redriven)
"""Facts that are activity of the chat: parked notifications get another chance."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything the store persists for one subscription, and what is reported after the commit."""

    state: State
    trigger: Trigger | None = None
    """A trigger to enqueue."""
    drop_unsent_triggers: bool = False
    """Copies of an earlier trigger not yet handed out are superseded: delete them."""
    drop_outbox: bool = False
    """Nothing waiting for this subscription is ever sent: delete all of it."""
    unpark: bool = False
    """The chat's notifications parked for want of a node are due again."""
    notify_events: tuple[int, ...] = ()
    """Without PushResend: the indexes of the events to notify, one notification each."""
    with_payload: bool = False
    """Those notifications carry their event (otherwise they are bare)."""
    acknowledged: int = 0
    resent: int = 0
    exhausted: bool = False
    """The last resend ran out: the subscription is ``failed``."""
    failed_permanently: bool = False
    """A permanent send failure ended the attempt series: the subscription is ``failed``."""


def decide(
    subscription: Subscription, facts: Sequence[Fact], now_ms: int, policy: Policy | None
) -> Decision:
    """What ``facts`` (in the order they happened, within one transaction) mean for
    ``subscription`` at ``now_ms``. ``policy``: the resend timetable of the chat's service (not
    needed for a dead token alone)."""
    before = subscription.state
    if before.status in ENDED:
        return Decision(replace(before, wake_at_ms=None))
    if any(isinstance(fact, TokenRejected) for fact in facts):
        return Decision(
            replace(before, status="rejected", outstanding=None, wake_at_ms=None),
            drop_outbox=True,
        )
    if any(isinstance(fact, ChatGone) for fact in facts):
        return Decision(replace(before, wake_at_ms=None))
    outcomes = [fact for fact in facts if isinstance(fact, SendFailed | SendDeferred)]
    if outcomes:
        assert len(outcomes) == len(facts), "send outcomes are decided on their own"
        return _send_outcomes(subscription, outcomes, now_ms, policy)
    unpark = any(isinstance(fact, _ACTIVITY) for fact in facts)
    if not subscription.reliable:
        return _unreliable(subscription, facts, now_ms, unpark)
    assert policy is not None, "the reliable mode needs the service's resend policy"
    state, acknowledged, resent, exhausted = before, 0, 0, False
    for fact in facts:
        done = step(state, _input(subscription, state, fact), now_ms, policy)
        state = done.state
        acknowledged += done.outcome.acknowledged
        resent += done.outcome.resent
        exhausted = exhausted or done.outcome.exhausted
    state, trigger = sent(state, now_ms)
    # A new trigger supersedes an unsent copy of the old one; so does the end of the old one
    # (acknowledged or given up): that copy points at what the client has read. Never send it.
    superseded = trigger is not None or (state.outstanding is None and before.outstanding)
    return Decision(
        state,
        trigger=trigger,
        drop_unsent_triggers=bool(superseded),
        unpark=unpark,
        acknowledged=acknowledged,
        resent=resent,
        exhausted=exhausted,
    )


def _send_outcomes(
    subscription: Subscription,
    outcomes: Sequence[SendFailed | SendDeferred],
    now_ms: int,
    policy: Policy | None,
) -> Decision:
    """What became of sends (recorded together after they finished) does to the subscription.

    A permanent failure ends the attempt series, with or without PushResend: ``failed``, no
    timer, unsent triggers dropped; the next notifiable event starts again. A temporary failure
    of the outstanding trigger moves its resend no sooner than ``Retry-After``; one deferred by a
    backoff moves it to the end of the backoff plus the trigger's resend delay (the deferral was
    not an attempt). Without PushResend a temporary failure or a deferral changes nothing: the
    deferred notification is sent when the backoff ends, a failed one is never resent."""
    state = subscription.state
    if any(isinstance(fact, SendFailed) and fact.permanent for fact in outcomes):
        failed = replace(state, status="failed", outstanding=None, wake_at_ms=None)
        return Decision(failed, drop_unsent_triggers=True, failed_permanently=True)
    if not subscription.reliable:
        return Decision(state)
    for fact in outcomes:
        trigger = state.outstanding
        about = fact.notification
        if (
            trigger is None
            or trigger.held
            or state.wake_at_ms is None
            or (about.position, about.attempt) != (trigger.position, trigger.attempt)
        ):
            continue  # not the outstanding trigger (acknowledged, superseded): nothing to move
        if isinstance(fact, SendFailed):
            if fact.retry_after_ms is None:
                continue
            not_before = now_ms + fact.retry_after_ms
        else:
            assert policy is not None, "a deferred trigger needs the service's resend policy"
            not_before = fact.until_ms + policy.delay_ms(trigger.attempt + 1)
        if not_before > state.wake_at_ms:
            state = replace(state, wake_at_ms=not_before)
    return Decision(state)


def _input(subscription: Subscription, state: State, fact: Fact) -> Input:
    """A fact as the input of a reliable rule, through the subscription's choices."""
    match fact:
        case EventsAppended(events=events):
            notifiable = (
                e.index for e in events if subscription.notify_requestor or not e.by_customer
            )
            return EventsAdded(notifiable_last=max(notifiable, default=0))
        case TranscriptRead(first=first, last=last, asked_from=asked_from, last_index=end):
            reached = last if last is not None else asked_from - 1
            up_to_date = reached >= end
            if last is None:
                # A reply with no events is up to date only if the client already had everything:
                # a transcriptPosition beyond the end proves nothing (rule 1).
                up_to_date = up_to_date and state.ack_position >= end
            return Retrieved(first=first or 0, last=last or 0, up_to_date=up_to_date)
        case Ended(customer_removed=removed, by_customer=by_customer):
            notify = not by_customer or subscription.notify_requestor
            return ChatEnded(customer_removed=removed, notify=notify)
        case Foreground() | TimerFired() | Redriven():
            return fact
    raise AssertionError(f"not an input of the reliable rules: {fact!r}")


def _unreliable(
    subscription: Subscription, facts: Sequence[Fact], now_ms: int, unpark: bool
) -> Decision:
    """Without PushResend: one notification per notifiable event, never resubmitted (no timer:
    a timer that fires is disarmed); none while the client is in the foreground (it gets the
    events live)."""
    state = subscription.state
    for fact in facts:
        if isinstance(fact, Foreground):
            state = replace(state, foreground_until_ms=fact.until_ms)
        elif isinstance(fact, TimerFired):
            state = replace(state, wake_at_ms=None)
    events: tuple[int, ...] = ()
    if not state.in_foreground(now_ms):
        events = tuple(
            event.index
            for fact in facts
            if isinstance(fact, EventsAppended)
            for event in fact.events
            if subscription.notify_requestor or not event.by_customer
        )
    if events and state.status == "failed":
        state = replace(state, status="active")  # a new series of one notification each
    return Decision(
        state, unpark=unpark, notify_events=events, with_payload=subscription.include_payload
    )


def timed_out(last_request_ms: int, now_ms: int, flex_push_timeout_s: int) -> bool:
    """A chat with a push subscription ends when its client made no request for longer than its
    service's flex-push-timeout."""
    return now_ms - last_request_ms >= flex_push_timeout_s * 1000
