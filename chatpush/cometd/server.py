"""The Bayeux 1.0 server: sessions, subscriptions and the meta-channel state machine.

Transports (``transports.py``) turn a body or a websocket frame into a list of messages and call
:meth:`BayeuxServer.process`; the answer is an ``Exchange`` (``session.py``) that is rendered at
once, or after :meth:`BayeuxServer.wait` when it holds a ``/meta/connect``. Everything is in
the memory of this process: sessions, subscriptions, queues. A client that reaches an instance
not holding its session gets ``402::session_unknown``, handshakes again and resumes from its chat
transcript position.

Time comes from the injected :class:`~chatpush.clock.Clock`. One sweep task serves every timer:
it sleeps (``clock.sleep_until``) until the earliest held connect's deadline (``now +
connect_timeout_ms`` when it was held) or idle session's expiry, whichever comes first; a held
connect has no task and no timer of its own. Tests drive the sweep with a ``FakeClock``.

The application plugs in with hooks: :meth:`on_service` (requests on ``/service/...``),
:meth:`authorize_subscribe` / :meth:`authorize_publish`, :meth:`on_disconnect`,
:meth:`on_session_removed` and :meth:`on_drained`; it pushes with :meth:`publish` (broadcast) and
:meth:`Session.deliver` (one session).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web

from chatpush.addresses import TrustedProxies
from chatpush.clock import Clock
from chatpush.cometd import channels, protocol, transports
from chatpush.cometd.channels import SubscriptionIndex
from chatpush.cometd.session import (
    Exchange,
    HeldConnect,
    QueueBudget,
    RemovalReason,
    Session,
)

log = logging.getLogger("chatpush.cometd")

ServiceHandler = Callable[[Session, dict[str, Any]], Awaitable[None]]
"""Called with the publishing session and the whole message (``data``, ``ext``, ``id``...)."""
Authorizer = Callable[[Session, str], bool | Awaitable[bool]]
"""Called with the session and the channel or pattern (wildcards included, e.g. ``/**``)."""
DisconnectHandler = Callable[[Session, dict[str, Any]], Awaitable[None]]
RemovalListener = Callable[[Session, RemovalReason], None]
"""Called synchronously for every removed session; schedule slow work elsewhere."""
DrainListener = Callable[[Session], None]
"""Called synchronously when a connect took a session's queue or acknowledged part of it."""
ClientAddress = Callable[[web.BaseRequest], str]
"""The client of a request, as ``max_sessions_per_address`` counts it (chatpush/addresses.py:
an IPv4 address, an IPv6 network, behind trusted proxies the client they forward for)."""


@dataclass(frozen=True, slots=True)
class CometdLimits:
    """What one instance accepts. Durations are in milliseconds, sizes in bytes."""

    max_sessions: int = 20_000
    max_sessions_per_address: int = 100
    """Per client address (IPv6: per /64), so that one client cannot take every session."""
    max_ext_bytes: int = 4_096
    """The handshake's ``ext`` in UTF-8 JSON; a session keeps it for its life."""
    max_ext_depth: int = 8
    """How deeply the handshake's ``ext`` may nest (``{"a": {}}`` is 2)."""
    max_queued_messages: int = 1_000
    """Per session, unacknowledged ones included; beyond it the session is removed."""
    max_queued_bytes: int = 1_048_576
    """Per session, the size in memory of those messages; beyond it the session is removed."""
    max_total_queued_bytes: int = 268_435_456
    """Every session's queue together; beyond it the sessions with the largest queues go."""
    max_message_bytes: int = 65_536
    """The largest long-polling body or websocket frame (the Chat API's body limit)."""
    max_subscriptions: int = 100
    """Per session: subscriptions live in memory and a client chooses how many it makes."""
    connect_timeout_ms: int = 25_000
    """T: how long a ``/meta/connect`` is held when there is nothing to send."""
    max_interval_ms: int = 30_000
    """A session with no connect for this long after its last connect reply expires."""

    def __post_init__(self) -> None:
        for limit in fields(self):
            if getattr(self, limit.name) <= 0:
                raise ValueError(f"CometdLimits.{limit.name} must be positive")
        if self.max_total_queued_bytes < self.max_queued_bytes:
            raise ValueError("CometdLimits.max_total_queued_bytes must be >= max_queued_bytes")


@dataclass(slots=True)
class CometdStats:
    """Counters for the metrics module, which the application wires."""

    handshakes: int = 0
    handshakes_refused: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Requests refused by a limit, by reason: ``too_many_sessions``,
    ``too_many_sessions_from_address``, ``stopping``, ``ext_too_large``,
    ``too_many_subscriptions``, ``message_too_large``."""
    sessions_removed: Counter[str] = field(default_factory=Counter)
    bad_requests: int = 0
    """Bodies or frames that were not Bayeux at all (replied with a 4xx error batch)."""
    broadcasts: int = 0
    messages_queued: int = 0


class _Refused(Exception):
    """A message gets an unsuccessful reply with this Bayeux error (and optional advice)."""

    def __init__(self, error: str, advice: Mapping[str, Any] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.advice = advice


def _ext_json(ext: Any, max_bytes: int, max_depth: int) -> str | None:
    """The ``ext`` object as JSON text, or None when it is too large or too deep."""
    try:
        text = protocol.dumps(ext)
    except RecursionError:  # deeper than the decoder managed at this stack depth
        return None
    if len(text) > max_bytes or len(text.encode("utf-8")) > max_bytes:
        return None
    pending = [(ext, 1)]  # at most a few thousand values, within max_bytes
    while pending:
        value, depth = pending.pop()
        if depth > max_depth:
            return None
        if isinstance(value, dict):
            pending.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            pending.extend((child, depth + 1) for child in value)
    return text


def _unknown_session() -> _Refused:
    return _Refused(protocol.SESSION_UNKNOWN, protocol.HANDSHAKE_ADVICE)


class BayeuxServer:
    def __init__(
        self,
        clock: Clock,
        limits: CometdLimits | None = None,
        *,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.clock = clock
        self.limits = limits or CometdLimits()
        self.proxies = proxies or TrustedProxies()
        """The application's proxy rules: who a request's client is."""
        self.client_address: ClientAddress = self.proxies.client_address
        """Maps a request to its client's address."""
        self.stats = CometdStats()
        self._sessions: dict[str, Session] = {}
        self._per_address: Counter[str] = Counter()
        """Live sessions by client address; an address at zero is deleted."""
        self._refusing_addresses: set[str] = set()
        """Addresses whose handshakes are being refused (logged once, when it starts)."""
        self._index: SubscriptionIndex[Session] = SubscriptionIndex()
        self._idle: dict[Session, int] = {}
        """Sessions without a held connect, by when that began, oldest first (insertion order)."""
        self._holding: dict[HeldConnect, int] = {}
        """Held connects by their deadline; one timeout for all, so insertion order is deadline
        order (the sweep reads the oldest first)."""
        self._sweep_wake = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._refusing = False
        """Handshakes are being refused for lack of room (logged once, when it starts)."""
        self._services: list[tuple[str, ServiceHandler]] = []
        self._authorize_subscribe: Authorizer | None = None
        self._authorize_publish: Authorizer | None = None
        self._disconnect_handlers: list[DisconnectHandler] = []
        self._removal_listeners: list[RemovalListener] = []
        self._drain_listeners: list[DrainListener] = []
        self._budget = QueueBudget(self.limits.max_total_queued_bytes, self._make_room)
        """The bytes queued by every live session (a running total)."""
        self._advice = {
            "reconnect": "retry",
            "interval": 0,
            "timeout": self.limits.connect_timeout_ms,
        }
        self._connect_tail = ',"successful":true,"advice":' + protocol.dumps(self._advice) + "}"
        """How a successful connect reply without ``ext`` ends, after its ``clientId``: the
        same text ``protocol.dumps`` makes of the reply, written once."""

    # --- hooks ---------------------------------------------------------------------------------

    def on_service(self, prefix: str, handler: ServiceHandler) -> None:
        """Handle publishes to channels starting with ``prefix`` (e.g. ``/service/chatV2/``).

        The longest matching prefix wins. The handler answers with ``session.deliver``.
        """
        if not prefix.startswith(channels.SERVICE_PREFIX):
            raise ValueError(f"a service prefix starts with /service/: {prefix!r}")
        self._services.append((prefix, handler))
        self._services.sort(key=lambda item: len(item[0]), reverse=True)

    def authorize_subscribe(self, callback: Authorizer) -> None:
        """Decide who may subscribe to which broadcast channel; without it, anyone may."""
        self._authorize_subscribe = callback

    def authorize_publish(self, callback: Authorizer) -> None:
        """Decide who may publish to which broadcast channel; without it, no client may.

        Secure by default: the server's own :meth:`publish` (push notifications on
        ``/_genesys/push/...``) must not be forgeable by clients.
        """
        self._authorize_publish = callback

    def on_disconnect(self, handler: DisconnectHandler) -> None:
        """Awaited on ``/meta/disconnect`` before the session is removed and the reply sent."""
        self._disconnect_handlers.append(handler)

    def on_session_removed(self, listener: RemovalListener) -> None:
        """Told of every removal (disconnect, expiry, full queue)."""
        self._removal_listeners.append(listener)

    def on_drained(self, listener: DrainListener) -> None:
        """Told when a connect took a session's queue (or acknowledged a batch of it): an
        application that holds back messages for a full queue (back-pressure) sends on then."""
        self._drain_listeners.append(listener)

    # --- the application's side ----------------------------------------------------------------

    async def publish(
        self, channel: str, data: Any, *, audience: Callable[[Session], bool] | None = None
    ) -> int:
        """Queue ``{channel, data}`` for every subscriber (that ``audience``, if given, admits);
        the number of sessions reached.

        A subscription says which channel a session listens to, not what it may read: the
        application passes ``audience`` when one channel carries messages for several readers.
        Raises ValueError for a channel that is not a broadcast channel, or for data that has
        no UTF-8 form (a lone surrogate).
        """
        if not channels.is_valid_channel(channel, allow_wildcards=False) or (
            channels.is_meta(channel) or channels.is_service(channel)
        ):
            raise ValueError(f"not a broadcast channel: {channel!r}")
        return self._fan_out(channel, protocol.message_json(channel, data), audience)

    def get_session(self, client_id: str) -> Session | None:
        return self._sessions.get(client_id)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def queued_bytes(self) -> int:
        """The bytes queued by every session together (``max_total_queued_bytes`` bounds it)."""
        return self._budget.queued_bytes

    # --- lifecycle -----------------------------------------------------------------------------

    def add_routes(self, app: web.Application, path: str = "/genesys/cometd") -> None:
        """Serve both transports at ``path`` and run the expiry sweep for the app's life."""
        transports.add_routes(app, self, path, max_message_bytes=self.limits.max_message_bytes)
        app.cleanup_ctx.append(self._lifespan)

    async def _lifespan(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.stop()

    async def start(self) -> None:
        self._closing = False
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="cometd-sweeper")
        self._sweeper.add_done_callback(_report_death)

    def release_held_connects(self) -> None:
        """Stop holding: answer every held connect now and hold no more (shutdown)."""
        self._closing = True
        for session in self._sessions.values():
            if session.held is not None:
                session.held.release()
        for held in self._holding:
            held.release()
        self._holding.clear()

    async def stop(self) -> None:
        self.release_held_connects()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # --- the transports' side ------------------------------------------------------------------

    async def process(
        self, messages: list[Any], transport: str, address: str | Callable[[], str]
    ) -> Exchange:
        """Handle every message of a batch, in order; never raises for bad input.

        ``address`` is the client's (:attr:`client_address` of the request or websocket), or a
        function giving it: only a handshake needs it, so a connect does not pay for it.
        """
        exchange = Exchange()
        alone = len(messages) == 1
        for message in messages:
            reply = await self._handle(message, exchange, alone, transport, address)
            exchange.replies.append(reply)
        return exchange

    def answers_at_once(self, messages: list[Any]) -> bool:
        """Whether :meth:`process` handles ``messages`` without awaiting anything: connects and
        handshakes only, for which no asynchronous hook runs (the drain and removal listeners
        are synchronous). A transport may then run it outside a task (the lean front does); an
        asynchronous hook may need one (``asyncio.timeout``, ``current_task``)."""
        return all(type(m) is dict and m.get("channel") in _AT_ONCE for m in messages)

    async def wait(self, exchange: Exchange) -> None:
        """Hold the exchange's connect until a message is queued, T passes or it is released."""
        held = exchange.connect
        assert held is not None and exchange.hold
        try:
            if not held.released:
                held.waiter = asyncio.get_running_loop().create_future()
                await held.waiter
        finally:
            self.abandon(exchange)

    def hold(self, exchange: Exchange, answer: Callable[[], None]) -> None:
        """:meth:`wait` without a coroutine: ``answer`` runs once the connect is released (soon
        after, from the event loop; at once when it was released already). It is then no longer
        held (:meth:`abandon` has run) and the transport renders the exchange. A transport whose
        connection closes first calls :meth:`abandon` itself, and ``answer`` never runs."""
        held = exchange.connect
        assert held is not None and exchange.hold

        def released() -> None:
            if held.callback is not None:  # else abandoned meanwhile
                held.callback = None
                self.abandon(exchange)
                answer()

        held.callback = released
        if held.released:
            asyncio.get_running_loop().call_soon(released)

    def abandon(self, exchange: Exchange) -> None:
        """Stop holding the exchange's connect without answering it (its connection is gone).

        The session becomes idle, so that it expires unless its client connects again; its
        queue is kept for that next connect. Idempotent; :meth:`wait` ends with it.
        """
        held = exchange.connect
        if held is None:
            return
        held.callback = None
        self._holding.pop(held, None)
        if held.session.held is held:
            held.session.held = None
            self._mark_idle(held.session)

    def render(self, exchange: Exchange) -> str:
        """The reply array: the session's queued messages first, then a reply per message."""
        parts: list[str] = []
        held = exchange.connect
        if held is None:
            parts.extend(map(protocol.dumps, exchange.replies))
            return protocol.join(parts)
        parts = self._complete_connect(held)
        for reply in exchange.replies:
            if reply is held.reply and held.text is not None:
                parts.append(held.text)
            else:
                parts.append(protocol.dumps(reply))
        return protocol.join(parts)

    def count_bad_request(self, error: str, transport: str) -> None:
        self.stats.bad_requests += 1
        if error == protocol.MESSAGE_TOO_LARGE:
            self.stats.refused["message_too_large"] += 1
        log.debug(
            "bad cometd request: %s",
            error,
            extra={"action": "cometd_bad_request", "error": error, "transport": transport},
        )

    # --- messages ------------------------------------------------------------------------------

    async def _handle(
        self,
        message: Any,
        exchange: Exchange,
        alone: bool,
        transport: str,
        address: str | Callable[[], str],
    ) -> dict[str, Any]:
        if not isinstance(message, dict):
            return _error({}, protocol.ERROR_CHANNEL, "400::invalid_message")
        channel = message.get("channel")
        if not isinstance(channel, str) or (
            channel not in protocol.META_CHANNELS
            and not channels.is_valid_channel(channel, allow_wildcards=False)
        ):
            return _error(message, protocol.ERROR_CHANNEL, "400::invalid_channel")
        message_id = message.get("id")
        if "id" in message and (
            not isinstance(message_id, str | int) or isinstance(message_id, bool)
        ):
            return _error({}, channel, "400::invalid_id")
        try:
            if not channels.is_meta(channel):
                return await self._publish(message, channel, transport)
            if channel == protocol.HANDSHAKE:
                return self._handshake(
                    message, alone, address if isinstance(address, str) else address()
                )
            if channel == protocol.CONNECT:
                return self._connect(message, exchange, alone, transport)
            if channel == protocol.SUBSCRIBE:
                return await self._subscribe(message, transport)
            if channel == protocol.UNSUBSCRIBE:
                return self._unsubscribe(message, transport)
            if channel == protocol.DISCONNECT:
                return await self._disconnect(message, transport)
            raise _Refused("400::unknown_meta_channel")
        except _Refused as refused:
            reply = _error(message, channel, refused.error)
            if channel in (protocol.SUBSCRIBE, protocol.UNSUBSCRIBE) and "subscription" in message:
                reply["subscription"] = message["subscription"]
            if refused.advice is not None:
                reply["advice"] = dict(refused.advice)
            return reply

    def _session(self, message: dict[str, Any], transport: str) -> Session:
        client_id = message.get("clientId")
        session = self._sessions.get(client_id) if isinstance(client_id, str) else None
        if session is None:
            raise _unknown_session()
        session.transport = transport
        return session

    def _handshake(self, message: dict[str, Any], alone: bool, address: str) -> dict[str, Any]:
        if not alone:
            raise _Refused("400::handshake_not_alone")
        offered = message.get("supportedConnectionTypes")
        if not isinstance(offered, list) or not all(isinstance(t, str) for t in offered):
            raise _Refused("400::invalid_connection_types")
        common = [t for t in protocol.CONNECTION_TYPES if t in offered]
        if not common:
            reply = _error(message, protocol.HANDSHAKE, "406::unsupported_connection_types")
            reply["supportedConnectionTypes"] = list(protocol.CONNECTION_TYPES)
            reply["advice"] = dict(protocol.NO_RECONNECT_ADVICE)
            return reply
        ext = message.get("ext")
        ext = ext if isinstance(ext, dict) else {}
        ext_json = _ext_json(ext, self.limits.max_ext_bytes, self.limits.max_ext_depth)
        if ext_json is None:
            self._refuse_handshake("ext_too_large")
            raise _Refused(protocol.EXT_TOO_LARGE)
        if self._closing:
            self._refuse_handshake("stopping")
            raise _Refused(protocol.TOO_MANY_SESSIONS, protocol.HANDSHAKE_ADVICE)
        if len(self._sessions) >= self.limits.max_sessions:
            self._refuse_handshake("too_many_sessions")
            if not self._refusing:  # once per episode, not per client
                log.warning(
                    "cometd handshakes refused: %d sessions, the most allowed",
                    len(self._sessions),
                    extra={"action": "cometd_sessions_full", "sessions": len(self._sessions)},
                )
            self._refusing = True
            raise _Refused(protocol.TOO_MANY_SESSIONS, protocol.HANDSHAKE_ADVICE)
        self._refusing = False
        if self._per_address[address] >= self.limits.max_sessions_per_address:
            self._refuse_handshake("too_many_sessions_from_address")
            if address not in self._refusing_addresses:  # once per episode and address
                self._refusing_addresses.add(address)
                log.warning(
                    "cometd handshakes refused from %s: %d sessions, the most per address",
                    address,
                    self._per_address[address],
                    extra={"action": "cometd_address_full", "address": address},
                )
            raise _Refused(protocol.TOO_MANY_SESSIONS_FROM_ADDRESS, protocol.HANDSHAKE_ADVICE)
        ack_enabled = ext.get("ack") is True
        session = Session(
            secrets.token_hex(16),  # 128 random bits
            ext_json,
            address=address,
            created_ms=self.clock.now_ms(),
            ack_enabled=ack_enabled,
            max_queued_messages=self.limits.max_queued_messages,
            max_queued_bytes=self.limits.max_queued_bytes,
            remove=self._remove,
            budget=self._budget,
        )
        self._sessions[session.client_id] = session
        self._per_address[address] += 1
        self._mark_idle(session)
        self.stats.handshakes += 1
        log.debug("cometd session %s created", session.ref, extra={"action": "cometd_handshake"})
        reply = protocol.reply_to(
            message,
            protocol.HANDSHAKE,
            successful=True,
            clientId=session.client_id,
            version=protocol.VERSION,
            minimumVersion=protocol.VERSION,
            supportedConnectionTypes=common,
            advice=dict(self._advice),
        )
        if ack_enabled:
            reply["ext"] = {"ack": True}
        return reply

    def _connect(
        self, message: dict[str, Any], exchange: Exchange, alone: bool, transport: str
    ) -> dict[str, Any]:
        session = self._session(message, transport)
        if session.ack_enabled:
            ext = message.get("ext")
            batch = ext.get("ack") if isinstance(ext, dict) else None
            if isinstance(batch, bool) or not isinstance(batch, int):
                batch = None
            if batch is not None and session.acknowledge(batch):
                self._drained(session)
        # A newer connect supersedes an older one: held in another request, or in this batch.
        if session.held is not None:
            session.held.superseded = True
            session.held.release()  # its wait() ends and render() answers it empty
            session.held = None
        if exchange.connect is not None:
            exchange.connect.superseded = True
            self._complete_connect(exchange.connect)
        first = session.count_connect()
        reply = protocol.reply_to(message, protocol.CONNECT, clientId=session.client_id)
        held = HeldConnect(session, reply)
        exchange.connect = held
        exchange.hold = alone and not first and not session.has_pending() and not self._closing
        if exchange.hold:
            session.held = held
            self._idle.pop(session, None)
            if not self._holding:
                self._sweep_wake.set()  # else the sweep already wakes for an earlier deadline
            self._holding[held] = self.clock.now_ms() + self.limits.connect_timeout_ms
        return reply  # completed by render()

    def _complete_connect(self, held: HeldConnect) -> list[str]:
        session, reply = held.session, held.reply
        if held.superseded:
            reply.update(successful=True, advice=dict(self._advice))
            return []
        if session.removed is RemovalReason.DISCONNECT:
            reply.update(successful=True, advice=dict(protocol.NO_RECONNECT_ADVICE))
            return []
        if session.removed is not None:
            reply.update(
                successful=False,
                error=protocol.SESSION_UNKNOWN,
                advice=dict(protocol.HANDSHAKE_ADVICE),
            )
            return []
        messages, batch = session.take()
        reply.update(successful=True, advice=dict(self._advice))
        if batch is not None:
            reply["ext"] = {"ack": batch}
        elif len(reply) == 5:  # channel, id, clientId, successful, advice: the usual reply
            held.text = (
                '{"channel":"/meta/connect","id":'
                + protocol.dumps(reply["id"])
                + ',"clientId":'
                + protocol.dumps(session.client_id)
                + self._connect_tail
            )
        self._mark_idle(session)
        if messages and batch is None:  # with acknowledgements, the next connect frees them
            self._drained(session)
        return messages

    def _subscription(self, message: dict[str, Any]) -> list[str]:
        wanted = message.get("subscription")
        candidates: list[Any] = wanted if isinstance(wanted, list) else [wanted]
        patterns = [p for p in candidates if isinstance(p, str)]
        if not patterns or len(patterns) < len(candidates):
            raise _Refused("400::invalid_subscription")
        if not all(channels.is_valid_channel(p, allow_wildcards=True) for p in patterns):
            raise _Refused("400::invalid_subscription")
        return patterns

    async def _subscribe(self, message: dict[str, Any], transport: str) -> dict[str, Any]:
        session = self._session(message, transport)
        patterns = self._subscription(message)
        if any(channels.is_meta(p) for p in patterns):
            raise _Refused("403::meta_subscription_denied")
        # Service channels answer the sender only: nothing to record.
        recorded = [p for p in patterns if not channels.is_service(p)]
        for pattern in recorded:
            if not await self._authorized(self._authorize_subscribe, True, session, pattern):
                raise _Refused("403::subscription_denied")
        # Checked after the awaits, so that concurrent subscribes cannot overshoot.
        if session.removed is not None:  # disconnected while the authorizer ran
            raise _unknown_session()
        new = set(recorded) - session.subscriptions
        if len(session.subscriptions) + len(new) > self.limits.max_subscriptions:
            self.stats.refused["too_many_subscriptions"] += 1
            raise _Refused("403::too_many_subscriptions")
        for pattern in recorded:
            session.subscriptions.add(pattern)
            self._index.add(pattern, session)
        return protocol.reply_to(
            message,
            protocol.SUBSCRIBE,
            successful=True,
            clientId=session.client_id,
            subscription=message["subscription"],
        )

    def _unsubscribe(self, message: dict[str, Any], transport: str) -> dict[str, Any]:
        session = self._session(message, transport)
        for pattern in self._subscription(message):
            if pattern in session.subscriptions:
                session.subscriptions.discard(pattern)
                self._index.remove(pattern, session)
        return protocol.reply_to(
            message,
            protocol.UNSUBSCRIBE,
            successful=True,
            clientId=session.client_id,
            subscription=message["subscription"],
        )

    async def _publish(
        self, message: dict[str, Any], channel: str, transport: str
    ) -> dict[str, Any]:
        session = self._session(message, transport)
        if "data" not in message:
            raise _Refused("400::missing_data")
        if channels.is_service(channel):
            handler = next((h for p, h in self._services if channel.startswith(p)), None)
            if handler is None:
                raise _Refused("404::unknown_service")
            try:
                await handler(session, message)
            except Exception:
                log.exception(
                    "cometd service handler failed on %s",
                    channel,
                    extra={"action": "cometd_service_failed", "channel": channel},
                )
                raise _Refused("500::internal_error") from None
        else:
            if not await self._authorized(self._authorize_publish, False, session, channel):
                raise _Refused("403::publish_denied")
            self._fan_out(channel, protocol.message_json(channel, message["data"]))
        return protocol.reply_to(message, channel, successful=True)

    async def _disconnect(self, message: dict[str, Any], transport: str) -> dict[str, Any]:
        session = self._session(message, transport)
        for handler in self._disconnect_handlers:
            try:
                await handler(session, message)
            except Exception:
                log.exception(
                    "cometd disconnect handler failed",
                    extra={"action": "cometd_disconnect_failed", "session": session.ref},
                )
        self._remove(session, RemovalReason.DISCONNECT)
        return protocol.reply_to(
            message, protocol.DISCONNECT, successful=True, clientId=session.client_id
        )

    async def _authorized(
        self, callback: Authorizer | None, default: bool, session: Session, channel: str
    ) -> bool:
        if callback is None:
            return default
        try:
            answer = callback(session, channel)
            if answer is not True and answer is not False and inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            log.exception(
                "cometd authorizer failed on %s",
                channel,
                extra={"action": "cometd_authorizer_failed", "channel": channel},
            )
            raise _Refused("500::internal_error") from None
        return answer is True

    # --- delivery, idleness, removal -----------------------------------------------------------

    def _fan_out(
        self,
        channel: str,
        message_json: str,
        audience: Callable[[Session], bool] | None = None,
    ) -> int:
        """Queue one serialized message for every subscriber of ``channel`` in ``audience``."""
        self.stats.broadcasts += 1
        reached = 0
        full: list[Session] = []
        # A copy: making room in the total budget may remove sessions during the loop.
        for session in tuple(self._index.match(channel)):
            if session.removed is not None or (audience is not None and not audience(session)):
                continue
            if session.enqueue(message_json):
                reached += 1
            else:
                full.append(session)
        self.stats.messages_queued += reached
        for session in full:  # after the loop: removal changes the index being iterated
            self._remove(session, RemovalReason.QUEUE_FULL)
        return reached

    def _make_room(self, session: Session, size: int) -> bool:
        """``size`` more bytes would pass ``max_total_queued_bytes``: remove the sessions with the
        largest queues until they fit. Runs only over the budget, so the scan is rare."""
        budget = self._budget
        while budget.queued_bytes + size > budget.limit:
            # The asking session counts with the message it would hold.
            largest = max(
                self._sessions.values(),
                key=lambda s: s.queued_bytes + (size if s is session else 0),
            )
            self._remove(largest, RemovalReason.TOTAL_QUEUE_FULL)
            if largest is session:
                return False
        return True

    def _drained(self, session: Session) -> None:
        for listener in self._drain_listeners:
            try:
                listener(session)
            except Exception:
                log.exception(
                    "cometd drain listener failed",
                    extra={"action": "cometd_listener_failed", "session": session.ref},
                )

    def _refuse_handshake(self, reason: str) -> None:
        self.stats.handshakes_refused += 1
        self.stats.refused[reason] += 1

    def _mark_idle(self, session: Session) -> None:
        if session.removed is not None:
            return
        if not self._idle:
            self._sweep_wake.set()
        self._idle.pop(session, None)
        self._idle[session] = self.clock.now_ms()

    def _remove(self, session: Session, reason: RemovalReason) -> None:
        if session.removed is not None:
            return
        session.removed = reason
        session.release()
        self._sessions.pop(session.client_id, None)
        self._idle.pop(session, None)
        left = self._per_address[session.address] - 1
        if left > 0:
            self._per_address[session.address] = left
        else:
            del self._per_address[session.address]
        if left < self.limits.max_sessions_per_address:
            self._refusing_addresses.discard(session.address)
        for pattern in session.subscriptions:
            self._index.remove(pattern, session)
        if session.held is not None:
            session.held.release()  # answered by render() with the reason's advice
        self.stats.sessions_removed[reason] += 1
        full = (RemovalReason.QUEUE_FULL, RemovalReason.TOTAL_QUEUE_FULL)
        level = logging.WARNING if reason in full else logging.INFO
        log.log(
            level,
            "cometd session %s removed: %s (%d messages, %d bytes queued)",
            session.ref,
            reason,
            session.queued,
            session.queued_bytes,
            extra={
                "action": "cometd_session_removed",
                "session": session.ref,
                "reason": reason,
                "queued": session.queued,
                "queued_bytes": session.queued_bytes,
            },
        )
        for listener in self._removal_listeners:
            try:
                listener(session, reason)
            except Exception:
                log.exception(
                    "cometd removal listener failed",
                    extra={"action": "cometd_listener_failed", "session": session.ref},
                )

    def sweep(self) -> int | None:
        """Answer the held connects whose deadline passed and remove expired sessions; the time
        of the next deadline or expiry (None: no held connect and no idle session)."""
        now_ms = self.clock.now_ms()
        next_hold_ms = self._release_due_connects(now_ms)
        max_interval_ms = self.limits.max_interval_ms
        expired: list[Session] = []
        next_ms: int | None = None
        for session, idle_since_ms in self._idle.items():  # oldest first
            if idle_since_ms + max_interval_ms > now_ms:
                next_ms = idle_since_ms + max_interval_ms
                break
            expired.append(session)
        for session in expired:
            self._remove(session, RemovalReason.EXPIRED)
        if next_hold_ms is not None and (next_ms is None or next_hold_ms < next_ms):
            return next_hold_ms
        return next_ms

    def _release_due_connects(self, now_ms: int) -> int | None:
        """Release the held connects whose deadline passed; the next deadline, if any."""
        due: list[HeldConnect] = []
        next_ms: int | None = None
        for held, deadline_ms in self._holding.items():  # earliest first
            if deadline_ms > now_ms:
                next_ms = deadline_ms
                break
            due.append(held)
        for held in due:
            del self._holding[held]
            held.release()
        return next_ms

    async def _sweep_loop(self) -> None:
        while True:
            self._sweep_wake.clear()
            await self.clock.sleep_until(self.sweep(), self._sweep_wake)


_AT_ONCE = frozenset((protocol.CONNECT, protocol.HANDSHAKE))
"""The meta channels whose handling awaits nothing (``_connect``, ``_handshake``):
``answers_at_once``."""


def _error(message: Mapping[str, Any], channel: str, error: str) -> dict[str, Any]:
    return protocol.reply_to(message, channel, successful=False, error=error)


def _report_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical(
            "cometd expiry sweep died; sessions no longer expire",
            exc_info=task.exception(),
            extra={"action": "task_died", "task": task.get_name()},
        )
