"""The dialogs the GMS API answers with (docs/callbacks.md §3.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatpush.callbacks.model import CallbackRecord

CONFIRMATIONS = {
    "scheduled": "Your callback is scheduled",
    "connect-outbound": "You will receive the call shortly",
    "wait-for-agent": "We will notify you when agent is available",
}


def confirmation(template: str, callback_id: str) -> dict[str, str]:
    return {
        "_id": callback_id,
        "_dialog_id": "0",
        "_action": "ConfirmationDialog",
        "_text": CONFIRMATIONS[template],
        "_ok_title": "Ok",
    }


def create_template(record: CallbackRecord, options: Mapping[str, Any]) -> str:
    """§3.3: the template a create answers with."""
    if record.state == "SCHEDULED":
        return "scheduled"
    if (
        options["_call_direction"] == "USERORIGINATED"
        or options["_wait_for_agent"]
        or options["_wait_for_user_confirm"]
    ):
        return "wait-for-agent"
    return "connect-outbound"
