"""The one source of time: every timestamp and every timer wait in chatpush goes through a Clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in epoch milliseconds, and a wait that a fake clock can short-cut."""

    def now_ms(self) -> int: ...

    async def sleep_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        """Return at ``deadline_ms`` (None: never) or as soon as ``wake`` is set."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        timeout_s = None if deadline_ms is None else max(0.0, (deadline_ms - self.now_ms()) / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout_s)
