"""The schema, as SQLAlchemy declarative models. Alembic revisions must produce exactly this."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[float]: JSON}


class Chat(Base):
    __tablename__ = "chats"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service_name: Mapped[str] = mapped_column(String(200))
    secure_key: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(Text)
    email_address: Mapped[str | None] = mapped_column(String(320))
    user_data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    ended_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_client_request_ms: Mapped[int] = mapped_column(BigInteger)
    last_index: Mapped[int] = mapped_column(Integer)
    """The highest transcript index written so far (0 before the first event)."""
    client_position: Mapped[int] = mapped_column(Integer)
    """The highest index the customer has retrieved: the base of an empty reply's nextPosition."""
    last_participant_id: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index(None, "service_name", "created_at_ms"),
        Index(None, "ended_at_ms"),
    )


class Party(Base):
    __tablename__ = "parties"

    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id"), primary_key=True)
    participant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    nickname: Mapped[str] = mapped_column(String(256))
    first_name: Mapped[str | None] = mapped_column(String(256))
    last_name: Mapped[str | None] = mapped_column(String(256))
    joined_at_ms: Mapped[int] = mapped_column(BigInteger)
    left_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class Event(Base):
    __tablename__ = "events"

    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id"), primary_key=True)
    index: Mapped[int] = mapped_column("idx", Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    participant_id: Mapped[int] = mapped_column(Integer)
    nickname: Mapped[str] = mapped_column(String(256))
    party_type: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    message_type: Mapped[str | None] = mapped_column(String(128))
    user_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    utc_time_ms: Mapped[int] = mapped_column(BigInteger)


metadata = Base.metadata


class Subscription(Base):
    """One chat's push subscription and its reliable-delivery state (docs/push.md)."""

    __tablename__ = "subscriptions"

    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(256))
    device_type: Mapped[str] = mapped_column(String(16))
    group_name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(200))
    debug: Mapped[bool] = mapped_column(Boolean)
    notify_requestor: Mapped[bool] = mapped_column(Boolean)
    include_payload: Mapped[bool] = mapped_column(Boolean)
    reliable: Mapped[bool] = mapped_column(Boolean)
    client_channel: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    ack_position: Mapped[int] = mapped_column(Integer)
    notifiable_last: Mapped[int] = mapped_column(Integer)
    out_position: Mapped[int | None] = mapped_column(Integer)
    out_attempt: Mapped[int | None] = mapped_column(Integer)
    out_final: Mapped[bool] = mapped_column(Boolean)
    out_held: Mapped[bool] = mapped_column(Boolean, server_default=false())
    """The outstanding trigger is decided but not sent: held while the client is in the
    foreground."""
    wake_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    foreground_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    """The chat's client is connected live (CometD) until then: push waits (rules.State)."""
    pinned_node: Mapped[str | None] = mapped_column(String(128))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index(None, "wake_at_ms"),
        Index(None, "pinned_node"),
        Index(None, "device_id"),
    )


ROW_ID = BigInteger().with_variant(Integer, "sqlite")
"""64-bit ids for the busy tables (SQLite's INTEGER PRIMARY KEY is 64-bit and must stay INTEGER):
at a thousand deliveries a second a 32-bit id runs out within a month."""


class Outbox(Base):
    """Notifications waiting to be delivered, oldest first per (source, key). NULL ``due_at_ms``
    = parked. A chat's rows (source ``chat``, key = the chat id) route by the chat's
    subscription and leave the destination NULL; every other source's rows carry theirs."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    notify_position: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[str] = mapped_column(String(64))
    due_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    lease_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    device_type: Mapped[str | None] = mapped_column(String(16))
    device_id: Mapped[str | None] = mapped_column(Text)
    group_name: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(200))
    debug: Mapped[bool | None] = mapped_column(Boolean)
    authorization_header: Mapped[str | None] = mapped_column(Text)
    """The destination's Authorization header value (httpcb)."""
    rendering: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What a phone shows and how (``alert``, ``renderings``, ``apns_push_type``, ``priority``)."""
    tries: Mapped[int] = mapped_column(Integer, server_default="0")
    """Tries made so far (sources other than chat: the plain-retry rule, delivery/retry.py)."""
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="1")
    retry_delays: Mapped[list[float] | None] = mapped_column(JSON)
    """Seconds to wait before try 2, 3, ...; the last one repeats."""
    expires_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    """Sources but chat: no try is made after this (NULL: ``max_attempts`` alone limits)."""

    __table_args__ = (
        Index(None, "source", "key", "id"),
        Index(None, "due_at_ms"),
        Index(None, "lease_until_ms"),
    )


class Delivery(Base):
    """The delivery trail: one row per attempt to hand a notification to a receiver."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str | None] = mapped_column(String(64))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    node: Mapped[str | None] = mapped_column(String(128))
    group_name: Mapped[str | None] = mapped_column(String(200))
    device_type: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int | None] = mapped_column(Integer)
    notify_position: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    failure: Mapped[str | None] = mapped_column(String(16))
    """A failed send: ``permanent``, ``temporary`` or ``deferred`` (held by a backoff)."""
    retry_after_ms: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index(None, "source", "key", "id"), Index(None, "at_ms"))


class Node(Base):
    """A delivery node: hosted by one instance, available while fresh and not drained."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(200))
    instance_id: Mapped[str] = mapped_column(String(128))
    heartbeat_at_ms: Mapped[int] = mapped_column(BigInteger)
    drained: Mapped[bool] = mapped_column(Boolean)


class DeadToken(Base):
    """Device tokens a provider reported dead (APNs Unregistered, FCM UNREGISTERED): no
    subscription sends to them again."""

    __tablename__ = "dead_tokens"

    device_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)


class ProviderCredential(Base):
    """FCM or APNs credentials of a node group (``provider`` '' for the group's own, else a named
    provider of it), encrypted with ``security.credentials_key`` (Fernet)."""

    __tablename__ = "provider_credentials"

    group_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class Secret(Base):
    """Secrets chatpush generates for itself once (the secure-key obfuscation key)."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# -- callbacks (issue 17; docs/callbacks.md) ------------------------------------------------------


class Callback(Base):
    """One GMS callback: its record (``_id``, state, times) and its durable timers (NULL: none)."""

    __tablename__ = "callbacks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service_name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    desired_time_ms: Mapped[int] = mapped_column(BigInteger)
    expiration_ms: Mapped[int] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    completed_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The contact-centre side's event attributes, kept (latest wins), for status events."""
    last_seq: Mapped[int] = mapped_column(Integer)
    """The highest CC event ``seq`` accepted (0: none yet)."""
    command_seq: Mapped[int] = mapped_column(Integer)
    """The ``seq`` of the last command to the CC side (0: none yet)."""
    ewt_s: Mapped[int | None] = mapped_column(Integer)
    position: Mapped[int | None] = mapped_column(Integer)
    total_waiting: Mapped[int | None] = mapped_column(Integer)
    ewt_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    upcoming: Mapped[str] = mapped_column(String(16))
    """CALLBACK_UPCOMING's state: pending, armed, sent or suppressed."""
    access_number: Mapped[str | None] = mapped_column(String(64))
    access_code: Mapped[str | None] = mapped_column(String(64))
    base_url: Mapped[str] = mapped_column(String(512))
    """``$(ExtURLBase)`` when it was created: the record's ``_url`` starts with it."""
    device_type: Mapped[str | None] = mapped_column(String(16))
    """The push subscription of the create's push keys (§7.1); NULL: none, or ended."""
    device_id: Mapped[str | None] = mapped_column(String(512))
    device_provider: Mapped[str | None] = mapped_column(String(200))
    device_debug: Mapped[bool] = mapped_column(Boolean)
    device_language: Mapped[str | None] = mapped_column(String(35))
    due_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    """Timer: a SCHEDULED callback is submitted (QUEUED) then."""
    ttl_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    """Timer: an open callback completes as FAIL_TIMEOUT_TTL then."""
    purge_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    """Timer: a COMPLETED callback and all it holds are deleted then."""
    reminder_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    """Timer: the status reminder of a SCHEDULED callback goes then (migration 0011)."""

    __table_args__ = (
        Index(None, "service_name", "desired_time_ms"),
        Index(None, "state"),
        Index(None, "due_at_ms"),
        Index(None, "ttl_at_ms"),
        Index(None, "purge_at_ms"),
        Index(None, "reminder_at_ms"),
    )


class CallbackProperty(Base):
    """A callback's properties (create and update parameters), one row each, for the queries."""

    __tablename__ = "callback_properties"

    callback_id: Mapped[str] = mapped_column(
        ForeignKey("callbacks.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)
    """The order the parameters came in (the record lists them so)."""

    __table_args__ = (Index(None, "name"),)


class CallbackCommand(Base):
    """A command to the contact-centre side, until it acknowledges it (pulled with a lease)."""

    __tablename__ = "callback_commands"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(String(32), unique=True)
    callback_id: Mapped[str] = mapped_column(ForeignKey("callbacks.id", ondelete="CASCADE"))
    service_name: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    lease_until_ms: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index(None, "callback_id", "id"), Index(None, "service_name", "id"))


class CallbackGuard(Base):
    """A push or reminder that went once for a callback (CALLBACK_UPCOMING, CALLBACK_PURGED,
    CALLBACK_ATTEMPT_FAILED.<attempt>...): written with it, so it never goes twice."""

    __tablename__ = "callback_guards"

    callback_id: Mapped[str] = mapped_column(
        ForeignKey("callbacks.id", ondelete="CASCADE"), primary_key=True
    )
    guard: Mapped[str] = mapped_column(String(64), primary_key=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)


class NotificationSubscription(Base):
    """A Notification API subscription (docs/callbacks.md §6): events whose tag its filter
    matches go to its device. ``callback_id`` set: the one ``subscribe_notify`` made for that
    callback (it ends with the callback, ``expire_at_ms`` NULL); else it ends at
    ``expire_at_ms`` (migration 0012)."""

    __tablename__ = "notification_subscriptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(String(200))
    filter: Mapped[str] = mapped_column(String(1000))
    is_pattern: Mapped[bool] = mapped_column(Boolean)
    """The filter holds a ``*`` and was given with an API key: matched as a glob."""
    prefix: Mapped[str] = mapped_column(String(1000))
    """The filter up to its first ``*``: a tag must start with it (checked in SQL first)."""
    device_type: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(String(200))
    debug: Mapped[bool] = mapped_column(Boolean)
    language: Mapped[str | None] = mapped_column(String(35))
    authorization: Mapped[str | None] = mapped_column(Text)
    """The ``Authorization`` header value of its httpcb/customhttp deliveries."""
    callback_id: Mapped[str | None] = mapped_column(String(32))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    expire_at_ms: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index(None, "filter"),
        Index(None, "subscriber_id"),
        Index(None, "callback_id"),
        Index(None, "expire_at_ms"),
        Index(None, "is_pattern"),
    )


class NotificationPublish(Base):
    """A published event with an ``expire``: its copies still undelivered then are dropped."""

    __tablename__ = "notification_publishes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    expire_at_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index(None, "expire_at_ms"),)


# -- end of callbacks ---------------------------------------------------------------------------


# -- agent alerts (issue 18; chatpush/agents/, store/agents.py) ----------------------------------


class AgentDevice(Base):
    """A mobile agent's registered device: rung on the agent's routing events."""

    __tablename__ = "agent_devices"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    device_type: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(256))
    """The APNs or FCM token, or the custom HTTP / comet device id."""
    topic: Mapped[str | None] = mapped_column(String(200))
    group_name: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(200))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("device_type", "token"),
        Index(None, "user_id"),
    )


class AgentRing(Base):
    """One device rung for one conversation (cancels go to exactly these), with where it went."""

    __tablename__ = "agent_rings"

    conversation_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_type: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(256))
    group_name: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(64))
    rung_at_ms: Mapped[int] = mapped_column(BigInteger)
    cancelled_at_ms: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index(None, "rung_at_ms"),)


class AgentDedup(Base):
    """The last ring of a conversation for an agent: another within the window is suppressed."""

    __tablename__ = "agent_dedup"

    conversation_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    rung_at_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index(None, "rung_at_ms"),)


class AgentTrail(Base):
    """What happened to a conversation's alerts: rung, cancelled, suppressed, dead token."""

    __tablename__ = "agent_trail"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str | None] = mapped_column(String(32))
    device_type: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(64))
    at_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index(None, "conversation_id", "id"), Index(None, "at_ms"))


class AgentStreamLease(Base):
    """Who holds the event stream's one connection, until when (renewed while it holds it)."""

    __tablename__ = "agent_stream_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    until_ms: Mapped[int] = mapped_column(BigInteger)


# -- end of agent alerts -------------------------------------------------------------------------
