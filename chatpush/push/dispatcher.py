"""The dispatcher: wakes at the earliest due time, fires resend timers, claims and delivers.

There is no polling: the loop sleeps until the earliest ``wake_at_ms`` of a subscription or
``due_at_ms`` of a notification (both read from the database), or until a commit pokes it. At start
it re-arms from the database by simply starting: due work is whatever the tables say is due.

Finished attempts are recorded by one writer task in batches (group commit): one transaction for
all the deliveries that ended while the previous batch was being written. A chat stays in flight
until its attempt is recorded, so its next notification cannot overtake it.

A claimed notification is leased for ``delivery.lease_s``; while it is in flight here the lease
is renewed every third of that, so a slow receiver or a slow commit never lets another instance
take it over and send it a second time. Only a dead (or frozen) instance's leases run out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy.engine import Connection

from chatpush.clock import Clock
from chatpush.config import Settings
from chatpush.metrics import Metrics
from chatpush.providers.base import Notification, Provider, SendResult
from chatpush.providers.envelope import Kind
from chatpush.push import rules
from chatpush.push.pipeline import PushPipeline, Sends
from chatpush.routing.router import Router
from chatpush.store import outbox, trail
from chatpush.store import subscriptions as subscription_store
from chatpush.store.database import Database

log = logging.getLogger("chatpush.dispatch")

CLAIM_BATCH = 500
MAX_IN_FLIGHT = 1024
"""Deliveries claimed and not yet recorded, at most (they wait on node and receiver slots)."""
STOP_GRACE_S = 5.0
"""How long a stop waits for deliveries in flight before it cuts them short."""
DEADLINES_EVERY_MS = 20
"""While every turn claims work, the timers' and the outbox's deadlines are read this often, not
on every turn (one read per delivered event cost more than the claim itself)."""
UNCLAIMABLE_RETRY_MS = 250
"""Work is due but none could be claimed (leased or pinned elsewhere): look again this soon."""


def _claim_with_subscriptions(
    conn: Connection,
    now_ms: int,
    lease_ms: int,
    claimer: str,
    limit: int,
    exclude_chats: list[str],
    others_nodes: list[str],
) -> tuple[list[outbox.OutboxRecord], dict[str, subscription_store.SubscriptionRecord]]:
    rows = outbox.claim_heads(conn, now_ms, lease_ms, claimer, limit, exclude_chats, others_nodes)
    subscriptions = (
        subscription_store.subscriptions_for(conn, [row.chat_id for row in rows]) if rows else {}
    )
    return rows, subscriptions


def notification(row: outbox.OutboxRecord) -> Notification:
    """The envelope of an outbox row: the chat pipeline is its one source today, and the outbox
    is keyed by chat (docs/architecture.md, "A new notification source")."""
    return Notification(
        "chat",
        row.chat_id,
        cast(Kind, row.kind),  # written by the pipeline: trigger, payload or bare
        row.message_id,
        row.body,
        position=row.notify_position,
        attempt=row.attempt,
    )


@dataclass(slots=True)
class _Finished:
    """A finished attempt waiting to be recorded by the writer."""

    chat_id: str
    outbox_id: int
    trail: trail.DeliveryRecord | None
    park: bool = False
    pin: str | None = None
    handover: bool = False
    dead_token: tuple[str, str, int] | None = None
    """(device type, device id, when): the provider said the token is dead."""
    outcome: rules.SendFailed | rules.SendDeferred | None = None
    """A failed or deferred send, for ``rules.decide``."""
    recorded: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        pipeline: PushPipeline,
        router: Router,
        providers: Mapping[str, Provider],
        metrics: Metrics,
    ) -> None:
        """``providers``: the provider of each device type (chatpush/providers/registry.py). A
        notification of a device type without a provider fails, permanently."""
        self._db = db
        self._settings = settings
        self._clock = clock
        self._pipeline = pipeline
        self._router = router
        self._providers: dict[str, Provider] = dict(providers)
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._per_node: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.delivery.concurrency_per_node)
        )
        self._finished: list[_Finished] = []
        self._finished_ready = asyncio.Event()
        self._stopping = False
        self.stop_grace_s = STOP_GRACE_S
        self._lease_ms = int(settings.delivery.lease_s * 1000)
        self._leases: dict[int, int] = {}
        """Outbox id -> lease end (ms) of every notification claimed here and not yet recorded."""
        pipeline.on_enqueued(self.poke)

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    def provider_for_credentials(self, kind: str) -> Provider:
        """The provider that uses credentials of ``kind`` (a registered one)."""
        return next(p for p in self._providers.values() if p.credentials_kind == kind)

    def poke(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        writer = asyncio.create_task(self._record_finished(), name="delivery-recorder")
        renewer = asyncio.create_task(self._renew_leases(), name="lease-renewer")
        try:
            await self._loop()
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            # The writer outlives the loop so that deliveries finishing during a stop are recorded.
            while self._inflight and not writer.done():
                await asyncio.wait(list(self._inflight.values()))
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _loop(self) -> None:
        # PostgreSQL: other instances add work too; they NOTIFY, and this cap covers a lost one.
        poll_s = None if self._db.is_sqlite else self._settings.delivery.poll_interval_s
        poll_ms = None if poll_s is None else int(poll_s * 1000)
        checked_ms = None  # when the deadlines were last read
        while not self._stopping:
            self._wake.clear()
            now_ms = self._clock.now_ms()
            claimed = await self._claim(now_ms)
            if claimed and checked_ms is not None and now_ms - checked_ms < DEADLINES_EVERY_MS:
                continue  # work flows: claim on, and look at the timers a little later
            # Timers are checked at least every DEADLINES_EVERY_MS while work flows, so a steady
            # flow of new work cannot starve them.
            wake_ms, due_ms = await self._db.read(outbox.deadlines)
            checked_ms = now_ms
            if wake_ms is not None and wake_ms <= now_ms:
                if await self._pipeline.fire_due_timers():
                    checked_ms = None  # more may be due: look again on the next turn
                    continue
                wake_ms = None  # due, but another instance is firing those timers right now
            if claimed:
                continue
            deadlines = [value for value in (wake_ms, due_ms) if value is not None]
            deadline = min(deadlines) if deadlines else None
            if deadline is not None and deadline <= now_ms:
                # Due but not claimable: its chat is in flight here (a finishing delivery pokes
                # us), we are at MAX_IN_FLIGHT, or it is leased or pinned elsewhere.
                deadline = None if self._inflight else now_ms + UNCLAIMABLE_RETRY_MS
            if poll_ms is not None:
                deadline = min(deadline, now_ms + poll_ms) if deadline else now_ms + poll_ms
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
        the next start), so it is sent again after a restart: at-least-once (rule 6).
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

    async def _claim(self, now_ms: int) -> int:
        room = min(CLAIM_BATCH, MAX_IN_FLIGHT - len(self._inflight))
        if room <= 0 or self._stopping:
            return 0
        rows, subscriptions = await self._db.write(
            _claim_with_subscriptions,
            now_ms,
            self._lease_ms,
            self._router.instance_id,
            room,
            list(self._inflight),
            self._router.remote_available(),
        )
        if self._stopping:
            return 0  # claimed during the stop: the leases are released at the next start
        for row in rows:
            self._leases[row.id] = now_ms + self._lease_ms
            task = asyncio.create_task(
                self._deliver(row, subscriptions.get(row.chat_id)), name=f"deliver-{row.chat_id}"
            )
            self._inflight[row.chat_id] = task
        return len(rows)

    async def _renew_leases(self) -> None:
        interval_ms = max(self._lease_ms // 3, 1)
        never = asyncio.Event()
        while True:
            await self._clock.sleep_until(self._clock.now_ms() + interval_ms, never)
            held = list(self._leases)
            if not held:
                continue
            until_ms = self._clock.now_ms() + self._lease_ms
            try:
                renewed = await self._db.write(
                    outbox.renew_leases, held, self._router.instance_id, until_ms
                )
            except Exception as exc:  # the database is away: the next turn tries again
                log.warning("could not renew leases: %s", exc, extra={"action": "lease_renewal"})
                continue
            for outbox_id in renewed:
                if outbox_id in self._leases:
                    self._leases[outbox_id] = until_ms

    async def _record_finished(self) -> None:
        while True:
            await self._finished_ready.wait()
            self._finished_ready.clear()
            batch, self._finished = self._finished, []
            if not batch:
                continue
            sends = Sends(
                finished=[item.outbox_id for item in batch if not (item.park or item.handover)],
                parked=[(item.chat_id, item.outbox_id) for item in batch if item.park],
                trail=[item.trail for item in batch if item.trail is not None],
                pins=[(item.chat_id, item.pin) for item in batch if item.pin],
                handed_over=[item.outbox_id for item in batch if item.handover],
                dead_tokens=[item.dead_token for item in batch if item.dead_token],
                outcomes=[
                    (item.chat_id, item.outbox_id, item.outcome) for item in batch if item.outcome
                ],
            )
            try:
                report = await self._db.write(
                    self._pipeline.record_sends, sends, self._clock.now_ms()
                )
            except Exception as exc:
                # The rows stay leased and are claimed again when the lease runs out.
                for item in batch:
                    item.recorded.set_exception(exc)
            else:
                report.emit(self._metrics, self._pipeline.poke)
                for item in batch:
                    item.recorded.set_result(None)

    async def _finish(self, item: _Finished) -> None:
        self._finished.append(item)
        self._finished_ready.set()
        await item.recorded

    async def _deliver(
        self, row: outbox.OutboxRecord, subscription: subscription_store.SubscriptionRecord | None
    ) -> None:
        try:
            await self._deliver_one(row, subscription)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "delivery of chat %s crashed", row.chat_id, extra={"action": "delivery_crashed"}
            )
        finally:
            self._inflight.pop(row.chat_id, None)
            self._leases.pop(row.id, None)
            self.poke()

    async def _deliver_one(
        self, row: outbox.OutboxRecord, subscription: subscription_store.SubscriptionRecord | None
    ) -> None:
        if subscription is None:
            await self._finish(_Finished(row.chat_id, row.id, None))
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
            trail = self._trail(row, request.device_type, None, None, now_ms, "no_node")
            await self._finish(_Finished(row.chat_id, row.id, trail, park=True))
            return
        if self._leases.get(row.id, 0) - now_ms < self._lease_ms // 2:
            # Renewals stalled (a frozen loop, an unreachable database): another instance may
            # have taken it over by now. Sending it as well could deliver it twice; leave it.
            log.warning(
                "lease of a notification of chat %s nearly ran out before sending; left to the "
                "next claim",
                row.chat_id,
                extra={"action": "lease_nearly_out", "chat_id": row.chat_id},
            )
            return
        if not route.local:
            # Another instance hosts the node: pin the chat there and let that instance send.
            await self._finish(_Finished(row.chat_id, row.id, None, pin=route.node, handover=True))
            return
        pin = None
        if route.node != subscription.pinned_node:
            pin = route.node
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
        provider = self._providers.get(request.device_type)
        if provider is None:  # refused at Request Chat (fcm, ios): only an old row can get here
            result = SendResult(
                "failed",
                0,
                error=f"no provider for device type {request.device_type}",
                temporary=False,
            )
        else:
            result = await provider.send(
                route.target,
                notification(row),
                now_s=now_ms // 1000,
                node_slot=self._per_node[route.node],
            )
        self._metrics.inc(
            "chatpush_deliveries_total",
            outcome=result.outcome,
            node=route.node,
            device_type=request.device_type,
        )
        if provider is not None:
            self._metrics.observe(
                "chatpush_delivery_duration_seconds",
                result.latency_ms / 1000,
                device_type=request.device_type,
            )
        self._metrics.observe(
            "chatpush_notification_delivery_delay_seconds",
            max(0, self._clock.now_ms() - row.created_at_ms) / 1000,
            kind=row.kind,
        )
        now_ms = self._clock.now_ms()
        about = (
            rules.Sent(row.notify_position, row.attempt) if row.kind == "trigger" else rules.Sent()
        )
        outcome: rules.SendFailed | rules.SendDeferred | None = None
        recorded_as: str = result.outcome
        if result.held:
            until_ms = now_ms + rules.deferral_ms(result.retry_after_s)
            outcome = rules.SendDeferred(about, until_ms)
            recorded_as = "deferred"
            self._metrics.inc("chatpush_sends_deferred_total", device_type=request.device_type)
            log.info(
                "delivery deferred for %.0f s, the service asked to wait: %s",
                (until_ms - now_ms) / 1000,
                result.error,
                extra=self._failure_extra(row, route.node, result),
            )
        elif result.outcome == "failed":
            outcome = rules.SendFailed(
                about, result.permanent, rules.retry_after_ms(result.retry_after_s)
            )
            self._metrics.inc(
                "chatpush_delivery_failures_total",
                device_type=request.device_type,
                failure="permanent" if result.permanent else "temporary",
                reason=f"http_{result.http_status}" if result.http_status else "no_answer",
            )
            extra = self._failure_extra(row, route.node, result)
            if not request.reliable:
                log.warning(
                    "delivery failed, not resubmitted (no PushResend): %s",
                    result.error,
                    extra=extra,
                )
            elif result.permanent:
                log.warning("delivery failed permanently, no resend: %s", result.error, extra=extra)
            else:
                log.info("delivery failed, resend timer stays armed: %s", result.error, extra=extra)
        dead_token = None
        if result.outcome == "rejected":
            # The token is dead: this subscription (and any other on the token) ends now.
            dead_token = (request.device_type, request.device_id, now_ms)
            self._metrics.inc("chatpush_dead_tokens_total", device_type=request.device_type)
            log.warning(
                "device token of chat %s is dead, its subscription ends: %s",
                row.chat_id,
                result.error,
                extra={
                    "action": "dead_token",
                    "chat_id": row.chat_id,
                    "device_type": request.device_type,
                },
            )
        trail = self._trail(
            row,
            request.device_type,
            route.node,
            route.group_name,
            now_ms,
            recorded_as,
            result,
        )
        await self._finish(
            _Finished(
                row.chat_id,
                row.id,
                trail,
                pin=pin,
                dead_token=dead_token,
                outcome=outcome,
            )
        )

    @staticmethod
    def _failure_extra(
        row: outbox.OutboxRecord, node: str, result: SendResult
    ) -> dict[str, object]:
        return {
            "action": "delivery_failed",
            "chat_id": row.chat_id,
            "node": node,
            "kind": row.kind,
            "notify_position": row.notify_position,
            "attempt": row.attempt,
            "status": result.http_status,
            "latency_ms": result.latency_ms,
            "failure": "permanent" if result.permanent else "temporary",
        }

    @staticmethod
    def _trail(
        row: outbox.OutboxRecord,
        device_type: str,
        node: str | None,
        group_name: str | None,
        at_ms: int,
        outcome: str,
        result: SendResult | None = None,
    ) -> trail.DeliveryRecord:
        return trail.DeliveryRecord(
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
            failure=_failure(result),
            retry_after_ms=(
                rules.retry_after_ms(result.retry_after_s)
                if result is not None and result.outcome == "failed"
                else None
            ),
        )


def _failure(result: SendResult | None) -> str | None:
    """How the trail names a failed send: ``permanent``, ``temporary``, ``deferred`` (backoff)."""
    if result is None or result.outcome != "failed":
        return None
    if result.held:
        return "deferred"
    return "permanent" if result.permanent else "temporary"
