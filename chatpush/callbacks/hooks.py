"""What the delivery platform tells the callback source of its sends (docs/callbacks.md §7.1)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Connection

from chatpush.delivery import Outcome
from chatpush.store import callbacks as store


class CallbackHooks:
    """A dead device token ends the callback's push subscription, not the callback."""

    def record(self, conn: Connection, outcomes: Sequence[Outcome], now_ms: int) -> None:
        for outcome in outcomes:
            # Only device pushes (kind "alert"); status notifications' keys end otherwise.
            if outcome.result == "rejected" and outcome.kind == "alert":
                callback_id = outcome.key.rsplit(".", 1)[-1]
                destination = outcome.destination
                store.end_device(conn, callback_id, destination.device_type, destination.device_id)
