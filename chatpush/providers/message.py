"""What a phone receives: a custom HTTP body (docs/push.md) turned into one message for FCM or APNs.

The outbox keeps that body whatever the device type; the mobile providers turn the notification
(its envelope's kind, its body's content) into a ``MobileMessage`` at send time with
``mobile_message`` and then into their own wire format.
docs/mobile.md shows the result for each kind of notification.

- **Trigger** (a), a reliable ``PushUrl``: ``background`` (the app is woken to call ``refresh``);
  ``data`` holds ``chatId``, ``notify-position``, ``notify-attempt``, ``chatEnded`` and the keys
  that ``flex-push-content`` names; collapsed per chat, so a resend replaces the one before.
  With a title or body configured for the group (``fcm.title`` / ``fcm.body``, ``apple.title`` /
  ``apple.alertMessage.body``) the phone also shows that alert.
- **Payload** (b), one event: an alert whose title is the configured one or the sender's
  nickname and whose body is the configured one or the event's text; ``data`` carries the event.
- **Bare** (c), only the device id: the configured alert, or a background wake-up without data.

FCM's ``data`` values must be strings, so every value here is one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chatpush.providers.base import Notification, Target

Kind = Literal["trigger", "payload", "bare"]
MAX_TEXT_CHARS = 1000
"""Alert bodies longer than this are cut (APNs allows 4 KB for the whole payload)."""


@dataclass(frozen=True, slots=True)
class MobileMessage:
    token: str
    """The device token (``GCTI_GMS_PushDeviceId``)."""
    kind: Kind
    title: str | None
    body: str | None
    data: dict[str, str] = field(default_factory=dict)
    background: bool = False
    """Wake the app without the user (APNs ``content-available``; FCM high-priority data)."""
    collapse_id: str | None = None
    sandbox: bool = False
    """``GCTI_GMS_PushDebug``: APNs's sandbox (development builds of the app)."""
    rendered: Mapping[str, Any] | None = None
    """The whole payload, already rendered (a notification of another source than chat): the
    APNs JSON payload, or the FCM message object without its token."""
    push_type: str | None = None
    """With ``rendered``: APNs's ``apns-push-type``."""
    high_priority: bool = True
    """With ``rendered``: APNs priority 10 (else 5), FCM android priority high (else normal)."""

    @property
    def alert(self) -> bool:
        return self.title is not None or self.body is not None


RENDERED: frozenset[str] = frozenset({"trigger", "payload", "bare"})
"""The kinds of notification a phone message is made for (a chat's)."""


def source_message(
    notification: Notification, *, target: Target, platform: Literal["fcm", "ios"]
) -> MobileMessage:
    """The message of a notification no chat made, for its destination's device: its
    ``renderings[platform]`` when given, else the default rendering of body and alert:

    - fcm: ``data {"message": json(body)}``, ``notification {title, body}`` from the alert,
      ``android.priority`` from the priority;
    - ios: ``{"aps": {"alert": {title, body}, "sound", "category"}, "message": body}``,
      ``apns-push-type`` alert (background without an alert), priority 10 (5 for normal or
      background).
    """
    alert, body = notification.alert, notification.body
    push_type = notification.apns_push_type or ("alert" if alert is not None else "background")
    high = notification.priority == "high" and push_type != "background"
    given = notification.renderings.get(platform)
    if given is not None:
        rendered: Mapping[str, Any] = given
    elif platform == "fcm":
        message: dict[str, Any] = {"data": {"message": json.dumps(body, separators=(",", ":"))}}
        if alert is not None:
            message["notification"] = {"title": alert.title, "body": alert.body}
        message["android"] = {"priority": "high" if notification.priority == "high" else "normal"}
        rendered = message
    else:
        aps: dict[str, Any] = {}
        if alert is not None:
            aps["alert"] = {"title": alert.title, "body": alert.body}
            if alert.sound is not None:
                aps["sound"] = alert.sound
            if alert.category is not None:
                aps["category"] = alert.category
        else:
            aps["content-available"] = 1
        rendered = {"aps": aps, "message": body}
    return MobileMessage(
        target.device_id or "",
        "bare",
        None,
        None,
        sandbox=target.debug,
        rendered=rendered,
        push_type=push_type,
        high_priority=high,
    )


def mobile_message(
    notification: Notification, *, target: Target, platform: Literal["fcm", "ios"]
) -> MobileMessage:
    """The message for ``platform`` of ``notification`` (of a kind in :data:`RENDERED`), routed
    to ``target``: the kind is the envelope's, the content is its body's."""
    title, text = (
        (target.fcm_title, target.fcm_body)
        if platform == "fcm"
        else (target.apple_title, target.apple_body)
    )
    body, kind, key = notification.body, notification.kind, notification.key
    token = str(body.get("deviceId", ""))
    if kind == "bare":
        return MobileMessage(
            token,
            kind,
            title,
            text,
            background=title is None and text is None,
            sandbox=target.debug,
        )
    if kind != "trigger" and kind != "payload":
        raise ValueError(f"no phone message for a notification of kind {kind!r}")
    content = body["message"]
    event = content["messages"][0]
    data = {"chatId": key, "chatEnded": _flag(content.get("chatEnded"))}
    if kind == "trigger":
        data.update({str(k): str(v) for k, v in (event.get("userData") or {}).items()})
        return MobileMessage(
            token,
            kind,
            title,
            text,
            data,
            background=True,
            collapse_id=key,
            sandbox=target.debug,
        )
    sender = event.get("from") or {}
    data.update(
        {
            "index": str(event.get("index", "")),
            "type": str(event.get("type", "")),
            "nickname": str(sender.get("nickname", "")),
            "participantType": str(sender.get("type", "")),
            "nextPosition": str(content.get("nextPosition", "")),
        }
    )
    event_text = event.get("text")
    if isinstance(event_text, str):
        data["text"] = event_text[:MAX_TEXT_CHARS]
    return MobileMessage(
        token,
        "payload",
        title if title is not None else (sender.get("nickname") or None),
        text if text is not None else (data.get("text") or event.get("type")),
        data,
        sandbox=target.debug,
    )


def _flag(value: Any) -> str:
    return "true" if value is True else "false"
