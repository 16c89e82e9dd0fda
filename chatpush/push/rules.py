"""Reliable delivery (CONTRACT §8) as a pure function: (state, input, now) -> decision.

Nothing here touches the database, the network or the clock: the pipeline loads the state, feeds
the inputs of one transaction through ``decide`` in order, and stores the result in that same
transaction. A trigger created and acknowledged within one transaction (a Request Chat whose own
reply covers the event) is never sent: only a trigger still ``pending`` after the last input is.

Rules, numbered as in the contract:
 1. retrieval without a gap advances the acknowledged position;
 2. a notifiable event above it, with nothing outstanding, sends a trigger (attempt 0);
 3. while a trigger is outstanding, events send nothing new;
 4. the trigger is acknowledged when the position reaches its notify-position; what is left
    unretrieved gets a fresh trigger at once;
 5. the timer resends up to ``attempts`` times, then marks the subscription failed;
 7. the end of the chat replaces the outstanding trigger with a final one (-1 on removal).

While the chat's client is in the foreground (connected over CometD, CONTRACT §10) nothing is
sent: a trigger decided then stays pending, and resends wait, until the client goes to background
or its foreground lease (``foreground_until_ms``, renewed while its session lives) runs out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Status = Literal["active", "failed", "done", "rejected"]
"""``rejected``: the provider reported the device token dead; nothing is ever sent to it again."""
ENDED: tuple[Status, ...] = ("done", "rejected")
REMOVED_POSITION = -1


@dataclass(frozen=True, slots=True)
class Trigger:
    position: int
    attempt: int
    final: bool = False
    pending: bool = True
    """Decided but not yet handed to the outbox."""


@dataclass(frozen=True, slots=True)
class State:
    status: Status = "active"
    ack_position: int = 0
    notifiable_last: int = 0
    outstanding: Trigger | None = None
    wake_at_ms: int | None = None
    foreground_until_ms: int | None = None
    """The client is connected live until then (renewed while it stays): push waits."""

    def in_foreground(self, now_ms: int) -> bool:
        return self.foreground_until_ms is not None and now_ms < self.foreground_until_ms


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


Input = EventsAdded | Retrieved | TimerFired | ChatEnded | Foreground


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to the state, for logs and metrics."""

    acknowledged: bool = False
    resent: bool = False
    exhausted: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    outcome: Outcome = Outcome()


def decide(state: State, event: Input, now_ms: int, policy: Policy) -> Decision:
    if state.status in ENDED:
        return Decision(state)
    decision = _decide(state, event, now_ms, policy)
    if decision.state.in_foreground(now_ms):
        return replace(decision, state=_hold(decision.state))
    return decision


def _hold(state: State) -> State:
    """In the foreground: a trigger not yet sent waits for the lease's end, and so does a resend."""
    trigger, until = state.outstanding, state.foreground_until_ms
    if trigger is None or until is None:
        return state
    if trigger.pending or state.wake_at_ms is None or state.wake_at_ms < until:
        return replace(state, wake_at_ms=until)
    return state


def _decide(state: State, event: Input, now_ms: int, policy: Policy) -> Decision:
    match event:
        case Retrieved():
            return _retrieved(state, event, now_ms, policy)
        case EventsAdded(notifiable_last=last):
            if last <= state.notifiable_last:
                return Decision(state)
            state = replace(state, notifiable_last=last)
            return Decision(_trigger_if_due(state, now_ms, policy))
        case TimerFired():
            return _timer(state, now_ms, policy)
        case ChatEnded():
            if not event.notify:
                return Decision(replace(state, status="done", outstanding=None, wake_at_ms=None))
            position = REMOVED_POSITION if event.customer_removed else state.ack_position + 1
            final = Trigger(position=position, attempt=0, final=True)
            return Decision(
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
                and (trigger.pending or state.wake_at_ms == held_until)
            ):
                # Back in background: a held trigger goes now, a held resend on its timetable.
                state = replace(state, wake_at_ms=now_ms + policy.delay_ms(trigger.attempt + 1))
            return Decision(state)
    raise AssertionError(f"unknown input {event!r}")


def sent(state: State, now_ms: int) -> tuple[State, Trigger | None]:
    """Take the pending trigger for the outbox, if any; the state then records it as sent.
    In the foreground it stays pending (and is stored so)."""
    trigger = state.outstanding
    if trigger is None or not trigger.pending or state.in_foreground(now_ms):
        return state, None
    return replace(state, outstanding=replace(trigger, pending=False)), trigger


def _retrieved(state: State, event: Retrieved, now_ms: int, policy: Policy) -> Decision:
    ack = state.ack_position
    if event.first <= ack + 1 and event.last > ack:
        ack = event.last
    state = replace(state, ack_position=ack)
    trigger = state.outstanding
    if trigger is None:
        return Decision(state)
    # A final trigger: the reply reached the end of the transcript, and it was taken without a gap
    # (a reply from beyond the acknowledged position proves nothing was read in between).
    acknowledged = (
        event.up_to_date and ack >= event.last if trigger.final else ack >= trigger.position
    )
    if not acknowledged:
        return Decision(state)
    if trigger.final:
        return Decision(
            replace(state, status="done", outstanding=None, wake_at_ms=None),
            Outcome(acknowledged=True),
        )
    state = replace(state, outstanding=None, wake_at_ms=None)
    return Decision(_trigger_if_due(state, now_ms, policy), Outcome(acknowledged=True))


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


def _timer(state: State, now_ms: int, policy: Policy) -> Decision:
    trigger = state.outstanding
    if trigger is None:
        return Decision(replace(state, wake_at_ms=None))  # nothing to resend: disarm
    if state.wake_at_ms is None or now_ms < state.wake_at_ms:
        return Decision(state)
    if state.in_foreground(now_ms):
        return Decision(state)  # the lease was renewed: decide() holds it to the new end
    if trigger.pending:
        # Held while the client was in the foreground, whose lease ran out: send it now.
        return Decision(replace(state, wake_at_ms=now_ms + policy.delay_ms(trigger.attempt + 1)))
    if trigger.attempt < policy.resend_attempts:
        attempt = trigger.attempt + 1
        return Decision(
            replace(
                state,
                outstanding=replace(trigger, attempt=attempt, pending=True),
                wake_at_ms=now_ms + policy.delay_ms(attempt + 1),
            ),
            Outcome(resent=True),
        )
    # A final trigger is resent "like any other" (CONTRACT §8.7), so its exhaustion is rule 5's:
    # the subscription is failed, visible as such, not "done" like an acknowledged end.
    return Decision(
        replace(state, status="failed", outstanding=None, wake_at_ms=None),
        Outcome(exhausted=True),
    )
