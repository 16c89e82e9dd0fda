"""Fakes shipped with the package, for our tests and for people embedding chatpush.

- :class:`FakeClock` (here): time that moves only when a test says so.
- ``chatpush.testing.fcm.FakeFcm``: FCM HTTP v1 (OAuth token endpoint and ``messages:send``) on
  127.0.0.1, as strict as Google's.
- ``chatpush.testing.apns.FakeApns``: APNs over real HTTP/2 and TLS on 127.0.0.1, as strict as
  Apple's.

The servers are modules of their own, imported by name, so that ``import chatpush.testing`` for
the clock loads nothing more.
"""

from __future__ import annotations

import asyncio


class FakeClock:
    """A clock that moves only when told to: a 15-second resend timetable runs in milliseconds."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms
        self._moved = asyncio.Event()

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, seconds: float = 0.0, *, ms: int = 0) -> None:
        self.set(self._now_ms + int(seconds * 1000) + ms)

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def sleep_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        while not wake.is_set() and (deadline_ms is None or self._now_ms < deadline_ms):
            waiters = [
                asyncio.ensure_future(wake.wait()),
                asyncio.ensure_future(self._moved.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Cancelled and left to end on their own: awaiting them here could swallow a
                # cancellation of this sleeper landing meanwhile (tests/cometd/test_fake_clock.py)
                for waiter in waiters:
                    waiter.cancel()
