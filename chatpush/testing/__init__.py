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


# -- a recording provider ------------------------------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Literal  # noqa: E402

from pydantic import BaseModel, ConfigDict  # noqa: E402

from chatpush.providers.base import (  # noqa: E402
    Notification,
    Provider,
    ProviderContext,
    SendResult,
    Target,
)


class RecordingOptions(BaseModel):
    """``[provider_options.<device type>]`` of a :class:`RecordingProvider`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    outcome: Literal["sent", "rejected", "failed"] = "sent"
    """What every send answers (tests may also queue ``answers``)."""
    temporary: bool = True
    """A ``failed`` answer is temporary (else permanent)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """One notification as a :class:`RecordingProvider` was asked to send it."""

    target: Target
    notification: Notification
    now_s: int

    @property
    def body(self) -> dict[str, Any]:
        return self.notification.body


@dataclass(eq=False)
class RecordingProvider(Provider):
    """A provider that keeps what it is given and answers ``sent`` (or what it is told to):
    for tests of code that pushes, and an example of a whole provider (docs/providers.md).

    Not registered: a test registers it (or a subclass with a device type of its own) with
    ``chatpush.providers.registry.register`` and unregisters it after."""

    device_type = "recording"
    settings_model = RecordingOptions

    options_given: RecordingOptions = field(default_factory=RecordingOptions)
    sent: list[Recorded] = field(default_factory=list)
    answers: list[SendResult] = field(default_factory=list)
    """Answered in order, one per send, before ``options_given.answer``."""
    started: bool = False

    @classmethod
    def create(cls, context: ProviderContext) -> RecordingProvider:
        options = cls.options(context.settings)
        assert isinstance(options, RecordingOptions)
        return cls(options)

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    async def send(
        self,
        target: Target,
        notification: Notification,
        *,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        self.sent.append(Recorded(target, notification, now_s))
        if self.answers:
            return self.answers.pop(0)
        given = self.options_given
        error = (
            None
            if given.outcome == "sent"
            else f"recording provider told to answer {given.outcome}"
        )
        return SendResult(given.outcome, 0, error=error, temporary=given.temporary)
