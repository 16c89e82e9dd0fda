"""What happens after a send: the facts a send outcome gives (a chat's rules read them), and the
plain-retry rule of every source but chat (``after_send``, pure).

Chat notifications keep ``push/rules.py: decide`` (resend timetables of triggers, pins, the
subscription's state). Every other source's notification is tried up to ``max_attempts`` times,
each try with the same message id:

- sent → done;
- rejected (a dead token) → done, final;
- a permanent failure → done, final;
- a temporary failure → due again after the next ``retry_delays_s`` entry (the last one
  repeats), never before the service's ``Retry-After``, until ``max_attempts`` tries have been
  made or the next try would come after ``expires_at_ms``; then dropped (final);
- held by a provider's backoff (FCM 429, a receiver's 429/503 with ``Retry-After``) → due again
  at the backoff's end; the try is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MAX_RETRY_AFTER_MS = 3_600_000
"""A ``Retry-After`` longer than an hour is taken as an hour: no service parks a key for days."""
MIN_DEFERRAL_MS = 1_000
"""A backoff of less than a second (``Retry-After: 0``) defers by a second, never a busy loop."""


def retry_after_ms(seconds: float | None) -> int | None:
    """A service's ``Retry-After`` (seconds) as the wait before the next try, bounded."""
    if seconds is None:
        return None
    return min(max(int(seconds * 1000), 0), MAX_RETRY_AFTER_MS)


def deferral_ms(seconds: float | None) -> int:
    """How long a send deferred by a backoff of ``seconds`` stays queued, bounded."""
    return max(retry_after_ms(seconds) or 0, MIN_DEFERRAL_MS)


@dataclass(frozen=True, slots=True)
class Sent:
    """Which notification a send outcome is about: a trigger's position and attempt (both None
    for a payload or bare notification)."""

    position: int | None = None
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A notification was not delivered. ``permanent``: the receiver refuses it and a resend
    cannot succeed (401, 403, 400, ...); otherwise a resend may, no sooner than
    ``retry_after_ms`` from now when the service said so."""

    notification: Sent
    permanent: bool
    retry_after_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SendDeferred:
    """The service asked everyone to wait (a backoff): the notification was not attempted, and
    stays queued until ``until_ms``."""

    notification: Sent
    until_ms: int


SendResultKind = Literal["sent", "rejected", "failed", "held"]


@dataclass(frozen=True, slots=True)
class Next:
    """What ``after_send`` decided: ``due_at_ms`` None means done (the row goes); else the same
    row is due again then, with ``tries`` tries counted. ``final``: no further try."""

    due_at_ms: int | None
    tries: int
    final: bool
    dropped: bool = False
    """Temporary failures used up every try: given up on (logged and counted)."""


def after_send(
    result: SendResultKind,
    *,
    permanent: bool,
    tries_before: int,
    max_attempts: int,
    retry_delays_s: Sequence[float],
    retry_after_s: float | None,
    now_ms: int,
    expires_at_ms: int | None = None,
) -> Next:
    """The plain-retry rule for one finished try of a notification (not a chat's).
    ``expires_at_ms``: no try after then (None: ``max_attempts`` alone limits)."""
    if result == "held":
        until_ms = now_ms + deferral_ms(retry_after_s)
        if expires_at_ms is not None and until_ms > expires_at_ms:
            return Next(None, tries_before, final=True, dropped=True)
        return Next(until_ms, tries_before, final=False)
    tries = tries_before + 1
    if result != "failed" or permanent:
        return Next(None, tries, final=True)
    if tries >= max_attempts:
        return Next(None, tries, final=True, dropped=True)
    delay_ms = 0
    if retry_delays_s:
        delay_ms = int(retry_delays_s[min(tries - 1, len(retry_delays_s) - 1)] * 1000)
    wait_ms = max(delay_ms, retry_after_ms(retry_after_s) or 0)
    if expires_at_ms is not None and now_ms + wait_ms > expires_at_ms:
        return Next(None, tries, final=True, dropped=True)
    return Next(now_ms + wait_ms, tries, final=False)
