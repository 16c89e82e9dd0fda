"""The heartbeat: this instance's nodes say they are alive, and it re-reads everyone else's."""

from __future__ import annotations

import asyncio
import logging

from chatpush.clock import Clock
from chatpush.errors import ChatpushError
from chatpush.routing.router import Router

log = logging.getLogger("chatpush.routing")


async def beat(router: Router, clock: Clock, interval_s: float) -> None:
    """Beat every ``interval_s`` until cancelled; a failed beat is logged and the next one tried."""
    interval_ms = int(interval_s * 1000)
    never = asyncio.Event()
    while True:
        await clock.sleep_until(clock.now_ms() + interval_ms, never)
        try:
            await router.heartbeat()
        except ChatpushError as exc:
            log.warning("heartbeat failed: %s", exc, extra={"action": "heartbeat_failed"})
