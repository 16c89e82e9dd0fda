"""Housekeeping of delivery: the delivery trail is kept for ``delivery.trail_retention_s``."""

from __future__ import annotations

import logging

from chatpush.clock import Clock
from chatpush.errors import ChatpushError
from chatpush.store import trail
from chatpush.store.database import Database

log = logging.getLogger("chatpush.push")


async def purge_trail(db: Database, clock: Clock, retention_s: int) -> None:
    """Delete delivery records older than ``retention_s``; a failure is logged, never raised."""
    cutoff_ms = clock.now_ms() - retention_s * 1000
    try:
        purged = await db.write(trail.purge_trail, cutoff_ms)
    except ChatpushError as exc:
        log.warning("trail purge failed: %s", exc, extra={"action": "purge_failed"})
        return
    if purged:
        log.info("purged %d delivery records", purged, extra={"action": "trail_purged"})
