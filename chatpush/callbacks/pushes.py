"""The device pushes of a callback (docs/callbacks.md §7): what each push carries and where it
goes, as pure functions building the delivery platform's ``NewNotification``s, and the
``CALLBACK_UPCOMING`` threshold state machine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from chatpush.callbacks.model import CallbackRecord, format_time
from chatpush.callbacks.texts import Texts
from chatpush.delivery import Alert, Destination, NewNotification

SOURCE: Final = "callback"

Upcoming = Literal["pending", "armed", "sent", "suppressed"]


def key_of(record: CallbackRecord) -> str:
    """The ordering key: one push at a time per callback, in order; the comet tag is
    ``callback.<key>``."""
    return f"{record.service_name}.{record.id}"


def guard_of(event: str, attempt: int | None = None) -> str:
    """The once-only guard of a push (§9.4); ``CALLBACK_DIALOG`` has none (None)."""
    if event == "CALLBACK_ATTEMPT_FAILED":
        return f"{event}.{attempt}"
    return event


def payload(
    record: CallbackRecord,
    event: str,
    now_ms: int,
    *,
    action: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """§7.3: one shape for every provider; ``_id`` so apps reading ``{_id, _action}`` work."""
    body: dict[str, Any] = {
        "event": event,
        "callbackId": record.id,
        "_id": record.id,
        "serviceName": record.service_name,
        "state": record.state,
        "desiredTime": format_time(record.desired_time_ms),
        "ewt": record.ewt_s,
        "position": record.position,
        "at": now_ms,
    }
    if action is not None:
        body["_action"] = action
    body.update({name: value for name, value in extra.items() if value is not None})
    return body


@dataclass(frozen=True, slots=True)
class Route:
    """Where a callback's pushes go and how often they are tried."""

    group_name: str
    provider: str | None
    title: str
    max_attempts: int
    retry_delays_s: Sequence[float]


def notification(
    record: CallbackRecord, body: dict[str, Any], route: Route, texts: Texts
) -> NewNotification | None:
    """The push of ``body`` to the callback's device (None: it has none), its body in the
    callback's language (``route.title`` is too)."""
    device = record.device
    if device is None:
        return None
    text = texts.push_body(body["event"])
    return NewNotification(
        source=SOURCE,
        key=key_of(record),
        kind="alert",
        body=body,
        destination=Destination(
            device_type=device.type,
            device_id=device.id,
            group_name=route.group_name,
            provider=device.provider or route.provider,
            debug=device.debug,
        ),
        alert=Alert(route.title, text),
        max_attempts=route.max_attempts,
        retry_delays_s=tuple(route.retry_delays_s),
    )


def upcoming_step(
    state: str, ewt_s: int, threshold_s: int, *, will_not_complete: bool
) -> tuple[str, bool]:
    """§7.2: CALLBACK_UPCOMING's next state after an estimated wait applied while QUEUED, and
    whether to push now. ``sent`` and ``suppressed`` are final: one push at most."""
    if state in ("sent", "suppressed"):
        return state, False
    if will_not_complete:
        return "suppressed", False
    if state == "pending":
        return ("armed" if ewt_s >= threshold_s else "suppressed"), False
    if ewt_s < threshold_s:  # armed
        return "sent", True
    return state, False
