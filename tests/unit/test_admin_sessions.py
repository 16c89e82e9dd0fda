"""The admin console's sessions: signed cookies, idle and absolute expiry, a bounded count."""

from __future__ import annotations

from chatpush.admin.sessions import Sessions
from chatpush.config import AdminSettings
from chatpush.testing import FakeClock


def sessions(clock: FakeClock, **settings: int) -> Sessions:
    return Sessions(AdminSettings(enabled=True, **settings), clock)


def test_a_cookie_finds_its_session_and_nothing_else_does() -> None:
    clock = FakeClock()
    store = sessions(clock)
    session, cookie = store.create("ops")
    assert store.find(cookie) is session
    session_id, _, signature = cookie.partition(".")
    other, _ = store.create("ops")
    assert other.id != session.id and other.csrf != session.csrf
    for forged in (
        session_id,
        f"{session_id}.{'0' * len(signature)}",
        f"{other.id}.{signature}",
        f"{session_id}.{signature}x",
        "",
        None,
        "\udcff.\ud800",
        "a" * 10_000,
    ):
        assert store.find(forged) is None, forged


def test_a_session_ends_when_idle_or_too_old_or_logged_out() -> None:
    clock = FakeClock()
    store = sessions(clock, session_idle_s=60, session_max_s=150)
    session, cookie = store.create("ops")
    clock.advance(59)
    assert store.find(cookie) is session
    clock.advance(59)
    assert store.find(cookie) is session  # each use renews the idle timeout
    clock.advance(31)  # 149 s after the login
    assert store.find(cookie) is session
    clock.advance(1)  # 150 s: too old, however busy
    assert store.find(cookie) is None and len(store) == 0
    session, cookie = store.create("ops")
    clock.advance(60)
    assert store.find(cookie) is None
    session, cookie = store.create("ops")
    store.end(session)
    assert store.find(cookie) is None


def test_the_count_is_bounded_and_the_least_recently_used_goes_first() -> None:
    clock = FakeClock()
    store = sessions(clock, max_sessions=3)
    made = [store.create("ops") for _ in range(3)]
    assert store.find(made[0][1]) is not None  # used: now the most recent
    store.create("ops")
    assert len(store) == 3
    assert store.find(made[1][1]) is None
    assert store.find(made[0][1]) is not None and store.find(made[2][1]) is not None


def test_csrf_tokens_are_compared_whole() -> None:
    store = sessions(FakeClock())
    session, _ = store.create("ops")
    assert Sessions.csrf_ok(session, session.csrf)
    for wrong in (None, "", session.csrf[:-1], session.csrf + "x", "\ud800"):
        assert not Sessions.csrf_ok(session, wrong)
