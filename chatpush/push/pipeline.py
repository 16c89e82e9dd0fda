"""The push pipeline: load, decide (``rules.decide``, pure), persist what it decided.

The chat service opens a ``PipelineTransaction`` (chat/core.py's ``PushTransaction``) with every
write and tells it what happened; before the commit, ``flush`` loads the subscription once, hands
the facts to ``rules.decide`` and persists the decision in that same transaction. The timer batch
of the dispatcher does the same for many subscriptions at once. Nothing is counted or logged inside
a transaction function (on PostgreSQL it may run again after a serialization failure): each returns
a ``Report``, emitted after the commit, which also pokes the dispatcher, so it never sees work that
could still roll back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from chatpush.chat.model import CUSTOMER_PARTICIPANT_ID, ChatRecord, EventRecord
from chatpush.clock import Clock
from chatpush.config import Settings
from chatpush.delivery import api as delivery
from chatpush.delivery.dispatcher import Sends
from chatpush.metrics import Metrics
from chatpush.push import rules
from chatpush.push.bodies import bare_body, payload_body, trigger_body
from chatpush.push.obfuscation import obfuscate
from chatpush.push.subscription import SubscriptionRequest, parse_subscription
from chatpush.store import chats as chat_store
from chatpush.store import outbox, stats, tokens, trail
from chatpush.store import secrets as stored_secrets
from chatpush.store import subscriptions as subscription_store
from chatpush.store.database import Database

log = logging.getLogger("chatpush.push")

OBFUSCATION_SECRET = "secure-key-obfuscation"
TIMER_BATCH = 200


class PushPipeline:
    def __init__(self, db: Database, settings: Settings, clock: Clock, metrics: Metrics) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self.metrics = metrics
        self._secret: bytes | None = None
        self._poke: Callable[[], None] = lambda: None

    def on_enqueued(self, poke: Callable[[], None]) -> None:
        """The dispatcher's wake-up, called after a commit that gave it work."""
        self._poke = poke

    def transaction(self, conn: Connection) -> PipelineTransaction:
        return PipelineTransaction(self, conn)

    def policy(self, service_name: str) -> rules.Policy:
        """The resend timetable of a service (its options are resolved once per service)."""
        options = self._settings.service_options(service_name)
        return rules.Policy(options.flex_push_resend_delays_s, options.flex_push_resend_attempts)

    def _policy_of(self, chat: ChatRecord | None) -> rules.Policy | None:
        return self.policy(chat.service_name) if chat is not None else None

    async def start(self) -> None:
        """Load (or make, once for all instances) the key of the obfuscated secure keys."""
        secret = await self._db.read(stored_secrets.read_secret, OBFUSCATION_SECRET)
        if secret is None:
            try:
                secret = await self._db.write(stored_secrets.create_secret, OBFUSCATION_SECRET)
            except IntegrityError:  # another instance made it first
                secret = await self._db.read(stored_secrets.read_secret, OBFUSCATION_SECRET)
        assert secret is not None
        self._secret = secret

    @property
    def secret(self) -> bytes:
        assert self._secret is not None, "PushPipeline.start() was not awaited"
        return self._secret

    def poke(self) -> None:
        self._poke()

    async def renew_foreground(self, chat_ids: Sequence[str], until_ms: int) -> None:
        """Keep these chats' live clients in the foreground until ``until_ms``."""
        if chat_ids:
            report = await self._db.write(self._renew_foreground, chat_ids, until_ms)
            report.emit(self.metrics, self.poke)

    def _renew_foreground(self, conn: Connection, chat_ids: Sequence[str], until_ms: int) -> Report:
        now_ms = self._clock.now_ms()
        report = Report()
        fact = rules.Foreground(until_ms)
        for start in range(0, len(chat_ids), 500):
            subscriptions = subscription_store.lock_subscriptions(
                conn, chat_ids[start : start + 500]
            )
            chats = chat_store.get_chats(conn, [sub.chat_id for sub in subscriptions])
            decided = [
                Decided(sub, rules.decide(view(sub), [fact], now_ms, self._policy_of(chat)))
                for sub in subscriptions
                if (chat := chats.get(sub.chat_id)) is not None
            ]
            self.persist(conn, decided, now_ms, report)
        return report

    async def redrive(self, chat_id: str) -> tuple[str, rules.Decision] | None:
        """An operator's redrive of the chat's subscription (``rules.Redriven``), decided and
        persisted as any fact is: its status before and the decision; None when the chat has no
        subscription. Only a ``failed`` one changes."""
        decision, report = await self._db.write(self._redrive, chat_id)
        report.emit(self.metrics, self.poke)
        return decision

    def _redrive(
        self, conn: Connection, chat_id: str
    ) -> tuple[tuple[str, rules.Decision] | None, Report]:
        report = Report()
        subscription = subscription_store.get_subscription(conn, chat_id, lock=True)
        chat = chat_store.get_chat(conn, chat_id)
        if subscription is None or chat is None:
            return None, report
        now_ms = self._clock.now_ms()
        policy = self.policy(chat.service_name) if subscription.request.reliable else None
        fact = rules.Redriven(chat_ended=chat.ended)
        decision = rules.decide(view(subscription), [fact], now_ms, policy)
        self.persist(conn, [Decided(subscription, decision, chat)], now_ms, report)
        return (subscription.state.status, decision), report

    async def timed_out_chats(self) -> list[tuple[str, int]]:
        """(chat id, flex-push-timeout in s) of the push-subscribed chats whose client made no
        request for longer than their service's flex-push-timeout, up to 1,000 at a time."""
        now_ms = self._clock.now_ms()
        services = [*self._settings.services, "default"]
        shortest_s = min(self._settings.service_options(s).flex_push_timeout_s for s in services)
        candidates = await self._db.read(
            chat_store.idle_subscribed_chats, now_ms - shortest_s * 1000, 1000
        )
        timed_out: list[tuple[str, int]] = []
        for chat_id, service_name, last_request_ms in candidates:
            timeout_s = self._settings.service_options(service_name).flex_push_timeout_s
            if rules.timed_out(last_request_ms, now_ms, timeout_s):
                timed_out.append((chat_id, timeout_s))
        return timed_out

    async def fire_due_timers(self) -> int:
        """Apply rule 5 to one batch of subscriptions whose wake-up time has come.

        One batch per call: the dispatcher claims deliveries between batches, so a catch-up of
        many due timers (after a restart) does not hold back the resends it produces.
        """
        fired, report = await self._db.write(self._fire_timers, self._clock.now_ms())
        report.emit(self.metrics, self.poke)
        return fired

    def _fire_timers(self, conn: Connection, now_ms: int) -> tuple[int, Report]:
        """Rule 5 for a batch of due subscriptions, in a handful of statements for the batch:
        the subscriptions (locked, SKIP LOCKED on PostgreSQL) and their chats are read in two
        queries, each is decided alone, and the decisions are persisted together."""
        report = Report()
        subscriptions = subscription_store.due_subscriptions(conn, now_ms, TIMER_BATCH)
        if not subscriptions:
            return 0, report
        chats = chat_store.get_chats(conn, [sub.chat_id for sub in subscriptions])
        decided: list[Decided] = []
        for subscription in subscriptions:
            chat = chats.get(subscription.chat_id)
            facts: list[rules.Fact] = [rules.TimerFired() if chat else rules.ChatGone()]
            policy = self._policy_of(chat)
            decision = rules.decide(view(subscription), facts, now_ms, policy)
            decided.append(Decided(subscription, decision, chat))
        self.persist(conn, decided, now_ms, report)
        report.work = True  # the dispatcher fires the next batch at once
        return len(subscriptions), report

    def record_sends(self, conn: Connection, sends: Sends, now_ms: int) -> Report:
        """Record a batch of finished sends (the dispatcher's group commit), and persist what
        ``rules.decide`` makes of the failed and deferred ones for their subscriptions.

        The subscriptions concerned are locked first, in chat order, before any outbox row (the
        lock order of every writer)."""
        report = Report()
        facts = {chat_id: fact for chat_id, _outbox_id, fact in sends.outcomes}
        locked = {*facts, *(chat_id for chat_id, _node in sends.pins)} if facts else set()
        subscriptions = [
            sub
            for sub in subscription_store.lock_subscriptions(conn, list(locked))
            if sub.chat_id in facts
        ]
        trail.complete(
            conn,
            finished=[
                outbox_id for outbox_id in sends.finished if outbox_id not in sends.deferred_ids
            ],
            parked=sends.parked,
            trail=sends.trail,
            pins=sends.pins,
            handed_over=sends.handed_over,
            deferred=[
                (outbox_id, fact.until_ms)
                for _chat_id, outbox_id, fact in sends.outcomes
                if isinstance(fact, rules.SendDeferred)
            ],
        )
        for device_type, device_id, at_ms in sends.dead_tokens:
            self.reject_device(conn, device_type, device_id, at_ms)
        if not subscriptions:
            return report
        chats = chat_store.get_chats(conn, [sub.chat_id for sub in subscriptions])
        decided = [
            Decided(
                sub,
                rules.decide(view(sub), [facts[sub.chat_id]], now_ms, self._policy_of(chat)),
                chat,
            )
            for sub in subscriptions
            if (chat := chats.get(sub.chat_id)) is not None
        ]
        self.persist(conn, decided, now_ms, report)
        return report

    @staticmethod
    def reject_device(conn: Connection, device_type: str, device_id: str, at_ms: int) -> None:
        """The provider reported this device token dead: remember it, and persist what
        ``rules.decide`` makes of that for every subscription sending to it."""
        tokens.remember_dead(conn, device_type, device_id, at_ms)
        states: list[tuple[str, rules.State]] = []
        dropped: list[str] = []
        for subscription in subscription_store.of_device(conn, device_type, device_id):
            decision = rules.decide(view(subscription), [rules.TokenRejected()], at_ms, None)
            if decision.state != subscription.state:
                states.append((subscription.chat_id, decision.state))
            if decision.drop_outbox:
                dropped.append(subscription.chat_id)
        subscription_store.save_states(conn, states)
        outbox.drop_outbox_of(conn, dropped)

    def persist(
        self,
        conn: Connection,
        decided: Sequence[Decided],
        now_ms: int,
        report: Report,
    ) -> None:
        """Store what the decisions say, a statement per kind of change for the whole batch,
        and note in ``report`` what to tell after the commit."""
        dropped: list[str] = []
        superseded: list[str] = []
        notifications: list[delivery.NewNotification] = []
        states: list[tuple[str, rules.State]] = []
        for item in decided:
            subscription, decision = item.subscription, item.decision
            chat_id, before = subscription.chat_id, subscription.state
            if decision.unpark and outbox.unpark(conn, chat_id, now_ms):
                report.work = True
            if decision.drop_outbox:
                dropped.append(chat_id)
            if decision.drop_unsent_triggers:
                superseded.append(chat_id)
            if decision.trigger is not None or decision.notify_events:
                notifications.extend(self._notifications(item, now_ms))
                if decision.trigger is not None and decision.trigger.attempt == 0:
                    self._trigger_delay(conn, item, decision.trigger.position, now_ms, report)
            if decision.state != before:
                states.append((chat_id, decision.state))
                wake_ms, was_ms = decision.state.wake_at_ms, before.wake_at_ms
                if wake_ms is not None and (was_ms is None or wake_ms < was_ms):
                    # The dispatcher's next wake-up may now be earlier. One that moved later or
                    # went away needs no poke: the dispatcher wakes early and finds nothing due.
                    report.work = True
            report.add(chat_id, decision)
        outbox.drop_outbox_of(conn, dropped)
        outbox.drop_unsent_triggers_of(conn, superseded, now_ms)
        delivery.enqueue(conn, notifications, now_ms)
        subscription_store.save_states(conn, states)
        if notifications:
            report.work = True
        if report.work:
            outbox.notify_work(conn)

    @staticmethod
    def _trigger_delay(
        conn: Connection, item: Decided, position: int, now_ms: int, report: Report
    ) -> None:
        """Note how long the event a first trigger points at waited for it: the event is in
        this transaction (no query) unless push waited for a refresh or the foreground to end."""
        if position <= 0:
            return
        at_ms = next((e.utc_time_ms for e in item.events if e.index == position), None)
        if at_ms is None:
            at_ms = stats.event_time_ms(conn, item.subscription.chat_id, position)
        if at_ms is not None:
            report.trigger_delays_ms.append(max(0, now_ms - at_ms))

    def _notifications(self, item: Decided, now_ms: int) -> list[delivery.NewNotification]:
        chat, request, decision = item.chat, item.subscription.request, item.decision
        assert chat is not None, "a notification is made with the chat it belongs to"
        if decision.trigger is not None:
            return [self.trigger_notification(request, chat, decision.trigger, now_ms)]
        if not decision.with_payload:
            return [
                delivery.NewNotification(
                    "chat", chat.id, "bare", bare_body(request.device_id), position=index
                )
                for index in decision.notify_events
            ]
        events = [event for event in item.events if event.index in decision.notify_events]
        obfuscated_key = obfuscate(self.secret, chat.secure_key, request.client_channel)
        return [
            delivery.NewNotification(
                "chat",
                chat.id,
                "payload",
                payload_body(
                    device_id=request.device_id,
                    obfuscated_key=obfuscated_key,
                    chat=chat,
                    alias=self._settings.server.alias,
                    event=event,
                ),
                position=event.index,
            )
            for event in events
        ]

    def trigger_notification(
        self,
        request: SubscriptionRequest,
        chat: ChatRecord,
        trigger: rules.Trigger,
        now_ms: int,
    ) -> delivery.NewNotification:
        """A PushUrl trigger (body (a), docs/push.md) for the outbox."""
        body = trigger_body(
            device_id=request.device_id,
            obfuscated_key=obfuscate(self.secret, chat.secure_key, request.client_channel),
            chat=chat,
            alias=self._settings.server.alias,
            position=trigger.position,
            attempt=trigger.attempt,
            final=trigger.final,
            content_keys=self._settings.service_options(chat.service_name).flex_push_content,
            now_ms=now_ms,
        )
        return delivery.NewNotification(
            "chat", chat.id, "trigger", body, position=trigger.position, attempt=trigger.attempt
        )


def view(record: subscription_store.SubscriptionRecord) -> rules.Subscription:
    """A stored subscription as ``rules.decide`` reads it."""
    request = record.request
    return rules.Subscription(
        record.state, request.reliable, request.notify_requestor, request.include_payload
    )


@dataclass(frozen=True, slots=True)
class Decided:
    """A subscription, what ``rules.decide`` made of it, and what its notifications are made of:
    the chat as the transaction left it, and the events it added."""

    subscription: subscription_store.SubscriptionRecord
    decision: rules.Decision
    chat: ChatRecord | None = None
    events: Sequence[EventRecord] = ()


@dataclass(slots=True)
class Report:
    """What a push transaction function did, told after its commit (never inside: on PostgreSQL
    the function may run again after a serialization failure, and would count twice)."""

    work: bool = False
    """It gave the dispatcher work, or moved a wake-up: poke it."""
    enqueued: dict[str, int] = field(default_factory=dict)
    resent: int = 0
    exhausted: list[tuple[str, str]] = field(default_factory=list)
    """(chat id, new status) of each subscription whose last resend ran out."""
    trigger_delays_ms: list[int] = field(default_factory=list)
    """For each first trigger enqueued: how long after its event."""
    failed_permanently: list[str] = field(default_factory=list)
    """Chats whose attempt series a permanent send failure ended."""

    def add(self, chat_id: str, decision: rules.Decision) -> None:
        if decision.trigger is not None:
            self.enqueued["trigger"] = self.enqueued.get("trigger", 0) + 1
        if decision.notify_events:
            kind = "payload" if decision.with_payload else "bare"
            self.enqueued[kind] = self.enqueued.get(kind, 0) + len(decision.notify_events)
        self.resent += decision.resent
        if decision.exhausted:
            self.exhausted.append((chat_id, decision.state.status))
        if decision.failed_permanently:
            self.failed_permanently.append(chat_id)

    def emit(self, metrics: Metrics, poke: Callable[[], None]) -> None:
        """After the commit: count, log, and wake the dispatcher."""
        for kind, count in self.enqueued.items():
            metrics.inc("chatpush_notifications_enqueued_total", count, kind=kind)
        if self.resent:
            metrics.inc("chatpush_triggers_resent_total", self.resent)
        for delay_ms in self.trigger_delays_ms:
            metrics.observe("chatpush_trigger_enqueue_delay_seconds", delay_ms / 1000)
        for chat_id, status in self.exhausted:
            metrics.inc("chatpush_resend_exhausted_total")
            log.warning(
                "no refresh after the last resend: subscription of chat %s marked %s",
                chat_id,
                status,
                extra={"action": "resend_exhausted", "chat_id": chat_id},
            )
        for chat_id in self.failed_permanently:
            metrics.inc("chatpush_subscriptions_failed_permanently_total")
            log.warning(
                "a permanent send failure ended the attempts: subscription of chat %s failed",
                chat_id,
                extra={"action": "send_failed_permanently", "chat_id": chat_id},
            )
        if self.work:
            poke()


class PipelineTransaction:
    """What one chat transaction did, decided and persisted at flush, reported once committed."""

    def __init__(self, pipeline: PushPipeline, conn: Connection) -> None:
        self._pipeline = pipeline
        self._conn = conn
        self.facts: list[rules.Fact] = []
        self._events: list[EventRecord] = []
        self._chat: ChatRecord | None = None
        """The chat as the latest hook saw it (its ``last_index`` may lag the events added)."""
        self.report = Report()

    def chat_requested(self, chat: ChatRecord, user_data: Mapping[str, str]) -> None:
        settings = self._pipeline._settings
        request = parse_subscription(
            user_data, settings, settings.service_options(chat.service_name)
        )
        if request is not None:
            # A token a provider reported dead is never sent to again, by any chat.
            state = rules.State()
            if tokens.is_dead(self._conn, request.device_type, request.device_id):
                view = rules.Subscription(
                    state, request.reliable, request.notify_requestor, request.include_payload
                )
                rejected = [rules.TokenRejected()]
                state = rules.decide(view, rejected, chat.created_at_ms, None).state
            subscription_store.insert_subscription(
                self._conn, chat.id, request, state, chat.created_at_ms
            )
            self._chat = chat

    def events_added(self, chat: ChatRecord, events: Sequence[EventRecord]) -> None:
        self._chat = chat
        self._events.extend(events)
        self.facts.append(
            rules.EventsAppended(
                tuple(
                    rules.Event(e.index, by_customer=e.participant_id == CUSTOMER_PARTICIPANT_ID)
                    for e in events
                )
            )
        )

    def transcript_retrieved(
        self, chat: ChatRecord, first: int | None, last: int | None, *, asked_from: int
    ) -> None:
        """The reply gave the client events ``first``..``last`` (None: none), asked for from
        ``asked_from``; ``chat`` is the chat as the reply saw it."""
        self._chat = chat
        self.facts.append(rules.TranscriptRead(first, last, asked_from, chat.last_index))

    def chat_ended(self, chat: ChatRecord, *, customer_removed: bool, by_customer: bool) -> None:
        self._chat = chat
        self.facts.append(rules.Ended(customer_removed=customer_removed, by_customer=by_customer))

    def foreground(self, chat: ChatRecord, until_ms: int | None) -> None:
        """The chat's client is connected live until ``until_ms`` (CometD), or (None) left."""
        self._chat = chat
        self.facts.append(rules.Foreground(until_ms))

    def flush(self) -> None:
        """Load the subscription, decide, persist: just before the commit."""
        chat = self._chat
        if chat is None or not self.facts:
            return
        conn, pipeline = self._conn, self._pipeline
        subscription = subscription_store.get_subscription(conn, chat.id, lock=True)
        if subscription is None:
            return
        now_ms = pipeline._clock.now_ms()
        policy = pipeline.policy(chat.service_name) if subscription.request.reliable else None
        decision = rules.decide(view(subscription), self.facts, now_ms, policy)
        last_index = max([chat.last_index, *(event.index for event in self._events)])
        current = replace(chat, last_index=last_index)
        pipeline.persist(
            conn, [Decided(subscription, decision, current, self._events)], now_ms, self.report
        )

    def committed(self) -> None:
        self.report.emit(self._pipeline.metrics, self._pipeline.poke)
