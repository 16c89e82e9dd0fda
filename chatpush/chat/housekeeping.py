"""Housekeeping: chats purged after their retention, and idle chats ended."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.engine import Connection

from chatpush.chat.core import PushHooks
from chatpush.chat.server_side import ServerSide
from chatpush.errors import ChatpushError, NotFound
from chatpush.metrics import Metrics
from chatpush.store import chats as repo

log = logging.getLogger("chatpush.chat")


class Housekeeping(ServerSide):
    """Jobs run on a timer; idle chats are ended through the chat-server side's ``end_chat``."""

    async def purge_ended(self) -> int:
        """Delete chats whose retention after ending has run out; returns how many."""
        cutoff_ms = self._clock.now_ms() - self._limits.ended_chat_retention_s * 1000
        purged = 0
        while True:
            count = await self._db.write(repo.purge_ended, cutoff_ms)
            purged += count
            if count == 0:
                return purged

    async def expire_idle_push_chats(self) -> int:
        """End push-subscribed chats idle for longer than their service's flex-push-timeout
        (the push pipeline says which)."""
        if self._push is None:
            return 0
        expired = 0
        for chat_id, timeout_s in await self._push.timed_out_chats():
            try:
                await self.end_chat(chat_id)
            except NotFound:
                continue
            expired += 1
            log.info(
                "chat %s ended: no client request for %d s (flex-push-timeout)",
                chat_id,
                timeout_s,
                extra={"action": "chat_expired", "chat_id": chat_id},
            )
        return expired

    async def expire_idle_chats(self) -> int:
        """End chats without a push subscription and with no client request for longer than
        ``idle_chat_timeout_s``, through the normal end-chat path; returns how many."""
        timeout_s = self._limits.idle_chat_timeout_s
        if timeout_s == 0:
            return 0
        idle_before_ms = self._clock.now_ms() - timeout_s * 1000
        candidates = await self._db.read(repo.idle_unsubscribed_chats, idle_before_ms, 1000)
        expired = 0
        for chat_id in candidates:

            def tx(conn: Connection, push: PushHooks, chat_id: str = chat_id) -> bool:
                chat = repo.get_chat(conn, chat_id, lock=True)
                # Looked at again under the lock: the client may have come back meanwhile.
                if chat is None or chat.ended or chat.last_client_request_ms >= idle_before_ms:
                    return False
                now_ms = self._clock.now_ms()
                self._end(conn, push, chat, now_ms, customer_removed=False, by_customer=False)
                return True

            if not await self._run(tx):
                continue
            expired += 1
            log.info(
                "chat %s ended: no client request for %d s (chat.idle_chat_timeout_s)",
                chat_id,
                timeout_s,
                extra={"action": "chat_idle_ended", "chat_id": chat_id},
            )
        return expired

    async def touch_live(self, chat_ids: Sequence[str]) -> None:
        """Chats followed live (CometD) count as requested now, for ``idle_chat_timeout_s``;
        chats with a push subscription are left alone (their flex-push-timeout is unchanged)."""
        now_ms = self._clock.now_ms()
        for start in range(0, len(chat_ids), 500):
            await self._db.write(repo.touch_unsubscribed, chat_ids[start : start + 500], now_ms)


# The jobs the application runs on a timer (chatpush/app.py schedules them): each one logs or
# counts what it did, and a failure is logged, never raised, so the next run tries again.


async def purge_ended_chats(chats: Housekeeping) -> None:
    try:
        purged = await chats.purge_ended()
    except ChatpushError as exc:
        log.warning("purge failed: %s", exc, extra={"action": "purge_failed"})
        return
    if purged:
        log.info("purged %d ended chats", purged, extra={"action": "chats_purged", "count": purged})


async def end_idle_push_chats(chats: Housekeeping, metrics: Metrics) -> None:
    """Chats past their flex-push-timeout (``chatpush_chats_expired_total``)."""
    await _end(chats.expire_idle_push_chats, metrics, "chatpush_chats_expired_total", "expiry")


async def end_idle_chats(chats: Housekeeping, metrics: Metrics) -> None:
    """Chats without push idle past ``chat.idle_chat_timeout_s`` (counted by
    ``chatpush_chats_idle_ended_total``)."""
    await _end(chats.expire_idle_chats, metrics, "chatpush_chats_idle_ended_total", "idle chat")


async def _end(
    sweep: Callable[[], Awaitable[int]], metrics: Metrics, metric: str, what: str
) -> None:
    try:
        ended = await sweep()
    except ChatpushError as exc:
        log.warning("%s sweep failed: %s", what, exc, extra={"action": "expiry_failed"})
        return
    if ended:
        metrics.inc(metric, ended)
