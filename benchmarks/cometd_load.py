"""A lean Bayeux long-polling load generator: subscribers and a publisher, for benchmarks/cometd.py.

aiohttp's client costs about 0.4 ms of CPU per request, too much for 10,000 long polls on two
cores; this speaks HTTP/1.1 itself over asyncio Protocols: one keep-alive connection per client,
request bytes built once per client, responses framed by Content-Length (or chunked) and only
their bodies parsed as JSON.

    python -m benchmarks.cometd_load subscribe --port P --clients N
        Handshakes N clients, subscribes client i to /bench/i, prints {"ready": ...}, then keeps
        exactly one /meta/connect pending per client on its own keep-alive connection, sending the
        next one the moment a reply arrives (every connect is counted). Each message
        {"s": seq, "t": ns} received is counted (by seq, to find losses and duplicates) with its
        latency now - t. A line "count" on stdin prints how many arrived so far; "stop SENT"
        prints the figures as one JSON line and ends it.
    python -m benchmarks.cometd_load subscribe --port P --clients N --transport websocket
        The same over WebSocket (aiohttp's client): each client opens one WebSocket to the Bayeux
        path, handshakes there with supportedConnectionTypes ["websocket", "long-polling"],
        subscribes to /bench/i and keeps exactly one /meta/connect outstanding, sending the next
        the moment its reply frame arrives (as CometD's websocket clients do); deliveries arrive
        on the socket and are counted as above.
    python -m benchmarks.cometd_load publish --port P --clients N --rate R --duration-s D
        Publishes R messages a second for D seconds, message k to /bench/(k mod N), from four
        sessions (one keep-alive connection each), 10 messages per publish request with 64 bytes
        of padding each; a request goes out when its last message is due, or as soon as a
        connection is free when all are busy; t is when the request was sent (latency is publish
        sent -> arrival, as the independent generator of issue 15 measures it) and the lag behind
        schedule is reported. ``--style due`` is the earlier generator: whatever is due every 5 ms
        in one request (up to 200), no padding, t the time the message was due (open loop).
        Prints {"sent": ..., "lag_max_ms": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import time
from typing import Any

import aiohttp

PATH = "/cometd"
SETUP_CONCURRENCY = 200
PUBLISH_CONNECTIONS = 4
BATCH_INTERVAL_S = 0.005
MAX_BATCH = 200
"""Messages per publish request at most (about 18 KB), under chatpush's 64 KiB message limit
(the ``due`` style)."""
BATCH = 10
"""Messages per publish request (the ``sessions`` style, like the independent generator)."""
PADDING = 64
"""Bytes of padding in each message's data (the ``sessions`` style)."""


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _request(port: int, path: str, body: bytes, cookie: str = "") -> bytes:
    """A POST; ``cookie`` is what the handshake set (the Node server finds sessions by it)."""
    cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie_line}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.on_body: Any = None
        """Called with each response body instead of completing a future (the connect loop)."""
        self.cookie = ""
        """The first cookie a response set, as ``name=value``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection lost"))

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.transport.write(request)

    async def call(self, request: bytes) -> bytes:
        self._waiter = asyncio.get_running_loop().create_future()
        self.send(request)
        return await self._waiter

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            start = end + 4
            if not self.cookie and b"set-cookie:" in head:
                raw = bytes(buffer[:end]).decode("latin-1")
                at_cookie = raw.lower().index("set-cookie:") + len("set-cookie:")
                self.cookie = raw[at_cookie:].split("\r\n", 1)[0].split(";", 1)[0].strip()
            at = head.find(b"content-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop >= 0 else len(head)])
                if len(buffer) < start + length:
                    return
                body = bytes(buffer[start : start + length])
                del buffer[: start + length]
            elif b"transfer-encoding: chunked" in head:
                body_or_none = _dechunk(buffer, start)
                if body_or_none is None:
                    return
                body, consumed = body_or_none
                del buffer[:consumed]
            else:
                raise RuntimeError(f"response without length: {head[:200]!r}")
            if self.on_body is not None:
                self.on_body(body)
            elif self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(body)


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    parts: list[bytes] = []
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if len(buffer) < at + size + 2:
            return None
        if size == 0:
            return b"".join(parts), at + 2
        parts.append(bytes(buffer[at : at + size]))
        at += size + 2


async def _open(port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(HttpConnection, "127.0.0.1", port)
    return protocol


async def _handshake(connection: HttpConnection, port: int) -> tuple[str, str]:
    """The client id, and the cookie the handshake set ('' if none)."""
    body = json.dumps(
        [
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "id": "1",
            }
        ]
    ).encode()
    reply = json.loads(await connection.call(_request(port, PATH + "/handshake", body)))
    if not reply[0].get("successful"):
        raise RuntimeError(f"handshake refused: {reply}")
    return str(reply[0]["clientId"]), connection.cookie


# -- subscribers ----------------------------------------------------------------------------------


class Subscribers:
    def __init__(self, port: int, clients: int, transport: str = "long-polling") -> None:
        self.port = port
        self.clients = clients
        self.transport = transport
        self.session: aiohttp.ClientSession | None = None
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: set[asyncio.Task[None]] = set()
        self.latencies_us: list[int] = []
        self.seen = bytearray()
        self.duplicates = 0
        self.wrong_channel = 0
        self.connects = 0
        self.failures = 0
        self.connections: list[HttpConnection] = []

    async def start(self) -> None:
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)
        if self.transport == "websocket":
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False)
            )

        async def one(index: int) -> None:
            async with gate:
                if self.transport == "websocket":
                    await self._start_websocket_client(index)
                else:
                    await self._start_client(index)

        await asyncio.gather(*(one(i) for i in range(self.clients)))

    async def _start_client(self, index: int) -> None:
        connection = await _open(self.port)
        self.connections.append(connection)
        client_id, cookie = await _handshake(connection, self.port)
        channel = f"/bench/{index}"
        subscribe = json.dumps(
            [{"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}]
        ).encode()
        reply = json.loads(await connection.call(_request(self.port, PATH, subscribe, cookie)))
        if not any(m.get("channel") == "/meta/subscribe" and m["successful"] for m in reply):
            raise RuntimeError(f"subscribe refused: {reply}")
        connect = _request(
            self.port,
            PATH + "/connect",
            json.dumps(
                [
                    {
                        "channel": "/meta/connect",
                        "clientId": client_id,
                        "connectionType": "long-polling",
                    }
                ]
            ).encode(),
            cookie,
        )
        # The first connect, with advice.timeout 0 as the JavaScript client sends it, is answered
        # at once; from then on each reply sends the next one.
        first = json.dumps(
            [
                {
                    "channel": "/meta/connect",
                    "clientId": client_id,
                    "connectionType": "long-polling",
                    "advice": {"timeout": 0},
                }
            ]
        ).encode()
        await connection.call(_request(self.port, PATH + "/connect", first, cookie))
        self.connects += 1
        channel_bytes = channel

        def on_body(body: bytes) -> None:
            now_ns = time.time_ns()
            self.connects += 1
            connection.send(connect)
            for message in json.loads(body):
                self._count(message, channel_bytes, now_ns)

        connection.on_body = on_body
        connection.send(connect)

    def _count(self, message: dict[str, Any], channel: str, now_ns: int) -> None:
        """One message of a reply: a delivery is counted by its seq, a refusal as a failure."""
        data = message.get("data")
        if data is None:
            if message.get("successful") is False:
                self.failures += 1
            return
        if message.get("channel") != channel:
            self.wrong_channel += 1
        seq = data["s"]
        if seq >= len(self.seen):
            self.seen.extend(bytes(seq + 1 - len(self.seen) + 65536))
        if self.seen[seq]:
            self.duplicates += 1
            return
        self.seen[seq] = 1
        self.latencies_us.append((now_ns - data["t"]) // 1000)

    async def _start_websocket_client(self, index: int) -> None:
        assert self.session is not None
        socket = await self.session.ws_connect(
            f"http://127.0.0.1:{self.port}{PATH}", autoping=True, max_msg_size=0
        )
        self.sockets.append(socket)

        async def call(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
            await socket.send_str(json.dumps(messages))
            frame = await socket.receive()
            if frame.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"websocket setup: {frame.type} {frame.data!r}")
            reply: list[dict[str, Any]] = json.loads(frame.data)
            return reply

        reply = await call(
            [
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["websocket", "long-polling"],
                    "id": "1",
                }
            ]
        )
        if not reply[0].get("successful") or "websocket" not in reply[0].get(
            "supportedConnectionTypes", []
        ):
            raise RuntimeError(f"websocket handshake refused: {reply}")
        client_id = str(reply[0]["clientId"])
        channel = f"/bench/{index}"
        reply = await call(
            [{"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}]
        )
        if not any(m.get("channel") == "/meta/subscribe" and m["successful"] for m in reply):
            raise RuntimeError(f"subscribe refused: {reply}")
        connect_message = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "websocket",
        }
        # The first connect (advice.timeout 0) is answered at once, as over long-polling.
        await call([{**connect_message, "advice": {"timeout": 0}}])
        self.connects += 1
        connect = json.dumps([connect_message])

        async def read() -> None:
            await socket.send_str(connect)
            async for frame in socket:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                now_ns = time.time_ns()
                answered = False
                for message in json.loads(frame.data):
                    if message.get("channel") == "/meta/connect":
                        answered = True
                        if message.get("successful") is False:
                            self.failures += 1
                    else:
                        self._count(message, channel, now_ns)
                if answered:  # exactly one connect outstanding: the next one now
                    self.connects += 1
                    await socket.send_str(connect)

        task = asyncio.create_task(read())
        self.readers.add(task)
        task.add_done_callback(self.readers.discard)

    def report(self, sent: int) -> dict[str, Any]:
        received = sum(self.seen[:sent])
        latencies = sorted(self.latencies_us)

        def pct(fraction: float) -> float:
            if not latencies:
                return float("nan")
            return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] / 1000

        return {
            "received": received,
            "missing": sent - received,
            "duplicates": self.duplicates,
            "wrong_channel": self.wrong_channel,
            "failures": self.failures,
            "connects": self.connects,
            "connections_lost": sum(1 for c in self.connections if c.closed.done())
            + sum(1 for s in self.sockets if s.closed),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": latencies[-1] / 1000 if latencies else float("nan"),
        }


async def subscribe_main(port: int, clients: int, transport: str = "long-polling") -> None:
    subscribers = Subscribers(port, clients, transport)
    started = time.monotonic()
    await subscribers.start()
    # The clients are long-lived: out of the collector's sight, so that a full collection of the
    # generator's own objects (about 0.5 s with 10,000 aiohttp websockets) does not show up as
    # the server's latency (docs/PERFORMANCE.md §6.4).
    gc.freeze()
    print(json.dumps({"ready": clients, "setup_s": time.monotonic() - started}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.startswith("count"):  # how many so far (the orchestrator waits for stragglers)
            print(json.dumps({"received": len(subscribers.latencies_us)}), flush=True)
            continue
        sent = int(line.split()[1]) if line.startswith("stop") else 0
        print(json.dumps(subscribers.report(sent)), flush=True)
        break
    for connection in subscribers.connections:
        if connection.transport is not None:
            connection.transport.abort()
    if subscribers.session is not None:
        subscribers.session.detach()  # the process ends at once (os._exit): no closing one by one


# -- publisher ------------------------------------------------------------------------------------


async def publish_main(
    port: int, clients: int, rate: int, duration_s: float, style: str = "sessions"
) -> None:
    """``sessions`` (the default, like the independent generator): PUBLISH_CONNECTIONS sessions,
    BATCH messages per request with PADDING bytes each, a request sent when its last message is
    due (or, when every connection is busy, as soon as one is free), each message stamped with
    the time its request was sent. ``due`` (the earlier generator): whatever is due every 5 ms
    (up to MAX_BATCH), no padding, each message stamped with the time it was due."""
    connections = [await _open(port) for _ in range(PUBLISH_CONNECTIONS)]
    sessions = [await _handshake(c, port) for c in connections]
    idle = list(range(PUBLISH_CONNECTIONS))
    ready = asyncio.Event()
    refused = 0
    total = int(rate * duration_s)
    sent = 0
    requests = 0
    lag_max_ns = 0
    lag_sum_ns = 0
    started_ns = time.time_ns()
    interval_ns = 1_000_000_000 / rate
    tasks: set[asyncio.Task[None]] = set()
    padding = "x" * PADDING if style == "sessions" else None

    async def post(slot: int, body: bytes, cookie: str) -> None:
        nonlocal refused
        reply = json.loads(await connections[slot].call(_request(port, PATH, body, cookie)))
        refused += sum(1 for message in reply if message.get("successful") is False)
        idle.append(slot)
        ready.set()

    while sent < total:
        due = min(total, int((time.time_ns() - started_ns) / interval_ns) + 1)
        if style == "sessions":
            upto = min(total, sent + BATCH)
            if due < upto:  # the batch's last message is not due yet
                last_due_ns = started_ns + int((upto - 1) * interval_ns)
                await asyncio.sleep(max(0.0, (last_due_ns - time.time_ns()) / 1e9))
                continue
        else:
            upto = min(due, sent + MAX_BATCH)
        if upto > sent:
            while not idle:
                ready.clear()
                await ready.wait()
            slot = idle.pop()
            client_id, cookie = sessions[slot]
            now_ns = time.time_ns()
            lag_ns = max(0, now_ns - (started_ns + int((upto - 1) * interval_ns)))
            lag_max_ns = max(lag_max_ns, lag_ns)
            lag_sum_ns += lag_ns
            requests += 1
            batch = []
            for seq in range(sent, upto):
                data: dict[str, Any] = {"s": seq}
                if padding is None:
                    data["t"] = started_ns + int(seq * interval_ns)
                else:
                    data["t"] = now_ns
                    data["p"] = padding
                batch.append(
                    {"channel": f"/bench/{seq % clients}", "clientId": client_id, "data": data}
                )
            sent = upto
            task = asyncio.create_task(post(slot, json.dumps(batch).encode(), cookie))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if style == "sessions" or sent < int((time.time_ns() - started_ns) / interval_ns):
                continue  # behind: the next batch as soon as a connection is free
        await asyncio.sleep(BATCH_INTERVAL_S)
    await asyncio.gather(*tasks)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = usage.ru_utime + usage.ru_stime
    result = {
        "sent": sent,
        "refused": refused,
        "cpu_s": cpu_s,
        "requests": requests,
        "lag_max_ms": lag_max_ns / 1e6,
        "lag_mean_ms": lag_sum_ns / max(requests, 1) / 1e6,
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    subscribe = commands.add_parser("subscribe")
    publish = commands.add_parser("publish")
    for command in (subscribe, publish):
        command.add_argument("--port", type=int, required=True)
        command.add_argument("--clients", type=int, required=True)
    subscribe.add_argument(
        "--transport", choices=("long-polling", "websocket"), default="long-polling"
    )
    publish.add_argument("--rate", type=int, required=True)
    publish.add_argument("--duration-s", type=float, required=True)
    publish.add_argument("--style", choices=("sessions", "due"), default="sessions")
    args = parser.parse_args()
    _raise_file_limit()
    if args.command == "subscribe":
        asyncio.run(subscribe_main(args.port, args.clients, args.transport))
    else:
        asyncio.run(publish_main(args.port, args.clients, args.rate, args.duration_s, args.style))
    os._exit(0)  # skip closing thousands of transports one by one


if __name__ == "__main__":
    main()
