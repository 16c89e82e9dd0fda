"""What a device is sent for a ring or a cancel (pure functions; docs/agents.md shows each).

- APNs: ``aps.alert`` (title, body), ``content-available: 1`` (the app wakes in the background),
  ``category`` ``INCOMING_CALL`` or ``CALL_CANCEL``, and the custom keys beside ``aps``
  (Apple reserves ``aps`` for its own): ``genesys_conversation_id``, ``genesys_user_id``,
  ``media_type``, ``timestamp``, ``action``.
- FCM: a high-priority data message (no ``notification``: the app shows its own ringing screen),
  the same fields as strings (FCM data values are strings).
- custom HTTP and comet: the same fields as one JSON object.
"""

from __future__ import annotations

from typing import Any

from chatpush.agents.events import Ring
from chatpush.agents.outbound import SOURCE, AgentPush, Alert, Destination
from chatpush.config import AgentSettings
from chatpush.store.agents import Device
from chatpush.store.agents import Ring as RingRecord

RING_CATEGORY = "INCOMING_CALL"
CANCEL_CATEGORY = "CALL_CANCEL"
RING_ACTION = "ring"
CANCEL_ACTION = "cancel_ring"
FCM_RING_TTL = "30s"
"""A ring that FCM could not deliver within this long is useless: the call has moved on."""


def ordering_key(conversation_id: str, user_id: str, device_id: str) -> str:
    return f"{conversation_id}/{user_id}/{device_id}"


def _fields(ring: Ring) -> dict[str, Any]:
    return {
        "conversation_id": ring.conversation_id,
        "user_id": ring.user_id,
        "queue_id": ring.queue_id or "",
        "media_type": ring.media_type or "",
        "timestamp": ring.timestamp or "",
    }


def _renderings(alert: Alert, content: dict[str, Any], token: str) -> dict[str, dict[str, Any]]:
    apns = {
        "aps": {
            "alert": {"title": alert.title, "body": alert.body},
            "sound": "default",
            "content-available": 1,
            "category": alert.category,
        },
        **content,
    }
    data = {"title": alert.title, "body": alert.body, "category": alert.category or ""}
    data.update({name: "" if value is None else str(value) for name, value in content.items()})
    fcm = {"data": data, "android": {"priority": "high", "ttl": FCM_RING_TTL}}
    flat = {"title": alert.title, "body": alert.body, "category": alert.category, **content}
    # A custom HTTP receiver serves many devices at one URL: its body names the device, as every
    # custom HTTP notification's does.
    return {"ios": apns, "fcm": fcm, "customhttp": {"deviceId": token, **flat}, "comet": flat}


def ring_push(settings: AgentSettings, ring: Ring, device: Device, group_name: str) -> AgentPush:
    fields = _fields(ring)
    alert = Alert(
        settings.ring_title.format_map(fields),
        settings.ring_body.format_map(fields),
        RING_CATEGORY,
    )
    content = {
        "action": RING_ACTION,
        "genesys_conversation_id": ring.conversation_id,
        "genesys_user_id": ring.user_id,
        "media_type": ring.media_type,
        "queue_id": ring.queue_id,
        "timestamp": ring.timestamp,
        "device_id": device.id,
    }
    renderings = _renderings(alert, content, device.token)
    return AgentPush(
        source=SOURCE,
        key=ordering_key(ring.conversation_id, ring.user_id, device.id),
        kind="alert",
        body=dict(renderings["comet"]),
        destination=Destination(device.device_type, device.token, group_name, device.provider),
        alert=alert,
        renderings=renderings,
        apns_push_type="alert",
        priority="high",
        max_attempts=settings.ring_max_attempts,
        retry_delays_s=settings.ring_retry_delays_s,
    )


def cancel_push(settings: AgentSettings, ring: RingRecord, reason: str) -> AgentPush:
    fields = {
        "conversation_id": ring.conversation_id,
        "user_id": ring.user_id,
        "queue_id": "",
        "media_type": "",
        "timestamp": "",
    }
    alert = Alert(
        settings.cancel_title.format_map(fields),
        settings.cancel_body.format_map(fields),
        CANCEL_CATEGORY,
    )
    content = {
        "action": CANCEL_ACTION,
        "genesys_conversation_id": ring.conversation_id,
        "genesys_user_id": ring.user_id,
        "reason": reason,
        "device_id": ring.device_id,
    }
    renderings = _renderings(alert, content, ring.token)
    return AgentPush(
        source=SOURCE,
        key=ordering_key(ring.conversation_id, ring.user_id, ring.device_id),
        kind="cancel",
        body=dict(renderings["comet"]),
        destination=Destination(
            ring.device_type, ring.token, ring.group_name or "default", ring.provider
        ),
        alert=alert,
        renderings=renderings,
        apns_push_type="alert",
        priority="high",
        max_attempts=settings.ring_max_attempts,
        retry_delays_s=settings.ring_retry_delays_s,
    )
