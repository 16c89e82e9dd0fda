"""The rows the chat store keeps, as plain records: chats, parties and transcript events.

They live beside the SQL that reads and writes them, so that the store needs nothing from the
layers above it; the chat domain (``chatpush.chat.model``) hands them on under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
