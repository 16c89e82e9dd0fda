"""The dispatcher: wakes at the earliest due time, fires resend timers, claims and delivers.

It sends the notifications of every source (docs/architecture.md, "A new notification source"),
one at a time per (source, key), in enqueue order. A chat's (source ``chat``) route by the chat's
subscription (its pinned node, failover) and their outcomes go to the chat pipeline
(``ChatSource.record_sends``: ``rules.decide``); any other source's route by the destination on
the row (``Router.route`` with its group, device type, provider and debug flag, no pin) and
follow the plain-retry rule (``delivery/retry.py: after_send``), then its ``SourceHooks``.

There is no polling: the loop sleeps until the earliest ``wake_at_ms`` of a subscription or
``due_at_ms`` of a notification (both read from the database), or until a commit pokes it. At start
it re-arms from the database by simply starting: due work is whatever the tables say is due.

Finished attempts are recorded by one writer task in batches (group commit): one transaction for
all the deliveries that ended while the previous batch was being written. A chat stays in flight
until its attempt is recorded, so its next notification cannot overtake it (any key alike).

A claimed notification is leased for ``delivery.lease_s``; while it is in flight here the lease
is renewed every third of that, so a slow receiver or a slow commit never lets another instance
take it over and send it a second time. Only a dead (or frozen) instance's leases run out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from sqlalchemy.engine import Connection

from chatpush.clock import Clock
from chatpush.config import Settings
from chatpush.delivery import retry
from chatpush.delivery.api import Destination, Outcome, SourceHooks, alert_of
from chatpush.metrics import Metrics
from chatpush.providers.base import Notification, Provider, SendResult, Target
from chatpush.providers.envelope import Kind, Priority, Source
from chatpush.routing.router import Route, Router
from chatpush.store import outbox, tokens, trail
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
CHAT = "chat"

KeyOf = tuple[str, str]
"""(source, key): one notification of each in flight."""


@dataclass(frozen=True, slots=True)
class Sends:
    """A batch of a chat's finished sends, as the dispatcher's recorder hands them over."""

    finished: Sequence[int] = ()
    """Outbox ids done with (sent, failed, or deferred: those stay queued, see ``outcomes``)."""
    parked: Sequence[tuple[str, int]] = ()
    trail: Sequence[trail.DeliveryRecord] = ()
    pins: Sequence[tuple[str, str]] = ()
    handed_over: Sequence[int] = ()
    dead_tokens: Sequence[tuple[str, str, int]] = ()
    outcomes: Sequence[tuple[str, int, retry.SendFailed | retry.SendDeferred]] = ()
    """(chat id, outbox id, what happened) of each failed or deferred send."""

    @property
    def deferred_ids(self) -> frozenset[int]:
        return frozenset(
            outbox_id
            for _chat_id, outbox_id, fact in self.outcomes
            if isinstance(fact, retry.SendDeferred)
        )


class Emits(Protocol):
    def emit(self, metrics: Metrics, poke: Callable[[], None]) -> None:
        """After the commit: count, log, and wake the dispatcher."""


class ChatSource(Protocol):
    """The chat pipeline as the dispatcher uses it (push/pipeline.py: ``PushPipeline``): its
    resend timers, and the recording of its sends (``rules.decide``)."""

    def record_sends(self, conn: Connection, sends: Sends, now_ms: int) -> Emits: ...

    async def fire_due_timers(self) -> int: ...

    def poke(self) -> None: ...

    def on_enqueued(self, poke: Callable[[], None]) -> None: ...


def _claim_with_subscriptions(
    conn: Connection,
    now_ms: int,
    lease_ms: int,
    claimer: str,
    limit: int,
    exclude: frozenset[KeyOf],
    others_nodes: list[str],
) -> tuple[list[outbox.OutboxRecord], dict[str, subscription_store.SubscriptionRecord]]:
    rows = outbox.claim_heads(conn, now_ms, lease_ms, claimer, limit, exclude, others_nodes)
    chats = [row.key for row in rows if row.source == CHAT]
    subscriptions = subscription_store.subscriptions_for(conn, chats) if chats else {}
    return rows, subscriptions


def notification(row: outbox.OutboxRecord) -> Notification:
    """The envelope of an outbox row, whatever its source."""
    if row.source == CHAT:
        return Notification(
            "chat",
            row.key,
            cast(Kind, row.kind),  # written by the pipeline: trigger, payload or bare
            row.message_id,
            row.body,
            position=row.notify_position,
            attempt=row.attempt,
        )
    rendering: dict[str, Any] = row.rendering or {}
    return Notification(
        cast(Source, row.source),
        row.key,
        cast(Kind, row.kind),
        row.message_id,
        row.body,
        position=row.notify_position,
        attempt=row.attempt,
        alert=alert_of(rendering),
        renderings=rendering.get("renderings") or {},
        apns_push_type=rendering.get("apns_push_type"),
        priority=cast(Priority, rendering.get("priority", "high")),
    )


def destination(row: outbox.OutboxRecord) -> Destination:
    """The destination stored on a row of a source other than chat."""
    assert row.device_type is not None and row.device_id is not None
    return Destination(
        row.device_type,
        row.device_id,
        row.group_name or "default",
        row.provider,
        row.debug,
        row.authorization,
    )


@dataclass(slots=True)
class _Finished:
    """A finished attempt waiting to be recorded by the writer."""

    chat_id: str
    """The key (a chat's: its id)."""
    outbox_id: int
    trail: trail.DeliveryRecord | None
    park: bool = False
    pin: str | None = None
    handover: bool = False
    dead_token: tuple[str, str, int] | None = None
    """(device type, device id, when): the provider said the token is dead."""
    outcome: retry.SendFailed | retry.SendDeferred | None = None
    """A failed or deferred send, for ``rules.decide``."""
    source: str = CHAT
    retried: tuple[int, int, int] | None = None
    """Not a chat's: (outbox id, tries made, due again at) when it is tried again."""
    deferred_until_ms: int | None = None
    """Not a chat's: a backoff holds it until then."""
    told: Outcome | None = None
    """Not a chat's: what its source's hooks are told."""
    dropped: bool = False
    """Not a chat's: its tries are used up."""
    recorded: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Lease:
    """The lease of one claim of an outbox row: when it ends (ms), as last renewed."""

    until_ms: int


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        pipeline: ChatSource,
        router: Router,
        providers: Mapping[str, Provider],
        metrics: Metrics,
        *,
        sources: Mapping[str, SourceHooks] | None = None,
    ) -> None:
        """``providers``: the provider of each device type (chatpush/providers/registry.py). A
        notification of a device type without a provider fails, permanently. ``pipeline``: the
        chat source; ``sources``: the hooks of other sources (a source without hooks is only
        sent, recorded in the trail and counted)."""
        self._db = db
        self._sources: dict[str, SourceHooks] = dict(sources or {})
        self._settings = settings
        self._clock = clock
        self._pipeline = pipeline
        self._router = router
        self._providers: dict[str, Provider] = dict(providers)
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._inflight: dict[KeyOf, asyncio.Task[None]] = {}
        self._per_node: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.delivery.concurrency_per_node)
        )
        self._finished: list[_Finished] = []
        self._finished_ready = asyncio.Event()
        self._stopping = False
        self.stop_grace_s = STOP_GRACE_S
        self._lease_ms = int(settings.delivery.lease_s * 1000)
        self._leases: dict[int, _Lease] = {}
        """Outbox id -> the lease of every notification claimed here and not yet recorded. On
        SQLite a new row may take the id of a row just delivered (INTEGER PRIMARY KEY reuses
        the highest id deleted), even before that delivery's task has ended: a task ends only
        its own lease (``is``), never the one of a later claim of the same id."""
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

    def register_source(self, source: str, hooks: SourceHooks) -> None:
        """Hooks of a source, given after the dispatcher was made (``app.py`` wiring)."""
        self._sources[source] = hooks

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
            claimed, more = await self._claim(now_ms)
            if claimed and checked_ms is not None and now_ms - checked_ms < DEADLINES_EVERY_MS:
                if more:
                    continue  # work flows: claim on, and look at the timers a little later
                # Fewer than asked for: nothing else is claimable now. Another claim at once
                # would find nothing (a transaction of the writer per ring at 200 rings/s);
                # new work, a finished delivery and the timers' next look wake us.
                await self._clock.sleep_until(checked_ms + DEADLINES_EVERY_MS, self._wake)
                continue
            # Timers are checked at least every DEADLINES_EVERY_MS while work flows, so a steady
            # flow of new work cannot starve them.
            wake_ms, due_ms = await self._db.read(outbox.deadlines)
            checked_ms = now_ms
            if wake_ms is not None and wake_ms <= now_ms:
                if await self._pipeline.fire_due_timers():
                    checked_ms = None  # more may be due: look again on the next turn
                    continue
                wake_ms = None  # due, but another instance is firing those timers right now
            if more:
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

    async def _claim(self, now_ms: int) -> tuple[int, bool]:
        """Claim and start what is due: how many, and whether more may be claimable now (as
        many were claimed as there was room for)."""
        room = min(CLAIM_BATCH, MAX_IN_FLIGHT - len(self._inflight))
        if room <= 0 or self._stopping:
            return 0, False
        rows, subscriptions = await self._db.write(
            _claim_with_subscriptions,
            now_ms,
            self._lease_ms,
            self._router.instance_id,
            room,
            frozenset(self._inflight),
            self._router.remote_available(),
        )
        if self._stopping:
            return 0, False  # claimed during the stop: the leases are released at the next start
        for row in rows:
            lease = self._leases[row.id] = _Lease(now_ms + self._lease_ms)
            subscription = subscriptions.get(row.key) if row.source == CHAT else None
            task = asyncio.create_task(
                self._deliver(row, subscription, lease), name=f"deliver-{row.source}-{row.key}"
            )
            self._inflight[(row.source, row.key)] = task
        return len(rows), len(rows) == room

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
                lease = self._leases.get(outbox_id)
                if lease is not None:
                    lease.until_ms = until_ms

    async def _record_finished(self) -> None:
        while True:
            await self._finished_ready.wait()
            self._finished_ready.clear()
            batch, self._finished = self._finished, []
            if not batch:
                continue
            others = [item for item in batch if item.source != CHAT]
            chats = [item for item in batch if item.source == CHAT] if others else batch
            sends = Sends(
                finished=[item.outbox_id for item in chats if not (item.park or item.handover)],
                parked=[(item.chat_id, item.outbox_id) for item in chats if item.park],
                trail=[item.trail for item in chats if item.trail is not None],
                pins=[(item.chat_id, item.pin) for item in chats if item.pin],
                handed_over=[item.outbox_id for item in chats if item.handover],
                dead_tokens=[item.dead_token for item in chats if item.dead_token],
                outcomes=[
                    (item.chat_id, item.outbox_id, item.outcome) for item in chats if item.outcome
                ],
            )
            try:
                report = await self._db.write(
                    self._record, sends if chats else None, others, self._clock.now_ms()
                )
            except Exception as exc:
                # The rows stay leased and are claimed again when the lease runs out.
                for item in batch:
                    item.recorded.set_exception(exc)
            else:
                if report is not None:
                    report.emit(self._metrics, self._pipeline.poke)
                if others:
                    self._told(others)
                for item in batch:
                    item.recorded.set_result(None)

    def _record(
        self, conn: Connection, sends: Sends | None, others: list[_Finished], now_ms: int
    ) -> Emits | None:
        """One transaction for a batch: the chat's sends through the chat pipeline, then the
        other sources' (each source's hooks first, then their rows and trail)."""
        report = self._pipeline.record_sends(conn, sends, now_ms) if sends is not None else None
        if not others:
            return report
        by_source: dict[str, list[Outcome]] = {}
        for item in others:
            if item.told is not None:
                by_source.setdefault(item.source, []).append(item.told)
        for source, outcomes in sorted(by_source.items()):
            hooks = self._sources.get(source)
            if hooks is not None:
                hooks.record(conn, outcomes, now_ms)
        for item in others:
            if item.dead_token is not None:
                tokens.remember_dead(conn, *item.dead_token)
        trail.complete(
            conn,
            finished=[
                item.outbox_id
                for item in others
                if not (item.handover or item.retried or item.deferred_until_ms is not None)
            ],
            parked=[],
            trail=[item.trail for item in others if item.trail is not None],
            pins=[],
            handed_over=[item.outbox_id for item in others if item.handover],
            deferred=[
                (item.outbox_id, item.deferred_until_ms)
                for item in others
                if item.deferred_until_ms is not None
            ],
            retried=[item.retried for item in others if item.retried is not None],
        )
        if any(item.retried or item.deferred_until_ms is not None for item in others):
            outbox.notify_work(conn)
        return report

    def _told(self, others: list[_Finished]) -> None:
        """After the commit: count and log what the plain-retry rule gave up on."""
        for item in others:
            if item.dropped and item.told is not None:
                self._metrics.inc("chatpush_notifications_dropped_total", source=item.source)
                log.warning(
                    "notification %s of %s %s dropped after its last try: %s",
                    item.told.message_id,
                    item.source,
                    item.chat_id,
                    item.told.error,
                    extra={
                        "action": "notification_dropped",
                        "source": item.source,
                        "key": item.chat_id,
                        "message_id": item.told.message_id,
                    },
                )

    async def _finish(self, item: _Finished) -> None:
        self._finished.append(item)
        self._finished_ready.set()
        await item.recorded

    async def _deliver(
        self,
        row: outbox.OutboxRecord,
        subscription: subscription_store.SubscriptionRecord | None,
        lease: _Lease,
    ) -> None:
        try:
            await self._deliver_one(row, subscription, lease)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "delivery of %s %s crashed",
                row.source,
                row.key,
                extra={"action": "delivery_crashed", "source": row.source, "key": row.key},
            )
        finally:
            self._inflight.pop((row.source, row.key), None)
            if self._leases.get(row.id) is lease:
                del self._leases[row.id]
            self.poke()

    async def _deliver_one(
        self,
        row: outbox.OutboxRecord,
        subscription: subscription_store.SubscriptionRecord | None,
        lease: _Lease,
    ) -> None:
        if row.source != CHAT:
            await self._deliver_other(row, lease)
            return
        if subscription is None:
            await self._finish(_Finished(row.key, row.id, None))
            return
        request = subscription.request
        route = self._router.route(
            row.key,
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
                extra={"action": "no_node", "source": CHAT, "chat_id": row.key},
            )
            self._metrics.inc("chatpush_no_node_total", group=request.group_name)
            trail = self._trail(row, request.device_type, None, None, now_ms, "no_node")
            await self._finish(_Finished(row.key, row.id, trail, park=True))
            return
        if lease.until_ms - now_ms < self._lease_ms // 2:
            # Renewals stalled (a frozen loop, an unreachable database): another instance may
            # have taken it over by now. Sending it as well could deliver it twice; leave it.
            log.warning(
                "lease of a notification of chat %s nearly ran out before sending; left to the "
                "next claim",
                row.key,
                extra={"action": "lease_nearly_out", "source": CHAT, "chat_id": row.key},
            )
            return
        if not route.local:
            # Another instance hosts the node: pin the chat there and let that instance send.
            await self._finish(_Finished(row.key, row.id, None, pin=route.node, handover=True))
            return
        pin = None
        if route.node != subscription.pinned_node:
            pin = route.node
            if subscription.pinned_node is not None or route.failover:
                self._metrics.inc("chatpush_node_failovers_total", node=route.node)
                log.info(
                    "chat %s pinned to node %s (group %s)",
                    row.key,
                    route.node,
                    route.group_name,
                    extra={
                        "action": "node_failover",
                        "chat_id": row.key,
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
        self._count(row, route, request.device_type, provider is not None, result)
        now_ms = self._clock.now_ms()
        about = (
            retry.Sent(row.notify_position, row.attempt) if row.kind == "trigger" else retry.Sent()
        )
        outcome: retry.SendFailed | retry.SendDeferred | None = None
        recorded_as: str = result.outcome
        if result.held:
            until_ms = now_ms + retry.deferral_ms(result.retry_after_s)
            outcome = retry.SendDeferred(about, until_ms)
            recorded_as = "deferred"
            self._metrics.inc(
                "chatpush_sends_deferred_total",
                device_type=request.device_type,
            )
            log.info(
                "delivery deferred for %.0f s, the service asked to wait: %s",
                (until_ms - now_ms) / 1000,
                result.error,
                extra=self._failure_extra(row, route.node, result),
            )
        elif result.outcome == "failed":
            outcome = retry.SendFailed(
                about, result.permanent, retry.retry_after_ms(result.retry_after_s)
            )
            self._count_failure(row, request.device_type, result)
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
            self._metrics.inc(
                "chatpush_dead_tokens_total",
                device_type=request.device_type,
            )
            log.warning(
                "device token of chat %s is dead, its subscription ends: %s",
                row.key,
                result.error,
                extra={
                    "action": "dead_token",
                    "chat_id": row.key,
                    "source": CHAT,
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
                row.key,
                row.id,
                trail,
                pin=pin,
                dead_token=dead_token,
                outcome=outcome,
            )
        )

    async def _deliver_other(self, row: outbox.OutboxRecord, lease: _Lease) -> None:
        """A notification of a source other than chat: routed by its row's destination (no pin:
        a hash of its key picks the group's node, this instance's own first), sent, and decided
        by the plain-retry rule (``retry.after_send``)."""
        to = destination(row)
        route = self._router.route(
            f"{row.source}:{row.key}",
            group_name=to.group_name,
            device_type=to.device_type,
            provider=to.provider,
            debug=to.debug,
            pinned=None,
            prefer_local=True,
        )
        now_ms = self._clock.now_ms()
        if route is None:
            log.warning(
                "could not send notification: no node found in group=%s",
                to.group_name,
                extra={"action": "no_node", "source": row.source, "key": row.key},
            )
            self._metrics.inc("chatpush_no_node_total", 1, group=to.group_name, source=row.source)
            failed = SendResult("failed", 0, error=f"no node in group {to.group_name}")
            trail_row = self._trail(row, to.device_type, None, None, now_ms, "no_node")
            await self._finish(self._decided(row, to, failed, trail_row, now_ms))
            return
        if lease.until_ms - now_ms < self._lease_ms // 2:
            log.warning(
                "lease of a notification of %s %s nearly ran out before sending; left to the "
                "next claim",
                row.source,
                row.key,
                extra={"action": "lease_nearly_out", "source": row.source, "key": row.key},
            )
            return
        if not route.local:
            # Only another instance hosts an available node: let it claim the notification.
            await self._finish(_Finished(row.key, row.id, None, handover=True, source=row.source))
            return
        target: Target = dataclasses.replace(
            route.target, device_id=to.device_id, destination_authorization=to.authorization
        )
        if to.authorization is not None:
            target = dataclasses.replace(target, authorization=to.authorization)
        provider = self._providers.get(to.device_type)
        if provider is None:
            result = SendResult(
                "failed",
                0,
                error=f"no provider for device type {to.device_type}",
                temporary=False,
            )
        else:
            result = await provider.send(
                target,
                notification(row),
                now_s=now_ms // 1000,
                node_slot=self._per_node[route.node],
            )
        self._count(row, route, to.device_type, provider is not None, result)
        now_ms = self._clock.now_ms()
        recorded_as: str = "deferred" if result.held else result.outcome
        if result.held:
            self._metrics.inc(
                "chatpush_sends_deferred_total", device_type=to.device_type, source=row.source
            )
            log.info(
                "delivery deferred, the service asked to wait: %s",
                result.error,
                extra=self._failure_extra(row, route.node, result),
            )
        elif result.outcome == "failed":
            self._count_failure(row, to.device_type, result)
            log.info(
                "delivery failed (try %d of %d): %s",
                row.tries + 1,
                row.max_attempts,
                result.error,
                extra=self._failure_extra(row, route.node, result),
            )
        elif result.outcome == "rejected":
            self._metrics.inc(
                "chatpush_dead_tokens_total", device_type=to.device_type, source=row.source
            )
            log.warning(
                "device token of %s %s is dead: %s",
                row.source,
                row.key,
                result.error,
                extra={
                    "action": "dead_token",
                    "source": row.source,
                    "key": row.key,
                    "device_type": to.device_type,
                },
            )
        trail_row = self._trail(
            row, to.device_type, route.node, route.group_name, now_ms, recorded_as, result
        )
        await self._finish(self._decided(row, to, result, trail_row, now_ms))

    @staticmethod
    def _decided(
        row: outbox.OutboxRecord,
        to: Destination,
        result: SendResult,
        trail_row: trail.DeliveryRecord,
        now_ms: int,
    ) -> _Finished:
        """What the plain-retry rule makes of one try of a notification (not a chat's)."""
        decided = retry.after_send(
            "held" if result.held else result.outcome,
            permanent=result.permanent,
            tries_before=row.tries,
            max_attempts=row.max_attempts,
            retry_delays_s=row.retry_delays_s,
            retry_after_s=result.retry_after_s,
            now_ms=now_ms,
            expires_at_ms=row.expires_at_ms,
        )
        told = Outcome(
            **_labels(row.source),
            key=row.key,
            kind=row.kind,
            message_id=row.message_id,
            destination=to,
            result="deferred" if result.held else result.outcome,
            final=decided.final,
            http_status=result.http_status,
            error=result.error,
        )
        finished = _Finished(row.key, row.id, trail_row, source=row.source, told=told)
        if result.outcome == "rejected":
            finished.dead_token = (to.device_type, to.device_id, now_ms)
        if decided.due_at_ms is not None:
            if result.held:
                finished.deferred_until_ms = decided.due_at_ms
            else:
                finished.retried = (row.id, decided.tries, decided.due_at_ms)
        finished.dropped = decided.dropped
        return finished

    def _count(
        self,
        row: outbox.OutboxRecord,
        route: Route,
        device_type: str,
        provider: bool,
        result: SendResult,
    ) -> None:
        """The metrics of one attempt."""
        self._metrics.inc(
            "chatpush_deliveries_total",
            1,
            outcome=result.outcome,
            node=route.node,
            device_type=device_type,
            **_labels(row.source),
        )
        if provider:
            self._metrics.observe(
                "chatpush_delivery_duration_seconds",
                result.latency_ms / 1000,
                device_type=device_type,
            )
        self._metrics.observe(
            "chatpush_notification_delivery_delay_seconds",
            max(0, self._clock.now_ms() - row.created_at_ms) / 1000,
            kind=row.kind,
        )

    def _count_failure(
        self, row: outbox.OutboxRecord, device_type: str, result: SendResult
    ) -> None:
        self._metrics.inc(
            "chatpush_delivery_failures_total",
            1,
            device_type=device_type,
            failure="permanent" if result.permanent else "temporary",
            reason=f"http_{result.http_status}" if result.http_status else "no_answer",
            **_labels(row.source),
        )

    @staticmethod
    def _failure_extra(
        row: outbox.OutboxRecord, node: str, result: SendResult
    ) -> dict[str, object]:
        extra: dict[str, object] = {
            "action": "delivery_failed",
            "source": row.source,
            "key": row.key,
            "message_id": row.message_id,
            "node": node,
            "kind": row.kind,
            "notify_position": row.notify_position,
            "attempt": row.attempt,
            "status": result.http_status,
            "latency_ms": result.latency_ms,
            "failure": "permanent" if result.permanent else "temporary",
        }
        if row.source == CHAT:
            extra["chat_id"] = row.key
        return extra

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
            source=row.source,
            key=row.key,
            message_id=row.message_id,
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
                retry.retry_after_ms(result.retry_after_s)
                if result is not None and result.outcome == "failed"
                else None
            ),
        )


def _labels(source: str) -> dict[str, str]:
    """The ``source`` label of a delivery metric: a chat's series keep the labels they had
    (dashboards and alerts read them), every other source's carry it."""
    return {} if source == CHAT else {"source": source}


def _failure(result: SendResult | None) -> str | None:
    """How the trail names a failed send: ``permanent``, ``temporary``, ``deferred`` (backoff)."""
    if result is None or result.outcome != "failed":
        return None
    if result.held:
        return "deferred"
    return "permanent" if result.permanent else "temporary"
