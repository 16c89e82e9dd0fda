"""Reading a push subscription out of Request Chat's ``userData`` (docs/chat-api.md, "Push keys").

Besides the GMS keys, a service may lock customer choices (``push-customer-notify-requestor``,
``push-customer-include-payload``) and require a proof of the device id
(``push-device-id-secret``); docs/push.md, "Who may push to a device".
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
from collections.abc import Iterable, Mapping

from chatpush import device_types
from chatpush.config import ServiceOptions, Settings
from chatpush.errors import BadRequest, Code
from chatpush.store.states import SubscriptionRequest

__all__ = ["SubscriptionRequest", "device_id_proof", "parse_subscription"]

PROOF_KEY = "chatpush_PushDeviceIdProof"
"""The userData key of the device-id proof: outside the ``GCTI_`` names, so no GMS key collides."""


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
    if not device_id.isprintable():  # a newline, a tab, an escape: no device id holds one
        raise BadRequest(
            Code.INVALID_PUSH_KEY, "userData[GCTI_GMS_PushDeviceId] holds a control character"
        )
    if len(device_id) > 256:
        raise BadRequest(
            Code.INVALID_PUSH_KEY, "userData[GCTI_GMS_PushDeviceId] is longer than 256 characters"
        )
    raw_type = (user_data.get("GCTI_GMS_PushDeviceType") or "").strip().lower()
    device_type = device_types.canonical(raw_type)
    if device_type is None:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            f"userData[GCTI_GMS_PushDeviceType]: unknown device type {raw_type!r}; "
            f"known: {device_types.describe()}",
        )
    if options.push_device_id_secret is not None:
        secrets = [options.push_device_id_secret, options.push_device_id_previous_secret]
        _check_proof(
            user_data,
            [secret.get_secret_value() for secret in secrets if secret is not None],
            device_type,
            device_id,
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
        notify_requestor=_customer_flag(
            user_data, "GCTI_GMS_NotifyRequestor", False, options.push_customer_notify_requestor
        ),
        include_payload=_customer_flag(
            user_data,
            "GCTI_GMS_PushIncludePayload",
            options.push_notification_include_payload,
            options.push_customer_include_payload,
        ),
        reliable=_flag(user_data, "GCTI_GMS_PushResend"),
        client_channel=client_channel,
    )


def _customer_flag(user_data: Mapping[str, str], key: str, default: bool, unlocked: bool) -> bool:
    """A flag the customer may turn on only when ``unlocked``; turning it off is always allowed."""
    value = _flag(user_data, key, default)
    if value and not default and not unlocked:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            f"userData[{key}]: this service does not let the customer turn it on; "
            "leave it out or set it to false",
        )
    return value


def device_id_proof(secret: str, device_type: str, device_id: str) -> str:
    """The proof of ``device_id``: HMAC-SHA256 of ``"{device_type}:{device_id}"``, lower-case hex.

    ``device_type`` is the canonical name (``fcm`` for ``android`` and ``gcm``, ``ios`` for
    ``apple``), so a proof for one kind of device does not open a namesake of another kind.
    """
    message = f"{device_type}:{device_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _check_proof(
    user_data: Mapping[str, str], secrets: list[str], device_type: str, device_id: str
) -> None:
    proof = (user_data.get(PROOF_KEY) or "").strip()
    if not proof:
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            f"userData[{PROOF_KEY}] is required by this service: the hex HMAC-SHA256 of "
            f'"{device_type}:<GCTI_GMS_PushDeviceId>" made with the service\'s '
            "push-device-id-secret",
        )
    given = proof.lower().encode()
    # Bytes, so any text compares (compare_digest refuses non-ASCII str) in constant time; every
    # secret is tried, so the time does not tell which one matched.
    matches = [
        hmac.compare_digest(given, device_id_proof(secret, device_type, device_id).encode())
        for secret in secrets
    ]
    if not any(matches):
        raise BadRequest(
            Code.INVALID_PUSH_KEY,
            f"userData[{PROOF_KEY}] does not prove GCTI_GMS_PushDeviceId for device type "
            f'{device_type}: expected the hex HMAC-SHA256 of "{device_type}:<device id>" made '
            "with the service's push-device-id-secret",
        )


PUSH_KEYS = (
    "GCTI_Chat_PushSubscribe",
    "GCTI_GMS_PushDeviceId",
    "GCTI_GMS_PushDeviceType",
    "GCTI_GMS_NodeGroup",
    "GCTI_GMS_PushProvider",
    "GCTI_GMS_PushDebug",
    "GCTI_GMS_NotifyRequestor",
    "GCTI_GMS_PushIncludePayload",
    "GCTI_GMS_PushResend",
    "GCTI_GMS_ClientChannel",
    PROOF_KEY,
)
"""The userData keys parse_subscription reads (names are case-sensitive, as in GMS)."""
_BY_FOLDED = {key.casefold(): key for key in PUSH_KEYS}
MAX_HINTS = 5
HINT_MIN_SIMILARITY = 0.8
"""How close (difflib's ratio, ignoring case) a key must be to a push key to be taken for a typo."""


def push_key_hints(user_data: Mapping[str, str], top_level: Iterable[str]) -> list[str]:
    """Why a Request Chat may not subscribe as its sender meant: a ``userData`` key that is
    almost a push key (a typo, another case), or push keys sent beside ``userData`` instead of
    inside it. Advice only: the request is served as it is (docs/operations.md, "Push-key
    hints"). Run on Request Chat alone, over at most ``chat.max_user_data_keys`` keys."""
    hints: list[str] = []
    for key in user_data:
        if key in PUSH_KEYS or len(key) > 64:
            continue
        known = _close_push_key(key)
        if known is not None:
            hints.append(
                f"userData[{key}] is not a push key and was ignored; did you mean {known}?"
            )
    outside = [name for name in top_level if len(name) <= 64 and _close_push_key(name)]
    if outside:
        hints.append(
            f"{', '.join(outside[:MAX_HINTS])} sent outside userData and ignored: push keys go "
            f'inside it (REST: userData[{outside[0]}]=...; CometD: "userData": {{...}})'
        )
    return hints[:MAX_HINTS]


def _close_push_key(name: str) -> str | None:
    folded = name.casefold()
    if folded in _BY_FOLDED:
        return _BY_FOLDED[folded]
    if not folded.startswith(("gcti", "chatpush")):
        return None
    found = difflib.get_close_matches(folded, _BY_FOLDED, n=1, cutoff=HINT_MIN_SIMILARITY)
    return _BY_FOLDED[found[0]] if found else None
