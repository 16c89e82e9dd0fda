"""The notification envelope: one notification, whatever made it, as every provider receives it.

A source (today only the chat pipeline; later callbacks and agent alerts) says what it is, the
key its notifications are ordered by, what kind of notification this is and its provider-neutral
content; a provider renders that content for its service and reads the kind and the typed fields
here, never by looking inside the body. Re-exported by ``providers/base.py``; its own module,
importing nothing of the package, like ``result.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Kind", "Notification", "Source"]

Source = Literal["chat", "callback", "agent_alert", "test"]
"""What made the notification."""

Kind = Literal["trigger", "payload", "bare", "alert", "cancel"]
"""What the notification is. A chat makes ``trigger`` (a reliable ``PushUrl``: the device calls
``refresh``), ``payload`` (one event, carried whole) and ``bare`` (only the device id);
``alert`` and ``cancel`` are for the sources to come."""


@dataclass(frozen=True, slots=True)
class Notification:
    source: Source
    key: str
    """The ordering key: the notifications of one key go out one at a time, in order. For a
    chat, its chat id."""
    kind: Kind
    message_id: str
    """Unique per attempt (``webhook-id``): a trigger's resend is a notification of its own; a
    send held under a service's backoff goes out later with the same one."""
    body: dict[str, Any]
    """The provider-neutral content: the custom HTTP body (docs/push.md); the providers of other
    services render their own messages from it."""
    position: int | None = None
    """A trigger's ``notify-position``: the transcript position the device is asked to read."""
    attempt: int | None = None
    """A trigger's ``notify-attempt``: 0 for the first send, then one more per resend."""

    @property
    def chat_id(self) -> str | None:
        """The chat it belongs to, if a chat made it."""
        return self.key if self.source == "chat" else None
