"""What the delivery platform tells the callback source of its sends (docs/callbacks.md §7.1)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Connection

from chatpush.delivery import Outcome
from chatpush.store import callbacks as store
from chatpush.store import notifications as subscriptions


class CallbackHooks:
    """A dead device token ends the callback's push subscription, not the callback; and every
    Notification API subscription to that device (docs/callbacks.md §6)."""

    def record(self, conn: Connection, outcomes: Sequence[Outcome], now_ms: int) -> None:
        for outcome in outcomes:
            if outcome.result == "rejected" and outcome.kind == "payload":
                destination = outcome.destination
                subscriptions.delete_by_device(conn, destination.device_type, destination.device_id)
            # Only device pushes (kind "alert"); status notifications' keys end otherwise.
            if outcome.result == "rejected" and outcome.kind == "alert":
                callback_id = outcome.key.rsplit(".", 1)[-1]
                destination = outcome.destination
                store.end_device(conn, callback_id, destination.device_type, destination.device_id)
