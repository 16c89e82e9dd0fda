"""Callback status event lists (docs/callbacks.md §5.2, §5.5): which ``_cbe_on_*`` events go, each
with its ``notify_params`` (keys, in order) and ``notify_custom`` (a JSON object merged flat).

A list is written in the configuration file (``[event_lists."<name>".<event>]`` and
``[event_lists."<name>".properties]``) or imported from a GMS Transaction List export
(``cfg_file``, a ``.cfg``). Both are read here, at start and by ``chatpush check``; every
mistake is a ``ValueError`` naming the list, the section and, in a ``.cfg``, the line.
A base module (no chatpush imports): the configuration validates lists with it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

MAX_PARAMS: Final = 100
MAX_NAME_CHARS: Final = 200
MAX_CUSTOM_CHARS: Final = 8192
MAX_CFG_BYTES: Final = 1_048_576

DEFAULT_EVENTS: Mapping[str, tuple[str, ...]] = {
    "_cbe_on_service_create": (
        "_service_id",
        "_service_name",
        "_customer_number",
        "_urs_virtual_queue",
    ),
    "_cbe_on_virtual_ixn_create": ("_service_id", "_service_name"),
    "_cbe_on_target_found": (
        "_service_id",
        "_service_name",
        "_urs_virtual_queue",
        "c_agent_id",
        "c_agent_extension",
    ),
    "_cbe_on_dial_init": ("_service_id", "_service_name", "_customer_number", "c_dialed_number"),
    "_cbe_on_dial_done": (
        "_service_id",
        "_service_name",
        "_customer_number",
        "c_dialed_number",
        "c_call_result",
        "c_call_num_attempt",
    ),
    "_cbe_on_connect_treatment_start": (
        "_service_id",
        "_service_name",
        "_vq_for_outbound_calls",
        "c_dialed_number",
    ),
    "_cbe_on_customer_queued": (
        "_service_id",
        "_service_name",
        "_vq_for_outbound_calls",
        "c_dialed_number",
    ),
    "_cbe_on_route_to_agent": ("_service_id", "_service_name", "c_agent_id", "c_agent_extension"),
    "_cbe_on_service_exit": (
        "_service_id",
        "_service_name",
        "c_dialed_number",
        "c_termination_type",
    ),
}
"""The default list: the nine SCXML events with the attributes of GMS's reference table."""

_CALLBACK_PARAMS = ("_service_id", "_service_name", "_desired_time", "_customer_number", "_v_queue")
CALLBACK_EVENTS: Mapping[str, tuple[str, ...]] = {
    f"_cbe_on_callback_{name}": _CALLBACK_PARAMS
    for name in (
        "scheduled",
        "rescheduled",
        "cancelled",
        "status_updated",
        "submitted",
        "resubmitted",
        "submit_failed",
        "processing_failed",
        "queued",
    )
}
"""The GMS callback events: sent only when a list names them."""
REMINDER: Final = "_cbe_on_callback_reminder"
REMINDER_PARAMS: Final = ("_service_id", "_service_name", "_desired_time", "_customer_number")
KNOWN_EVENTS: frozenset[str] = frozenset({*DEFAULT_EVENTS, *CALLBACK_EVENTS, REMINDER})

MODES: Final = ("false", "subscribe_notify", "notify")
TYPES: Final = ("httpcb", "customhttp", "comet")
STATUS_OPTIONS: Final = (
    "_enable_status_notification",
    "_status_notification_type",
    "_status_notification_target",
    "_status_notification_provider",
    "_status_notification_debug",
    "_status_notification_language",
)
"""§5.1's options that a create parameter of the same name overrides for its callback."""
PROPERTIES: Final = (
    *STATUS_OPTIONS,
    "_status_notification_attempts",
    "_enable_notification_reminder",
    "_notification_reminder_buffer",
)
"""What a list's ``[properties]`` may hold (§5.1's options, and the attempts)."""


@dataclass(frozen=True, slots=True)
class EventSpec:
    params: tuple[str, ...]
    custom: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventList:
    events: Mapping[str, EventSpec]
    properties: Mapping[str, str]


def default_list() -> dict[str, EventSpec]:
    return {name: EventSpec(params) for name, params in DEFAULT_EVENTS.items()}


def _params(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",")]
        names = [name for name in names if name]
    elif isinstance(value, list) and all(isinstance(name, str) for name in value):
        names = [name.strip() for name in value]
    else:
        raise ValueError(f"{where}.notify_params: a comma-separated string or a list of names")
    if len(names) > MAX_PARAMS:
        raise ValueError(f"{where}.notify_params: at most {MAX_PARAMS} names")
    for name in names:
        if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable() or " " in name:
            raise ValueError(f"{where}.notify_params: {name[:40]!r} is not a parameter name")
    return tuple(dict.fromkeys(names))


def _custom(where: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        if len(value) > MAX_CUSTOM_CHARS:
            raise ValueError(f"{where}.notify_custom: at most {MAX_CUSTOM_CHARS} characters")
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{where}.notify_custom: not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}.notify_custom: a JSON object")
    if len(json.dumps(value)) > MAX_CUSTOM_CHARS:
        raise ValueError(f"{where}.notify_custom: at most {MAX_CUSTOM_CHARS} characters of JSON")
    return value


def _property(where: str, name: str, value: Any) -> str:
    if name not in PROPERTIES:
        raise ValueError(f"{where}: unknown property {name[:60]!r}; known: {', '.join(PROPERTIES)}")
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or len(value) > 2048:
        raise ValueError(f"{where}.{name}: a string of at most 2048 characters")
    text = str(value).strip()
    if name == "_enable_status_notification" and text not in MODES:
        raise ValueError(f"{where}.{name}: one of {', '.join(MODES)}")
    if name == "_status_notification_type" and text not in TYPES:
        raise ValueError(f"{where}.{name}: one of {', '.join(TYPES)}")
    if name in (
        "_status_notification_debug",
        "_enable_notification_reminder",
    ) and text.lower() not in ("true", "false"):
        raise ValueError(f"{where}.{name}: true or false")
    if name == "_status_notification_attempts" and not (
        text.isascii() and text.isdigit() and 1 <= int(text) <= 100
    ):
        raise ValueError(f"{where}.{name}: a whole number from 1 to 100")
    if name == "_notification_reminder_buffer" and not (
        text.isascii() and text.isdigit() and int(text) <= 366 * 86400
    ):
        raise ValueError(f"{where}.{name}: a whole number of seconds")
    return text


def _event(where: str, body: Any) -> EventSpec:
    if not isinstance(body, dict):
        raise ValueError(f"{where}: a table of notify_params and notify_custom")
    unknown = sorted(set(body) - {"notify_params", "notify_custom"})
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)[:200]}")
    params = _params(where, body.get("notify_params", ""))
    custom = _custom(where, body["notify_custom"]) if "notify_custom" in body else {}
    return EventSpec(params, custom)


def parse_list(name: str, raw: Any, base_dir: Path | None) -> EventList:
    """``[event_lists."<name>"]`` as written in the configuration file."""
    where = f"event_lists.{name}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a table")
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"{where}: a name of 1-{MAX_NAME_CHARS} characters")
    if "cfg_file" in raw:
        if set(raw) != {"cfg_file"} or not isinstance(raw["cfg_file"], str):
            raise ValueError(f"{where}: cfg_file (a path) and nothing else")
        path = Path(raw["cfg_file"])
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return read_cfg(name, path)
    return _sections(where, raw)


def _sections(where: str, sections: Mapping[str, Any]) -> EventList:
    events: dict[str, EventSpec] = {}
    properties: dict[str, str] = {}
    for section, body in sections.items():
        if section == "properties":
            if not isinstance(body, dict):
                raise ValueError(f"{where}.properties: a table")
            for key, value in body.items():
                properties[key] = _property(f"{where}.properties", key, value)
        elif section in KNOWN_EVENTS:
            events[section] = _event(f"{where}.{section}", body)
        else:
            raise ValueError(
                f"{where}: {section[:60]!r} is neither properties nor a callback event "
                "(_cbe_on_service_create ... _cbe_on_callback_reminder)"
            )
    return EventList(events, properties)


def read_cfg(name: str, path: Path) -> EventList:
    """A GMS Transaction List export: ``[section]``, ``key=value`` (split at the first ``=``,
    both trimmed), blank lines, ``#`` or ``;`` comments; anything else is an error naming the
    line. Names are taken exactly as written."""
    where = f"event_lists.{name} ({path.name})"
    try:
        if path.stat().st_size > MAX_CFG_BYTES:
            raise ValueError(f"{where}: larger than {MAX_CFG_BYTES} bytes")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            if not section or section in sections:
                raise ValueError(f"{where} line {number}: an empty or repeated section {line!r}")
            current = sections[section] = {}
            continue
        if "=" not in stripped or current is None:
            shown = line[:80]
            raise ValueError(
                f"{where} line {number}: not a [section] or a key=value in a section: {shown!r}"
            )
        key, value = stripped.split("=", 1)
        current[key.strip()] = value.strip()
    return _sections(where, sections)
