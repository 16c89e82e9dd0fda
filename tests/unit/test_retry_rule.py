"""The plain-retry rule of every source but chat (chatpush/delivery/retry.py: after_send)."""

from __future__ import annotations

from chatpush.delivery.retry import Next, after_send

NOW_MS = 1_000_000


def decide(result: str, tries_before: int = 0, **options: object) -> Next:
    settings: dict[str, object] = {
        "permanent": False,
        "tries_before": tries_before,
        "max_attempts": 4,
        "retry_delays_s": (5, 60),
        "retry_after_s": None,
        "now_ms": NOW_MS,
    }
    settings.update(options)
    return after_send(result, **settings)  # type: ignore[arg-type]


def test_sent_and_rejected_are_done_and_final() -> None:
    assert decide("sent") == Next(None, 1, final=True)
    assert decide("rejected", 2) == Next(None, 3, final=True)


def test_a_permanent_failure_ends_at_once_whatever_tries_are_left() -> None:
    assert decide("failed", permanent=True) == Next(None, 1, final=True)


def test_temporary_failures_follow_the_delays_the_last_one_repeating() -> None:
    assert decide("failed", 0) == Next(NOW_MS + 5_000, 1, final=False)
    assert decide("failed", 1) == Next(NOW_MS + 60_000, 2, final=False)
    assert decide("failed", 2) == Next(NOW_MS + 60_000, 3, final=False)
    assert decide("failed", 3) == Next(None, 4, final=True, dropped=True)


def test_never_before_retry_after_and_at_once_without_delays() -> None:
    assert decide("failed", retry_after_s=30) == Next(NOW_MS + 30_000, 1, final=False)
    assert decide("failed", retry_after_s=1) == Next(NOW_MS + 5_000, 1, final=False)
    assert decide("failed", retry_delays_s=()) == Next(NOW_MS, 1, final=False)
    assert decide("failed", retry_after_s=10**9).due_at_ms == NOW_MS + 3_600_000  # bounded


def test_a_backoff_holds_without_counting_the_try() -> None:
    assert decide("held", 2, retry_after_s=120) == Next(NOW_MS + 120_000, 2, final=False)
    assert decide("held", 3, retry_after_s=0) == Next(NOW_MS + 1_000, 3, final=False)


def test_one_try_only_is_dropped_after_it() -> None:
    assert decide("failed", max_attempts=1) == Next(None, 1, final=True, dropped=True)


def test_with_an_expiry_no_try_comes_after_it() -> None:
    expires_ms = NOW_MS + 60_000
    many = {"max_attempts": 10**6, "expires_at_ms": expires_ms}
    assert decide("failed", 0, **many) == Next(NOW_MS + 5_000, 1, final=False)
    assert decide("failed", 1, **many) == Next(NOW_MS + 60_000, 2, final=False)  # at it: goes
    later = decide("failed", 1, **{**many, "expires_at_ms": expires_ms - 1})
    assert later == Next(None, 2, final=True, dropped=True)
    # Retry-After past the expiry, and a backoff past it, drop it too; sent is sent.
    assert decide("failed", 0, retry_after_s=61, **many).dropped
    assert decide("held", 0, retry_after_s=61, **many) == Next(None, 0, final=True, dropped=True)
    assert decide("held", 0, retry_after_s=60, **many).due_at_ms == expires_ms
    assert decide("sent", 5, **many) == Next(None, 6, final=True)
    # max_attempts still counts.
    assert decide("failed", 3, max_attempts=4, expires_at_ms=expires_ms).dropped
