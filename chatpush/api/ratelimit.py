"""Per-client-address rate limits: token buckets in this instance's memory.

A bucket holds up to ``burst`` tokens and refills at ``per_minute`` tokens a minute; each request
of the limited kind takes one, and with none left the request is refused (``RateLimited``: a 429
with ``Retry-After`` over REST) and changes nothing. Buckets are per instance: behind a load
balancer spreading one address over N instances, that address gets up to N times the rate.

The buckets are bounded: a full bucket is the same as none, so the least recently used buckets
that have refilled are dropped as new ones come, and past ``max_addresses`` the least recently
used one goes whatever it holds. A stranger with many addresses can thus reset others' buckets,
never grow memory.

The client address is ``server.trusted_proxies``' reading of the request (chatpush/addresses.py).
:func:`address_middleware` keeps the means to it in :data:`CLIENT_ADDRESS` (worked out only
when a limit asks, not on every request) for handlers that do not see the
request, such as the CometD service handlers (their messages arrive in a long-polling body or a
websocket frame of that request).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from chatpush.addresses import UNKNOWN, TrustedProxies
from chatpush.clock import Clock
from chatpush.errors import RateLimited
from chatpush.metrics import Metrics

CLIENT_ADDRESS: ContextVar[Callable[[], str]] = ContextVar(
    "chatpush_client_address", default=lambda: UNKNOWN
)
"""Gives the client address of the HTTP request (or websocket) being handled."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenBuckets:
    """Token buckets by key; ``per_minute`` 0 turns the limit off."""

    def __init__(self, clock: Clock, *, per_minute: int, burst: int, max_keys: int) -> None:
        self._clock = clock
        self._per_ms = per_minute / 60_000
        self._burst = max(burst, 1)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """key -> (tokens, when counted), least recently used first."""

    @property
    def enabled(self) -> bool:
        return self._per_ms > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> int:
        """Take a token for ``key``: 0 when there was one, else the seconds until there is."""
        if not self.enabled:
            return 0
        now_ms = self._clock.now_ms()
        self._drop_refilled(now_ms)
        tokens = self._tokens(key, now_ms)
        taken = tokens >= 1
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._buckets.popitem(last=False)
        self._buckets[key] = (tokens - 1 if taken else tokens, now_ms)
        self._buckets.move_to_end(key)
        if taken:
            return 0
        return max(1, math.ceil((1 - tokens) / self._per_ms / 1000))

    def _tokens(self, key: str, now_ms: int) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self._burst)
        tokens, counted_ms = bucket
        return min(float(self._burst), tokens + max(0, now_ms - counted_ms) * self._per_ms)

    def _drop_refilled(self, now_ms: int) -> None:
        """Drop the least recently used buckets while they have refilled (a few per call)."""
        for _ in range(4):
            oldest = next(iter(self._buckets), None)
            if oldest is None or self._tokens(oldest, now_ms) < self._burst:
                return
            del self._buckets[oldest]


class ClientLimit:
    """One named limit per client address, counted in ``chatpush_rate_limited_total{limit}``."""

    def __init__(self, name: str, what: str, buckets: TokenBuckets, metrics: Metrics) -> None:
        self.name = name
        self._what = what
        self.buckets = buckets
        self._metrics = metrics

    def check(self, address: str | None = None) -> None:
        """Take a token for ``address`` (default: the current request's); raise when none."""
        address = CLIENT_ADDRESS.get()() if address is None else address
        retry_after_s = self.buckets.take(address)
        if retry_after_s:
            self._metrics.inc("chatpush_rate_limited_total", limit=self.name)
            raise RateLimited(f"too many {self._what} from this address", retry_after_s)


CHAT_CREATE_LIMIT = web.AppKey("chat_create_limit", ClientLimit)
"""Request Chat (REST and CometD ``requestChat``), per client address."""


def address_middleware(proxies: TrustedProxies) -> Middleware:
    """Sets :data:`CLIENT_ADDRESS` for the handling of each request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = CLIENT_ADDRESS.set(lambda: proxies.client_address(request))
        try:
            return await handler(request)
        finally:
            CLIENT_ADDRESS.reset(token)

    return middleware
