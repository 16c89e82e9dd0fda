"""The device types this process can push to, and their aliases, as the providers declare them.

A provider module registers its class once (``chatpush.providers.registry.register``); that
records the device type and its aliases here, in the base layer, so that what sits below the
providers (configuration: ``pushEnabled``) and what must not import them can check a name.
The built-in providers are imported by name the first time a name is looked up, the way
plug-ins are loaded; a provider registered later (a test's, an embedding application's) is
known from then on.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence

BUILTIN_PROVIDERS = "chatpush.providers.builtin"
"""The module that imports (and so registers) the providers shipped with chatpush."""

MAX_NAME_CHARS = 16
"""As the database stores a device type (``subscriptions.device_type``)."""

_device_types: list[str] = []
_names: dict[str, str] = {}
"""Every name and alias (lower case) -> its device type."""
_aliases: dict[str, tuple[str, ...]] = {}
_internal: set[str] = set()
"""Device types only the platform names (``ccwebhook``): no chat, callback, agent or
configuration may name them; :func:`canonical` knows them only when asked with ``internal``."""
_loading = threading.Lock()
_loaded = False


def declare(device_type: str, aliases: Sequence[str] = (), *, internal: bool = False) -> None:
    """Make ``device_type`` (and ``aliases`` for it) known; ValueError if a name is taken.
    ``internal``: a device type of the platform's own (see ``_internal``)."""
    names = [device_type, *aliases]
    for name in names:
        if not (0 < len(name) <= MAX_NAME_CHARS and name.isascii() and name.isidentifier()):
            raise ValueError(
                f"device type names are 1-{MAX_NAME_CHARS} ASCII letters, digits or _: {name!r}"
            )
        if name != name.lower():
            raise ValueError(f"device type names are lower case: {name!r}")
        owner = _names.get(name)
        if owner is not None and owner != device_type:
            raise ValueError(f"device type name {name!r} is taken by {owner!r}")
    if device_type not in _device_types:
        _device_types.append(device_type)
    for name in names:
        _names[name] = device_type
    _aliases[device_type] = tuple(dict.fromkeys([*_aliases.get(device_type, ()), *aliases]))
    if internal:
        _internal.add(device_type)


def withdraw(device_type: str) -> None:
    """Forget ``device_type`` and its aliases (tests that registered one clean up)."""
    if device_type in _device_types:
        _device_types.remove(device_type)
    for name in [name for name, owner in _names.items() if owner == device_type]:
        del _names[name]
    _aliases.pop(device_type, None)
    _internal.discard(device_type)


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    with _loading:
        if not _loaded:
            importlib.import_module(BUILTIN_PROVIDERS)
            _loaded = True


def canonical(name: str, *, internal: bool = False) -> str | None:
    """The device type ``name`` (any case, or an alias) stands for; None when unknown (or
    internal, unless ``internal``: the delivery platform's own check)."""
    _load_builtins()
    found = _names.get(name.strip().lower())
    return None if found in _internal and not internal else found


def known(*, internal: bool = False) -> tuple[str, ...]:
    """Every device type, in alphabetical order (whatever order the modules were imported in);
    the internal ones only with ``internal``."""
    _load_builtins()
    return tuple(sorted(name for name in _device_types if internal or name not in _internal))


def aliases() -> dict[str, str]:
    """Alias -> device type."""
    _load_builtins()
    return {alias: device_type for device_type in known() for alias in _aliases[device_type]}


def describe() -> str:
    """The known names as an error message lists them: ``fcm (android, gcm), ios (apple)``."""
    return ", ".join(
        f"{name} ({', '.join(_aliases[name])})" if _aliases[name] else name for name in known()
    )
