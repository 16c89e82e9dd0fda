"""Agent alerts' service: the device registry, event intake, rings, cancels, dead tokens and the
per-conversation trail. Each call is one database transaction; rings and cancels are handed to the
delivery platform's outbox inside it, so they commit with the state that made them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from chatpush import device_types
from chatpush.agents import alerts, events
from chatpush.agents.outbound import SOURCE, Outbox
from chatpush.agents.presence import PresenceSource
from chatpush.clock import Clock
from chatpush.config import Settings
from chatpush.errors import BadRequest, Code, Conflict, NotFound
from chatpush.metrics import Metrics
from chatpush.store import agents as store
from chatpush.store.database import Database

log = logging.getLogger("chatpush.agents")

PLATFORMS = {"ios": "ios", "android": "fcm"}
"""The registry's platform names for the mobile device types; any registered device type (or its
alias) is accepted as well."""
MAX_NAME_CHARS = 200
MAX_DEAD_REMEMBERED = 10_000
PURGE_BATCH_ROWS = 500
"""The most rows of each table one purge transaction deletes (about: one millisecond's go
together)."""


class OutcomeDestination(Protocol):
    @property
    def device_type(self) -> str: ...
    @property
    def device_id(self) -> str: ...


class SendOutcome(Protocol):
    """What the delivery platform reports of a finished send (its ``Outcome``)."""

    @property
    def source(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def destination(self) -> OutcomeDestination: ...
    @property
    def result(self) -> str: ...
    @property
    def final(self) -> bool: ...
    @property
    def http_status(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...


@dataclass(slots=True)
class Intake:
    """What one batch of events did."""

    accepted: int = 0
    rung: int = 0
    """Devices rung."""
    cancelled: int = 0
    """Devices sent a cancel."""
    suppressed: int = 0
    """Rings suppressed (a duplicate within the window, or an agent without devices)."""
    dropped: int = 0
    """Events not acted on (unknown type, filtered, not about an agent)."""
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(event type, outcome) -> events, for the metrics."""
    suppressions: dict[str, int] = field(default_factory=dict)

    def wire(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rung": self.rung,
            "cancelled": self.cancelled,
            "suppressed": self.suppressed,
            "dropped": self.dropped,
        }


@dataclass(frozen=True, slots=True)
class ConversationView:
    rings: list[store.Ring]
    trail: list[tuple[int, store.TrailEntry]]


def _printable_ascii(value: str) -> bool:
    return all("!" <= c <= "~" for c in value)


def valid_user_id(user_id: str) -> str:
    if not events.valid_id(user_id, events.MAX_USER_ID_CHARS):
        raise BadRequest(
            Code.INVALID_PARAMETER,
            f"userId must be 1 to {events.MAX_USER_ID_CHARS} printable ASCII characters without "
            "space or '/'",
        )
    return user_id


def valid_conversation_id(conversation_id: str) -> str:
    if not events.valid_id(conversation_id, events.MAX_CONVERSATION_ID_CHARS):
        raise BadRequest(
            Code.INVALID_PARAMETER,
            f"conversationId must be 1 to {events.MAX_CONVERSATION_ID_CHARS} printable ASCII "
            "characters without space or '/'",
        )
    return conversation_id


def valid_device_id(device_id: str) -> str:
    if not (len(device_id) == 32 and all(c in "0123456789abcdef" for c in device_id)):
        raise NotFound(Code.INVALID_PARAMETER, f"unknown device {device_id[:40]!r}")
    return device_id


class AgentAlerts:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
        outbox: Outbox,
        presence: PresenceSource | None = None,
    ) -> None:
        self._db = database
        self._settings = settings
        self._config = settings.agents
        self._clock = clock
        self._metrics = metrics
        self._outbox = outbox
        self._presence = presence
        self._dead_seen: dict[str, None] = {}
        """Message ids of dead-token outcomes logged and counted, oldest first (bounded)."""

    # -- the device registry ---------------------------------------------------------------------

    def _new_device(self, user_id: str, body: Any) -> store.Device:
        if not isinstance(body, dict):
            raise BadRequest(Code.INVALID_PARAMETER, "the body must be a JSON object")
        unknown = sorted(set(body) - {"platform", "token", "topic", "group", "provider"})
        if unknown:
            raise BadRequest(Code.INVALID_PARAMETER, f"unknown members: {', '.join(unknown)}")
        platform = body.get("platform")
        if not isinstance(platform, str) or not platform:
            raise BadRequest(Code.MISSING_PARAMETER, "platform is required (ios, android, ...)")
        device_type = PLATFORMS.get(platform.lower()) or device_types.canonical(platform.lower())
        if device_type is None:
            raise BadRequest(
                Code.INVALID_PARAMETER,
                f"unknown platform {platform[:40]!r}; known: ios, android, "
                f"{device_types.describe()}",
            )
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise BadRequest(Code.MISSING_PARAMETER, "token is required")
        if len(token) > store.MAX_TOKEN_CHARS or not _printable_ascii(token):
            raise BadRequest(
                Code.INVALID_PARAMETER,
                f"token must be 1 to {store.MAX_TOKEN_CHARS} printable ASCII characters "
                "without spaces",
            )
        names: dict[str, str | None] = {}
        for name in ("topic", "group", "provider"):
            value = body.get(name)
            if value is not None and (
                not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS
            ):
                raise BadRequest(
                    Code.INVALID_PARAMETER, f"{name} must be 1 to {MAX_NAME_CHARS} characters"
                )
            names[name] = value
        topic = names["topic"]
        if topic is not None and not _printable_ascii(topic):
            raise BadRequest(
                Code.INVALID_PARAMETER, "topic must be printable ASCII characters without spaces"
            )
        group_name = names["group"] or self._settings.default_group
        if group_name is None:
            raise BadRequest(
                Code.MISSING_PARAMETER, "group is required: no default node group is configured"
            )
        group = self._settings.groups.get(group_name)
        if group is None:
            raise NotFound(Code.UNKNOWN_GROUP, f"unknown node group {group_name[:40]!r}")
        provider = names["provider"]
        if provider is not None and provider not in group.providers:
            raise NotFound(
                Code.UNKNOWN_GROUP, f"group {group_name!r} has no provider {provider[:40]!r}"
            )
        if device_type not in group.push_enabled:
            raise Conflict(
                Code.CONFLICT,
                f"{device_type} is not enabled in group {group_name!r} "
                f"(pushEnabled = {','.join(group.push_enabled)})",
            )
        return store.Device(
            secrets.token_hex(16),
            user_id,
            device_type,
            token,
            names["topic"],
            group_name,
            provider,
            self._clock.now_ms(),
        )

    async def register(self, user_id: str, body: Any) -> store.Registered:
        new = self._new_device(valid_user_id(user_id), body)
        limit = self._config.max_devices_per_agent
        registered = await self._db.write(store.register_device, new, limit)
        if registered.device is None:
            raise Conflict(
                Code.CONFLICT,
                f"agent {user_id!r} has {limit} devices already "
                "(agents.max_devices_per_agent); delete one first",
            )
        return registered

    async def devices(self, user_id: str) -> list[store.Device]:
        return await self._db.read(store.devices_of, valid_user_id(user_id))

    async def delete(self, user_id: str, device_id: str) -> None:
        valid_user_id(user_id)
        if not await self._db.write(store.delete_device, user_id, valid_device_id(device_id)):
            raise NotFound(Code.INVALID_PARAMETER, f"agent {user_id!r} has no device {device_id!r}")

    # -- intake ----------------------------------------------------------------------------------

    def parse(self, batch: Sequence[Any]) -> list[events.Parsed]:
        """Every event of a batch checked; BadRequest (nothing done) if one is malformed."""
        if len(batch) > self._config.max_events_per_batch:
            raise BadRequest(
                Code.INVALID_PARAMETER,
                f"at most {self._config.max_events_per_batch} events in one request "
                "(agents.max_events_per_batch)",
            )
        parsed = [
            events.parse(
                event,
                event_types=self._config.event_types,
                media_types=self._config.media_types,
                index=None if len(batch) == 1 else n,
            )
            for n, event in enumerate(batch)
        ]
        for each in parsed:
            if isinstance(each, events.Invalid):
                raise BadRequest(Code.INVALID_PARAMETER, each.advice)
        return parsed

    def count_invalid(self, reason: str) -> None:
        """A malformed message or event of the event stream: dropped, never an error."""
        self._metrics.inc("chatpush_agent_events_total", event_type="other", outcome="invalid")
        log.debug(
            "agent event stream: dropped %s",
            reason,
            extra={"action": "agent_event_invalid", "reason": reason[:200]},
        )

    async def accept_stream(self, batch: Sequence[Any]) -> Intake:
        """Events of the event stream: each checked alone; a malformed one is dropped (counted)
        and the others are acted on, in order, in one transaction."""
        parsed: list[events.Parsed] = []
        for event in batch:
            each = events.parse(
                event,
                event_types=self._config.event_types,
                media_types=self._config.media_types,
            )
            if isinstance(each, events.Invalid):
                self.count_invalid(each.advice)
            else:
                parsed.append(each)
        return await self.accept(parsed)

    async def accept(self, parsed: Sequence[events.Parsed]) -> Intake:
        """Act on checked events, in order, in one transaction."""
        outbox = self._outbox
        presence: dict[str, str | None] = {}
        if self._presence is not None:
            # Looked up before the transaction (a lookup is an HTTP call), for the agents to ring.
            rings = [each.user_id for each in parsed if isinstance(each, events.Ring)]
            presence = await self._presence.statuses(rings)
        now_ms = self._clock.now_ms()
        intake = await self._db.write(self._apply, outbox, parsed, now_ms, presence)
        if intake.rung or intake.cancelled:
            outbox.poke()
        self._count(intake)
        return intake

    def _count(self, intake: Intake) -> None:
        for (event_type, outcome), count in intake.counts.items():
            self._metrics.inc(
                "chatpush_agent_events_total", count, event_type=event_type, outcome=outcome
            )
        if intake.rung:
            self._metrics.inc("chatpush_agent_rings_total", intake.rung)
        if intake.cancelled:
            self._metrics.inc("chatpush_agent_cancels_total", intake.cancelled)
        for reason, count in intake.suppressions.items():
            self._metrics.inc("chatpush_agent_rings_suppressed_total", count, reason=reason)

    def _apply(
        self,
        conn: Connection,
        outbox: Outbox,
        parsed: Sequence[events.Parsed],
        now_ms: int,
        presence: dict[str, str | None],
    ) -> Intake:
        intake = Intake()
        for each in parsed:
            if isinstance(each, events.Dropped):
                intake.dropped += 1
                outcome = "unknown" if each.reason == "unknown_type" else "dropped"
                key = (each.event_type if outcome != "unknown" else "other", outcome)
                intake.counts[key] = intake.counts.get(key, 0) + 1
                log.debug(
                    "agent event %s dropped: %s",
                    each.event_type,
                    each.reason,
                    extra={"action": "agent_event_dropped", "reason": each.reason},
                )
                continue
            intake.accepted += 1
            if isinstance(each, events.Ring):
                status = presence.get(each.user_id)
                if status is not None and status in self._config.presence_suppress:
                    # Before the dedup mark: once the agent is available, the next offer rings.
                    self._suppress(conn, each, f"presence:{status}", now_ms, intake)
                else:
                    self._ring(conn, outbox, each, now_ms, intake)
                key = (events.ADDED, "accepted")
            elif isinstance(each, events.Cancel):
                intake.cancelled += self._cancel(
                    conn, outbox, each.conversation_id, each.user_id, each.reason, now_ms
                )
                event_type = {
                    "deleted": events.DELETED,
                    "removed": events.REMOVED,
                    "connected": events.UPDATED,
                }[each.reason]
                key = (event_type, "accepted")
            intake.counts[key] = intake.counts.get(key, 0) + 1
        return intake

    def _suppress(
        self, conn: Connection, ring: events.Ring, reason: str, now_ms: int, intake: Intake
    ) -> None:
        intake.suppressed += 1
        intake.suppressions[reason] = intake.suppressions.get(reason, 0) + 1
        store.add_trail(
            conn,
            [
                store.TrailEntry(
                    ring.conversation_id, ring.user_id, "suppressed", now_ms, reason=reason
                )
            ],
        )
        log.info(
            "ring of conversation %s for agent %s suppressed: %s",
            ring.conversation_id,
            ring.user_id,
            reason,
            extra={"action": "agent_ring_suppressed", "reason": reason},
        )

    def _ring(
        self, conn: Connection, outbox: Outbox, ring: events.Ring, now_ms: int, intake: Intake
    ) -> None:
        window_ms = int(self._config.dedup_window_s * 1000)
        if not store.claim_ring(conn, ring.conversation_id, ring.user_id, now_ms, window_ms):
            self._suppress(conn, ring, "duplicate", now_ms, intake)
            return
        devices = store.devices_of(conn, ring.user_id)
        if not devices:
            self._suppress(conn, ring, "no_devices", now_ms, intake)
            return
        pushes = [
            alerts.ring_push(self._config, ring, device, device.group_name or "default")
            for device in devices
        ]
        ids = outbox.enqueue(conn, pushes, now_ms)
        store.save_rings(
            conn,
            [
                store.Ring(
                    ring.conversation_id,
                    ring.user_id,
                    device.id,
                    device.device_type,
                    device.token,
                    device.group_name,
                    device.provider,
                    message_id,
                    now_ms,
                    None,
                )
                for device, message_id in zip(devices, ids, strict=True)
            ],
        )
        store.add_trail(
            conn,
            [
                store.TrailEntry(
                    ring.conversation_id,
                    ring.user_id,
                    "rung",
                    now_ms,
                    device.id,
                    device.device_type,
                    None,
                    message_id,
                )
                for device, message_id in zip(devices, ids, strict=True)
            ],
        )
        intake.rung += len(devices)

    def _cancel(
        self,
        conn: Connection,
        outbox: Outbox,
        conversation_id: str,
        user_id: str | None,
        reason: str,
        now_ms: int,
        answered_on: str | None = None,
    ) -> int:
        """Send a cancel to every device still ringing for the conversation (of ``user_id``, or
        of every agent), but the one ``answered_on``; nothing if it never rang."""
        rings = store.ringing(conn, conversation_id, user_id)
        answered = [ring for ring in rings if ring.device_id == answered_on]
        others = [ring for ring in rings if ring.device_id != answered_on]
        trail = [
            store.TrailEntry(
                r.conversation_id, r.user_id, "answered", now_ms, r.device_id, r.device_type
            )
            for r in answered
        ]
        if others:
            pushes = [alerts.cancel_push(self._config, ring, reason) for ring in others]
            ids = outbox.enqueue(conn, pushes, now_ms)
            trail += [
                store.TrailEntry(
                    r.conversation_id,
                    r.user_id,
                    "cancelled",
                    now_ms,
                    r.device_id,
                    r.device_type,
                    reason,
                    message_id,
                )
                for r, message_id in zip(others, ids, strict=True)
            ]
        store.end_rings(conn, rings, now_ms)
        store.add_trail(conn, trail)
        return len(others)

    async def answered(self, user_id: str, conversation_id: str, body: Any) -> int:
        """The agent answered on one device: cancel on the agent's other devices still ringing.
        Returns how many were sent a cancel."""
        valid_user_id(user_id)
        valid_conversation_id(conversation_id)
        if not isinstance(body, dict) or set(body) != {"deviceId"}:
            raise BadRequest(
                Code.INVALID_PARAMETER, 'the body must be {"deviceId": "<registry id>"}'
            )
        device_id = body["deviceId"]
        if not isinstance(device_id, str):
            raise BadRequest(Code.INVALID_PARAMETER, "deviceId must be a string")
        valid_device_id(device_id)
        outbox = self._outbox
        now_ms = self._clock.now_ms()

        def run(conn: Connection) -> int | None:
            rung = store.rings_of(conn, conversation_id)
            if not any(r.user_id == user_id and r.device_id == device_id for r in rung):
                return None
            return self._cancel(
                conn, outbox, conversation_id, user_id, "answered_elsewhere", now_ms, device_id
            )

        cancelled = await self._db.write(run)
        if cancelled is None:
            raise NotFound(
                Code.INVALID_PARAMETER,
                f"device {device_id!r} of agent {user_id!r} was not rung for conversation "
                f"{conversation_id!r}",
            )
        if cancelled:
            outbox.poke()
            self._metrics.inc("chatpush_agent_cancels_total", cancelled)
        return cancelled

    # -- the trail -------------------------------------------------------------------------------

    async def conversation(self, conversation_id: str, after_id: int = 0) -> ConversationView:
        valid_conversation_id(conversation_id)

        def run(conn: Connection) -> ConversationView:
            return ConversationView(
                store.rings_of(conn, conversation_id),
                store.trail_of(conn, conversation_id, after_id),
            )

        return await self._db.read(run)

    # -- the platform's hooks: finished sends ----------------------------------------------------

    def dead(self, outcome: SendOutcome) -> bool:
        """A device token to remove: the provider said it is dead (APNs 410, FCM UNREGISTERED),
        or answered 401 for it (the reference gateway's rule, ``agents.dead_on_http_401``)."""
        if outcome.result == "rejected":
            return True
        unauthorized = outcome.result == "failed" and outcome.http_status == 401
        return self._config.dead_on_http_401 and unauthorized

    def record(self, conn: Connection, outcomes: Sequence[SendOutcome], now_ms: int) -> None:
        """The platform's ``SourceHooks.record``, inside its transaction: dead tokens leave the
        registry, logged, counted and in the conversation's trail. The platform may run the
        transaction again (a PostgreSQL retry): a message id is logged and counted once."""
        for outcome in outcomes:
            if outcome.source != SOURCE or not self.dead(outcome):
                continue
            seen = outcome.message_id in self._dead_seen
            self._dead_seen[outcome.message_id] = None
            while len(self._dead_seen) > MAX_DEAD_REMEMBERED:
                del self._dead_seen[next(iter(self._dead_seen))]
            device_type = outcome.destination.device_type
            removed = store.remove_token(conn, device_type, outcome.destination.device_id)
            conversation_id, _, rest = outcome.key.partition("/")
            user_id, _, device_id = rest.partition("/")
            store.add_trail(
                conn,
                [
                    store.TrailEntry(
                        conversation_id,
                        user_id,
                        "dead_token",
                        now_ms,
                        device_id or None,
                        device_type,
                        outcome.error or f"http {outcome.http_status}",
                        outcome.message_id,
                    )
                ],
            )
            if seen:
                continue
            self._metrics.inc("chatpush_agent_dead_tokens_total", device_type=device_type)
            log.warning(
                "agent device token dead (%s): %d registry entries removed",
                outcome.error or outcome.http_status,
                len(removed),
                extra={
                    "action": "agent_dead_token",
                    "device_type": device_type,
                    "removed": [device.id for device in removed],
                },
            )

    # -- housekeeping ----------------------------------------------------------------------------

    async def purge(self) -> None:
        """Forget rings, dedup marks and trail entries older than ``agents.trail_retention_s``,
        ``PURGE_BATCH_ROWS`` of each table a transaction: a minute's worth at 200 events/s is
        tens of thousands of rows, and one transaction deleting them all held the database's
        writer, and every ring queued behind it, for its whole length (docs/PERFORMANCE.md
        §10)."""
        before_ms = self._clock.now_ms() - self._config.trail_retention_s * 1000
        while True:
            _removed, more = await self._db.write(store.purge, before_ms, PURGE_BATCH_ROWS)
            if not more:
                return
