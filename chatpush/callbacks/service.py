"""The callback service: every operation on callbacks as one transaction (docs/callbacks.md §3, §4,
§9.1, §9.5). A record change commits with the commands to the contact-centre side it causes, its
``seq`` and its timers; nothing is answered before the commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.engine import Connection

from chatpush.callbacks import availability as slots
from chatpush.callbacks import dialogs, pushes, status
from chatpush.callbacks import notifications as notes
from chatpush.callbacks.errors import (
    ApiKeyRequired,
    BadParameter,
    CallbackNotFound,
    CommandsByWebhook,
    IllegalState,
    ServiceNotFound,
    SlotNotAvailable,
    SubscriptionNotFound,
    TooManyCallbacks,
    TooManySubscriptions,
    UnknownAction,
)
from chatpush.callbacks.events import (
    STATUS_EVENTS,
    CcEvent,
    Effect,
    effect,
    parse_event,
    seq_of,
)
from chatpush.callbacks.model import (
    CANCELLED,
    CANCELLED_BY_ADMIN,
    FAIL_TIMEOUT_TTL,
    PURGED,
    CallbackRecord,
    State,
    check_transition,
    format_time,
    initial_state,
    is_id,
    new_id,
    parse_time,
)
from chatpush.callbacks.params import check_overrides, check_properties, create_params, effective
from chatpush.callbacks.texts import Texts
from chatpush.clock import Clock
from chatpush.config import CALLBACK_TEXTS, ServiceOptions, Settings
from chatpush.delivery import (
    MAX_ATTEMPTS_UNTIL_EXPIRY,
    Destination,
    NewNotification,
    drop_pending,
    enqueue,
)
from chatpush.event_lists import REMINDER
from chatpush.providers import ccwebhook
from chatpush.store import callbacks as store
from chatpush.store import notifications as subscriptions
from chatpush.store import outbox, trail
from chatpush.store.callbacks import Condition
from chatpush.store.database import Database

log = logging.getLogger("chatpush.callbacks")

PAST_LIMIT_MS = 300_000
"""A ``_desired_time`` more than this in the past is refused (§3.2)."""
MAX_WAIT_S = 25
MAX_PULL = 1000
MAX_EWT_UPDATES = 1000
MAX_ADMIN_IDS = 1000
TIMER_BATCH = 100
MAX_PUBLISH_EXPIRIES = 1000
"""Expired publishes handled per round of the timers (the rest in the next)."""
TRAIL_PAGE = 500
"""Rows of a callback's delivery trail per page (``after`` for the next)."""
CB = "_cbe_on_callback_"
"""The prefix of the status events chatpush itself causes (§5.3)."""


@dataclass(frozen=True, slots=True)
class EventAnswer:
    callback_id: str
    seq: int
    duplicate: bool
    state: State
    reason: str | None


class CallbackService:
    def __init__(self, db: Database, settings: Settings, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self._commands_made = asyncio.Event()
        """Set when a commit made commands: long-polling pullers look again."""
        self._timers_changed = asyncio.Event()
        self.poke: Callable[[], None] = lambda: None
        """Wakes the delivery platform's dispatcher after a commit that queued pushes
        (``app.py`` hands it ``Dispatcher.poke``)."""

    # -- helpers ---------------------------------------------------------------------------

    def options(self, service_name: str) -> ServiceOptions:
        return self.settings.service_options(service_name)

    def check_service(self, service_name: str) -> None:
        if not 1 <= len(service_name) <= 200 or not service_name.isprintable():
            raise ServiceNotFound(service_name)
        if self.settings.callback.restrict_services and (
            service_name == "default" or service_name not in self.settings.services
        ):
            raise ServiceNotFound(service_name)

    def _committed(self, made_commands: bool = True) -> None:
        self.poke()
        if made_commands:
            self._commands_made.set()
            self._commands_made = asyncio.Event()
        self._timers_changed.set()

    def _command(
        self,
        conn: Connection,
        record: CallbackRecord,
        kind: str,
        now_ms: int,
        **extra: Any,
    ) -> None:
        """Queue a command to the CC side (§4.2) in this transaction."""
        record.command_seq += 1
        store.update_callback(conn, record.id, command_seq=record.command_seq)
        snapshot: dict[str, Any] = dict(record.wire())
        snapshot.update(effective(self.options(record.service_name), record.properties))
        command_id = secrets.token_hex(16).upper()
        body = {
            "id": command_id,
            "type": kind,
            "callbackId": record.id,
            "serviceName": record.service_name,
            "seq": record.command_seq,
            "at": now_ms,
            **extra,
            "callback": snapshot,
        }
        if self.settings.callback.cc_webhook_url is not None:
            enqueue(conn, [self._webhook_command(body, now_ms)], now_ms)
            return
        store.insert_command(
            conn,
            command_id=command_id,
            callback_id=record.id,
            service_name=record.service_name,
            seq=record.command_seq,
            body=body,
            now_ms=now_ms,
        )

    def _webhook_command(self, body: dict[str, Any], now_ms: int) -> NewNotification:
        """A command as the delivery platform sends it to ``[callback] cc_webhook_url`` (§4.2):
        keyed by its callback (one at a time, in order), the same ``webhook-id`` on every try,
        tried on ``cc_webhook_retry_delay`` until ``command_retention_s`` after ``now_ms``."""
        settings = self.settings.callback
        options = self.options(body["serviceName"])
        return NewNotification(
            source=ccwebhook.SOURCE,
            key=body["callbackId"],
            kind=ccwebhook.KIND,
            body=body,
            destination=Destination(
                ccwebhook.CcWebhookProvider.device_type,
                "cc_webhook_url",
                options.cb_node_group or self.settings.default_group or "default",
            ),
            max_attempts=MAX_ATTEMPTS_UNTIL_EXPIRY,
            retry_delays_s=settings.cc_webhook_retry_delays_s,
            expires_at_ms=now_ms + settings.command_retention_s * 1000,
        )

    def _route(self, record: CallbackRecord) -> pushes.Route:
        options = self.options(record.service_name)
        group_name = options.cb_node_group or self.settings.default_group or "default"
        group = self.settings.groups.get(group_name)
        given = None
        if group is not None and record.device is not None:
            given = group.apple_title if record.device.type == "ios" else group.fcm_title
        return pushes.Route(
            group_name,
            options.cb_provider_name or None,
            self._texts(record).title(given),
            options.cb_max_notify_attempts,
            options.flex_push_resend_delays_s,
        )

    def _texts(self, record: CallbackRecord) -> Texts:
        """§7.6: the texts in the language of the callback's push keys."""
        return Texts(self.settings.texts, record.device.language if record.device else None)

    def _push(
        self,
        conn: Connection,
        record: CallbackRecord,
        event: str,
        now_ms: int,
        *,
        guard: str | None,
        action: str | None = None,
        **extra: Any,
    ) -> None:
        """Queue a device push (§7) in this transaction, once per ``guard`` (§9.4)."""
        if record.device is None:
            return
        if guard is not None and not store.take_guard(conn, record.id, guard, now_ms):
            return
        body = pushes.payload(record, event, now_ms, action=action, **extra)
        route = self._route(record)
        notification = pushes.notification(record, body, route, self._texts(record))
        if notification is not None:
            enqueue(conn, [notification], now_ms)

    def _status(
        self,
        conn: Connection,
        record: CallbackRecord,
        events: Sequence[str],
        now_ms: int,
        *,
        timestamp_ms: int | None = None,
        attributes: Mapping[str, Any] | None = None,
        computed: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue the status notifications of ``events`` (§5) in this transaction: one per event
        and subscription whose filter matches the callback's tag (§5.1, §6)."""
        options = self.options(record.service_name)
        route = status.resolve(options, record.properties, self.settings.event_lists)
        if route.mode == "false" or not any(event in route.events for event in events):
            return
        tag = notes.tag_of(record.service_name, record.id)
        matched = notes.matching(conn, tag, now_ms)
        if not any(found.callback_id == record.id for found in matched):
            # A subscribe_notify callback created before its subscription was stored (0012).
            own = status.own_subscription(record, route, now_ms)
            if own is not None:
                matched.append(own)
        made = status.notifications(
            record,
            route,
            events,
            (now_ms if timestamp_ms is None else timestamp_ms) // 1000,
            matched,
            group_name=options.cb_node_group or self.settings.default_group or "default",
            retry_delays_s=options.flex_push_resend_delays_s,
            attributes=attributes,
            computed=computed,
        )
        if made:
            enqueue(conn, made, now_ms)

    def _subscribe_own(self, conn: Connection, record: CallbackRecord, now_ms: int) -> None:
        """Store (or replace) the subscription ``subscribe_notify`` makes for the callback
        (§5.1): the target in effect is this stored one until the callback is purged."""
        subscriptions.delete_of_callback(conn, record.id)
        route = status.resolve(
            self.options(record.service_name), record.properties, self.settings.event_lists
        )
        own = status.own_subscription(record, route, now_ms)
        if own is not None:
            subscriptions.insert_subscription(conn, own)

    def _check_status(self, service_name: str, properties: Mapping[str, str]) -> None:
        """A create's (or update's) status parameters and httpcb URLs (§5.1, §6): 400."""
        status.check_params(properties)
        route = status.resolve(self.options(service_name), properties, self.settings.event_lists)
        status.check_route(route, self.settings.callback.httpcb_allowed_prefixes)

    def _set_state(
        self,
        conn: Connection,
        record: CallbackRecord,
        state: State,
        now_ms: int,
        *,
        reason: str | None = None,
        desired_time_ms: int | None = None,
    ) -> None:
        """Store a new state and the timers that go with it (§9.5)."""
        options = self.options(record.service_name)
        record.state = state
        values: dict[str, Any] = {"state": state, "updated_at_ms": now_ms}
        if desired_time_ms is not None:
            record.desired_time_ms = desired_time_ms
            record.expiration_ms = desired_time_ms + options.cb_ttl_s * 1000
            values.update(desired_time_ms=desired_time_ms, expiration_ms=record.expiration_ms)
        if state == "COMPLETED":
            record.reason = reason
            record.completed_at_ms = now_ms
            record.due_at_ms = record.ttl_at_ms = None
            record.purge_at_ms = now_ms + self.settings.callback.completed_retention_s * 1000
        else:
            record.reason = None
            record.due_at_ms = record.desired_time_ms if state == "SCHEDULED" else None
            record.ttl_at_ms = record.expiration_ms
        record.reminder_at_ms = None
        if state == "SCHEDULED":
            route = status.resolve(options, record.properties, self.settings.event_lists)
            record.reminder_at_ms = status.reminder_at(route, record.desired_time_ms, now_ms)
        values.update(
            reminder_at_ms=record.reminder_at_ms,
            reason=record.reason,
            completed_at_ms=record.completed_at_ms,
            due_at_ms=record.due_at_ms,
            ttl_at_ms=record.ttl_at_ms,
            purge_at_ms=record.purge_at_ms,
        )
        store.update_callback(conn, record.id, **values)
        if state == "COMPLETED" and reason in (FAIL_TIMEOUT_TTL, PURGED):
            event = "CALLBACK_PURGED"
            self._push(conn, record, event, now_ms, guard=event, reason=reason)

    def _desired(self, text: str | None, name: str, now_ms: int) -> int:
        if text is None:
            return now_ms
        desired = parse_time(name, text)
        if desired < now_ms - PAST_LIMIT_MS:
            raise BadParameter(f"{name} is more than {PAST_LIMIT_MS // 1000} s in the past")
        return desired

    def _check_slot(
        self, conn: Connection, service_name: str, desired_ms: int, now_ms: int
    ) -> None:
        options = self.options(service_name)
        if options.cb_max_request_by_time_bucket is None or desired_ms <= now_ms:
            return
        if slots.free_in_slot(conn, options, service_name, desired_ms) > 0:
            return
        free = slots.next_free(conn, options, service_name, desired_ms, now_ms, count=10)
        raise SlotNotAvailable(
            "the time slot of this _desired_time is full or closed", availability=free
        )

    # -- §3: the customer's API -------------------------------------------------------------

    async def create(
        self, service_name: str, params: Mapping[str, str], base_url: str
    ) -> CallbackRecord:
        self.check_service(service_name)
        options = self.options(service_name)
        chat = self.settings.chat
        parsed = create_params(params, options)
        check_properties(parsed.properties, chat.max_user_data_keys, chat.max_user_data_value_chars)
        self._check_status(service_name, parsed.properties)
        if parsed.device is not None and parsed.device.type == "httpcb":
            prefixes = self.settings.callback.httpcb_allowed_prefixes
            notes.check_httpcb_url(parsed.device.id, prefixes, "the push device id")

        def run(conn: Connection) -> CallbackRecord:
            now_ms = self.clock.now_ms()
            desired = self._desired(parsed.desired_time, "_desired_time", now_ms)
            if store.count_open(conn) >= self.settings.callback.max_open_callbacks:
                raise TooManyCallbacks(self.settings.callback.max_open_callbacks)
            state = initial_state(desired, now_ms)
            if state == "SCHEDULED":
                self._check_slot(conn, service_name, desired, now_ms)
            expiration = desired + options.cb_ttl_s * 1000
            record = CallbackRecord(
                id=new_id(),
                service_name=service_name,
                state=state,
                reason=None,
                desired_time_ms=desired,
                expiration_ms=expiration,
                created_at_ms=now_ms,
                updated_at_ms=now_ms,
                base_url=base_url,
                properties=parsed.properties,
                device=parsed.device,
                due_at_ms=desired if state == "SCHEDULED" else None,
                ttl_at_ms=expiration,
                upcoming=_initial_upcoming(options, parsed.properties),
            )
            if state == "SCHEDULED":
                route = status.resolve(options, parsed.properties, self.settings.event_lists)
                record.reminder_at_ms = status.reminder_at(route, desired, now_ms)
            store.insert_callback(conn, record)
            self._subscribe_own(conn, record, now_ms)
            self._command(conn, record, "callback.created", now_ms)
            if state == "SCHEDULED":
                self._status(conn, record, [f"{CB}scheduled"], now_ms)
            else:
                self._status(conn, record, [f"{CB}submitted", f"{CB}queued"], now_ms)
            return record

        record = await self.db.write(run)
        self._committed()
        log.info(
            "callback created",
            extra={"action": "callback_created", "callback": record.id, "state": record.state},
        )
        return record

    def create_dialog(self, record: CallbackRecord) -> dict[str, str]:
        options = effective(self.options(record.service_name), record.properties)
        template = dialogs.create_template(record, options)
        return dialogs.confirmation(template, record.id, self._texts(record))

    async def get(self, callback_id: str) -> CallbackRecord | None:
        if not is_id(callback_id):
            return None
        return await self.db.read(store.get_callback, callback_id)

    def in_effect(self, record: CallbackRecord) -> tuple[dict[str, Any], status.StatusRoute]:
        """The §2.4 options (overrides applied) and the §5.1 status settings of one callback, as
        its requests, events and timers use them (the admin console shows them)."""
        options = self.options(record.service_name)
        route = status.resolve(options, record.properties, self.settings.event_lists)
        return effective(options, record.properties), route

    async def get_in_service(self, service_name: str, callback_id: str) -> CallbackRecord:
        record = await self.get(callback_id)
        if record is None or record.service_name != service_name:
            raise CallbackNotFound(callback_id)
        return record

    async def query(
        self,
        service_name: str | None,
        conditions: Sequence[Condition],
        operand: Literal["AND", "OR"],
    ) -> list[CallbackRecord]:
        if service_name is not None:
            self.check_service(service_name)
        limit = self.settings.callback.max_query_results
        found = await self.db.read(store.query, service_name, conditions, operand, limit)
        urls = [condition for condition in conditions if condition.name == "_url"]
        if not urls:
            return found

        def keep(record: CallbackRecord) -> bool:
            matches = [(record.url == c.value) != c.negated for c in urls]
            return all(matches) if operand == "AND" else any(matches) or len(urls) < len(conditions)

        return [record for record in found if keep(record)]

    def _locked(
        self, conn: Connection, service_name: str | None, callback_id: str
    ) -> CallbackRecord:
        record = store.get_callback(conn, callback_id, lock=True) if is_id(callback_id) else None
        if record is None or (service_name is not None and record.service_name != service_name):
            raise CallbackNotFound(callback_id)
        return record

    async def update(
        self, service_name: str, callback_id: str, params: Mapping[str, str]
    ) -> CallbackRecord:
        """§3.5 reschedule (``_new_desired_time``) and/or new properties."""
        self.check_service(service_name)
        from chatpush.callbacks.model import IGNORED_IN_REQUESTS
        from chatpush.callbacks.params import PUSH_KEYS

        new_time = params.get("_new_desired_time")
        properties = {
            name: value
            for name, value in params.items()
            if name not in IGNORED_IN_REQUESTS
            and name not in PUSH_KEYS
            and name not in ("_new_desired_time", "_desired_time")
        }
        if "_customer_number" in properties and not 1 <= len(properties["_customer_number"]) <= 64:
            raise BadParameter("_customer_number is 1-64 characters")
        check_overrides(properties)
        status.check_params(properties)
        if new_time is None and not properties:
            raise BadParameter("nothing to change: give _new_desired_time or properties")
        chat = self.settings.chat

        def run(conn: Connection) -> CallbackRecord:
            now_ms = self.clock.now_ms()
            record = self._locked(conn, service_name, callback_id)
            if record.state == "COMPLETED":
                raise IllegalState(record.state, "a completed callback cannot be changed")
            if properties:
                merged = {**record.properties, **properties}
                check_properties(merged, chat.max_user_data_keys, chat.max_user_data_value_chars)
                store.set_properties(conn, record.id, properties)
                record.properties = merged
                if any(name in properties for name in status.CREATE_PARAMS):
                    self._check_status(service_name, merged)
                    self._subscribe_own(conn, record, now_ms)
            if new_time is not None:
                if record.state not in ("SCHEDULED", "QUEUED"):
                    raise IllegalState(
                        record.state, "only a SCHEDULED or QUEUED callback is rescheduled"
                    )
                desired = self._desired(new_time, "_new_desired_time", now_ms)
                target = initial_state(desired, now_ms)
                if target == "SCHEDULED":
                    self._check_slot(conn, service_name, desired, now_ms)
                previous = record.state
                self._set_state(conn, record, target, now_ms, desired_time_ms=desired)
                if target == "QUEUED" and previous == "SCHEDULED":
                    self._command(conn, record, "callback.queued", now_ms)
                    events = [f"{CB}submitted", f"{CB}queued", f"{CB}status_updated"]
                else:
                    self._command(conn, record, "callback.rescheduled", now_ms)
                    events = [f"{CB}rescheduled"]
                    if target != previous:
                        events.append(f"{CB}status_updated")
                self._status(conn, record, events, now_ms)
            else:
                store.update_callback(conn, record.id, updated_at_ms=now_ms)
            if properties:
                self._command(conn, record, "callback.updated", now_ms, properties=properties)
            return record

        record = await self.db.write(run)
        self._committed()
        return record

    async def cancel(
        self, service_name: str | None, callback_id: str, *, reason: str = CANCELLED, **extra: Any
    ) -> CallbackRecord:
        if service_name is not None:
            self.check_service(service_name)

        def run(conn: Connection) -> CallbackRecord:
            return self._cancel(conn, service_name, callback_id, reason, extra)

        record = await self.db.write(run)
        self._committed()
        return record

    def _cancel(
        self,
        conn: Connection,
        service_name: str | None,
        callback_id: str,
        reason: str,
        extra: Mapping[str, Any],
    ) -> CallbackRecord:
        now_ms = self.clock.now_ms()
        record = self._locked(conn, service_name, callback_id)
        if record.state == "COMPLETED" and record.reason == reason:
            return record  # cancelled already: not an error (§2.3)
        if record.state == "PROCESSING":
            raise IllegalState(record.state, "a callback in progress cannot be cancelled")
        check_transition(record.state, "COMPLETED", "cancel")
        self._set_state(conn, record, "COMPLETED", now_ms, reason=reason)
        self._command(conn, record, "callback.cancelled", now_ms, reason=reason, **extra)
        self._status(conn, record, [f"{CB}cancelled", f"{CB}status_updated"], now_ms)
        return record

    async def admin_cancel(
        self, ids: Sequence[str], note: str | None
    ) -> tuple[list[str], list[str]]:
        """``CANCELLED_BY_ADMIN`` for each open callback of ``ids``; (cancelled, skipped)."""
        if len(ids) > MAX_ADMIN_IDS:
            raise BadParameter(f"at most {MAX_ADMIN_IDS} ids per call")
        extra = {} if note is None else {"note": note}

        def run(conn: Connection) -> tuple[list[str], list[str]]:
            cancelled, skipped = [], []
            for callback_id in dict.fromkeys(ids):
                try:
                    record = self._locked(conn, None, callback_id)
                    if record.state in ("COMPLETED", "PROCESSING"):
                        skipped.append(callback_id)
                        continue
                    self._cancel(conn, None, callback_id, CANCELLED_BY_ADMIN, extra)
                    cancelled.append(callback_id)
                except CallbackNotFound:
                    skipped.append(callback_id)
            return cancelled, skipped

        result = await self.db.write(run)
        self._committed()
        return result

    async def dialog(
        self, callback_id: str, action: str, base_url: str, gms_user: str
    ) -> dict[str, Any]:
        """§8: the dialog of ``action``; ``connect``, ``snooze`` and ``cancel`` act too, in the
        transaction that reads the callback."""
        if action not in dialogs.ACTIONS:
            raise UnknownAction(action)

        def run(conn: Connection) -> dict[str, Any]:
            now_ms = self.clock.now_ms()
            record = self._locked(conn, None, callback_id)
            options = self.options(record.service_name)
            if action in dialogs.EFFECTS:
                self._dialog_effect(conn, record, action, options, now_ms)
            context = dialogs.DialogContext(
                base_url=base_url,
                expires=format_time(now_ms + options.cb_user_confirm_timeout_s * 1000),
                gms_user=gms_user,
                snooze_minutes=max(1, round(options.cb_snooze_duration_s / 60)),
                texts=self._texts(record),
            )
            return dialogs.render(action, record, effective(options, record.properties), context)

        if action in dialogs.EFFECTS:
            answer = await self.db.write(run)
            self._committed()
            return answer
        if not is_id(callback_id):
            raise CallbackNotFound(callback_id)
        return await self.db.read(run)

    def _dialog_effect(
        self,
        conn: Connection,
        record: CallbackRecord,
        action: str,
        options: ServiceOptions,
        now_ms: int,
    ) -> None:
        if record.state == "COMPLETED":
            raise IllegalState(record.state, f"{action} after completion")
        if action == "connect":
            self._command(conn, record, "callback.user_action", now_ms, action="connect")
        elif action == "snooze":
            if record.state not in ("QUEUED", "ROUTING"):
                raise IllegalState(record.state, "only a QUEUED or ROUTING callback is snoozed")
            later = now_ms + options.cb_snooze_duration_s * 1000
            self._set_state(conn, record, "SCHEDULED", now_ms, desired_time_ms=later)
            self._command(conn, record, "callback.rescheduled", now_ms, action="snooze")
            self._status(conn, record, [f"{CB}rescheduled", f"{CB}status_updated"], now_ms)
        else:
            self._cancel(conn, None, record.id, CANCELLED, {})

    async def queue_position(self, callback_id: str) -> dict[str, Any]:
        record = await self.get(callback_id)
        if record is None:
            raise CallbackNotFound(callback_id)
        options = self.options(record.service_name)
        threshold_s = options.cb_push_threshold_min * 60
        ewt = -1 if record.ewt_s is None else record.ewt_s
        return {
            "_position": -1 if record.position is None else record.position,
            "_eta": ewt,
            "_total_waiting": -1 if record.total_waiting is None else record.total_waiting,
            "_agent_ready_threshold_passed": record.ewt_s is not None
            and record.ewt_s < threshold_s,
            "ewt": ewt,
        }

    async def availability(self, service_name: str, request: slots.SlotRequest) -> dict[str, int]:
        self.check_service(service_name)
        options = self.options(service_name)
        return await self.db.read(slots.availability, options, service_name, request)

    # -- §4: the contact-centre side ---------------------------------------------------------

    async def describe(self, callback_id: str) -> dict[str, Any]:
        def run(conn: Connection) -> dict[str, Any]:
            record = store.get_callback(conn, callback_id) if is_id(callback_id) else None
            if record is None:
                raise CallbackNotFound(callback_id)
            tag, now_ms = notes.tag_of(record.service_name, record.id), self.clock.now_ms()
            return {
                "callback": record.wire(),
                "lastSeq": record.last_seq,
                "commandSeq": record.command_seq,
                "ewt": record.ewt_s,
                "position": record.position,
                "totalWaiting": record.total_waiting,
                "ewtAt": record.ewt_at_ms,
                "upcoming": record.upcoming,
                "attributes": record.attributes,
                "timers": {
                    "dueAt": record.due_at_ms,
                    "ttlAt": record.ttl_at_ms,
                    "purgeAt": record.purge_at_ms,
                    "reminderAt": record.reminder_at_ms,
                },
                "subscription": None
                if record.device is None
                else {
                    "deviceType": record.device.type,
                    "provider": record.device.provider,
                    "debug": record.device.debug,
                    "language": record.device.language,
                },
                "statusSubscriptions": [
                    {
                        "id": found.id,
                        "subscriberId": found.subscriber_id,
                        "filter": found.filter,
                        "deviceType": found.device_type,
                        "own": found.callback_id == record.id,
                        "expireAt": found.expire_at_ms,
                    }
                    for found in notes.matching(conn, tag, now_ms)
                ],
                "commands": self._pending_commands(conn, record.id),
            }

        return await self.db.read(run)

    def _pending_commands(self, conn: Connection, callback_id: str) -> list[dict[str, Any]]:
        """A callback's unacknowledged commands, oldest first, with how far they got."""
        if self.settings.callback.cc_webhook_url is None:
            return store.pending_commands(conn, callback_id)
        return [
            {
                **row.body,
                "tries": row.tries,
                "dueAt": row.due_at_ms,
                "expiresAt": row.expires_at_ms,
            }
            for row in outbox.pending(conn, ccwebhook.SOURCE, callback_id)
        ]

    async def deliveries(
        self, callback_id: str, after_id: int
    ) -> list[tuple[int, trail.DeliveryRecord]]:
        """The trail of the callback's pushes and of its commands' webhook tries (the delivery
        platform's, by source and key), merged by row id: a page of at most ``TRAIL_PAGE``."""

        def run(conn: Connection) -> list[tuple[int, trail.DeliveryRecord]]:
            record = store.get_callback(conn, callback_id) if is_id(callback_id) else None
            if record is None:
                raise CallbackNotFound(callback_id)
            made = trail.deliveries_of(
                conn, pushes.SOURCE, pushes.key_of(record), after_id, TRAIL_PAGE
            )
            sent = trail.deliveries_of(conn, ccwebhook.SOURCE, record.id, after_id, TRAIL_PAGE)
            return sorted(made + sent, key=lambda row: row[0])[:TRAIL_PAGE]

        return await self.db.read(run)

    async def event(self, callback_id: str, body: Any) -> EventAnswer:
        seq = seq_of(body)

        def run(conn: Connection) -> EventAnswer:
            now_ms = self.clock.now_ms()
            record = self._locked(conn, None, callback_id)
            if seq <= record.last_seq:
                return EventAnswer(record.id, seq, True, record.state, record.reason)
            event = parse_event(body, now_ms)
            if seq > record.last_seq + 1:
                log.info(
                    "callback event seq gap",
                    extra={"action": "callback_seq_gap", "callback": record.id, "seq": seq},
                )
            options = self.options(record.service_name)
            direction = effective(options, record.properties)["_call_direction"]
            done = effect(
                record.state,
                event,
                user_originated=direction == "USERORIGINATED",
                max_dial_attempts=options.cb_max_dial_attempts,
            )
            self._apply(conn, record, event, done, now_ms)
            return EventAnswer(record.id, seq, False, record.state, record.reason)

        answer = await self.db.write(run)
        self._committed(made_commands=False)
        return answer

    def _apply(
        self, conn: Connection, record: CallbackRecord, event: CcEvent, done: Effect, now_ms: int
    ) -> None:
        values: dict[str, Any] = {"last_seq": event.seq, "updated_at_ms": now_ms}
        if event.attributes:
            record.attributes = {**record.attributes, **event.attributes}
            values["attributes"] = record.attributes
        if event.type == "call_in":
            record.access_number, record.access_code = event.access_number, event.access_code
            values.update(access_number=event.access_number, access_code=event.access_code)
        store.update_callback(conn, record.id, **values)
        changed = done.state is not None and done.state != record.state
        if done.state is not None and (changed or done.state == "SCHEDULED"):
            self._set_state(
                conn,
                record,
                done.state,
                now_ms,
                reason=done.reason,
                desired_time_ms=done.desired_time_ms,
            )
        if done.push is not None:
            self._event_push(conn, record, event, done.push, now_ms)
        events = [STATUS_EVENTS[event.type]] if event.type in STATUS_EVENTS else []
        if changed:
            events.append(f"{CB}status_updated")
        computed = {
            "c_call_num_attempt": event.attempt,
            "c_termination_type": None
            if record.state != "COMPLETED"
            else f"COMPLETED.{record.reason}",
        }
        self._status(
            conn,
            record,
            events,
            now_ms,
            timestamp_ms=event.at_ms,
            attributes=event.attributes,
            computed=computed,
        )

    def _event_push(
        self, conn: Connection, record: CallbackRecord, event: CcEvent, push: str, now_ms: int
    ) -> None:
        """§7.2's pushes of a CC event."""
        options = effective(self.options(record.service_name), record.properties)
        if push in ("ATTEMPT_FAILED", "FINAL_ATTEMPT_FAILED"):
            name = f"CALLBACK_{push}"
            maximum = event.max_attempts or options["_max_dial_attempts"]
            guard = pushes.guard_of(name, event.attempt)
            self._push(
                conn, record, name, now_ms, guard=guard, attempt=event.attempt, maxAttempts=maximum
            )
        elif push == "READY":
            code = "true" if options["_provide_code"] else "false"
            action = f"{dialogs.CONFIRM_PROVIDE_CODE}{code}"
            self._push(
                conn, record, "CALLBACK_READY", now_ms, guard="CALLBACK_READY", action=action
            )
        elif push == "READY.call_in":
            self._push(
                conn,
                record,
                "CALLBACK_READY",
                now_ms,
                guard="CALLBACK_READY.call_in",
                action="connect-inbound",
                accessNumber=event.access_number,
                accessCode=event.access_code,
            )
        elif push == "DIALOG":
            self._push(conn, record, "CALLBACK_DIALOG", now_ms, guard=None, action=event.action)

    async def ewt(self, updates: Any) -> tuple[int, list[str]]:
        """§4.5: apply each update newer than the stored one; (applied, ignored ids)."""
        parsed = _ewt_updates(updates, self.clock.now_ms())

        def run(conn: Connection) -> tuple[int, list[str]]:
            now_ms = self.clock.now_ms()
            applied, ignored = 0, []
            for update in parsed:
                record = (
                    store.get_callback(conn, update["id"], lock=True)
                    if is_id(update["id"])
                    else None
                )
                if record is None or record.state == "COMPLETED":
                    ignored.append(update["id"])
                    continue
                if record.ewt_at_ms is not None and update["at"] <= record.ewt_at_ms:
                    continue
                record.ewt_s, record.position = update["ewt"], update["position"]
                record.total_waiting, record.ewt_at_ms = update["totalWaiting"], update["at"]
                store.update_callback(
                    conn,
                    record.id,
                    ewt_s=update["ewt"],
                    position=update["position"],
                    total_waiting=update["totalWaiting"],
                    ewt_at_ms=update["at"],
                )
                applied += 1
                if record.state == "QUEUED":
                    self._upcoming(conn, record, update, now_ms)
            return applied, ignored

        result = await self.db.write(run)
        self._committed(made_commands=False)
        return result

    def _upcoming(
        self, conn: Connection, record: CallbackRecord, update: Mapping[str, Any], now_ms: int
    ) -> None:
        """§7.2: CALLBACK_UPCOMING's state machine, on an estimated wait applied while QUEUED."""
        threshold_s = self.options(record.service_name).cb_push_threshold_min * 60
        state, push = pushes.upcoming_step(
            record.upcoming, update["ewt"], threshold_s, will_not_complete=update["willNotComplete"]
        )
        if state != record.upcoming:
            record.upcoming = state
            store.update_callback(conn, record.id, upcoming=state)
        if push:
            event = "CALLBACK_UPCOMING"
            self._push(conn, record, event, now_ms, guard=event)

    async def pull(
        self, service_name: str | None, limit: int, wait_s: float
    ) -> list[dict[str, Any]]:
        """Lease commands; with none, wait up to ``wait_s`` for one (a long poll). The wait is
        the HTTP request's, in real seconds (as a client's read timeout counts them), not the
        clock's: the leases and the commands' times are the clock's."""
        self._check_pull()
        lease_ms = self.settings.callback.command_lease_s * 1000
        wait_s = min(wait_s, self.settings.callback.max_wait_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            made = self._commands_made
            now_ms = self.clock.now_ms()
            found = await self.db.write(store.claim_commands, service_name, limit, now_ms, lease_ms)
            left_s = deadline - loop.time()
            if found or left_s <= 0:
                return found
            # Commands made by another instance, or whose lease runs out: look again each second.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(made.wait(), min(left_s, 1.0))

    async def ack(self, command_ids: Sequence[str]) -> list[str]:
        self._check_pull()
        return await self.db.write(store.ack_commands, command_ids)

    # -- §6: the Notification API ---------------------------------------------------------------

    async def subscribe(self, body: Any, *, with_key: bool) -> str:
        """Subscribe, or renew the same subscription (same ``subscriberId``, filter, type and
        ``deviceId``: same id, new expiry); its id. Without an API key the filter must be an
        existing callback's tag exactly (ApiKeyRequired: 403)."""
        limits = self.settings.notification
        request = notes.parse_subscribe(
            body,
            default_expire_s=limits.default_expire_s,
            max_filter_chars=limits.max_filter_chars,
            allowed_prefixes=self.settings.callback.httpcb_allowed_prefixes,
        )
        is_pattern = with_key and "*" in request.filter
        target = request.target

        def run(conn: Connection) -> str:
            now_ms = self.clock.now_ms()
            if not with_key:
                self._check_own_tag(conn, request.filter)
            expire_at_ms = now_ms + request.expire_s * 1000
            same = subscriptions.find_same(
                conn,
                request.subscriber_id,
                request.filter,
                target.device_type,
                target.device_id,
                now_ms,
            )
            if same is not None:
                subscriptions.renew(
                    conn,
                    same.id,
                    expire_at_ms,
                    request.authorization,
                    provider=request.provider,
                    debug=target.debug,
                    language=target.language,
                )
                return same.id
            mine, total, patterns = subscriptions.counts(conn, request.subscriber_id, now_ms)
            if mine >= limits.max_subscriptions_per_subscriber:
                raise TooManySubscriptions(
                    f"this subscriberId holds its most subscriptions "
                    f"({limits.max_subscriptions_per_subscriber})"
                )
            if total >= limits.max_subscriptions:
                raise TooManySubscriptions(
                    f"chatpush holds its most subscriptions ({limits.max_subscriptions})"
                )
            if is_pattern and patterns >= limits.max_pattern_subscriptions:
                raise TooManySubscriptions(
                    f"chatpush holds its most filters with a * ({limits.max_pattern_subscriptions})"
                )
            subscription_id = secrets.token_hex(16).upper()
            subscriptions.insert_subscription(
                conn,
                subscriptions.SubscriptionRow(
                    id=subscription_id,
                    subscriber_id=request.subscriber_id,
                    filter=request.filter,
                    is_pattern=is_pattern,
                    device_type=target.device_type,
                    device_id=target.device_id,
                    provider=request.provider,
                    debug=target.debug,
                    language=target.language,
                    authorization=request.authorization,
                    callback_id=None,
                    created_at_ms=now_ms,
                    expire_at_ms=expire_at_ms,
                ),
            )
            return subscription_id

        subscription_id = await self.db.write(run)
        self._timers_changed.set()  # its expiry may be the next timer
        return subscription_id

    def _check_own_tag(self, conn: Connection, filter_: str) -> None:
        found = notes.callback_of_tag(filter_)
        record = None
        if found is not None and is_id(found[1]):
            record = store.get_callback(conn, found[1])
        if record is None or found is None or record.service_name != found[0]:
            raise ApiKeyRequired(
                "without an X-API-Key the filter must be an existing callback's tag, "
                "callback.<service>.<_id>"
            )

    async def unsubscribe(self, subscription_id: str) -> None:
        def run(conn: Connection) -> None:
            now_ms = self.clock.now_ms()
            found = (
                subscriptions.get_subscription(conn, subscription_id, now_ms)
                if is_id(subscription_id)
                else None
            )
            if found is None or found.callback_id is not None:
                raise SubscriptionNotFound(subscription_id)
            subscriptions.delete_subscription(conn, found.id)

        await self.db.write(run)

    async def publish(self, body: Any) -> tuple[str, int]:
        """Publish an event under a tag to the subscriptions its tag matches (and a direct
        target): (event id, copies queued)."""
        request = notes.parse_publish(
            body,
            max_tag_chars=self.settings.notification.max_filter_chars,
            allowed_prefixes=self.settings.callback.httpcb_allowed_prefixes,
        )
        event_id = secrets.token_hex(16).upper()
        group_name = self.settings.default_group or "default"
        limits = self.settings.notification

        def content(language: str | None) -> str | dict[str, Any]:
            if request.localize:
                assert isinstance(request.message, str)
                texts = Texts(self.settings.texts, language)
                return texts.configured(request.message) or CALLBACK_TEXTS[request.message]
            return request.message

        def run(conn: Connection) -> int:
            now_ms = self.clock.now_ms()
            matched = notes.matching(conn, request.tag, now_ms)
            destinations = [
                (notes.target_of(found), found.provider, found.authorization) for found in matched
            ]
            if request.target is not None:
                destinations.append((request.target, request.provider, None))
            made = [
                notes.copy(
                    content(target.language),
                    request.tag,
                    f"{notes.PUBLISH_KEY_PREFIX}{event_id}.{number}",
                    target,
                    provider=provider,
                    authorization=authorization,
                    group_name=group_name,
                    max_attempts=limits.max_delivery_attempts,
                    retry_delays_s=self.options("default").flex_push_resend_delays_s,
                )
                for number, (target, provider, authorization) in enumerate(destinations)
            ]
            if made:
                enqueue(conn, made, now_ms)
                if request.expire_s is not None:
                    expire_at_ms = now_ms + request.expire_s * 1000
                    subscriptions.insert_publish(conn, event_id, expire_at_ms)
            return len(made)

        count = await self.db.write(run)
        self._committed(made_commands=False)
        return event_id, count

    def _check_pull(self) -> None:
        """§4.2: with a webhook, commands are POSTed, not pulled (409, code 117)."""
        if self.settings.callback.cc_webhook_url is not None:
            raise CommandsByWebhook()

    async def hand_over_commands(self) -> int:
        """At start: commands queued for the other way go this way (pull <-> webhook), so that
        switching ``[callback] cc_webhook_url`` on or off between runs loses none; how many.
        One transaction; each callback's commands keep their order, ids and bodies."""
        to_webhook = self.settings.callback.cc_webhook_url is not None

        def run(conn: Connection) -> int:
            now_ms = self.clock.now_ms()
            if to_webhook:
                bodies = store.take_commands(conn)
                made = [self._webhook_command(body, now_ms) for body in bodies]
                if made:
                    enqueue(conn, made, now_ms)
                return len(made)
            queued = outbox.take_all(conn, ccwebhook.SOURCE)
            for row in queued:
                body = row.body
                if store.get_callback(conn, row.key) is None:
                    continue  # purged meanwhile
                store.insert_command(
                    conn,
                    command_id=body["id"],
                    callback_id=row.key,
                    service_name=body["serviceName"],
                    seq=body["seq"],
                    body=body,
                    now_ms=row.created_at_ms,
                )
            return len(queued)

        moved = await self.db.write(run)
        if moved:
            self._committed()
            log.info(
                "callback commands handed over to the %s",
                "webhook" if to_webhook else "pull queue",
                extra={"action": "commands_handed_over", "count": moved},
            )
        return moved

    # -- §9.5: durable timers ------------------------------------------------------------------

    async def fire_timers(self) -> int:
        """Fire every timer due now, oldest first, each as one conditional transition in its own
        transaction; the number fired."""
        fired = 0
        while True:
            now_ms = self.clock.now_ms()
            due = await self.db.read(store.timers_due, now_ms, TIMER_BATCH)
            for _at, kind, callback_id in due:
                if await self.db.write(self._fire, kind, callback_id, now_ms):
                    fired += 1
            if len(due) < TIMER_BATCH:
                break
        fired += await self.db.write(self._expire, self.clock.now_ms())
        if fired:
            self._committed()
        return fired

    def _expire(self, conn: Connection, now_ms: int) -> int:
        """§6, §9.5: delete the subscriptions expired by now (never matched since), and drop
        the copies of expired publishes still undelivered; how many of both."""
        count = 0
        while True:
            deleted = subscriptions.delete_expired(conn, now_ms, TIMER_BATCH)
            count += deleted
            if deleted < TIMER_BATCH:
                break
        for event_id in subscriptions.expired_publishes(conn, now_ms, MAX_PUBLISH_EXPIRIES):
            drop_pending(conn, pushes.SOURCE, f"{notes.PUBLISH_KEY_PREFIX}{event_id}.")
            subscriptions.delete_publish(conn, event_id)
            count += 1
        return count

    def _fire(self, conn: Connection, kind: store.TimerKind, callback_id: str, now_ms: int) -> bool:
        record = store.claim_timer(conn, callback_id, kind, now_ms)
        if record is None:
            return False
        if kind == "purge":
            drop_pending(conn, pushes.SOURCE, pushes.key_of(record))
            subscriptions.delete_of_callback(conn, record.id)
            drop_pending(conn, ccwebhook.SOURCE, record.id)
            store.delete_callback(conn, record.id)
            log.info("callback purged", extra={"action": "callback_purged", "callback": record.id})
            return True
        if kind == "reminder":
            store.update_callback(conn, record.id, reminder_at_ms=None)
            guard = f"reminder.{format_time(record.desired_time_ms)}"
            if record.state != "SCHEDULED" or not store.take_guard(conn, record.id, guard, now_ms):
                return False
            self._status(conn, record, [REMINDER], now_ms)
            return True
        if kind == "due":
            if record.state != "SCHEDULED":
                store.update_callback(conn, record.id, due_at_ms=None)
                return False
            self._set_state(conn, record, "QUEUED", now_ms)
            self._command(conn, record, "callback.queued", now_ms)
            events = [f"{CB}submitted", f"{CB}queued", f"{CB}status_updated"]
            self._status(conn, record, events, now_ms)
            return True
        # ttl
        if record.state == "COMPLETED":
            store.update_callback(conn, record.id, ttl_at_ms=None)
            return False
        self._set_state(conn, record, "COMPLETED", now_ms, reason=FAIL_TIMEOUT_TTL)
        self._command(conn, record, "callback.cancelled", now_ms, reason=FAIL_TIMEOUT_TTL)
        self._status(conn, record, [f"{CB}status_updated"], now_ms)
        return True

    async def run_timers(self) -> None:
        """The timers' task: fire what is due (missed ones at start, in time order), then sleep
        until the next one, a change, or ``delivery.poll_interval_s`` (other instances' timers)."""
        poll_ms = int(self.settings.delivery.poll_interval_s * 1000)
        while True:
            changed = self._timers_changed
            await self.fire_timers()
            found = [
                await self.db.read(store.next_timer),
                await self.db.read(subscriptions.next_expiry),
            ]
            times = [at for at in found if at is not None]
            next_ms = min(times) if times else None
            now_ms = self.clock.now_ms()
            wake_ms = now_ms + poll_ms if next_ms is None else min(next_ms, now_ms + poll_ms)
            await self.clock.sleep_until(wake_ms, changed)
            if changed.is_set():
                self._timers_changed = asyncio.Event()


def _ewt_updates(body: Any, now_ms: int) -> list[dict[str, Any]]:
    from chatpush.callbacks.events import MAX_INT32, MAX_TIME_MS

    if (
        not isinstance(body, dict)
        or set(body) != {"updates"}
        or not isinstance(body["updates"], list)
    ):
        raise BadParameter('the body must be {"updates": [...]}')
    updates = body["updates"]
    if len(updates) > MAX_EWT_UPDATES:
        raise BadParameter(f"at most {MAX_EWT_UPDATES} updates per call")
    allowed = {"callbackId", "ewt", "position", "totalWaiting", "willNotComplete", "at"}
    parsed = []
    for number, update in enumerate(updates):
        where = f"updates[{number}]"
        if not isinstance(update, dict) or not set(update) <= allowed:
            raise BadParameter(f"{where}: an object of {', '.join(sorted(allowed))}")
        if any(value is None for value in update.values()):
            raise BadParameter(f"{where}: leave a member out rather than null")
        callback_id = update.get("callbackId")
        if not isinstance(callback_id, str) or not 1 <= len(callback_id) <= 64:
            raise BadParameter(f"{where}.callbackId is required")
        values: dict[str, Any] = {"id": callback_id}
        for name, high in (
            ("ewt", MAX_INT32),
            ("position", MAX_INT32),
            ("totalWaiting", MAX_INT32),
            ("at", MAX_TIME_MS),
        ):
            value = update.get(name)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if value is None and name != "ewt":
                values[name] = now_ms if name == "at" else None
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise BadParameter(f"{where}.{name} must be an integer from 0 to {high}")
            values[name] = value
        will_not = update.get("willNotComplete", False)
        if not isinstance(will_not, bool):
            raise BadParameter(f"{where}.willNotComplete must be true or false")
        values["willNotComplete"] = will_not
        parsed.append(values)
    return parsed


def _initial_upcoming(options: ServiceOptions, properties: Mapping[str, str]) -> str:
    """CALLBACK_UPCOMING is for USERTERMINATED callbacks with a threshold (§7.2)."""
    direction = effective(options, properties)["_call_direction"]
    if options.cb_push_threshold_min == 0 or direction == "USERORIGINATED":
        return "suppressed"
    return "pending"
