"""Plain records of the chat domain and their Chat API v2 wire shapes (docs/chat-api.md)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

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


@dataclass(frozen=True, slots=True)
class ChatRecord:
    id: str
    service_name: str
    secure_key: str
    user_id: str
    subject: str | None
    email_address: str | None
    user_data: dict[str, str]
    created_at_ms: int
    ended_at_ms: int | None
    last_client_request_ms: int
    last_index: int
    client_position: int
    last_participant_id: int

    @property
    def ended(self) -> bool:
        return self.ended_at_ms is not None


@dataclass(frozen=True, slots=True)
class PartyRecord:
    participant_id: int
    type: str
    nickname: str
    joined_at_ms: int
    left_at_ms: int | None = None
    first_name: str | None = None
    last_name: str | None = None

    @property
    def present(self) -> bool:
        return self.left_at_ms is None


@dataclass(frozen=True, slots=True)
class EventRecord:
    index: int
    type: str
    participant_id: int
    nickname: str
    party_type: str
    utc_time_ms: int
    text: str | None = None
    message_type: str | None = None
    user_data: dict[str, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "from": {
                "nickname": self.nickname,
                "participantId": self.participant_id,
                "type": self.party_type,
            },
            "index": self.index,
            "type": self.type,
            "utcTime": self.utc_time_ms,
        }
        if self.text is not None:
            wire["text"] = self.text
        if self.message_type is not None:
            wire["messageType"] = self.message_type
        if self.user_data:
            wire["userData"] = dict(self.user_data)
        return wire


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended; the store gives it its index."""

    type: str
    party: PartyRecord
    text: str | None = None
    message_type: str | None = None
    user_data: dict[str, str] | None = None


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
