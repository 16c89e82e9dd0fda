"""Who may call what: API keys, their scopes, and the scope each route needs (docs/security.md).

Keys come from ``[[security.keys]]`` (each with its own scopes) and from ``security.api_keys``
(every scope, the older form). A key is compared with every configured key in constant time, so
the time taken says nothing of which one is close. Each route names the scopes that admit a
caller where it is declared (``chatpush/api/routes.py``); a test checks that every ``/api/``
route has them, so a new route cannot slip through with "any key will do".
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from chatpush.config import SCOPES, SecuritySettings
from chatpush.errors import Code, Forbidden

CHAT_SERVER, ADMIN, BRIDGE, METRICS = SCOPES
EVERY_SCOPE = frozenset(SCOPES)


@dataclass(slots=True)
class RouteAccess:
    """The scopes each keyed route needs, as mounted by ``chatpush/api/routes.py``: the one
    place where a route is declared names its scopes too."""

    scopes: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    """(method, canonical path) -> the scopes that admit a caller."""
    public: set[str] = field(default_factory=set)
    """Paths under ``/api/`` that need no key (whatever the method: a wrong one is a plain 405)."""


ROUTE_ACCESS = web.AppKey("route_access", RouteAccess)
_NO_ROUTES = RouteAccess()


@dataclass(frozen=True, slots=True)
class _Key:
    secret: bytes
    name: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Caller:
    """A caller whose key matched: its key's name (for logs) and scopes."""

    name: str
    scopes: frozenset[str]


class KeyRing:
    def __init__(self, security: SecuritySettings) -> None:
        keys = [
            _Key(key.key.get_secret_value().encode(), key.name, frozenset(key.scopes))
            for key in security.keys
        ]
        keys += [
            _Key(key.get_secret_value().encode(), f"api_keys[{number}]", EVERY_SCOPE)
            for number, key in enumerate(security.api_keys)
        ]
        self._keys = tuple(keys)
        self.public_metrics = security.public_metrics

    @property
    def broad(self) -> bool:
        """Some key has every scope through ``security.api_keys``."""
        return any(key.name.startswith("api_keys[") for key in self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def caller(self, given: str | bytes | None) -> Caller | None:
        """The caller holding ``given``, or None. Bytes are compared as received."""
        if not given:
            return None
        given_bytes = given if isinstance(given, bytes) else given.encode("utf-8", "surrogatepass")
        found: _Key | None = None
        for key in self._keys:  # all of them, whatever matched
            if hmac.compare_digest(key.secret, given_bytes) and found is None:
                found = key
        return None if found is None else Caller(found.name, found.scopes)

    def has_scope(self, given: str | bytes | None, scope: str) -> bool:
        caller = self.caller(given)
        return caller is not None and scope in caller.scopes


def route_scopes(request: web.Request) -> frozenset[str] | None:
    """The scopes that admit a call to this request's route; None when it needs no key."""
    path = request.path
    if not (path.startswith("/api/") or path == "/metrics"):
        return None
    method = "GET" if request.method == "HEAD" else request.method
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else path
    table = request.app.get(ROUTE_ACCESS) or _NO_ROUTES
    if path in table.public:
        return None
    # A route not in the table (an unknown path, a wrong method) answers 404/405 to any key.
    return table.scopes.get((method, canonical), EVERY_SCOPE)


def given_key(request: web.Request) -> bytes:
    """``X-API-Key``, or the token of ``Authorization: Bearer`` (what Prometheus sends)."""
    given = request.headers.get("X-API-Key", "")
    if not given:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip()
    # aiohttp keeps the bytes of a header that is not UTF-8 as surrogate escapes: compare the
    # bytes as received (a strict encode() of them would raise, a 500).
    return given.encode("utf-8", "surrogateescape")


def authorize(keys: KeyRing, request: web.Request) -> Caller | None:
    """Raise Forbidden unless the request's key admits it to its route; the caller, if any."""
    needed = route_scopes(request)
    if needed is None or (keys.public_metrics and request.path == "/metrics"):
        return None
    caller = keys.caller(given_key(request))
    if caller is None:
        raise Forbidden(Code.INVALID_API_KEY, "missing or wrong X-API-Key")
    if not caller.scopes & needed:
        raise Forbidden(
            Code.MISSING_SCOPE, f"this API key lacks the scope this call needs: {_names(needed)}"
        )
    return caller


def _names(scopes: Iterable[str]) -> str:
    return " or ".join(sorted(scopes))
