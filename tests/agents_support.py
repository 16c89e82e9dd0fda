"""Agent alerts in tests: the outbox rings are handed to until the delivery platform's is wired
(docs/agents.md), and event builders in the contact centre's shape."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from chatpush.agents.outbound import AgentPush


@dataclass(slots=True)
class RecordingOutbox:
    """Takes rings and cancels as the platform's ``enqueue`` does (a message id each, inside the
    caller's transaction) and keeps them in order for the test to read."""

    pushes: list[tuple[str, AgentPush]] = field(default_factory=list)
    pokes: int = 0

    def enqueue(self, conn: Connection, pushes: Sequence[AgentPush], now_ms: int) -> list[str]:
        ids = [secrets.token_hex(16) for _ in pushes]
        self.pushes.extend(zip(ids, pushes, strict=True))
        return ids

    def poke(self) -> None:
        self.pokes += 1

    def of_kind(self, kind: str) -> list[AgentPush]:
        return [push for _, push in self.pushes if push.kind == kind]

    def clear(self) -> None:
        self.pushes.clear()


def event(
    event_type: str,
    conversation_id: str = "conv-abc-123",
    member_id: str | None = "agent-1",
    *,
    member_type: str = "user",
    media_type: str | None = "voice",
    **data: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "queueId": "12345678-1234-1234-1234-123456789012",
        "memberType": member_type,
        "conversationId": conversation_id,
        **data,
    }
    if member_id is not None:
        body["memberId"] = member_id
    if media_type is not None:
        body["mediaType"] = media_type
    return {"eventType": event_type, "timestamp": "2023-10-27T10:00:00.000Z", "data": body}


def added(conversation_id: str = "conv-abc-123", member_id: str = "agent-1", **kw: Any) -> Any:
    return event("routing.queue.member.added", conversation_id, member_id, **kw)


def removed(conversation_id: str = "conv-abc-123", member_id: str = "agent-1", **kw: Any) -> Any:
    return event("routing.queue.member.removed", conversation_id, member_id, **kw)


def deleted(conversation_id: str = "conv-abc-123") -> Any:
    return event("routing.conversation.deleted", conversation_id, None)


def connected(conversation_id: str = "conv-abc-123", member_id: str = "agent-1") -> Any:
    return event("routing.conversation.updated", conversation_id, member_id, status="connected")
