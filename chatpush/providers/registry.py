"""The provider registry: one line registers a provider class under its device type.

::

    @register
    class WebPushProvider(Provider):
        device_type = "webpush"
        ...

From then on its device type (and aliases) is accepted wherever one is named: ``pushEnabled``
in the configuration, ``GCTI_GMS_PushDeviceType`` at Request Chat, the subscription's routing;
its ``credentials_kind`` (if any) by the credentials admin API and the CLI; and the app makes
one instance of it (:func:`create_all`) that the dispatcher sends through. The providers shipped
with chatpush are registered by importing chatpush/providers/builtin.py. docs/providers.md
explains the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from chatpush import device_types
from chatpush.providers.base import CredentialKind, Provider, ProviderContext

P = TypeVar("P", bound=type[Provider])

_classes: dict[str, type[Provider]] = {}


def register(cls: P) -> P:
    """Register ``cls`` under its ``device_type`` (and ``aliases``); returns it (a decorator).
    ValueError when a name or credentials kind is taken by another class."""
    name = cls.device_type
    existing = _classes.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"device type {name!r} is registered already ({existing.__name__})")
    kind = cls.credentials_kind
    if kind is not None:
        owner = next((c for c in _classes.values() if c.credentials_kind == kind), None)
        if owner is not None and owner is not cls:
            raise ValueError(f"credentials kind {kind!r} is {owner.__name__}'s already")
        # The base class's read_credentials/test_credentials only refuse: a provider that keeps
        # credentials must say how to read and test them, or the admin API would fail on them.
        missing = [
            name
            for name in ("read_credentials", "test_credentials")
            if getattr(cls, name).__qualname__.startswith("Provider.")
        ]
        if missing or not cls.credential_fields:
            what = ", ".join([*missing, *([] if cls.credential_fields else ["credential_fields"])])
            raise ValueError(f"{cls.__name__} keeps {kind!r} credentials but lacks {what}")
    device_types.declare(name, cls.aliases, internal=cls.internal)
    _classes[name] = cls
    return cls


def unregister(cls: type[Provider]) -> None:
    """Forget ``cls`` (a test's provider, once the test is done)."""
    if _classes.get(cls.device_type) is cls:
        del _classes[cls.device_type]
        device_types.withdraw(cls.device_type)


def provider_classes(*, internal: bool = False) -> dict[str, type[Provider]]:
    """Device type -> provider class, in alphabetical order; the internal ones (``ccwebhook``)
    only with ``internal``."""
    names = device_types.known(internal=internal)
    return {name: _classes[name] for name in names if name in _classes}


def credentials_classes() -> dict[CredentialKind, type[Provider]]:
    """Credentials kind -> the provider class that uses it (``fcm``, ``apns``)."""
    return {
        cls.credentials_kind: cls
        for cls in provider_classes().values()
        if cls.credentials_kind is not None
    }


def create_all(
    context: ProviderContext, given: Mapping[str, Provider] | None = None
) -> dict[str, Provider]:
    """One provider per registered device type: ``given`` ones as they are (tests, embedding
    applications), every other made by its class's ``create``."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(provider_classes()))
    if unknown:
        raise ValueError(f"providers for unregistered device types: {', '.join(unknown)}")
    classes = provider_classes(internal=True)
    for cls in classes.values():
        cls.options(context.settings)  # a wrong [provider_options.<type>] stops start-up first
    return {
        name: given[name] if name in given else cls.create(context) for name, cls in classes.items()
    }
