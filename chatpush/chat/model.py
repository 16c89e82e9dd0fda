"""The chat domain's model: ids and keys, the records the store keeps (``store/chat_records.py``)
and the Chat API v2 reply (docs/chat-api.md)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

from chatpush.store.chat_records import ChatRecord, EventRecord, NewEvent, PartyRecord

__all__ = [
    "CUSTOMER_PARTICIPANT_ID",
    "EVENT_TYPES",
    "PARTY_TYPES",
    "ChatRecord",
    "EventRecord",
    "NewEvent",
    "PartyRecord",
    "Reply",
    "keys_match",
    "new_chat_id",
    "new_secure_key",
    "new_user_id",
]

PARTY_TYPES: Final = ("Client", "Agent", "Supervisor", "External")
EVENT_TYPES: Final = (
    "ParticipantJoined",
    "ParticipantLeft",
    "Message",
    "PushUrl",
    "TypingStarted",
    "TypingStopped",
    "NicknameUpdated",
    "CustomNotice",
    "Notice",
    "FileUploaded",
    "FileDeleted",
    "IdleAlert",
    "IdleClose",
)
CUSTOMER_PARTICIPANT_ID: Final = 1


def new_chat_id() -> str:
    """16 upper-case hex characters, 64 random bits: the shape GMS chat ids have."""
    return secrets.token_hex(8).upper()


def new_user_id() -> str:
    return secrets.token_hex(8).upper()


def new_secure_key() -> str:
    """32 hex characters, 128 random bits."""
    return secrets.token_hex(16)


def keys_match(expected: str, given: str) -> bool:
    """Constant-time comparison of secure keys (and of API keys)."""
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(slots=True)
class Reply:
    """What a Chat API v2 operation answers: rendered as the envelope by the edges."""

    chat: ChatRecord
    alias: str
    messages: list[EventRecord] = field(default_factory=list)
    next_position: int = 1
    chat_ended: bool = False
    warnings: list[str] = field(default_factory=list)
    """Advice for the client (Request Chat's push-key hints), as ``chatpushWarnings``."""

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "statusCode": 0,
            "alias": self.alias,
            "chatEnded": self.chat_ended,
            "chatId": self.chat.id,
            "secureKey": self.chat.secure_key,
            "userId": self.chat.user_id,
            "nextPosition": self.next_position,
            "messages": [event.to_wire() for event in self.messages],
        }
        if self.warnings:
            wire["chatpushWarnings"] = list(self.warnings)
        return wire
