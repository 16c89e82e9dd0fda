"""The contact-centre side's events (docs/callbacks.md §4.3, §4.4): what each one does to a
callback, as one pure function of the callback and the event."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatpush.callbacks.errors import BadParameter, IllegalState
from chatpush.callbacks.model import (
    FAIL_CALL_TO_CUSTOMER,
    REASON,
    STATES,
    SUBMIT_FAILED,
    State,
    check_transition,
)

MAX_INT32 = 2**31 - 1
MAX_TIME_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
MAX_ATTRIBUTES = 100
MAX_TEXT_CHARS = 64

STATUS_EVENTS: Mapping[str, str] = {
    "session_started": "_cbe_on_service_create",
    "vixn_created": "_cbe_on_virtual_ixn_create",
    "target_found": "_cbe_on_target_found",
    "dial_init": "_cbe_on_dial_init",
    "dial_done": "_cbe_on_dial_done",
    "treatment_start": "_cbe_on_connect_treatment_start",
    "customer_queued": "_cbe_on_customer_queued",
    "route_to_agent": "_cbe_on_route_to_agent",
    "exit": "_cbe_on_service_exit",
    "submit_failed": "_cbe_on_callback_submit_failed",
    "processing_failed": "_cbe_on_callback_processing_failed",
    "resubmitted": "_cbe_on_callback_resubmitted",
    "reschedule": "_cbe_on_callback_rescheduled",
}
"""§4.4: each type's status event (``update``, ``ready``, ``call_in``, ``dialog`` have none)."""
EVENT_TYPES = (*STATUS_EVENTS, "update", "ready", "call_in", "dialog")

_IMPLIED: Mapping[str, State] = {
    "dial_init": "ROUTING",
    "customer_queued": "ROUTING",
    "route_to_agent": "PROCESSING",
    "exit": "COMPLETED",
    "submit_failed": "COMPLETED",
    "resubmitted": "QUEUED",
    "reschedule": "SCHEDULED",
}


@dataclass(frozen=True, slots=True)
class CcEvent:
    """One event as posted, checked for shape (not yet against the callback)."""

    seq: int
    type: str
    at_ms: int
    state: State | None = None
    reason: str | None = None
    desired_time_ms: int | None = None
    attempt: int | None = None
    connected: bool = False
    max_attempts: int | None = None
    access_number: str | None = None
    access_code: str | None = None
    action: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Effect:
    """What an accepted event does: the state and reason after it (None: unchanged), the
    push it causes (§4.4, sent by the delivery platform), and what to keep."""

    state: State | None
    reason: str | None
    desired_time_ms: int | None
    push: str | None


def _int(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadParameter(f"{name} must be an integer from {low} to {high}")
    return value


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT_CHARS:
        raise BadParameter(f"{name} must be a string of 1-{MAX_TEXT_CHARS} characters")
    return value


KNOWN_FIELDS = frozenset(
    {
        "seq",
        "type",
        "at",
        "state",
        "reason",
        "desiredTime",
        "attempt",
        "connected",
        "maxAttempts",
        "accessNumber",
        "accessCode",
        "action",
        "attributes",
    }
)


def seq_of(body: Any) -> int:
    """The event's ``seq``, read first: a duplicate is answered before anything else is checked."""
    if not isinstance(body, dict):
        raise BadParameter("the body must be a JSON object")
    seq = _int(body, "seq", 1, MAX_INT32)
    if seq is None:
        raise BadParameter("seq is required")
    return seq


def parse_event(body: Mapping[str, Any], now_ms: int) -> CcEvent:
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise BadParameter(f"unknown fields: {', '.join(unknown)[:200]}")
    nulls = sorted(name for name, value in body.items() if value is None)
    if nulls:
        raise BadParameter(f"leave a member out rather than null: {', '.join(nulls)}")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise BadParameter(f"type must be one of {', '.join(EVENT_TYPES)}")
    state = body.get("state")
    if state is not None and state not in STATES:
        raise BadParameter(f"state must be one of {', '.join(STATES)}")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or not REASON.match(reason)):
        raise BadParameter("reason must match ^[A-Z][A-Z0-9_]{0,63}$")
    connected = body.get("connected", False)
    if not isinstance(connected, bool):
        raise BadParameter("connected must be true or false")
    attributes = body.get("attributes", {})
    if not isinstance(attributes, dict) or len(attributes) > MAX_ATTRIBUTES:
        raise BadParameter(f"attributes must be a JSON object of at most {MAX_ATTRIBUTES} keys")
    if any(not 1 <= len(key) <= 200 for key in attributes):
        raise BadParameter("attribute names are 1-200 characters")
    action = body.get("action")
    if action is not None and (not isinstance(action, str) or not 1 <= len(action) <= 100):
        raise BadParameter("action must be a string of 1-100 characters")
    at_ms = _int(body, "at", 0, MAX_TIME_MS)
    return CcEvent(
        seq=seq_of(body),
        type=kind,
        at_ms=now_ms if at_ms is None else at_ms,
        state=state,
        reason=reason,
        desired_time_ms=_int(body, "desiredTime", 0, MAX_TIME_MS),
        attempt=_int(body, "attempt", 1, 1000),
        connected=connected,
        max_attempts=_int(body, "maxAttempts", 1, 1000),
        access_number=_text(body, "accessNumber"),
        access_code=_text(body, "accessCode"),
        action=action,
        attributes=dict(attributes),
    )


def effect(
    current: State, event: CcEvent, *, user_originated: bool, max_dial_attempts: int
) -> Effect:
    """What ``event`` does to a callback in ``current`` (§4.4), or the refusal: BadParameter
    (400) for an event that cannot be, IllegalState (409) for one the state forbids."""
    if current == "COMPLETED":
        if event.type != "exit":
            raise IllegalState(current, f"a {event.type} event after completion")
        return Effect(None, None, None, None)
    if event.type in ("ready", "call_in") and not user_originated:
        raise BadParameter(f"{event.type} is for USERORIGINATED (Click-To-Call-In) callbacks")
    if event.type == "dialog" and event.action is None:
        raise BadParameter("a dialog event needs an action")
    target: State | None = _IMPLIED.get(event.type)
    reason = {"submit_failed": SUBMIT_FAILED}.get(event.type)
    push = {"ready": "READY", "call_in": "READY.call_in", "dialog": "DIALOG"}.get(event.type)
    desired = event.desired_time_ms
    if event.type == "dial_done":
        if event.connected:
            target = "ROUTING"
        else:
            if event.attempt is None:
                raise BadParameter("a failed dial_done needs attempt")
            maximum = event.max_attempts or max_dial_attempts
            if event.attempt >= maximum:
                target, reason = "COMPLETED", FAIL_CALL_TO_CUSTOMER
                push = None if user_originated else "FINAL_ATTEMPT_FAILED"
            else:
                target = "SCHEDULED" if desired is not None else "QUEUED"
                push = None if user_originated else "ATTEMPT_FAILED"
    if event.state is not None:
        target = event.state
        reason = event.reason if event.reason is not None else reason
        if target != "COMPLETED":
            reason = None
    elif event.reason is not None and target == "COMPLETED":
        reason = event.reason
    if event.type == "update" and event.state is None:
        target = None
    if target == "COMPLETED" and reason is None:
        raise BadParameter(f"a {event.type} event that completes the callback needs a reason")
    if target == "SCHEDULED" and desired is None:
        raise BadParameter("an event that schedules the callback needs desiredTime")
    if target is not None:
        check_transition(current, target, f"a {event.type} event")
    return Effect(target, reason, desired if target == "SCHEDULED" else None, push)
