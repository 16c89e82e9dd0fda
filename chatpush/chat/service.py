"""Chat sessions as both sides see them, and the jobs that keep them: one ``ChatService``.

Split by job: ``customer`` (Chat API v2), ``server_side`` (the chat-server API), ``housekeeping``
(retention and idle chats), on ``core`` (the transaction runner and the steps they share).
"""

from __future__ import annotations

from chatpush.chat.customer import CustomerSide
from chatpush.chat.housekeeping import Housekeeping
from chatpush.chat.server_side import ChatState

__all__ = ["ChatService", "ChatState"]


class ChatService(CustomerSide, Housekeeping):
    """Both sides of every chat and its housekeeping, over one database and push pipeline."""
