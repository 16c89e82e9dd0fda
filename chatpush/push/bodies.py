"""Notification bodies (docs/push.md): reliable trigger (a), event with payload (b), bare (c)."""

from __future__ import annotations

from typing import Any

from chatpush.chat.model import ChatRecord, EventRecord

TRIGGER_TEXT = "PUSH-NOTIFICATION"


def trigger_body(
    *,
    device_id: str,
    obfuscated_key: str,
    chat: ChatRecord,
    alias: str,
    position: int,
    attempt: int,
    final: bool,
    content_keys: tuple[str, ...],
    now_ms: int,
) -> dict[str, Any]:
    """(a): a PushUrl trigger; ``userData`` carries exactly the flex-push-content keys."""
    available = {
        "app-dbid": alias,
        "secure-key": chat.secure_key,
        "session-id": chat.id,
        "user-id": chat.user_id,
    }
    user_data = {"notify-attempt": str(attempt), "notify-position": str(position)}
    user_data.update({key: available[key] for key in content_keys})
    return {
        "deviceId": device_id,
        "message": {
            "secureKey": obfuscated_key,
            "chatId": "deprecated",
            "userId": "deprecated",
            "alias": "0",
            "nextPosition": chat.last_index + 1,
            "chatEnded": final,
            "statusCode": 0,
            "monitored": False,
            "messages": [
                {
                    "from": {"nickname": "", "participantId": 0, "type": "Client"},
                    "index": 0,
                    "text": TRIGGER_TEXT,
                    "type": "PushUrl",
                    "utcTime": now_ms,
                    "userData": user_data,
                }
            ],
        },
    }


def payload_body(
    *, device_id: str, obfuscated_key: str, chat: ChatRecord, alias: str, event: EventRecord
) -> dict[str, Any]:
    """(b): the real event in the Chat API envelope, with the real chat id; one body per event."""
    return {
        "deviceId": device_id,
        "message": {
            "secureKey": obfuscated_key,
            "chatId": chat.id,
            "userId": chat.user_id,
            "alias": alias,
            "nextPosition": event.index + 1,
            "chatEnded": chat.ended,
            "statusCode": 0,
            "monitored": False,
            "messages": [event.to_wire()],
        },
    }


def bare_body(device_id: str) -> dict[str, Any]:
    """(c): only the device id, so no chat content leaves the contact centre."""
    return {"deviceId": device_id}
