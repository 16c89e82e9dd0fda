"""The dispatcher: wakes at the earliest due time, fires resend timers, claims and delivers.

There is no polling: the loop sleeps until the earliest ``wake_at_ms`` of a subscription or
``due_at_ms`` of a notification (both read from the database), or until a commit pokes it. At start
it re-arms from the database by simply starting: due work is whatever the tables say is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from chatpush.clock import Clock
from chatpush.config import Settings
from chatpush.metrics import Metrics
from chatpush.providers.base import SendResult
from chatpush.providers.customhttp import CustomHttpProvider
from chatpush.push.pipeline import PushPipeline
from chatpush.routing.router import Router
from chatpush.store import push as store
from chatpush.store.database import Database

log = logging.getLogger("chatpush.dispatch")

CLAIM_BATCH = 500
STOP_GRACE_S = 5.0
"""How long a stop waits for deliveries in flight before it cuts them short."""


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        pipeline: PushPipeline,
        router: Router,
        provider: CustomHttpProvider,
        metrics: Metrics,
    ) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self._pipeline = pipeline
        self._router = router
        self._provider = provider
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._per_node: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.delivery.concurrency_per_node)
        )
        self._stopping = False
        self.stop_grace_s = STOP_GRACE_S
        self._lease_ms = int(settings.delivery.lease_s * 1000)
        pipeline.on_enqueued(self.poke)

    def poke(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        spins = 0
        while not self._stopping:
            self._wake.clear()
            now_ms = self._clock.now_ms()
            async with self._db.read() as conn:
                wake_ms = await store.next_wake_ms(conn)
                due_ms = await store.next_due_ms(conn)
            if wake_ms is not None and wake_ms <= now_ms:
                await self._pipeline.fire_due_timers()
                continue
            if due_ms is not None and due_ms <= now_ms and await self._claim():
                spins = 0
                continue
            deadlines = [value for value in (wake_ms, due_ms) if value is not None]
            deadline = min(deadlines) if deadlines else None
            if deadline is not None and deadline <= now_ms:
                # Due but not claimable: its chat is in flight here (a finishing delivery pokes
                # us) or leased elsewhere. Never spin on it.
                deadline = None
                if not self._inflight:
                    spins += 1
                    if spins > 2:
                        await asyncio.sleep(0.05)
                        continue
            if not self._inflight and not self._wake.is_set():
                self._idle.set()
            await self._clock.sleep_until(deadline, self._wake)

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until nothing is due now and nothing is in flight (tests use this)."""
        self.poke()
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def stop(self) -> None:
        """Let deliveries in flight finish for ``stop_grace_s``, then cut the rest short.

        A delivery cut short is not recorded and its outbox row stays (its lease is released at
        the next start), so it is sent again after a restart: at-least-once (CONTRACT §8.6).
        Left running, it would fail when the HTTP session closes and be dropped as a receiver
        failure, though the receiver never answered.
        """
        self._stopping = True
        self._wake.set()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self.stop_grace_s)
        cut = list(self._inflight.values())
        for task in cut:
            task.cancel()
        if cut:
            await asyncio.gather(*cut, return_exceptions=True)
            log.warning(
                "stopped with %d deliveries in flight; they are sent again at the next start",
                len(cut),
                extra={"action": "deliveries_cut_short", "count": len(cut)},
            )

    async def _claim(self) -> int:
        now_ms = self._clock.now_ms()
        async with self._db.write() as conn:
            rows = await store.claim_heads(
                conn,
                now_ms,
                self._lease_ms,
                self._router.instance_id,
                CLAIM_BATCH,
                exclude_chats=list(self._inflight),
            )
        if self._stopping:
            return 0  # claimed during the stop: the leases are released at the next start
        for row in rows:
            task = asyncio.create_task(self._deliver(row), name=f"deliver-{row.chat_id}")
            self._inflight[row.chat_id] = task
        return len(rows)

    async def _deliver(self, row: store.OutboxRecord) -> None:
        try:
            await self._deliver_one(row)
        except Exception:
            log.exception(
                "delivery of chat %s crashed", row.chat_id, extra={"action": "delivery_crashed"}
            )
        finally:
            self._inflight.pop(row.chat_id, None)
            self.poke()

    async def _deliver_one(self, row: store.OutboxRecord) -> None:
        async with self._db.read() as conn:
            subscription = await store.get_subscription(conn, row.chat_id)
        if subscription is None:
            async with self._db.write() as conn:
                await store.finish(conn, row.id)
            return
        request = subscription.request
        route = self._router.route(
            row.chat_id,
            group_name=request.group_name,
            device_type=request.device_type,
            provider=request.provider,
            debug=request.debug,
            pinned=subscription.pinned_node,
        )
        now_ms = self._clock.now_ms()
        if route is None:
            log.warning(
                "could not send notification: no node found in group=%s",
                request.group_name,
                extra={"action": "no_node", "chat_id": row.chat_id},
            )
            self._metrics.inc("chatpush_no_node_total", group=request.group_name)
            async with self._db.write() as conn:
                await store.park(conn, row.chat_id, row.id)
                await store.record_delivery(
                    conn, self._trail(row, request.device_type, None, None, now_ms, "no_node")
                )
            return
        if route.node != subscription.pinned_node:
            async with self._db.write() as conn:
                await store.pin(conn, row.chat_id, route.node)
            if subscription.pinned_node is not None or route.failover:
                self._metrics.inc("chatpush_node_failovers_total", node=route.node)
                log.info(
                    "chat %s pinned to node %s (group %s)",
                    row.chat_id,
                    route.node,
                    route.group_name,
                    extra={
                        "action": "node_failover",
                        "chat_id": row.chat_id,
                        "node": route.node,
                        "from_node": subscription.pinned_node,
                    },
                )
        result = await self._provider.send(
            route.target,
            row.body,
            message_id=row.message_id,
            now_s=now_ms // 1000,
            node_slot=self._per_node[route.node],
        )
        self._metrics.inc(
            "chatpush_deliveries_total",
            outcome=result.outcome,
            node=route.node,
            device_type=request.device_type,
        )
        extra = {
            "action": "notification_sent" if result.outcome == "sent" else "delivery_failed",
            "chat_id": row.chat_id,
            "node": route.node,
            "kind": row.kind,
            "notify_position": row.notify_position,
            "attempt": row.attempt,
            "status": result.http_status,
            "latency_ms": result.latency_ms,
        }
        if result.outcome == "sent":
            log.debug("notification delivered", extra=extra)
        elif request.reliable:
            log.info("delivery failed, resend timer stays armed: %s", result.error, extra=extra)
        else:
            log.warning(
                "delivery failed, not resubmitted (no PushResend): %s", result.error, extra=extra
            )
        async with self._db.write() as conn:
            await store.record_delivery(
                conn,
                self._trail(
                    row,
                    request.device_type,
                    route.node,
                    route.group_name,
                    self._clock.now_ms(),
                    result.outcome,
                    result,
                ),
            )
            await store.finish(conn, row.id)

    @staticmethod
    def _trail(
        row: store.OutboxRecord,
        device_type: str,
        node: str | None,
        group_name: str | None,
        at_ms: int,
        outcome: str,
        result: SendResult | None = None,
    ) -> store.DeliveryRecord:
        return store.DeliveryRecord(
            chat_id=row.chat_id,
            at_ms=at_ms,
            node=node,
            group_name=group_name,
            device_type=device_type,
            kind=row.kind,
            attempt=row.attempt,
            notify_position=row.notify_position,
            outcome=outcome,
            http_status=result.http_status if result else None,
            error=result.error if result else None,
            latency_ms=result.latency_ms if result else None,
        )
