"""The callback record, its states and the one transition table (docs/callbacks.md §2)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from chatpush.callbacks.errors import BadParameter, IllegalState
from chatpush.store.callback_records import (
    STATES,
    CallbackRecord,
    Device,
    State,
    format_time,
)

__all__ = ["STATES", "CallbackRecord", "Device", "State", "format_time"]


TRANSITIONS: Mapping[State, frozenset[State]] = {
    "SCHEDULED": frozenset({"SCHEDULED", "QUEUED", "COMPLETED"}),
    "QUEUED": frozenset({"SCHEDULED", "ROUTING", "PROCESSING", "COMPLETED"}),
    "ROUTING": frozenset({"QUEUED", "SCHEDULED", "PROCESSING", "COMPLETED"}),
    "PROCESSING": frozenset({"COMPLETED"}),
    "COMPLETED": frozenset(),
}
"""§2.3: from a state, the states a change may lead to. Staying in a state other than SCHEDULED
is no transition (an event that implies the current state changes nothing)."""

REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
"""A ``_callback_reason``: GMS's own (AGENT_CONNECTED, CANCELLED...) all match it too."""

CANCELLED, CANCELLED_BY_ADMIN = "CANCELLED", "CANCELLED_BY_ADMIN"
FAIL_TIMEOUT_TTL, FAIL_CALL_TO_CUSTOMER, SUBMIT_FAILED = (
    "FAIL_TIMEOUT_TTL",
    "FAIL_CALL_TO_CUSTOMER",
    "SUBMIT_FAILED",
)
PURGED = "PURGED"

RECORD_KEYS = (
    "_id",
    "_service_name",
    "_customer_number",
    "_callback_state",
    "_callback_reason",
    "_desired_time",
    "_expiration_time",
    "_url",
)
IGNORED_IN_REQUESTS = frozenset(RECORD_KEYS) - {"_customer_number", "_desired_time"}
"""§3.1: the record's own keys a request may not set (``_customer_number`` and
``_desired_time`` are a create's parameters)."""

_ID = re.compile(r"^[0-9A-F]{32}$")


def new_id() -> str:
    """128 random bits, 32 upper-case hex digits: the capability for one callback."""
    return secrets.token_hex(16).upper()


def is_id(text: str) -> bool:
    return _ID.match(text) is not None


def is_transition(current: State, target: State) -> bool:
    """Whether ``current`` -> ``target`` changes the state (SCHEDULED -> SCHEDULED does: a new
    time)."""
    return target != current or target == "SCHEDULED"


def check_transition(current: State, target: State, cause: str) -> None:
    """Raise IllegalState (409) unless ``cause`` may take a callback from ``current`` to
    ``target``; staying put (other than SCHEDULED) is allowed and changes nothing."""
    if target == current and target != "SCHEDULED" and current != "COMPLETED":
        return
    if target not in TRANSITIONS[current]:
        raise IllegalState(current, f"{cause} cannot take a callback from {current} to {target}")


def initial_state(desired_time_ms: int, now_ms: int) -> State:
    return "SCHEDULED" if desired_time_ms > now_ms else "QUEUED"


_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE
)


def parse_time(name: str, text: str) -> int:
    """An ISO-8601 time with ``Z`` or an offset, as epoch ms; BadParameter otherwise."""
    value = text.strip()
    if not _ISO.match(value):
        raise BadParameter(
            f"{name} must be an ISO-8601 time with Z or an offset "
            f"(2024-05-02T14:30:00.000Z), got {text[:40]!r}"
        )
    normal = value[:-1] + "+00:00" if value[-1] in "zZ" else value
    # Python 3.11 takes at most 6 fractional digits.
    normal = re.sub(r"(\.\d{6})\d+", r"\1", normal)
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError:
        raise BadParameter(f"{name} is not a valid time: {text[:40]!r}") from None
    if not 1970 <= moment.astimezone(UTC).year <= 9999:
        raise BadParameter(f"{name} is out of range: {text[:40]!r}")
    return int(moment.timestamp() * 1000)
