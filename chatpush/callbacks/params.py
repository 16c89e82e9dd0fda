"""A create's or update's parameters (docs/callbacks.md §3.1, §3.2, §7.1): what is the record's,
what is a push key, what is an option override, what is a property. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatpush import device_types
from chatpush.callbacks.errors import BadParameter, InvalidPushKey
from chatpush.callbacks.model import IGNORED_IN_REQUESTS, Device
from chatpush.config import MAX_LANGUAGE_TAG_CHARS, ServiceOptions

MAX_NAME_CHARS = 200
MAX_CUSTOMER_NUMBER_CHARS = 64
MAX_DEVICE_ID_CHARS = 512
MAX_LANGUAGE_CHARS = MAX_LANGUAGE_TAG_CHARS
"""A push key's language tag at most, as a [texts] table's (docs/callbacks.md §7.6)."""

PUSH_FIELDS = ("id", "type", "provider", "debug", "language")
PUSH_KEY_STYLES: Mapping[str, Mapping[str, str]] = {
    "GMS": {
        "_device_notification_id": "id",
        "_device_os": "type",
        "_provider_name": "provider",
        "_push_notification_debug": "debug",
        "_push_notification_language": "language",
    },
    "GMSLibrary": {
        "push_notification_deviceid": "id",
        "push_notification_type": "type",
        "push_notification_provider": "provider",
        "push_notification_debug": "debug",
        "push_notification_language": "language",
    },
    "GES": {
        "pushNotificationDeviceId": "id",
        "pushNotificationType": "type",
        "pushNotificationProvider": "provider",
        "pushNotificationDebug": "debug",
        "pushNotificationLanguage": "language",
    },
}
"""§7.1: the three ways apps name the push keys (GMS, GMSLibrary, GES)."""
PUSH_KEYS = frozenset(key for style in PUSH_KEY_STYLES.values() for key in style)

OVERRIDABLE = {
    "_call_direction": "cb_call_direction",
    "_wait_for_agent": "cb_wait_for_agent",
    "_wait_for_user_confirm": "cb_wait_for_user_confirm",
    "_provide_code": "cb_provide_code",
    "_media_type": "cb_media_type",
}
"""§2.4's starred options: a create parameter of that name overrides the service's."""

OPTION_NAMES = {
    "_ttl": "cb_ttl_s",
    "_mandatory_customer_lookup_keys": "cb_mandatory_lookup_keys",
    **OVERRIDABLE,
    "_max_dial_attempts": "cb_max_dial_attempts",
    "_snooze_duration": "cb_snooze_duration_s",
    "_user_confirm_timeout": "cb_user_confirm_timeout_s",
    "_push_notification_threshold": "cb_push_threshold_min",
    "_provider_name": "cb_provider_name",
    "_node_group": "cb_node_group",
    "_max_notify_delivery_attempts": "cb_max_notify_attempts",
}
"""The §2.4 options a command's ``callback`` carries, by their GMS names."""


@dataclass(frozen=True, slots=True)
class CreateParams:
    desired_time: str | None
    device: Device | None
    properties: dict[str, str]
    """Every other parameter, ``_customer_number`` first, overrides included."""


def _as_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise BadParameter(f"{name} must be true or false, got {value[:20]!r}")
    return lowered == "true"


def check_properties(properties: Mapping[str, str], max_keys: int, max_value_chars: int) -> None:
    if len(properties) > max_keys:
        raise BadParameter(f"at most {max_keys} properties, got {len(properties)}")
    for name, value in properties.items():
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise BadParameter(
                f"a property name is 1-{MAX_NAME_CHARS} printable characters: {name[:40]!r}"
            )
        if len(value) > max_value_chars:
            raise BadParameter(f"{name}: at most {max_value_chars} characters")


def device_of(params: Mapping[str, str]) -> Device | None:
    """The push subscription the push keys ask for (§7.1), in any of the three styles."""
    fields: dict[str, tuple[str, str]] = {}
    for style in PUSH_KEY_STYLES.values():
        for key, field in style.items():
            value = params.get(key)
            if value is None:
                continue
            seen = fields.get(field)
            if seen is not None and seen[1] != value:
                raise InvalidPushKey(
                    f"{key}={value[:60]!r} disagrees with {seen[0]}={seen[1][:60]!r}"
                )
            fields[field] = (key, value)
    if not fields:
        return None
    if "id" not in fields or "type" not in fields:
        missing = "device id" if "id" not in fields else "device type"
        given = ", ".join(key for key, _ in fields.values())
        raise BadParameter(f"the push keys ({given}) need a {missing} too")
    device_id = fields["id"][1]
    if len(device_id) > MAX_DEVICE_ID_CHARS or not device_id.isprintable():
        raise InvalidPushKey(f"a device id is 1-{MAX_DEVICE_ID_CHARS} printable characters")
    device_type = device_types.canonical(fields["type"][1])
    if device_type is None:
        raise InvalidPushKey(
            f"unknown device type {fields['type'][1][:40]!r}; known: {device_types.describe()}"
        )
    provider = fields.get("provider", ("", ""))[1] or None
    if provider is not None and len(provider) > MAX_NAME_CHARS:
        raise InvalidPushKey(f"a provider name is at most {MAX_NAME_CHARS} characters")
    debug = _as_bool(fields["debug"][0], fields["debug"][1]) if "debug" in fields else False
    language = fields.get("language", ("", ""))[1] or None
    if language is not None and len(language) > MAX_LANGUAGE_CHARS:
        raise InvalidPushKey(f"a language tag is at most {MAX_LANGUAGE_CHARS} characters")
    return Device(device_type, device_id, provider, debug, language)


def check_overrides(params: Mapping[str, str]) -> None:
    for name in OVERRIDABLE:
        value = params.get(name)
        if value is None:
            continue
        if name == "_call_direction" and value not in ("USERTERMINATED", "USERORIGINATED"):
            raise BadParameter("_call_direction must be USERTERMINATED or USERORIGINATED")
        if name in ("_wait_for_agent", "_wait_for_user_confirm", "_provide_code"):
            _as_bool(name, value)
        if name == "_media_type" and not 1 <= len(value) <= 64:
            raise BadParameter("_media_type is 1-64 characters")


def create_params(params: Mapping[str, str], options: ServiceOptions) -> CreateParams:
    """Split a create's parameters; BadParameter / InvalidPushKey for what is wrong."""
    kept = {
        name: value
        for name, value in params.items()
        if name not in IGNORED_IN_REQUESTS and name not in PUSH_KEYS
    }
    device = device_of(params)
    number = kept.get("_customer_number")
    if number is not None and not 1 <= len(number) <= MAX_CUSTOMER_NUMBER_CHARS:
        raise BadParameter(
            f"_customer_number is 1-{MAX_CUSTOMER_NUMBER_CHARS} characters, got {len(number)}"
        )
    for key in options.cb_mandatory_lookup_keys:
        if key not in kept:
            raise BadParameter(f"{key} is missing")
    check_overrides(kept)
    desired = kept.pop("_desired_time", None)
    properties = {}
    if number is not None:
        properties["_customer_number"] = kept.pop("_customer_number")
    properties.update(kept)
    return CreateParams(desired, device, properties)


def effective(options: ServiceOptions, properties: Mapping[str, str]) -> dict[str, Any]:
    """The §2.4 options in effect for one callback (GMS name -> value), overrides applied."""
    values: dict[str, Any] = {}
    for name, attribute in OPTION_NAMES.items():
        value = getattr(options, attribute)
        override = properties.get(name) if name in OVERRIDABLE else None
        if override is not None:
            lowered = override.strip().lower()
            value = lowered == "true" if lowered in ("true", "false") else override
        values[name] = list(value) if isinstance(value, tuple) else value
    return values


def as_string(value: Any) -> str:
    """A JSON scalar as the GMS API keeps every value: a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
