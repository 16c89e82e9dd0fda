"""The callback record as the store reads and writes it (the domain's model builds on it:
chatpush/callbacks/model.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

State = Literal["SCHEDULED", "QUEUED", "ROUTING", "PROCESSING", "COMPLETED"]
STATES: tuple[State, ...] = ("SCHEDULED", "QUEUED", "ROUTING", "PROCESSING", "COMPLETED")


def format_time(ms: int) -> str:
    """``2024-05-02T14:30:00.000Z``."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Device:
    """The push subscription a create's push keys made (§7.1)."""

    type: str
    id: str
    provider: str | None
    debug: bool
    language: str | None


@dataclass(slots=True)
class CallbackRecord:
    id: str
    service_name: str
    state: State
    reason: str | None
    desired_time_ms: int
    expiration_ms: int
    created_at_ms: int
    updated_at_ms: int
    base_url: str
    properties: dict[str, str] = field(default_factory=dict)
    """Create and update parameters (``_customer_number`` included), in the order they came."""
    attributes: dict[str, Any] = field(default_factory=dict)
    completed_at_ms: int | None = None
    last_seq: int = 0
    command_seq: int = 0
    ewt_s: int | None = None
    position: int | None = None
    total_waiting: int | None = None
    ewt_at_ms: int | None = None
    upcoming: str = "pending"
    access_number: str | None = None
    access_code: str | None = None
    device: Device | None = None
    due_at_ms: int | None = None
    ttl_at_ms: int | None = None
    purge_at_ms: int | None = None
    reminder_at_ms: int | None = None

    @property
    def url(self) -> str:
        return f"{self.base_url}/1/service/callback/{self.service_name}/{self.id}"

    def wire(self) -> dict[str, str]:
        """The record as the GMS API answers it (§2.1): all values strings, push keys never."""
        record = {"_id": self.id, "_service_name": self.service_name}
        number = self.properties.get("_customer_number")
        if number is not None:
            record["_customer_number"] = number
        record["_callback_state"] = self.state
        if self.state == "COMPLETED" and self.reason is not None:
            record["_callback_reason"] = self.reason
        record["_desired_time"] = format_time(self.desired_time_ms)
        record["_expiration_time"] = format_time(self.expiration_ms)
        record["_url"] = self.url
        for name, value in self.properties.items():
            record.setdefault(name, value)
        return record

    def value_of(self, name: str) -> str | None:
        """A record key or property as a query compares it (§3.4)."""
        return self.wire().get(name)
