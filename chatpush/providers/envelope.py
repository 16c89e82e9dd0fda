"""The notification envelope: one notification, whatever made it, as every provider receives it.

A source (today only the chat pipeline; later callbacks and agent alerts) says what it is, the
key its notifications are ordered by, what kind of notification this is and its provider-neutral
content; a provider renders that content for its service and reads the kind and the typed fields
here, never by looking inside the body. Re-exported by ``providers/base.py``; its own module,
importing nothing of the package, like ``result.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["TEXT_PLAIN", "Alert", "Kind", "Notification", "Priority", "Source"]

Source = Literal["chat", "callback", "cc_command", "agent_alert", "test"]
"""What made the notification (``cc_command``: a callback's command to the contact-centre side,
POSTed to ``[callback] cc_webhook_url``)."""

Kind = Literal["trigger", "payload", "bare", "alert", "cancel", "command"]
"""What the notification is. A chat makes ``trigger`` (a reliable ``PushUrl``: the device calls
``refresh``), ``payload`` (one event, carried whole) and ``bare`` (only the device id);
``alert`` and ``cancel`` are for the other sources (callbacks, agent alerts); ``command`` is a
callback's command to the contact-centre side."""

Priority = Literal["high", "normal"]

TEXT_PLAIN = "text/plain"
"""A rendering ``{TEXT_PLAIN: "<text>"}`` for an HTTP provider that honours it (``httpcb``):
the text is POSTed as ``text/plain`` instead of JSON (a published string, docs/callbacks.md §6)."""


@dataclass(frozen=True, slots=True)
class Alert:
    """What a phone shows: APNs ``aps.alert`` (and ``category``, ``sound``), FCM
    ``notification``."""

    title: str
    body: str
    category: str | None = None
    """APNs category (e.g. ``INCOMING_CALL``)."""
    sound: str | None = "default"


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
    alert: Alert | None = None
    """What a phone shows (sources other than chat)."""
    renderings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Device type -> that provider's whole payload, instead of its default rendering of the
    body and the alert (APNs: the JSON payload; FCM: the message object without its token;
    custom HTTP: the JSON body; comet: the data published)."""
    apns_push_type: str | None = None
    """APNs ``apns-push-type`` (default: ``alert`` with an alert, else ``background``)."""
    priority: Priority = "high"

    @property
    def chat_id(self) -> str | None:
        """The chat it belongs to, if a chat made it."""
        return self.key if self.source == "chat" else None
