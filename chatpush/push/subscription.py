"""Reading a push subscription out of Request Chat's ``userData`` (CONTRACT §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chatpush.config import DEVICE_TYPE_ALIASES, DEVICE_TYPES, ServiceOptions, Settings
from chatpush.errors import BadRequest, Code

# Device types whose provider this version delivers to. The others are refused at Request Chat
# with a clear message rather than accepted and silently never delivered.


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    device_id: str
    device_type: str
    group_name: str
    provider: str | None
    debug: bool
    notify_requestor: bool
    include_payload: bool
    reliable: bool
    client_channel: str | None


def _flag(user_data: Mapping[str, str], key: str, default: bool = False) -> bool:
    raw = user_data.get(key)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise BadRequest(Code.INVALID_PUSH_KEY, f"userData[{key}] must be true or false, got {raw!r}")


def parse_subscription(
    user_data: Mapping[str, str], settings: Settings, options: ServiceOptions
) -> SubscriptionRequest | None:
    """The subscription Request Chat asks for; None when it asks for none; a 400 when invalid."""
    if not _flag(user_data, "GCTI_Chat_PushSubscribe"):
        return None
    if not options.flex_push_enabled or not options.flex_push_on_join:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            "userData[GCTI_Chat_PushSubscribe]: push is not enabled for this service",
        )
    device_id = (user_data.get("GCTI_GMS_PushDeviceId") or "").strip()
    if not device_id:
        raise BadRequest(Code.INVALID_PUSH_KEY, "userData[GCTI_GMS_PushDeviceId] is required")
    if len(device_id) > 256:
        raise BadRequest(
            Code.INVALID_PUSH_KEY, "userData[GCTI_GMS_PushDeviceId] is longer than 256 characters"
        )
    raw_type = (user_data.get("GCTI_GMS_PushDeviceType") or "").strip().lower()
    device_type = DEVICE_TYPE_ALIASES.get(raw_type, raw_type)
    if device_type not in DEVICE_TYPES:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            f"userData[GCTI_GMS_PushDeviceType]: unknown device type {raw_type!r}; "
            f"known: customhttp, comet, fcm (android, gcm), ios (apple)",
        )
    group_name = (user_data.get("GCTI_GMS_NodeGroup") or "").strip() or settings.default_group
    if group_name is None:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            "userData[GCTI_GMS_NodeGroup] is required: no default node group is configured",
        )
    group = settings.groups.get(group_name)
    if group is None:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            f"userData[GCTI_GMS_NodeGroup]: unknown node group {group_name!r}",
        )
    provider = (user_data.get("GCTI_GMS_PushProvider") or "").strip() or None
    if provider is not None and provider not in group.providers:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            f"userData[GCTI_GMS_PushProvider]: group {group_name!r} has no provider {provider!r}",
        )
    if device_type not in group.push_enabled:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            f"userData[GCTI_GMS_PushDeviceType]: {device_type} is not enabled in group "
            f"{group_name!r} (pushEnabled = {','.join(group.push_enabled)})",
        )
    client_channel = (user_data.get("GCTI_GMS_ClientChannel") or "").strip() or None
    if client_channel is not None and len(client_channel) > 200:
        raise BadRequest(
            Code.INVALID_PUSH_KEY, "userData[GCTI_GMS_ClientChannel] is longer than 200 characters"
        )
    return SubscriptionRequest(
        device_id=device_id,
        device_type=device_type,
        group_name=group_name,
        provider=provider,
        debug=_flag(user_data, "GCTI_GMS_PushDebug"),
        notify_requestor=_flag(user_data, "GCTI_GMS_NotifyRequestor"),
        include_payload=_flag(
            user_data, "GCTI_GMS_PushIncludePayload", options.push_notification_include_payload
        ),
        reliable=_flag(user_data, "GCTI_GMS_PushResend"),
        client_channel=client_channel,
    )
