"""A lean HTTP/2 client for APNs: one TLS connection per host (ALPN ``h2``), its streams
multiplexed, on h2's state machine over an asyncio protocol.

It replaces httpx on the APNs path, whose per-request machinery (request and URL objects,
cookie extraction, auth flow, stream wrappers) cost more CPU than the HTTP/2 exchange itself
(docs/PERFORMANCE.md §10). What it keeps of a full client:

- one connection per (host, port), opened on first use within ``connect_timeout_s`` and reused
  by every request; one that is closed, lost, answered with GOAWAY or out of stream ids is
  replaced by a new one on the next request;
- at most the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` (and :data:`MAX_STREAMS`) requests in
  flight on a connection; more wait for a stream to end;
- request bodies obey the server's flow-control windows (they wait for its WINDOW_UPDATE);
- an answer is read up to ``max_answer_bytes``: over it (declared by ``content-length`` or
  read), :class:`AnswerTooLarge`, and the stream is reset;
- a request the server did not process (above a GOAWAY's last stream id, or reset with
  ``REFUSED_STREAM``) is sent once more, on a new connection;
- anything else that goes wrong (no connection, TLS, no ``h2`` in ALPN, the connection lost, a
  protocol error, a stream reset) is :class:`Http2Error`.

Timeouts other than the connect's are the caller's (``asyncio.timeout`` around
:meth:`Http2Client.request`); a request cancelled that way resets its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from dataclasses import dataclass
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hpack.hpack import encode_integer
from hpack.table import HeaderTable

MAX_STREAMS = 1000
"""Requests in flight on one connection at most, whatever the server allows (APNs: 1,000)."""
RECEIVE_WINDOW_BYTES = 1 << 20
"""Added to the connection's receive window (answers are small; each stream's is 64 KiB)."""
CLOSE_WAIT_S = 1.0
"""How long :meth:`Http2Client.close` waits for each connection's TLS shutdown."""


class Http2Error(Exception):
    """The request got no whole answer: no connection, the connection lost, a reset stream."""


class StreamRefused(Http2Error):
    """The server did not process the request (GOAWAY, REFUSED_STREAM): safe to send again."""


class AnswerTooLarge(Exception):
    """The answer (its ``status``) is over ``max_answer_bytes``: not read."""

    def __init__(self, status: int):
        super().__init__(f"answer ({status}) too large")
        self.status = status


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes


NEVER_INDEXED = frozenset({b"authorization"})
"""Headers sent as "never indexed" literals (RFC 7541 §6.2.3), as h2 itself marks them."""


class _LiteralEncoder(hpack.Encoder):
    """HPACK without the dynamic table: a header is the static table's entry, or a literal not
    indexed (RFC 7541 §6.1, §6.2.2-6.2.3), never Huffman-coded.

    h2's encoder searches its dynamic table linearly and Huffman-codes in Python: most of the
    CPU of a request. APNs requests differ in their id, path and expiry, so indexing gains few
    bytes there; this costs a few microseconds. Table size updates (the server's
    ``SETTINGS_HEADER_TABLE_SIZE``) are still signalled as hpack does."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        block = bytearray()
        if self.header_table.resized:
            block += self._encode_table_size_change()
            self.header_table.resized = False
        for name, value in headers:
            indexed, literal = _header_name(name)
            index = indexed.get(value)
            if index is not None:  # the static table's 61 entries: a 7-bit index
                block.append(0x80 | index)
                continue
            block += literal
            length = len(value)
            if length < 0x7F:
                block.append(length)
            else:
                block += encode_integer(length, 7)
            block += value
        return bytes(block)


@functools.lru_cache(maxsize=64)
def _header_name(name: bytes) -> tuple[dict[bytes, int], bytes]:
    """The static table's entries of ``name`` (value → index), and how a literal of it
    starts: the representation's flag, then the static index of the name or the name."""
    flag = 0x10 if name in NEVER_INDEXED else 0x00
    static = HeaderTable.STATIC_TABLE_MAPPING.get(name)
    if static is not None:
        literal = encode_integer(static[0], 4)
        literal[0] |= flag
        return static[1], bytes(literal)
    return {}, bytes([flag]) + bytes(encode_integer(len(name), 7)) + name


class _Stream:
    __slots__ = ("body", "done", "headers", "limit", "status")

    def __init__(self, done: asyncio.Future[None], limit: int):
        self.done = done
        self.limit = limit
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()


def _settle(future: asyncio.Future[None], error: BaseException | None = None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: h2's client side over an asyncio TLS transport."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding="utf-8",
                # The headers are this module's caller's, lower-case and checked there.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self._h2.encoder = _LiteralEncoder()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._waiters: list[asyncio.Future[None]] = []
        """Requests waiting for a free stream or a flow-control window: woken on any change."""
        self.alpn: str | None = None
        self.usable = False
        """True from the TLS handshake (with ``h2``) until GOAWAY, loss or close."""
        self.lost: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        ssl_object = transport.get_extra_info("ssl_object")
        self.alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if self.alpn != "h2":
            transport.close()
            return
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        del self._h2.local_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(RECEIVE_WINDOW_BYTES)
        self.usable = True
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except (h2.exceptions.ProtocolError, ValueError) as exc:  # ValueError: not UTF-8
            self._flush()
            self._fail_all(Http2Error(f"HTTP/2 protocol error: {exc}"))
            self.close()
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                self._answered(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self._streams.pop(event.stream_id or 0, None)
                if stream is not None:
                    _settle(stream.done)
            elif isinstance(event, h2.events.StreamReset):
                self._reset(event)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._going_away(event.last_stream_id)
        self._flush()
        if self._waiters:  # a window, the server's settings, a stream's end: check again
            self._wake()

    def eof_received(self) -> bool | None:
        self.usable = False
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._fail_all(Http2Error(f"connection lost ({exc or 'closed'})"))
        _settle(self.lost)

    # -- requests -----------------------------------------------------------------------------

    async def request(self, headers: list[tuple[str, str]], body: bytes, limit: int) -> Answer:
        """Send one request and wait for its whole answer (at most ``limit`` bytes)."""
        while self.usable and len(self._streams) >= self._max_streams():
            await self._wait()
        if not self.usable:
            raise StreamRefused("the connection is closing")
        try:
            stream_id = self._h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self._retire()
            raise StreamRefused("no stream ids left on the connection") from None
        stream = _Stream(self._loop.create_future(), limit)
        self._streams[stream_id] = stream
        try:
            try:
                self._h2.send_headers(stream_id, headers, end_stream=not body)
                if body:
                    await self._send_body(stream_id, stream, body)
            except h2.exceptions.H2Error as exc:
                raise Http2Error(f"cannot send the request: {exc!r}") from None
            self._flush()
            await stream.done
        except BaseException:  # cancelled (the caller's timeout) or failed
            if self._streams.pop(stream_id, None) is not None:
                with contextlib.suppress(h2.exceptions.H2Error):
                    self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                self._flush()
            raise
        finally:
            self._wake()  # a stream is free
            if not self.usable and not self._streams:
                self.close()  # retired (GOAWAY, no stream ids), now idle
        return Answer(stream.status, stream.headers, bytes(stream.body))

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        sent = 0
        while sent < len(body):
            if stream.done.done():  # answered or reset before the whole body went
                return
            window = min(
                self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
            )
            if window <= 0:
                self._flush()
                await self._wait()  # a WINDOW_UPDATE, or the stream's end
                continue
            chunk = body[sent : sent + window]
            sent += len(chunk)
            self._h2.send_data(stream_id, chunk, end_stream=sent >= len(body))

    def _max_streams(self) -> int:
        return min(self._h2.remote_settings.max_concurrent_streams, MAX_STREAMS)

    async def _wait(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _settle(waiter)

    # -- what the server sends ----------------------------------------------------------------

    def _answered(self, event: h2.events.ResponseReceived) -> None:
        stream = self._streams.get(event.stream_id or 0)
        if stream is None:
            return
        headers = {str(name): str(value) for name, value in event.headers or ()}
        status = headers.pop(":status", "")
        if not (status.isascii() and status.isdigit()):
            self._fail(event.stream_id or 0, Http2Error("an answer without a valid :status"))
            return
        stream.status, stream.headers = int(status), headers
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > stream.limit:
            self._fail(event.stream_id or 0, AnswerTooLarge(stream.status))

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        self._h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.body += event.data or b""
        if len(stream.body) > stream.limit:
            self._fail(stream_id, AnswerTooLarge(stream.status))

    def _reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.pop(event.stream_id or 0, None)
        if stream is None:
            return
        if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
            _settle(stream.done, StreamRefused("stream refused"))
        else:
            _settle(stream.done, Http2Error(f"stream reset by the server ({event.error_code!r})"))

    def _going_away(self, last_stream_id: int | None) -> None:
        """GOAWAY: h2 reads nothing more on this connection. The streams above
        ``last_stream_id`` were not processed (sent again elsewhere); the others may have been
        (failed, as a lost connection fails them)."""
        self.usable = False
        streams, self._streams = self._streams, {}
        for stream_id, stream in streams.items():
            if last_stream_id is None or stream_id > last_stream_id:
                _settle(stream.done, StreamRefused("the server went away (GOAWAY)"))
            else:
                _settle(stream.done, Http2Error("the server went away (GOAWAY) before answering"))
        self._wake()
        self._flush()
        self.close()

    def _fail(self, stream_id: int, error: BaseException) -> None:
        """End one stream with ``error`` and reset it."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            _settle(stream.done, error)
        with contextlib.suppress(h2.exceptions.H2Error):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)

    def _fail_all(self, error: Http2Error) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            _settle(stream.done, error)
        self._wake()

    # -- the connection -----------------------------------------------------------------------

    def _retire(self) -> None:
        """No new streams here; closed once its streams have ended."""
        self.usable = False
        if not self._streams:
            self.close()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.usable = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class Http2Client:
    """HTTP/2 over TLS to a few hosts (APNs's production and sandbox), one connection each."""

    def __init__(self, ssl_context: ssl.SSLContext, *, connect_timeout_s: float) -> None:
        """``ssl_context``: the trust for the hosts' certificates; ALPN is set to ``h2`` here."""
        ssl_context.set_alpn_protocols(["h2"])
        self._ssl = ssl_context
        self._connect_timeout_s = connect_timeout_s
        self._connections: dict[tuple[str, int], _Connection] = {}
        self._open: set[_Connection] = set()
        """Every connection not yet lost: the current ones and retired ones still ending."""
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.connections_opened = 0

    async def request(
        self,
        host: str,
        port: int,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        max_answer_bytes: int,
    ) -> Answer:
        """``POST`` ``body`` to ``https://host:port/path`` with ``headers`` (lower-case names,
        no pseudo-headers); the whole answer. Raises :class:`Http2Error`,
        :class:`AnswerTooLarge`."""
        authority = host if port == 443 else f"{host}:{port}"
        request_headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", path),
            (":authority", authority),
            *headers,
            ("content-length", str(len(body))),
        ]
        for attempt in (1, 2):
            connection = await self._connection(host, port)
            try:
                return await connection.request(request_headers, body, max_answer_bytes)
            except StreamRefused:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _connection(self, host: str, port: int) -> _Connection:
        key = (host, port)
        connection = self._connections.get(key)
        if connection is not None and connection.usable:
            return connection
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent requests share one new connection
            connection = self._connections.get(key)
            if connection is not None and connection.usable:
                return connection
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop), host, port, ssl=self._ssl, server_hostname=host
                    )
            except (OSError, ssl.SSLError) as exc:
                raise Http2Error(f"cannot connect: {type(exc).__name__}: {exc}") from None
            self.connections_opened += 1
            self._open.add(connection)
            connection.lost.add_done_callback(lambda _: self._open.discard(connection))
            if not connection.usable:
                connection.close()
                raise Http2Error(f"the server does not speak HTTP/2 (ALPN {connection.alpn!r})")
            self._connections[key] = connection
            return connection

    async def close(self) -> None:
        connections, self._connections = list(self._open), {}
        for connection in connections:
            connection.close()
        for connection in connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(connection.lost), CLOSE_WAIT_S)
