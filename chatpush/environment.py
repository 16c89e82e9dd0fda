"""``CHATPUSH_*`` environment variables, read as strictly as the settings file.

``CHATPUSH_<SECTION>__<KEY>`` sets one key (``CHATPUSH_SERVER__PORT=9000``);
``CHATPUSH_SERVICES__<SERVICE>__<OPTION>`` one service option
(``CHATPUSH_SERVICES__DEFAULT__FLEX_PUSH_RESEND_DELAY=5,15``) and
``CHATPUSH_GROUPS__<GROUP>__<KEY>`` one key of a node group (``..._CUSTOMHTTP_URL``); a whole
section or table may be given as JSON (``CHATPUSH_SERVICES='{"default": {...}}'``). Names are
case-insensitive, and in a key or option name ``_`` stands for ``-`` and ``.`` (which shells do
not allow in names). A service or group named in the file is matched the same way; any other is
taken in lower case. List values take JSON (``'["a","b"]'``) or a comma-separated list (``a,b``).

An unknown variable stops start-up, naming the variable and the closest valid name, as an
unknown key of the file does. Variables of the test harness (``CHATPUSH_TEST_*``,
``CHATPUSH_FUZZ_*``, ``CHATPUSH_NPM_*``, ``CHATPUSH_TIMING_*``) and ``CHATPUSH_CONFIG`` are not
settings and are left alone.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

PREFIX = "CHATPUSH_"
NOT_SETTINGS = ("CONFIG",)
"""``CHATPUSH_CONFIG`` names the file; it is no key of it."""
HARNESS_PREFIXES = ("TEST_", "FUZZ_", "NPM_", "TIMING_")
"""The test suite's own variables (tests/postgres.py, tests/fuzz, tests/cometd)."""


@dataclass
class Environment:
    values: dict[str, Any] = field(default_factory=dict)
    """The settings the variables give, nested as the file's tables are."""
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)
    """Settings path → the variable that set it (for messages about its value)."""
    problems: list[str] = field(default_factory=list)


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_list(annotation: Any) -> bool:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return False


def _holds_models(annotation: Any) -> bool:
    annotation = _unwrap(annotation)
    args = [_unwrap(arg) for arg in typing.get_args(annotation)]
    return any(isinstance(arg, type) and issubclass(arg, BaseModel) for arg in args)


def _keys(model: type[BaseModel]) -> dict[str, str]:
    """Normalized name → the key as the file writes it (aliases and field names)."""
    found = {}
    for name, info in model.model_fields.items():
        written = info.alias or name
        found[_norm(written)] = written
        if model.model_config.get("populate_by_name"):
            found.setdefault(_norm(name), name)
    return found


@dataclass(frozen=True)
class Schema:
    """The settings models the variables are read against (``chatpush.config`` passes its own:
    this module sits below it and imports none of it)."""

    settings: type[BaseModel]
    group: type[BaseModel]
    provider: type[BaseModel]
    service: type[BaseModel]


def _sections(schema: Schema) -> dict[str, type[BaseModel]]:
    sections = {}
    for name, info in schema.settings.model_fields.items():
        annotation = _unwrap(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections[name] = annotation
    return sections


def valid_names(schema: Schema) -> list[str]:
    """Every variable name of a single key (what a typo is compared with)."""
    names = [f"{PREFIX}CONFIG", f"{PREFIX}SERVICES", f"{PREFIX}GROUPS"]
    for section, model in _sections(schema).items():
        names.append(f"{PREFIX}{section.upper()}")
        names += [f"{PREFIX}{section.upper()}__{name.upper()}" for name in model.model_fields]
    names += [
        f"{PREFIX}SERVICES__DEFAULT__{_norm(key).upper()}" for key in _keys(schema.service).values()
    ]
    names += [
        f"{PREFIX}GROUPS__<GROUP>__{_norm(key).upper()}"
        for key in dict.fromkeys(_keys(schema.group).values())
    ]
    return names


def _closest(name: str, schema: Schema) -> str:
    candidates = valid_names(schema)
    found = difflib.get_close_matches(name.upper(), candidates, n=1, cutoff=0.6)
    if not found:
        # CHATPUSH_API_KEYS: the key without its section is a prefix-less match.
        tail = name.upper().removeprefix(PREFIX)
        found = [c for c in candidates if c.endswith(f"__{tail}")][:1]
    return f"; did you mean {found[0]}?" if found else ""


def _named(given: str, known: Mapping[str, Any]) -> str:
    """A service or group name from a variable: the file's own spelling if one matches."""
    for name in known:
        if _norm(name) == given:
            return name
    return given


def _value(
    env: Environment, variable: str, raw: str, *, as_list: bool, as_object: bool, needs_json: bool
) -> Any:
    text = raw.strip()
    if as_object or needs_json or text.startswith(("[", "{")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            if as_object:
                form = "a JSON object"
            elif needs_json:
                form = "a JSON list of tables"
            elif as_list:
                form = "a JSON list, or a comma-separated list (a,b) not starting with ["
            else:
                form = "JSON (the value starts with [ or {)"
            env.problems.append(f"{variable}: expected {form}, not valid JSON ({exc.msg})")
            return None
        if as_object and not isinstance(value, dict):
            env.problems.append(f"{variable}: expected a JSON object such as '{{\"key\": 1}}'")
            return None
        return value
    if as_list:
        return [part.strip() for part in text.split(",") if part.strip()]
    return raw


def read_environment(
    environ: Mapping[str, str], schema: Schema, file_values: Mapping[str, Any] | None = None
) -> Environment:
    """The settings ``environ`` gives, and every problem with it."""
    file_values = file_values or {}
    env = Environment()
    sections = _sections(schema)
    service_keys, group_keys, provider_keys = (
        _keys(schema.service),
        _keys(schema.group),
        _keys(schema.provider),
    )

    def put(path: tuple[str, ...], value: Any, variable: str) -> None:
        if value is None:
            return
        node = env.values
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                env.problems.append(f"{variable}: conflicts with a JSON value set for the table")
                return
        node[path[-1]] = value
        env.origins[path] = variable

    def unknown(variable: str, path: str) -> None:
        env.problems.append(f"{variable}: {path}: unknown key{_closest(variable, schema)}")

    for variable in sorted(environ):
        if not variable.upper().startswith(PREFIX):
            continue
        rest = variable[len(PREFIX) :]
        if rest.upper() in NOT_SETTINGS or rest.upper().startswith(HARNESS_PREFIXES):
            continue
        raw = environ[variable]
        parts = [part.lower() for part in rest.split("__")]
        section = parts[0]
        if section in sections and len(parts) <= 2:
            model = sections[section]
            if len(parts) == 1:
                put((section,), _value(env, variable, raw, as_list=False, as_object=True,
                                       needs_json=False), variable)  # fmt: skip
                continue
            info = model.model_fields.get(parts[1])
            if info is None:
                unknown(variable, f"{section}.{parts[1]}")
                continue
            value = _value(
                env,
                variable,
                raw,
                as_list=_is_list(info.annotation),
                as_object=False,
                needs_json=_holds_models(info.annotation),
            )
            put((section, parts[1]), value, variable)
        elif section in ("services", "groups") and len(parts) == 1:
            value = _value(env, variable, raw, as_list=False, as_object=True, needs_json=False)
            put((section,), value, variable)
        elif section in ("services", "groups") and len(parts) == 2:
            name = _named(parts[1], file_values.get(section) or {})
            value = _value(env, variable, raw, as_list=False, as_object=True, needs_json=False)
            put((section, name), value, variable)
        elif section == "services" and len(parts) == 3:
            name = _named(parts[1], file_values.get("services") or {})
            option = service_keys.get(_norm(parts[2]))
            if option is None:
                unknown(variable, f"services.{name}.{parts[2]}")
                continue
            put(("services", name, option), raw, variable)
        elif section == "groups" and len(parts) >= 3:
            groups = file_values.get("groups") or {}
            name = _named(parts[1], groups)
            if len(parts) == 3:
                key = group_keys.get(_norm(parts[2]))
                if key is None or key == "providers":
                    unknown(variable, f"groups.{name}.{parts[2]}")
                    continue
                as_list = key == "nodes"  # pushEnabled takes a comma list itself
                value = _value(env, variable, raw, as_list=as_list, as_object=False,
                               needs_json=False)  # fmt: skip
                put(("groups", name, key), value, variable)
            elif len(parts) == 5 and parts[2] == "providers":
                providers = (groups.get(name) or {}).get("providers") or {}
                provider = _named(parts[3], providers)
                key = provider_keys.get(_norm(parts[4]))
                if key is None:
                    unknown(variable, f"groups.{name}.providers.{provider}.{parts[4]}")
                    continue
                put(("groups", name, "providers", provider, key), raw, variable)
            else:
                unknown(variable, ".".join(parts))
        else:
            unknown(variable, ".".join(parts))
    return env
