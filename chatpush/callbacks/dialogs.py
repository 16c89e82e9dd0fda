"""The dialogs the GMS API answers with (docs/callbacks.md §3.3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatpush.callbacks.model import CallbackRecord
from chatpush.callbacks.texts import Texts

CONFIRMATIONS = frozenset({"scheduled", "connect-outbound", "wait-for-agent"})
"""The templates of a ``ConfirmationDialog``; their texts are ``dialog.<template>.text`` and
``dialog.<template>.ok_title`` (docs/callbacks.md §7.6)."""


def confirmation(template: str, callback_id: str, texts: Texts) -> dict[str, str]:
    return {
        "_id": callback_id,
        "_dialog_id": "0",
        "_action": "ConfirmationDialog",
        "_text": texts.get(f"dialog.{template}.text"),
        "_ok_title": texts.get(f"dialog.{template}.ok_title"),
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


# -- §8: the dialogs an app fetches from /genesys/1/service/{_id}/{action} ------------------------

CONFIRM_PROVIDE_CODE = "get-dialog-user-confirmation-provide_code-"
ACTIONS = frozenset(
    {
        f"{CONFIRM_PROVIDE_CODE}true",
        f"{CONFIRM_PROVIDE_CODE}false",
        "get-dialog-user-confirmation",
        "get-dialog-start-chat",
        "connect-outbound",
        "wait-for-agent",
        "connect-inbound",
        "connect",
        "snooze",
        "cancel",
    }
)
"""Every action §8 answers (``check-queue-position`` has a route of its own); any other action,
``not-used`` included, is 404 UNKNOWN_ACTION."""
EFFECTS = frozenset({"connect", "snooze", "cancel"})


@dataclass(frozen=True, slots=True)
class DialogContext:
    """The substitutions of one answer: ``$(ExtURLBase)``, ``$(Date)``, ``$(GMSUser)``; the
    texts in the callback's language."""

    base_url: str
    expires: str
    gms_user: str
    snooze_minutes: int
    texts: Texts


def _menu(record: CallbackRecord, context: DialogContext, provide_code: bool) -> dict[str, Any]:
    url = f"{context.base_url}/1/service/{record.id}"
    texts = context.texts
    ready: dict[str, Any] = {
        "_dialog_id": "1",
        "_label": texts.get("dialog.menu.connect"),
        "_action": "MenuItem",
        "_user_action_url": f"{url}/connect",
        "_method": "POST",
        "_id_to_jump_before": "exit://",
    }
    if provide_code:
        ready["_confirmation_dialog"] = {
            "_text": texts.get("dialog.menu.tones"),
            "_dialog_type": "Notification",
            "_dismiss_timeout": 2,
        }
    return {
        "_dialog_id": "0",
        "_label": texts.get("dialog.menu.label"),
        "_user_action_url": f"{url}/not-used",
        "_method": "POST",
        "_action": "DisplayMenu",
        "_expires": context.expires,
        "_resource_url": f"{url}/get-dialog-user-confirmation",
        "_content": [
            {
                "_group_name": texts.get("dialog.menu.group_name"),
                "_group_content": [
                    ready,
                    {
                        "_dialog_id": "2",
                        "_label": texts.get("dialog.menu.snooze", minutes=context.snooze_minutes),
                        "_action": "MenuItem",
                        "_user_action_url": f"{url}/snooze",
                        "_method": "POST",
                        "_id_to_jump_before": "exit://",
                    },
                    {
                        "_dialog_id": "3",
                        "_label": texts.get("dialog.menu.cancel"),
                        "_action": "MenuItem",
                        "_user_action_url": f"{url}/cancel",
                        "_method": "POST",
                        "_id_to_jump_before": "exit://",
                    },
                ],
            }
        ],
        "_id": record.id,
    }


def render(
    action: str, record: CallbackRecord, options: Mapping[str, Any], context: DialogContext
) -> dict[str, Any]:
    """The answer to ``action`` (one of :data:`ACTIONS`) for ``record``."""
    if action.startswith(CONFIRM_PROVIDE_CODE):
        return _menu(record, context, action.endswith("-true"))
    if action == "get-dialog-user-confirmation":
        return _menu(record, context, bool(options["_provide_code"]))
    if action == "get-dialog-start-chat":
        return {
            "_dialog_id": "1",
            "_action": "StartChat",
            "_label": context.texts.get("dialog.start-chat.label"),
            "_start_chat_url": f"{context.base_url}/1/service/{record.id}/ixn/chat",
            "_comet_url": f"{context.base_url}/cometd",
            "_user_header": context.gms_user,
            "_id_to_jump_before": "exit://",
            "_chat_parameters": {"subject": "None"},
            "_id": record.id,
        }
    if action == "connect":
        inbound = options["_call_direction"] == "USERORIGINATED"
        action = "connect-inbound" if inbound else "connect-outbound"
    if action == "connect-inbound":
        return {
            "_dialog_id": "0",
            "_label": context.texts.get("dialog.connect-inbound.label"),
            "_action": "DialNumber",
            "_tel_url": f"tel:{record.access_number}" if record.access_number else "n/a",
            "_access_code": record.access_code or "n/a",
            "_id": record.id,
        }
    if action in ("connect-outbound", "wait-for-agent"):
        return {**confirmation(action, record.id, context.texts)}
    kind = "snooze" if action == "snooze" else "cancel"
    return {
        "_dialog_id": "0",
        "_action": "ConfirmationDialog",
        "_text": context.texts.get(f"dialog.{kind}.text", minutes=context.snooze_minutes),
        "_ok_title": context.texts.get(f"dialog.{kind}.ok_title"),
        "_id": record.id,
    }
