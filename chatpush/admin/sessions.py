"""The admin console's sessions: in this instance's memory, bounded, expiring, signed.

A session is made by a login with an admin key. The cookie holds ``<id>.<signature>``: 32 random
bytes and their HMAC-SHA256 under a key made at start-up, so a forged or altered cookie is refused
before any lookup, and every session ends when the process does. Each session has its own CSRF
token, which every form of the console carries and every POST must return.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from chatpush.clock import Clock
from chatpush.config import AdminSettings


@dataclass(slots=True)
class Session:
    id: str
    key_name: str
    """The name of the API key that logged in (for logs; never the key)."""
    csrf: str
    created_at_ms: int
    used_at_ms: int
    flash: list[tuple[str, str]] = field(default_factory=list)
    """(level, message) for the next page shown (after a redirect); at most a few."""


class Sessions:
    def __init__(self, settings: AdminSettings, clock: Clock) -> None:
        self._clock = clock
        self._idle_ms = settings.session_idle_s * 1000
        self._max_ms = settings.session_max_s * 1000
        self._max_sessions = settings.max_sessions
        self._key = secrets.token_bytes(32)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        """Least recently used first."""

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, key_name: str) -> tuple[Session, str]:
        """A new session and the cookie value that names it."""
        now_ms = self._clock.now_ms()
        self._drop_expired(now_ms)
        while len(self._sessions) >= self._max_sessions:
            self._sessions.popitem(last=False)
        session = Session(
            secrets.token_urlsafe(32), key_name, secrets.token_urlsafe(32), now_ms, now_ms
        )
        self._sessions[session.id] = session
        return session, f"{session.id}.{self._sign(session.id)}"

    def find(self, cookie: str | None) -> Session | None:
        """The live session named by ``cookie`` (its use renews the idle timeout), or None."""
        if not cookie or len(cookie) > 200:
            return None
        session_id, _, signature = cookie.partition(".")
        if not hmac.compare_digest(
            signature.encode("utf-8", "surrogatepass"), self._sign(session_id).encode()
        ):
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now_ms = self._clock.now_ms()
        if self._expired(session, now_ms):
            del self._sessions[session_id]
            return None
        session.used_at_ms = now_ms
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        """The form's token is the session's (compared in constant time)."""
        return hmac.compare_digest(
            session.csrf.encode(), (given or "").encode("utf-8", "surrogatepass")
        )

    def _sign(self, session_id: str) -> str:
        mac = hmac.new(self._key, session_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return mac.hexdigest()

    def _expired(self, session: Session, now_ms: int) -> bool:
        return (
            now_ms - session.used_at_ms >= self._idle_ms
            or now_ms - session.created_at_ms >= self._max_ms
        )

    def _drop_expired(self, now_ms: int) -> None:
        for session in list(self._sessions.values()):
            if not self._expired(session, now_ms):
                break  # the rest were used more recently
            del self._sessions[session.id]
