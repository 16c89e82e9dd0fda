"""A chat's push state as the edges read it: each read checks the chat exists in the same
snapshot, so an answer never mixes a purged chat with its leftovers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from chatpush.store import chats, outbox, subscriptions, trail
from chatpush.store.chat_records import ChatRecord


@dataclass(frozen=True, slots=True)
class ChatSubscription:
    """A chat's push subscription (None: the chat has none) and its queued notifications."""

    subscription: subscriptions.SubscriptionRecord | None
    queued: list[outbox.OutboxRecord]


def subscription_of(conn: Connection, chat_id: str) -> ChatSubscription | None:
    """None: no such chat."""
    if chats.get_chat(conn, chat_id) is None:
        return None
    return ChatSubscription(
        subscriptions.get_subscription(conn, chat_id), outbox.pending_for_chat(conn, chat_id)
    )


def deliveries_of(
    conn: Connection, chat_id: str, after_id: int
) -> list[tuple[int, trail.DeliveryRecord]] | None:
    """The chat's delivery records with an id above ``after_id``; None: no such chat."""
    if chats.get_chat(conn, chat_id) is None:
        return None
    return trail.deliveries(conn, chat_id, after_id=after_id)


def chat_and_device(conn: Connection, chat_id: str) -> tuple[ChatRecord, str | None] | None:
    """The chat and the device id of its push subscription (None: it has none); None: no chat."""
    chat = chats.get_chat(conn, chat_id)
    if chat is None:
        return None
    subscription = subscriptions.subscriptions_for(conn, [chat_id]).get(chat_id)
    return chat, None if subscription is None else subscription.request.device_id
