"""Fakes shipped with the package, for our tests and for people embedding chatpush."""

from __future__ import annotations


class FakeClock:
    """A clock that moves only when told to: resend timetables run in milliseconds."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, seconds: float = 0.0, *, ms: int = 0) -> None:
        self._now_ms += int(seconds * 1000) + ms

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms
