"""The callbacks' pure rules: the transition table (docs/callbacks.md §2.3), what each CC event does
(§4.4), the push keys (§7.1), times and opening hours."""

from __future__ import annotations

import itertools

import pytest

from chatpush.callbacks.errors import BadParameter, IllegalState, InvalidPushKey
from chatpush.callbacks.events import CcEvent, effect, parse_event
from chatpush.callbacks.model import (
    STATES,
    TRANSITIONS,
    check_transition,
    format_time,
    initial_state,
    parse_time,
)
from chatpush.callbacks.params import device_of
from chatpush.open_hours import is_open, parse_open_hours

LEGAL = {
    ("SCHEDULED", "SCHEDULED"),
    ("SCHEDULED", "QUEUED"),
    ("SCHEDULED", "COMPLETED"),
    ("QUEUED", "SCHEDULED"),
    ("QUEUED", "ROUTING"),
    ("QUEUED", "PROCESSING"),
    ("QUEUED", "COMPLETED"),
    ("ROUTING", "QUEUED"),
    ("ROUTING", "SCHEDULED"),
    ("ROUTING", "PROCESSING"),
    ("ROUTING", "COMPLETED"),
    ("PROCESSING", "COMPLETED"),
}


def test_the_transition_table_is_the_contracts() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


@pytest.mark.parametrize(("current", "target"), list(itertools.product(STATES, STATES)))
def test_every_pair(current: str, target: str) -> None:
    staying = current == target and current not in ("SCHEDULED", "COMPLETED")
    if (current, target) in LEGAL or staying:
        check_transition(current, target, "test")  # type: ignore[arg-type]
    else:
        with pytest.raises(IllegalState) as refused:
            check_transition(current, target, "test")  # type: ignore[arg-type]
        assert refused.value.http_status == 409
        assert refused.value.extra == {"_callback_state": current}


def test_initial_state() -> None:
    assert initial_state(1001, 1000) == "SCHEDULED"
    assert initial_state(1000, 1000) == "QUEUED"


def _event(kind: str, **fields: object) -> CcEvent:
    return parse_event({"seq": 1, "type": kind, **fields}, 0)


@pytest.mark.parametrize(
    ("current", "kind", "fields", "state", "reason", "push"),
    [
        ("QUEUED", "session_started", {}, None, None, None),
        ("QUEUED", "dial_init", {}, "ROUTING", None, None),
        ("ROUTING", "dial_done", {"connected": True}, "ROUTING", None, None),
        ("ROUTING", "dial_done", {"attempt": 1}, "QUEUED", None, "ATTEMPT_FAILED"),
        (
            "ROUTING",
            "dial_done",
            {"attempt": 1, "desiredTime": 5},
            "SCHEDULED",
            None,
            "ATTEMPT_FAILED",
        ),
        (
            "ROUTING",
            "dial_done",
            {"attempt": 3},
            "COMPLETED",
            "FAIL_CALL_TO_CUSTOMER",
            "FINAL_ATTEMPT_FAILED",
        ),
        (
            "ROUTING",
            "dial_done",
            {"attempt": 2, "maxAttempts": 2},
            "COMPLETED",
            "FAIL_CALL_TO_CUSTOMER",
            "FINAL_ATTEMPT_FAILED",
        ),
        ("QUEUED", "customer_queued", {}, "ROUTING", None, None),
        ("ROUTING", "route_to_agent", {}, "PROCESSING", None, None),
        ("PROCESSING", "exit", {"reason": "AGENT_CONNECTED"}, "COMPLETED", "AGENT_CONNECTED", None),
        ("QUEUED", "submit_failed", {}, "COMPLETED", "SUBMIT_FAILED", None),
        ("ROUTING", "resubmitted", {}, "QUEUED", None, None),
        ("QUEUED", "reschedule", {"desiredTime": 9}, "SCHEDULED", None, None),
        ("QUEUED", "update", {}, None, None, None),
        ("QUEUED", "update", {"state": "ROUTING"}, "ROUTING", None, None),
        ("QUEUED", "dialog", {"action": "get-dialog-start-chat"}, None, None, "DIALOG"),
        ("COMPLETED", "exit", {"reason": "X"}, None, None, None),
    ],
)
def test_event_effects(
    current: str,
    kind: str,
    fields: dict[str, object],
    state: str | None,
    reason: str | None,
    push: str | None,
) -> None:
    done = effect(current, _event(kind, **fields), user_originated=False, max_dial_attempts=3)  # type: ignore[arg-type]
    assert (done.state, done.reason, done.push) == (state, reason, push)


def test_click_to_call_in_events_and_no_failure_pushes() -> None:
    done = effect("QUEUED", _event("ready"), user_originated=True, max_dial_attempts=3)
    assert done.push == "READY"
    done = effect(
        "QUEUED", _event("call_in", accessNumber="1"), user_originated=True, max_dial_attempts=3
    )
    assert done.push == "READY.call_in"
    done = effect(
        "ROUTING", _event("dial_done", attempt=1), user_originated=True, max_dial_attempts=3
    )
    assert done.push is None
    with pytest.raises(BadParameter):
        effect("QUEUED", _event("ready"), user_originated=False, max_dial_attempts=3)


@pytest.mark.parametrize(
    ("current", "kind", "fields", "error"),
    [
        ("QUEUED", "exit", {}, BadParameter),
        ("QUEUED", "reschedule", {}, BadParameter),
        ("ROUTING", "dial_done", {}, BadParameter),
        ("QUEUED", "dialog", {}, BadParameter),
        ("PROCESSING", "resubmitted", {}, IllegalState),
        ("COMPLETED", "dial_init", {}, IllegalState),
        ("SCHEDULED", "route_to_agent", {}, IllegalState),
    ],
)
def test_refused_events(current: str, kind: str, fields: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        effect(current, _event(kind, **fields), user_originated=False, max_dial_attempts=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {"seq": 1},
        {"seq": 1, "type": "teleport"},
        {"seq": 1, "type": "exit", "reason": "not upper"},
        {"seq": 1, "type": "exit", "state": "DONE"},
        {"seq": 1, "type": "exit", "connected": "yes"},
        {"seq": 1, "type": "exit", "attributes": []},
        {"seq": 1, "type": "exit", "at": -1},
        {"seq": 1, "type": "exit", "attempt": True},
        {"seq": 1, "type": "exit", "extra": 1},
    ],
)
def test_malformed_events(body: dict[str, object]) -> None:
    with pytest.raises(BadParameter):
        parse_event(body, 0)


def test_push_keys() -> None:
    device = device_of({"_device_os": "gcm", "_device_notification_id": "t", "_provider_name": "p"})
    assert device is not None and (device.type, device.id, device.provider) == ("fcm", "t", "p")
    assert device_of({"first_name": "Ann"}) is None
    with pytest.raises(InvalidPushKey):
        device_of(
            {"_device_os": "ios", "pushNotificationType": "fcm", "_device_notification_id": "t"}
        )
    with pytest.raises(BadParameter):
        device_of({"push_notification_deviceid": "t"})
    with pytest.raises(BadParameter):
        device_of(
            {"_device_os": "ios", "_device_notification_id": "t", "_push_notification_debug": "1"}
        )


def test_times() -> None:
    assert format_time(1714660200000) == "2024-05-02T14:30:00.000Z"
    assert parse_time("t", "2024-05-02T14:30:00.000Z") == 1714660200000
    assert parse_time("t", "2024-05-02T16:30:00+02:00") == 1714660200000
    assert parse_time("t", "2024-05-02T14:30:00.123456789Z") == 1714660200123
    for bad in ("2024-05-02T14:30:00", "2024-05-02", "soon", "2024-13-02T14:30:00Z", ""):
        with pytest.raises(BadParameter):
            parse_time("t", bad)


def test_open_hours() -> None:
    ranges = parse_open_hours("mon-fri 08:00-18:00; sat 09:00-12:00; sun-mon 23:00-24:00")
    assert is_open(ranges, 0, 8 * 60) and not is_open(ranges, 0, 18 * 60)
    assert is_open(ranges, 5, 9 * 60) and not is_open(ranges, 5, 12 * 60)
    assert is_open(ranges, 6, 23 * 60 + 30) and not is_open(ranges, 1, 23 * 60 + 30)
    for bad in ("always", "mon-fri 18:00-08:00", "xyz 08:00-09:00", "mon 08:00-24:01", "mon 8-9"):
        with pytest.raises(ValueError):
            parse_open_hours(bad)


@pytest.mark.parametrize(
    ("state", "ewt", "will_not", "expected"),
    [
        ("pending", 600, False, ("armed", False)),
        ("pending", 299, False, ("suppressed", False)),
        ("armed", 300, False, ("armed", False)),
        ("armed", 299, False, ("sent", True)),
        ("armed", 900, True, ("suppressed", False)),
        ("pending", 900, True, ("suppressed", False)),
        ("sent", 10, False, ("sent", False)),
        ("suppressed", 10, False, ("suppressed", False)),
    ],
)
def test_upcoming_state_machine(
    state: str, ewt: int, will_not: bool, expected: tuple[str, bool]
) -> None:
    from chatpush.callbacks.pushes import upcoming_step

    assert upcoming_step(state, ewt, 300, will_not_complete=will_not) == expected
