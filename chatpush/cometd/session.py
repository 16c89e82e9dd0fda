"""One Bayeux client session: its outgoing queue, the acknowledge state and its held connect.

Messages for a session are queued as JSON text, serialized once per broadcast, and leave only
with a ``/meta/connect`` reply (on either transport). That keeps a single delivery path, which the
acknowledge extension needs: each connect reply is a numbered batch, and a batch stays kept until
a later connect acknowledges its number (``ext.ack``). Unacknowledged messages are sent again,
folded into the next batch, so a client may see a message twice, never zero times, while the
session lives.

The queue is bounded twice, unacknowledged messages included: in messages
(``max_queued_messages``) and in bytes (``max_queued_bytes``, the size in memory of the
serialized messages, since one chat reply can be hundreds of kilobytes). A session that would
exceed either is removed (reason ``queue_full``): its client gets ``402`` on its next request,
handshakes again and catches up from its chat transcript position. Dropping messages silently
instead would leave gaps that the client cannot see.

All the queues of the server share one more bound, ``max_total_queued_bytes`` (a running total in
:class:`QueueBudget`, so fan-out stays one addition per session). A message that would pass it
first removes the sessions with the largest queues (reason ``total_queue_full``) until it fits:
the client that piles up the most pays, not the one that happens to receive next.

The handshake's ``ext`` is kept as its JSON text (at most ``max_ext_bytes``) and decoded when
read: decoded, a few kilobytes of ``[[],[],...]`` take twenty times as much memory.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chatpush.cometd import channels, protocol


class RemovalReason(enum.StrEnum):
    DISCONNECT = "disconnect"
    """The client sent ``/meta/disconnect``."""
    EXPIRED = "expired"
    """No connect for ``max_interval_ms`` after the last connect reply."""
    QUEUE_FULL = "queue_full"
    """A message would have exceeded ``max_queued_messages`` or ``max_queued_bytes``."""
    TOTAL_QUEUE_FULL = "total_queue_full"
    """Its queue was the largest when the queues together reached ``max_total_queued_bytes``."""


@dataclass(slots=True)
class QueueBudget:
    """The bytes queued by every session of a server, against ``limit``."""

    limit: int
    make_room: Callable[[Session, int], bool] = lambda session, size: False
    """Called when ``size`` more bytes would pass ``limit``: removes sessions until they fit;
    False if the session asking was removed (or nothing could make room)."""
    queued_bytes: int = 0


@dataclass(slots=True, eq=False)
class HeldConnect:
    """A ``/meta/connect`` whose reply waits for a message, its deadline or a newer connect.

    No task and no timer of its own: the server keeps every held connect's deadline in one
    table that its sweep walks (``BayeuxServer._holding``), and :meth:`release` completes the
    one future its transport awaits.
    """

    session: Session
    reply: dict[str, Any]
    superseded: bool = False
    """A newer connect arrived: answer this one without draining the queue into it."""
    released: bool = False
    """Answer it now: a message was queued, its deadline passed, or the server is stopping."""
    waiter: asyncio.Future[None] | None = None
    """What ``BayeuxServer.wait`` awaits (made only if it was not released already)."""
    callback: Callable[[], None] | None = None
    """What ``BayeuxServer.hold`` runs (soon after the release, never within it): the lean
    long-polling front answers a held connect without a task or a future."""
    text: str | None = None
    """The reply as JSON, when the server wrote it directly (the usual successful one)."""

    def release(self) -> None:
        """Stop holding: the awaiting transport renders the reply. Idempotent."""
        if not self.released:
            self.released = True
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            elif self.callback is not None:
                # Soon, not now: every message of the batch being fanned out is queued first.
                asyncio.get_running_loop().call_soon(self.callback)


@dataclass(slots=True)
class Exchange:
    """One request (body or frame) being answered: a reply per message, in order."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    connect: HeldConnect | None = None
    """The batch's connect, whose reply carries the session's queued messages."""
    hold: bool = False
    """The connect waits (``BayeuxServer.wait``) before the exchange is rendered."""


class Session:
    """A client known by its ``clientId``; the application sees it in every hook.

    ``handshake_ext`` is the handshake's ``ext`` object (for example credentials that an
    authorizer checks); ``attributes`` is free for the application's own per-session state.
    ``address`` is the client address (or IPv6 /64) whose ``max_sessions_per_address`` slot the
    session takes.
    """

    __slots__ = (
        "_batch",
        "_budget",
        "_connects",
        "_ext_json",
        "_queue",
        "_queued_bytes",
        "_remove",
        "_unacked",
        "ack_enabled",
        "address",
        "attributes",
        "client_id",
        "created_ms",
        "held",
        "max_queued_bytes",
        "max_queued_messages",
        "removed",
        "subscriptions",
        "transport",
    )

    def __init__(
        self,
        client_id: str,
        ext_json: str,
        *,
        address: str,
        created_ms: int,
        ack_enabled: bool,
        max_queued_messages: int,
        max_queued_bytes: int,
        remove: Callable[[Session, RemovalReason], None],
        budget: QueueBudget | None = None,
    ) -> None:
        self.client_id = client_id
        self._ext_json = ext_json
        """The handshake's ``ext`` as JSON text: the server checked its size and depth."""
        self.address = address
        self.attributes: dict[str, Any] = {}
        self.created_ms = created_ms
        self.ack_enabled = ack_enabled
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self.transport: str | None = None
        """The connection type of the last request that named this session."""
        self.subscriptions: set[str] = set()
        """Recorded subscription patterns (never ``/meta/*`` or ``/service/*``)."""
        self.held: HeldConnect | None = None
        self.removed: RemovalReason | None = None
        self._remove = remove
        self._budget = budget or QueueBudget(limit=max_queued_bytes)
        self._queue: deque[str] = deque()
        self._unacked: list[str] = []
        """The messages of batch ``_batch``, which include any earlier unacknowledged ones."""
        self._queued_bytes = 0
        """The size in memory of the messages in ``_queue`` and ``_unacked``."""
        self._batch = 0
        self._connects = 0

    def __repr__(self) -> str:
        return f"<Session {self.ref}{' removed' if self.removed else ''}>"

    @property
    def ref(self) -> str:
        """A short hash of the clientId for logs: the clientId itself lets anyone act as us."""
        return hashlib.sha256(self.client_id.encode()).hexdigest()[:12]

    @property
    def handshake_ext(self) -> Mapping[str, Any]:
        """The handshake's ``ext`` object (a new dict at each read; ``{}`` if it had none)."""
        ext: dict[str, Any] = json.loads(self._ext_json)
        return ext

    @property
    def connect_held(self) -> bool:
        return self.held is not None

    @property
    def queued(self) -> int:
        """Messages waiting for a connect reply or for their acknowledgement."""
        return len(self._queue) + len(self._unacked)

    @property
    def queued_bytes(self) -> int:
        """The size in memory of those messages (``sys.getsizeof`` of their JSON text)."""
        return self._queued_bytes

    async def deliver(self, channel: str, data: Any) -> bool:
        """Queue ``{channel, data}`` for this session only (a reply to a service request).

        False when the session is gone, or was just removed because its queue is full.
        Raises ValueError for a malformed channel or data that has no UTF-8 form.
        """
        if not channels.is_valid_channel(channel, allow_wildcards=False):
            raise ValueError(f"not a deliverable channel: {channel!r}")
        if self.removed is not None:
            return False
        if not self.enqueue(protocol.message_json(channel, data)):
            self._remove(self, RemovalReason.QUEUE_FULL)
            return False
        return True

    # The server's side of the session; the application never needs these.

    def enqueue(self, message_json: str) -> bool:
        """Queue serialized message; False if the queue is full (the caller removes us), or
        if making room in the server's total removed us."""
        size = sys.getsizeof(message_json)
        if (
            self.queued >= self.max_queued_messages
            or self._queued_bytes + size > self.max_queued_bytes
        ):
            return False
        budget = self._budget
        if budget.queued_bytes + size > budget.limit and not budget.make_room(self, size):
            return False
        self._queue.append(message_json)
        self._queued_bytes += size
        budget.queued_bytes += size
        if self.held is not None:
            self.held.release()
        return True

    def count_connect(self) -> bool:
        """Record a connect; True for the first one, which is answered at once."""
        self._connects += 1
        return self._connects == 1

    def acknowledge(self, batch: int) -> bool:
        """The client received every batch up to ``batch``; True if that freed anything."""
        if batch >= self._batch and self._unacked:
            freed = sum(map(sys.getsizeof, self._unacked))
            self._queued_bytes -= freed
            self._budget.queued_bytes -= freed
            self._unacked.clear()
            return True
        return False

    def release(self) -> None:
        """The session is removed: its queue no longer counts against the server's total."""
        self._budget.queued_bytes -= self._queued_bytes
        self._budget = QueueBudget(limit=self.max_queued_bytes)

    def has_pending(self) -> bool:
        return bool(self._queue) or bool(self._unacked)

    def take(self) -> tuple[list[str], int | None]:
        """The messages for a connect reply, and its batch number with the ack extension."""
        if not self.ack_enabled:
            taken = list(self._queue)
            self._queue.clear()
            self._budget.queued_bytes -= self._queued_bytes
            self._queued_bytes = 0
            return taken, None
        self._unacked.extend(self._queue)
        self._queue.clear()
        self._batch += 1
        return list(self._unacked), self._batch
