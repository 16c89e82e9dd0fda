"""CometD (docs/cometd.md): publish a notification's body on ``/_genesys/push/{deviceId}``.

The body goes through this instance's :class:`~chatpush.cometd.BayeuxServer`, to the sessions
subscribed there (a bridge of the mobile backend, or the chat's own client). A send is ``sent``
once the message is queued for at least one subscribed session; Bayeux has no receipt beyond
that (with the acknowledge extension the session's client gets it at least once while its
session lives).

No session subscribed is a temporary failure, like a receiver that does not answer: a reliable
trigger stays outstanding and is resent on its timetable (so a bridge that subscribes later gets
it at the next resend); a notification without ``PushResend`` is dropped, logged and counted.
A device id that cannot be one segment of a channel name is a permanent failure.

A subscription to a device channel is not a right to read it: several chats may name one device
id (anyone may name any), so every notification goes only to the sessions allowed to read *its
chat* — a bridge (:data:`EVERY_CHAT`), or the client that authenticated with that chat's id and
secure key. The subscription authorizer (chatpush/api/comet_push.py) records who a session reads
for in ``session.attributes[READER]``; a session without a reader gets nothing.

Sessions live in this process's memory: the instance that hosts the chat's node publishes, so
with several instances bridges subscribe to every instance (docs/cometd.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from chatpush.providers.base import (
    Notification,
    Provider,
    ProviderContext,
    Publisher,
    SendResult,
    Target,
)
from chatpush.providers.registry import register

PUSH_PREFIX = "/_genesys/push/"
READER = "chatpush.push_reader"
"""The session attribute naming whose notifications a session may read."""


@dataclass(frozen=True, slots=True)
class Reader:
    """Reads the notifications of ``chat_id``, or of every chat when it is None (a bridge)."""

    chat_id: str | None

    def reads(self, chat_id: str | None) -> bool:
        return self.chat_id is None or (chat_id is not None and self.chat_id == chat_id)


EVERY_CHAT = Reader(None)


def may_read(session: Any, chat_id: str | None) -> bool:
    """Whether a Bayeux session (anything with ``attributes``) may read ``chat_id``'s pushes
    (None: a notification of no chat, which only a bridge reads)."""
    reader = session.attributes.get(READER)
    return isinstance(reader, Reader) and reader.reads(chat_id)


def push_channel(device_id: str) -> str | None:
    """The channel of ``device_id``, or None when it cannot be one segment of a channel name."""
    if not device_id or "/" in device_id or device_id in ("*", "**"):
        return None
    return PUSH_PREFIX + device_id


@register
class CometProvider(Provider):
    """Publishes through the app's Bayeux server (its :class:`Publisher`), which has a lifespan
    of its own: nothing to open or close here."""

    device_type = "comet"

    def __init__(self, server: Publisher) -> None:
        self._server = server

    @classmethod
    def create(cls, context: ProviderContext) -> CometProvider:
        if context.publisher is None:
            raise ValueError("the comet provider needs the app's CometD server (a Publisher)")
        return cls(context.publisher)

    async def send(
        self,
        target: Target,
        notification: Notification,
        *,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        """Publish a chat's body as it is (``customhttp.*`` settings of the target do not apply),
        to the sessions that may read its chat. Another source's notification goes to the
        destination's device channel (``target.device_id``), only to bridges: its
        ``renderings["comet"]``, or by default ``{"message": body, "id": <message id>, "tag":
        "<source>.<key>"}``; handed no destination device, its body as it is (as a chat's)."""
        started = time.monotonic()
        body, chat_id = notification.body, notification.chat_id
        data: Any = body
        device_id: Any = body.get("deviceId")
        if notification.source != "chat" and target.device_id is not None:
            # Routed to a destination's device (the dispatcher sets it): the default rendering.
            device_id = target.device_id
            data = notification.renderings.get(self.device_type) or {
                "message": body,
                "id": notification.message_id,
                "tag": f"{notification.source}.{notification.key}",
            }
        channel = push_channel(device_id) if isinstance(device_id, str) else None
        if channel is None:
            return SendResult(
                "failed",
                0,
                error=f"device id {device_id!r} cannot name a CometD channel",
                temporary=False,
            )
        try:
            reached = await self._server.publish(
                channel, data, audience=lambda session: may_read(session, chat_id)
            )
        except ValueError as exc:  # a channel name the server refuses (too long, not printable)
            return SendResult("failed", 0, error=str(exc)[:300], temporary=False)
        latency_ms = int((time.monotonic() - started) * 1000)
        if reached == 0:
            return SendResult(
                "failed",
                latency_ms,
                error=f"no CometD session subscribed to {channel} may read this chat",
            )
        return SendResult("sent", latency_ms)
