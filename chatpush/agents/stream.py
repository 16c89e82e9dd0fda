"""The event-stream client: one WebSocket to ``agents.stream_url`` across every instance.

- **One connection across instances**: an instance connects only while it holds the lease row
  ``agent_stream_lease`` (``store.agents.take_lease``), renewed every third of
  ``agents.stream_lease_s`` while connected. An instance that cannot renew it closes its
  connection; another takes the lease over once it has run out.
- **Reconnect backoff**: from ``stream_initial_backoff_s`` doubling to ``stream_max_backoff_s``;
  each wait is its step less up to a fifth at random (jitter: instances and restarts do not
  reconnect in step). The steps start again from the first after a connection that stayed up for
  ``stream_max_backoff_s``; a server that accepts and drops at once keeps the waits growing.
- **Gaps**: the stream has no catch-up. A lost connection is logged when it is lost and again
  when the stream is back, with how long events may have been missed.
- **Intake**: each text message is one event or a JSON array of them, in the webhook's shape;
  what is queued when a batch is taken is acted on in one transaction. A malformed message or
  event is dropped (logged, counted as ``invalid``); the connection stays.

Time comes from the injected clock, so the backoff's timing is tested on the fake clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chatpush.agents.service import AgentAlerts
from chatpush.clock import Clock
from chatpush.config import AgentSettings
from chatpush.metrics import Metrics
from chatpush.store import agents as store
from chatpush.store.database import Database

log = logging.getLogger("chatpush.agents.stream")

LEASE_NAME = "event-stream"
JITTER = 0.2
"""Each wait is its step less up to this fraction of it."""
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 500
"""Events taken off the connection and acted on in one transaction, at most."""
CONNECT_TIMEOUT_S = 10.0
HEARTBEAT_S = 20.0


@dataclass(slots=True)
class Backoff:
    """The waits between connection attempts (pure: the random source is given)."""

    initial_s: float
    max_s: float
    random: Callable[[], float] = random.random
    steps: int = 0

    def next_s(self) -> float:
        step_s = min(self.max_s, self.initial_s * 2.0**self.steps)
        if step_s < self.max_s:
            self.steps += 1
        return float(step_s * (1 - JITTER * self.random()))

    def reset(self) -> None:
        self.steps = 0


@dataclass(slots=True)
class StreamState:
    """What the client is doing, for tests and /readyz-like views."""

    running: bool = False
    connected: bool = False
    attempts: int = 0
    connections: int = 0
    lost_at_ms: int | None = None
    events: int = 0
    waits_s: list[float] = field(default_factory=list)


class EventStream:
    def __init__(
        self,
        settings: AgentSettings,
        clock: Clock,
        database: Database,
        service: AgentAlerts,
        metrics: Metrics,
        instance_id: str,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        assert settings.stream_url is not None
        self._url = settings.stream_url
        self._token = settings.stream_token
        self._lease_ms = int(settings.stream_lease_s * 1000)
        self._stable_ms = int(settings.stream_max_backoff_s * 1000)
        self._clock = clock
        self._db = database
        self._service = service
        self._metrics = metrics
        self._instance_id = instance_id
        self.backoff = Backoff(
            settings.stream_initial_backoff_s, settings.stream_max_backoff_s, rng
        )
        self.state = StreamState()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Until cancelled (or :meth:`stop`): hold the lease, keep the connection, act on events."""
        headers = (
            {}
            if self._token is None
            else {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        self.state.running = True
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
                while not self._stop.is_set():
                    if not await self._take_lease():
                        await self._wait_ms(self._lease_ms // 3)
                        continue
                    if self._stop.is_set():
                        break
                    await self._connect_once(session)
                    if self._stop.is_set():
                        break
                    wait_s = self.backoff.next_s()
                    self.state.waits_s.append(wait_s)
                    await self._wait_ms(int(wait_s * 1000))
        finally:
            self.state.connected = False
            await self._release()
            self.state.running = False

    async def stop(self) -> None:
        self._stop.set()

    async def _wait_ms(self, duration_ms: int) -> None:
        await self._clock.sleep_until(self._clock.now_ms() + duration_ms, self._stop)

    async def _take_lease(self) -> bool:
        now_ms = self._clock.now_ms()
        return await self._db.write(
            store.take_lease, LEASE_NAME, self._instance_id, now_ms, self._lease_ms
        )

    async def _release(self) -> None:
        try:
            await asyncio.shield(self._db.write(store.release_lease, LEASE_NAME, self._instance_id))
        except Exception:  # the database may be gone at shutdown; the lease then runs out
            log.info("event stream lease not released", exc_info=True)

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        self.state.attempts += 1
        try:
            ws = await session.ws_connect(
                self._url, heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._metrics.inc("chatpush_agent_stream_connections_total", outcome="refused")
            log.warning(
                "event stream %s refused: %s",
                self._url,
                _describe(exc),
                extra={"action": "agent_stream_refused", "attempt": self.state.attempts},
            )
            return
        connected_ms = self._clock.now_ms()
        self.state.connected = True
        self.state.connections += 1
        self._metrics.inc("chatpush_agent_stream_connections_total", outcome="connected")
        if self.state.lost_at_ms is not None:
            gap_s = (connected_ms - self.state.lost_at_ms) / 1000
            log.warning(
                "event stream back after %.1f s: events of that time may have been missed",
                gap_s,
                extra={"action": "agent_stream_resumed", "missed_s": gap_s},
            )
        else:
            log.info("event stream connected", extra={"action": "agent_stream_connected"})
        renew = asyncio.create_task(self._renew(ws), name="agent-stream-lease")
        try:
            await self._receive(ws)
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
            await ws.close()
            self.state.connected = False
            lost_ms = self._clock.now_ms()
            if lost_ms - connected_ms >= self._stable_ms:
                self.backoff.reset()
            if not self._stop.is_set():
                self.state.lost_at_ms = lost_ms
                self._metrics.inc("chatpush_agent_stream_connections_total", outcome="lost")
                log.warning(
                    "event stream lost after %.1f s connected; events are missed until it is back",
                    (lost_ms - connected_ms) / 1000,
                    extra={"action": "agent_stream_lost", "close_code": ws.close_code},
                )

    async def _renew(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Renew the lease every third of it; lost (another instance has it): close."""
        while True:
            await self._wait_ms(self._lease_ms // 3)
            if self._stop.is_set() or not await self._take_lease():
                log.warning(
                    "event stream lease lost: closing this instance's connection",
                    extra={"action": "agent_stream_lease_lost"},
                )
                await ws.close()
                return

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Act on messages until the connection ends (or :meth:`stop`). A reader task queues
        them (bounded: a flood waits in the socket, TCP slows the sender); what is queued when
        a batch is taken is acted on in one transaction."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=MAX_BATCH_EVENTS)

        async def read() -> None:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await queue.put(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    self._service.count_invalid("a binary message")
                else:
                    break  # an error: the connection is over
            await queue.put(None)

        reader = asyncio.create_task(read(), name="agent-stream-reader")
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                first = asyncio.ensure_future(queue.get())
                await asyncio.wait([first, stop], return_when=asyncio.FIRST_COMPLETED)
                if not first.done():
                    first.cancel()
                    return
                text = first.result()
                if text is None:
                    return
                batch, ended = _events_of(text, self._service), False
                while len(batch) < MAX_BATCH_EVENTS and not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        ended = True
                        break
                    batch += _events_of(more, self._service)
                if batch:
                    await self._accept(batch)
                if ended:
                    return
        finally:
            stop.cancel()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _accept(self, batch: list[Any]) -> None:
        self.state.events += len(batch)
        await self._service.accept_stream(batch)


def _events_of(text: str, service: AgentAlerts) -> list[Any]:
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        service.count_invalid("not JSON")
        return []
    return payload if isinstance(payload, list) else [payload]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"handshake answered {exc.status}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
