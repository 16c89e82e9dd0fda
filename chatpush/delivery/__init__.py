"""The delivery platform: the outbox of every notification source, the dispatcher that sends it
(one notification in flight per (source, key), in enqueue order, leased), the trail, the metrics
and the plain-retry rule. It knows nothing of chats: the chat pipeline (``chatpush.push``) is one
source among others (docs/architecture.md, "A new notification source").

What a source uses::

    from chatpush.delivery import Alert, Destination, NewNotification, enqueue, drop_pending
"""

from chatpush.delivery.api import (
    MAX_ATTEMPTS_UNTIL_EXPIRY,
    MAX_KEY_CHARS,
    Alert,
    Destination,
    Kind,
    NewNotification,
    Outcome,
    Priority,
    Source,
    SourceHooks,
    drop_pending,
    enqueue,
)
from chatpush.delivery.dispatcher import ChatSource, Dispatcher, Sends
from chatpush.delivery.retry import Next, after_send

__all__ = [
    "MAX_ATTEMPTS_UNTIL_EXPIRY",
    "MAX_KEY_CHARS",
    "Alert",
    "ChatSource",
    "Destination",
    "Dispatcher",
    "Kind",
    "NewNotification",
    "Next",
    "Outcome",
    "Priority",
    "Sends",
    "Source",
    "SourceHooks",
    "after_send",
    "drop_pending",
    "enqueue",
]
