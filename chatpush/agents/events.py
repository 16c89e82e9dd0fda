"""Routing events as they arrive, checked and filtered (pure functions).

The shape is the contact centre's (docs/agents.md)::

    {"eventType": "routing.queue.member.added", "timestamp": "2023-10-27T10:00:00.000Z",
     "data": {"queueId": "...", "memberId": "<user id>", "memberType": "user",
              "conversationId": "...", "mediaType": "voice"}}

:func:`parse` turns one event into an :class:`Action` (ring, or cancel of a conversation's rings)
or a :class:`Dropped` with the reason, which is counted, never an error. An event of a known type
whose members are wrong (no conversation id, an id too long, a member of the wrong JSON type) is
an :class:`Invalid`: the webhook refuses the whole batch with a 400; the stream drops it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ADDED = "routing.queue.member.added"
REMOVED = "routing.queue.member.removed"
UPDATED = "routing.conversation.updated"
DELETED = "routing.conversation.deleted"

MAX_CONVERSATION_ID_CHARS = 100
MAX_USER_ID_CHARS = 64
"""With the 32-character device id, the ordering key ``conversation/user/device`` stays within
the platform's 200 characters."""
MAX_SHORT_CHARS = 128
"""queueId, memberType, mediaType, status, timestamp."""
CONNECTED = "connected"


@dataclass(frozen=True, slots=True)
class Ring:
    conversation_id: str
    user_id: str
    queue_id: str | None
    media_type: str | None
    timestamp: str | None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop ringing ``conversation_id``: for one agent, or for every agent rung (user_id None)."""

    conversation_id: str
    user_id: str | None
    reason: Literal["deleted", "removed", "connected"]


@dataclass(frozen=True, slots=True)
class Dropped:
    event_type: str
    reason: Literal["unknown_type", "type_filtered", "media_filtered", "not_user", "not_connected"]


@dataclass(frozen=True, slots=True)
class Invalid:
    advice: str


Action = Ring | Cancel
Parsed = Ring | Cancel | Dropped | Invalid


def valid_id(value: str, max_chars: int) -> bool:
    """1 to ``max_chars`` printable ASCII characters, no space or ``/`` (ids go in paths and
    ordering keys)."""
    return (
        0 < len(value) <= max_chars
        and value.isascii()
        and value.isprintable()
        and not any(c in value for c in " /")
    )


def _text(data: Mapping[str, Any], name: str, max_chars: int, where: str) -> str | Invalid | None:
    if name not in data:
        return None
    value = data[name]
    if not isinstance(value, str):
        return Invalid(f"{where}.{name} must be a string")
    if not value or len(value) > max_chars:
        return Invalid(f"{where}.{name} must be 1 to {max_chars} characters")
    return value


def parse(
    event: Any,
    *,
    event_types: Sequence[str],
    media_types: Sequence[str],
    index: int | None = None,
) -> Parsed:
    """One event, as the webhook or the stream received it."""
    where = "event" if index is None else f"events[{index}]"
    if not isinstance(event, dict):
        return Invalid(f"{where} must be a JSON object")
    event_type = event.get("eventType")
    if not isinstance(event_type, str) or not event_type:
        return Invalid(f"{where}.eventType must be a non-empty string")
    if event_type not in (ADDED, REMOVED, UPDATED, DELETED):
        return Dropped(event_type[:MAX_SHORT_CHARS], "unknown_type")
    if event_type not in event_types:
        return Dropped(event_type, "type_filtered")
    data = event.get("data")
    if not isinstance(data, dict):
        return Invalid(f"{where}.data must be a JSON object")
    timestamp = _text(event, "timestamp", MAX_SHORT_CHARS, where)
    conversation = _text(data, "conversationId", MAX_CONVERSATION_ID_CHARS, f"{where}.data")
    member = _text(data, "memberId", MAX_USER_ID_CHARS, f"{where}.data")
    fields = {
        name: _text(data, name, MAX_SHORT_CHARS, f"{where}.data")
        for name in ("queueId", "memberType", "mediaType", "status", "state")
    }
    for value in (timestamp, conversation, member, *fields.values()):
        if isinstance(value, Invalid):
            return value
    assert not isinstance(timestamp, Invalid) and not isinstance(member, Invalid)
    if conversation is None or isinstance(conversation, Invalid):
        return Invalid(f"{where}.data.conversationId is required")
    if not valid_id(conversation, MAX_CONVERSATION_ID_CHARS):
        return Invalid(f"{where}.data.conversationId must have no space or '/'")
    if member is not None and not valid_id(member, MAX_USER_ID_CHARS):
        return Invalid(f"{where}.data.memberId must have no space or '/'")
    member_type = fields["memberType"]
    media_type = fields["mediaType"]
    if event_type == DELETED:
        return Cancel(conversation, None, "deleted")
    if event_type == UPDATED:
        status = fields["status"] or fields["state"]
        if not isinstance(status, str) or status.lower() != CONNECTED:
            return Dropped(event_type, "not_connected")
        return Cancel(conversation, member, "connected")
    # The queue member events: about an agent (memberType user) or not for us.
    if member_type is None or member is None:
        return Invalid(f"{where}.data.memberId and memberType are required for {event_type}")
    if member_type != "user":
        return Dropped(event_type, "not_user")
    if event_type == REMOVED:
        # Never filtered by media type: it cancels only what rang, which passed the filter.
        return Cancel(conversation, member, "removed")
    if media_types and media_type not in media_types:
        return Dropped(event_type, "media_filtered")
    queue = fields["queueId"]
    return Ring(
        conversation,
        member,
        queue if isinstance(queue, str) else None,
        media_type if isinstance(media_type, str) else None,
        timestamp,
    )
