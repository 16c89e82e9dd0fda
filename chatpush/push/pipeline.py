"""The push pipeline: what each chat transaction means for its subscription, decided in-transaction.

The chat service opens a ``PushTransaction`` with every write and tells it what happened; before
the commit, ``flush`` loads the subscription once, runs the inputs through the pure rules, and
writes the new state and any notification to the outbox in that same transaction. The dispatcher
is poked only after the commit, so it never sees a notification that could still roll back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from chatpush.chat.model import CUSTOMER_PARTICIPANT_ID, ChatRecord, EventRecord
from chatpush.clock import Clock
from chatpush.config import Settings
from chatpush.metrics import Metrics
from chatpush.push import rules
from chatpush.push.bodies import bare_body, payload_body, trigger_body
from chatpush.push.obfuscation import obfuscate
from chatpush.push.subscription import SubscriptionRequest, parse_subscription
from chatpush.store import chats as chat_store
from chatpush.store import push as store
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

    def transaction(self, conn: Connection) -> PushTransaction:
        return PushTransaction(self, conn)

    def policy(self, service_name: str) -> rules.Policy:
        options = self._settings.service_options(service_name)
        return rules.Policy(options.flex_push_resend_delays_s, options.flex_push_resend_attempts)

    async def start(self) -> None:
        """Load (or make, once for all instances) the key of the obfuscated secure keys."""
        secret = await self._db.read(store.read_secret, OBFUSCATION_SECRET)
        if secret is None:
            try:
                secret = await self._db.write(store.create_secret, OBFUSCATION_SECRET)
            except IntegrityError:  # another instance made it first
                secret = await self._db.read(store.read_secret, OBFUSCATION_SECRET)
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
            await self._db.write(store.renew_foreground, chat_ids, until_ms)

    async def fire_due_timers(self) -> int:
        """Apply rule 5 to one batch of subscriptions whose wake-up time has come.

        One batch per call: the dispatcher claims deliveries between batches, so a catch-up of
        many due timers (after a restart) does not hold back the resends it produces.
        """
        fired = await self._db.write(self._fire_timers, self._clock.now_ms())
        if fired:
            self.poke()
        return fired

    def _fire_timers(self, conn: Connection, now_ms: int) -> int:
        """Rule 5 for a batch of due subscriptions, in a handful of statements for the batch.

        Equivalent to a flush of ``TimerFired`` per chat, without its per-chat statements: the
        subscriptions (locked, SKIP LOCKED on PostgreSQL) and their chats are read in two
        queries, and the superseded triggers, the resends and the new states are written in one
        statement each."""
        subscriptions = store.due_subscriptions(conn, now_ms, TIMER_BATCH)
        if not subscriptions:
            return 0
        chats = chat_store.get_chats(conn, [sub.chat_id for sub in subscriptions])
        policies: dict[str, rules.Policy] = {}
        superseded: list[str] = []
        resends: list[store.NewNotification] = []
        states: list[tuple[str, rules.State]] = []
        for subscription in subscriptions:
            chat, request = chats.get(subscription.chat_id), subscription.request
            if chat is None or not request.reliable or subscription.state.status in rules.ENDED:
                # Nothing to resend: disarm, or this timer would fire on every turn.
                states.append((subscription.chat_id, replace(subscription.state, wake_at_ms=None)))
                continue
            policy = policies.get(chat.service_name)
            if policy is None:
                policy = policies[chat.service_name] = self.policy(chat.service_name)
            decision = rules.decide(subscription.state, rules.TimerFired(), now_ms, policy)
            _report(self.metrics, chat, decision.outcome, decision.state)
            state, trigger = rules.sent(decision.state, now_ms)
            if trigger is not None or (
                state.outstanding is None and subscription.state.outstanding is not None
            ):
                superseded.append(chat.id)
            if trigger is not None:
                resends.append(self.trigger_notification(request, chat, trigger, now_ms))
            if state != subscription.state:
                states.append((chat.id, state))
        store.drop_unsent_triggers_of(conn, superseded, now_ms)
        store.enqueue_many(conn, resends, now_ms)
        store.save_states(conn, states)
        if resends or states:
            store.notify_work(conn)
        return len(subscriptions)

    def trigger_notification(
        self,
        request: SubscriptionRequest,
        chat: ChatRecord,
        trigger: rules.Trigger,
        now_ms: int,
    ) -> store.NewNotification:
        """A PushUrl trigger (CONTRACT §7 (a)) for the outbox."""
        self.metrics.inc("chatpush_notifications_enqueued_total", kind="trigger")
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
        return store.NewNotification(
            chat.id, "trigger", body, notify_position=trigger.position, attempt=trigger.attempt
        )


class PushTransaction:
    """What one chat transaction did, turned into subscription state and outbox rows at flush."""

    def __init__(self, pipeline: PushPipeline, conn: Connection) -> None:
        self._pipeline = pipeline
        self._conn = conn
        self.inputs: list[rules.Input | _EventsMarker | _EndMarker] = []
        self._events: list[EventRecord] = []
        self._chat_id: str | None = None
        self._chat: ChatRecord | None = None
        """The chat as the latest hook saw it (its ``last_index`` may lag the events added)."""
        self.enqueued = False

    def chat_requested(self, chat: ChatRecord, user_data: Mapping[str, str]) -> None:
        settings = self._pipeline._settings
        request = parse_subscription(
            user_data, settings, settings.service_options(chat.service_name)
        )
        if request is not None:
            store.insert_subscription(self._conn, chat.id, request, chat.created_at_ms)
            self._chat_id, self._chat = chat.id, chat

    def events_added(self, chat: ChatRecord, events: Sequence[EventRecord]) -> None:
        self._chat_id, self._chat = chat.id, chat
        self._events.extend(events)
        self.inputs.append(
            _EventsMarker(tuple(events))
        )  # resolved at flush, once the filter is known

    def transcript_retrieved(
        self, chat: ChatRecord, first: int | None, last: int | None, *, up_to_date: bool
    ) -> None:
        self._chat_id, self._chat = chat.id, chat
        if first is None or last is None:
            first = last = 0
        self.inputs.append(rules.Retrieved(first=first, last=last, up_to_date=up_to_date))

    def chat_ended(self, chat: ChatRecord, *, customer_removed: bool, by_customer: bool) -> None:
        self._chat_id, self._chat = chat.id, chat
        self.inputs.append(_EndMarker(customer_removed=customer_removed, by_customer=by_customer))

    def foreground(self, chat: ChatRecord, until_ms: int | None) -> None:
        """The chat's client is connected live until ``until_ms`` (CometD), or (None) left."""
        self._chat_id, self._chat = chat.id, chat
        self.inputs.append(rules.Foreground(until_ms))

    def flush(self, chat_id: str | None = None) -> None:
        chat_id = chat_id or self._chat_id
        if chat_id is None or not self.inputs:
            return
        conn, pipeline = self._conn, self._pipeline
        subscription = store.get_subscription(conn, chat_id, lock=True)
        if subscription is None or subscription.state.status in rules.ENDED:
            return
        chat = self._current_chat(chat_id)
        if chat is None:
            return
        request = subscription.request
        now_ms = pipeline._clock.now_ms()

        def notifiable(event: EventRecord) -> bool:
            return request.notify_requestor or event.participant_id != CUSTOMER_PARTICIPANT_ID

        activity = any(not isinstance(i, rules.TimerFired | rules.Foreground) for i in self.inputs)
        # New activity: whatever waited for a node gets another chance (CONTRACT §9).
        if activity and store.unpark(conn, chat_id, now_ms):
            self.enqueued = True

        if not request.reliable:
            self._flush_unreliable(chat, subscription, [e for e in self._events if notifiable(e)])
            return

        policy = pipeline.policy(chat.service_name)
        state = subscription.state
        for item in self.inputs:
            if isinstance(item, _EventsMarker):
                last = max((e.index for e in item.events if notifiable(e)), default=0)
                item = rules.EventsAdded(notifiable_last=last)
            elif isinstance(item, _EndMarker):
                item = rules.ChatEnded(
                    customer_removed=item.customer_removed,
                    notify=not item.by_customer or request.notify_requestor,
                )
            elif isinstance(item, rules.Retrieved) and item.last == 0 and item.up_to_date:
                # A reply with no events is up to date only if the client already had everything:
                # a transcriptPosition beyond the end proves nothing (CONTRACT §8.1).
                item = replace(item, up_to_date=state.ack_position >= chat.last_index)
            assert not isinstance(item, _EventsMarker | _EndMarker)
            decision = rules.decide(state, item, now_ms, policy)
            state = decision.state
            _report(pipeline.metrics, chat, decision.outcome, state)
        state, trigger = rules.sent(state, now_ms)
        had_trigger = subscription.state.outstanding is not None
        if trigger is None and state.outstanding is None and had_trigger:
            # The outstanding trigger was acknowledged (or given up): a copy still waiting in the
            # outbox, parked for want of a node, points at what the client has read. Never send it.
            store.drop_unsent_triggers(conn, chat_id, now_ms)
        if trigger is not None:
            store.drop_unsent_triggers(conn, chat_id, now_ms)
            store.enqueue_many(
                conn, [pipeline.trigger_notification(request, chat, trigger, now_ms)], now_ms
            )
            self.enqueued = True
        if state != subscription.state:
            store.save_state(conn, chat_id, state)
            if state.wake_at_ms != subscription.state.wake_at_ms:
                self.enqueued = True  # the dispatcher's next wake-up may have moved earlier
        if self.enqueued:
            store.notify_work(conn)

    def _flush_unreliable(
        self, chat: ChatRecord, subscription: store.SubscriptionRecord, events: list[EventRecord]
    ) -> None:
        """Without PushResend: one notification per notifiable event, never resubmitted; none
        while the client is in the foreground (it gets the events live)."""
        pipeline, request = self._pipeline, subscription.request
        now_ms = pipeline._clock.now_ms()
        state = subscription.state
        for item in self.inputs:
            if isinstance(item, rules.Foreground):
                state = replace(state, foreground_until_ms=item.until_ms)
        if state != subscription.state:
            store.save_state(self._conn, chat.id, state)
        if state.in_foreground(now_ms):
            return
        for event in events:
            if request.include_payload:
                body = payload_body(
                    device_id=request.device_id,
                    obfuscated_key=obfuscate(
                        pipeline.secret, chat.secure_key, request.client_channel
                    ),
                    chat=chat,
                    alias=pipeline._settings.server.alias,
                    event=event,
                )
                kind = "payload"
            else:
                body, kind = bare_body(request.device_id), "bare"
            store.enqueue(self._conn, chat.id, kind, body, now_ms, notify_position=event.index)
            pipeline.metrics.inc("chatpush_notifications_enqueued_total", kind=kind)
            self.enqueued = True
        if self.enqueued:
            store.notify_work(self._conn)

    def _current_chat(self, chat_id: str) -> ChatRecord | None:
        """The chat as this transaction left it, without reading it again when a hook showed it."""
        if self._chat is None or self._chat.id != chat_id:
            return chat_store.get_chat(self._conn, chat_id)
        last_index = max([self._chat.last_index, *(event.index for event in self._events)])
        return replace(self._chat, last_index=last_index)

    def committed(self) -> None:
        if self.enqueued:
            self._pipeline.poke()


def _report(metrics: Metrics, chat: ChatRecord, outcome: rules.Outcome, state: rules.State) -> None:
    if outcome.resent:
        metrics.inc("chatpush_triggers_resent_total")
    if outcome.exhausted:
        metrics.inc("chatpush_resend_exhausted_total")
        log.warning(
            "no refresh after the last resend: subscription of chat %s marked %s",
            chat.id,
            state.status,
            extra={"action": "resend_exhausted", "chat_id": chat.id},
        )


class _EventsMarker:
    __slots__ = ("events",)

    def __init__(self, events: tuple[EventRecord, ...]) -> None:
        self.events = events


class _EndMarker:
    __slots__ = ("by_customer", "customer_removed")

    def __init__(self, *, customer_removed: bool, by_customer: bool) -> None:
        self.customer_removed = customer_removed
        self.by_customer = by_customer
