"""CometD (CONTRACT §10): publish a notification's §7 body on ``/_genesys/push/{deviceId}``.

The body goes through this instance's :class:`~chatpush.cometd.BayeuxServer`, to the sessions
subscribed there (a bridge of the mobile backend, or the chat's own client). A send is ``sent``
once the message is queued for at least one subscribed session; Bayeux has no receipt beyond
that (with the acknowledge extension the session's client gets it at least once while its
session lives).

No session subscribed is a temporary failure, like a receiver that does not answer: a reliable
trigger stays outstanding and is resent on its timetable (so a bridge that subscribes later gets
it at the next resend); a notification without ``PushResend`` is dropped, logged and counted.
A device id that cannot be one segment of a channel name is a permanent failure.

Sessions live in this process's memory: the instance that hosts the chat's node publishes, so
with several instances bridges subscribe to every instance (docs/cometd.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chatpush.cometd import BayeuxServer
from chatpush.providers.base import SendResult
from chatpush.routing.router import Target

PUSH_PREFIX = "/_genesys/push/"


def push_channel(device_id: str) -> str | None:
    """The channel of ``device_id``, or None when it cannot be one segment of a channel name."""
    if not device_id or "/" in device_id or device_id in ("*", "**"):
        return None
    return PUSH_PREFIX + device_id


class CometProvider:
    def __init__(self, server: BayeuxServer) -> None:
        self._server = server

    async def start(self) -> None:
        """Nothing to open: the Bayeux server has a lifespan of its own."""

    async def close(self) -> None:
        """Nothing to close."""

    async def send(
        self,
        target: Target,
        body: dict[str, Any],
        *,
        chat_id: str,
        message_id: str,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        """Publish ``body`` as it is (``customhttp.*`` settings of the target do not apply)."""
        started = time.monotonic()
        device_id = body.get("deviceId")
        channel = push_channel(device_id) if isinstance(device_id, str) else None
        if channel is None:
            return SendResult(
                "failed",
                0,
                error=f"device id {device_id!r} cannot name a CometD channel",
                temporary=False,
            )
        try:
            reached = await self._server.publish(channel, body)
        except ValueError as exc:  # a channel name the server refuses (too long, not printable)
            return SendResult("failed", 0, error=str(exc)[:300], temporary=False)
        latency_ms = int((time.monotonic() - started) * 1000)
        if reached == 0:
            return SendResult(
                "failed", latency_ms, error=f"no CometD session subscribed to {channel}"
            )
        return SendResult("sent", latency_ms)
