"""Who is asking: the client address that per-address limits count against.

Behind a reverse proxy or load balancer every request arrives from the proxy's address, so
``server.trusted_proxies`` names the proxies whose ``X-Forwarded-For`` is believed. The client
is then the right-most address in that header that is not itself a trusted proxy (anything to
its left was written by the client and proves nothing). Without trusted proxies the header is
ignored: a client cannot choose its own address by sending one.

An IPv6 client counts as its network of ``server.ipv6_prefix_length`` bits (64: one host
commonly holds a whole /64 and could otherwise take a fresh address for every request); an
IPv4-mapped IPv6 address counts as its IPv4 address. Every per-address limit counts against the
same key, so they agree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from aiohttp import web

UNKNOWN = "unknown"


class TrustedProxies:
    """Addresses and networks (``10.0.0.0/8``) whose ``X-Forwarded-For`` is believed."""

    def __init__(self, entries: Iterable[str] = (), *, ipv6_prefix_length: int = 64) -> None:
        self._networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
        self._ipv6_prefix_length = ipv6_prefix_length

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client_address(self, request: web.BaseRequest) -> str:
        """The client the limits count: the peer's address, or the nearest untrusted hop it
        forwarded for; an IPv6 one as its network (``2001:db8:1:1::/64``)."""
        return self._key(self._address(request))

    def address_of(self, peer: str | None, forwarded_for: Callable[[], Iterable[str]]) -> str:
        """:meth:`client_address` of a request from ``peer`` whose ``X-Forwarded-For`` headers
        ``forwarded_for`` gives (read only behind a trusted proxy): for a transport that parses
        requests itself (the CometD long-polling front)."""
        return self._key(self._forwarded(peer or UNKNOWN, forwarded_for))

    def _address(self, request: web.BaseRequest) -> str:
        return self._forwarded(
            request.remote or UNKNOWN, lambda: request.headers.getall("X-Forwarded-For", ())
        )

    def _forwarded(self, peer: str, forwarded_for: Callable[[], Iterable[str]]) -> str:
        if not self._networks or not self.trusts(peer):
            return peer
        hops = [hop.strip() for header in forwarded_for() for hop in header.split(",")]
        for hop in reversed(hops):
            if hop and not self.trusts(hop):
                return _normalized(hop)
        return peer

    def _key(self, address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address[:64]  # not an address (a unix socket, "unknown"): one short bucket
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, self._ipv6_prefix_length), strict=False))
        return str(ip)


def _normalized(hop: str) -> str:
    """A hop as an address: proxies also write ``1.2.3.4:5678``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:5678``; the port is the client's to choose, so it must not make a new key."""
    if hop.startswith("["):
        hop = hop[1 : hop.find("]")] if "]" in hop else hop[1:]
    elif hop.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        hop = hop.partition(":")[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return hop[:64]  # not an address: still one bucket, and a short one
