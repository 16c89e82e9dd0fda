#!/usr/bin/env python3
"""A CometD bridge for a mobile backend: takes chatpush notifications of device type ``comet``.

It handshakes with ``/genesys/cometd`` presenting an API key (``ext: {"apiKey": ...}``),
subscribes to ``/_genesys/push/*`` (every device) or to the ``--device`` ids given, and hands each
notification on: as a JSON POST to ``--forward`` (the body a custom HTTP receiver would get), or
printed to stdout. For a reliable trigger (a ``PushUrl`` whose ``userData`` carries
``notify-position``) it calls Chat API v2 ``refresh`` with ``transcriptPosition`` =
``notify-position`` and the trigger's ``secure-key``, and so acknowledges it: chatpush stops
resending it.

    python samples/cometd_bridge.py --chatpush http://127.0.0.1:8080 --api-key dev-api-key \\
        --service customer-support

The service needs ``flex-push-content`` to include ``session-id`` and ``secure-key`` (see
``samples/comet.toml``). Uses aiohttp and aiocometd-noloop (``pip install '.[samples]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from aiocometd_noloop import Client, ConnectionType
from aiocometd_noloop.extensions import Extension
from aiohttp import ClientError, ClientSession, ClientTimeout

PUSH_PREFIX = "/_genesys/push/"


def say(*parts: Any) -> None:
    print(*parts, flush=True)


class HandshakeExt(Extension):
    """Adds the credentials to the ``ext`` of every handshake (the first and any later one)."""

    def __init__(self, ext: dict[str, Any]) -> None:
        self.ext = ext

    async def outgoing(self, payload: Any, headers: Any) -> None:
        for message in payload:
            if message.get("channel") == "/meta/handshake":
                message.setdefault("ext", {}).update(self.ext)

    async def incoming(self, payload: Any, headers: Any = None) -> None:
        return None


class Bridge:
    def __init__(self, args: argparse.Namespace, http: ClientSession) -> None:
        self.chatpush = args.chatpush.rstrip("/")
        self.service = args.service
        self.forward_url: str | None = args.forward
        self.acknowledge_triggers = not args.no_acknowledge
        self.http = http
        self.tasks: set[asyncio.Task[None]] = set()

    def handle(self, channel: str, body: Any) -> None:
        if not isinstance(body, dict):
            say(f"ignored a message on {channel}: not a JSON object")
            return
        task = asyncio.create_task(self._handle(body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, body: dict[str, Any]) -> None:
        device = body.get("deviceId")
        message = body.get("message")
        if self.forward_url is not None:
            await self.forward(body)
        if not isinstance(message, dict):
            say(f"notification for device {device} (no payload)")
            return
        events = message.get("messages") or [{}]
        user_data = events[0].get("userData") or {}
        if events[0].get("type") == "PushUrl" and "notify-position" in user_data:
            say(
                f"trigger for device {device}: notify-position {user_data['notify-position']}, "
                f"attempt {user_data.get('notify-attempt')}"
                + (", chat ended" if message.get("chatEnded") else "")
            )
            if self.acknowledge_triggers:
                await self.acknowledge(user_data, bool(message.get("chatEnded")))
        else:
            for event in events:
                say(f"event #{event.get('index')} {event.get('type')}: {event.get('text', '')}")

    async def forward(self, body: dict[str, Any]) -> None:
        assert self.forward_url is not None
        try:
            async with self.http.post(self.forward_url, json=body) as reply:
                await reply.read()
                if not 200 <= reply.status < 300:
                    say(f"  forward to {self.forward_url} answered HTTP {reply.status}")
        except (ClientError, TimeoutError, OSError) as exc:
            say(f"  forward to {self.forward_url} failed: {type(exc).__name__}: {exc}")

    async def acknowledge(self, user_data: dict[str, str], ended: bool) -> None:
        chat_id, secure_key = user_data.get("session-id"), user_data.get("secure-key")
        if not chat_id or not secure_key:
            say("  cannot refresh: the trigger lacks session-id or secure-key (flex-push-content)")
            return
        position = user_data["notify-position"]
        form = {"secureKey": secure_key}
        if position != "-1":  # -1: the customer was removed; read everything that is left
            form["transcriptPosition"] = position
        url = f"{self.chatpush}/genesys/2/chat/{self.service}/{chat_id}/refresh"
        try:
            async with self.http.post(url, data=form) as reply:
                body = await reply.json()
        except (ClientError, TimeoutError, OSError, json.JSONDecodeError) as exc:
            say(f"  refresh failed: {type(exc).__name__}: {exc}")
            return
        if reply.status != 200:
            say(f"  refresh failed: HTTP {reply.status} {body.get('errors')}")
            return
        for event in body["messages"]:
            who = event["from"]["nickname"] or event["from"]["type"]
            say(f"  #{event['index']} {event['type']:<18} {who}: {event.get('text', '')}")
        suffix = " - chat ended" if body["chatEnded"] or ended else ""
        say(f"  acknowledged chat {chat_id} up to {body['nextPosition'] - 1}{suffix}")


async def run(args: argparse.Namespace) -> int:
    cometd_url = args.cometd or f"{args.chatpush.rstrip('/')}/genesys/cometd"
    channels = [PUSH_PREFIX + device for device in args.device] or [PUSH_PREFIX + "*"]
    connection_type = ConnectionType(args.connection_type)
    async with ClientSession(timeout=ClientTimeout(total=10)) as http:
        bridge = Bridge(args, http)
        extension = HandshakeExt({"apiKey": args.api_key})
        async with Client(cometd_url, connection_type, extensions=[extension]) as client:
            for channel in channels:
                await client.subscribe(channel)
            say(f"bridge subscribed to {', '.join(channels)} at {cometd_url}")
            async for message in client:
                bridge.handle(message.get("channel", ""), message.get("data"))
        if bridge.tasks:
            await asyncio.wait(bridge.tasks)
    return 0


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0] + "\n\n" + doc.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--chatpush",
        default="http://127.0.0.1:8080",
        help="chatpush base URL, for refresh (default: %(default)s)",
    )
    parser.add_argument(
        "--cometd", help="CometD endpoint (default: <--chatpush>/genesys/cometd)", default=None
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CHATPUSH_API_KEY"),
        help="a chatpush API key with the bridge scope (default: $CHATPUSH_API_KEY)",
    )
    parser.add_argument(
        "--service",
        default="customer-support",
        help="Chat API service name, for refresh (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID",
        help="subscribe to this device id only (repeatable; default: every device)",
    )
    parser.add_argument(
        "--forward",
        metavar="URL",
        help="POST each notification as JSON to this URL (default: print it only)",
    )
    parser.add_argument(
        "--no-acknowledge",
        action="store_true",
        help="do not refresh on reliable triggers (the --forward receiver does it)",
    )
    parser.add_argument(
        "--connection-type",
        choices=[t.value for t in ConnectionType],
        default=ConnectionType.WEBSOCKET.value,
        help="Bayeux transport (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("an API key is required: --api-key or CHATPUSH_API_KEY")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
