"""Bayeux channel names: which are valid, what kind each is, and who is subscribed to what.

A channel name is ``/`` followed by one or more non-empty segments of printable characters without
spaces. Subscriptions may end in a wildcard segment, and only there: ``/a/*`` matches exactly one
more segment (``/a/b``), ``/a/**`` one or more (``/a/b``, ``/a/b/c``). Published channels never
contain wildcards.

Three kinds of channel (the Bayeux appendix of the CometD reference book):

- ``/meta/...``: the protocol itself (handshake, connect, ...); never subscribed to or published.
- ``/service/...``: requests to the server; a reply goes to the sender only, so subscriptions to
  them are accepted and not recorded.
- anything else: broadcast; a publish reaches every subscriber.

:class:`SubscriptionIndex` finds the subscribers of a published channel in O(segments) dictionary
look-ups, whatever the number of sessions: exact names, ``/*`` and ``/**`` patterns each have
their own dictionary keyed by the name or by the pattern's prefix.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Generic, TypeVar

META_PREFIX = "/meta/"
SERVICE_PREFIX = "/service/"
MAX_CHANNEL_CHARS = 512
"""Longer names are refused: a channel is a key in memory, not a place to carry data."""

S = TypeVar("S", bound=Hashable)


def is_valid_channel(name: str, *, allow_wildcards: bool) -> bool:
    """True for a well-formed name; wildcards (last segment ``*`` or ``**``) only if allowed."""
    if not 1 < len(name) <= MAX_CHANNEL_CHARS or name[0] != "/":
        return False
    segments = name[1:].split("/")
    last = len(segments) - 1
    for position, segment in enumerate(segments):
        if not segment or not segment.isprintable() or " " in segment:
            return False
        if "*" in segment and not (allow_wildcards and position == last and segment in ("*", "**")):
            return False
    return True


def is_meta(name: str) -> bool:
    return name.startswith(META_PREFIX)


def is_service(name: str) -> bool:
    return name.startswith(SERVICE_PREFIX)


class SubscriptionIndex(Generic[S]):
    """Subscribers by channel pattern, for fan-out without scanning every session."""

    __slots__ = ("_exact", "_many", "_one")

    def __init__(self) -> None:
        self._exact: dict[str, set[S]] = {}
        self._one: dict[str, set[S]] = {}
        """``/a/*`` is kept under ``/a``; ``/*`` under the empty string."""
        self._many: dict[str, set[S]] = {}
        """``/a/**`` is kept under ``/a``; ``/**`` under the empty string."""

    def _slot(self, pattern: str) -> tuple[dict[str, set[S]], str]:
        if pattern.endswith("/**"):
            return self._many, pattern[:-3]
        if pattern.endswith("/*"):
            return self._one, pattern[:-2]
        return self._exact, pattern

    def add(self, pattern: str, subscriber: S) -> None:
        table, key = self._slot(pattern)
        table.setdefault(key, set()).add(subscriber)

    def remove(self, pattern: str, subscriber: S) -> None:
        table, key = self._slot(pattern)
        subscribers = table.get(key)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del table[key]

    def match(self, channel: str) -> Collection[S]:
        """The subscribers of a published (wildcard-free) channel, each once.

        The result may be one of the index's own sets: iterate over it before changing the index.
        """
        found: list[set[S]] = []
        exact = self._exact.get(channel)
        if exact:
            found.append(exact)
        parent = channel[: channel.rfind("/")]
        if self._one:
            one = self._one.get(parent)
            if one:
                found.append(one)
        if self._many:
            prefix = parent
            while True:
                many = self._many.get(prefix)
                if many:
                    found.append(many)
                if not prefix:
                    break
                prefix = prefix[: prefix.rfind("/")]
        if not found:
            return ()
        if len(found) == 1:
            return found[0]
        return set().union(*found)

    def __len__(self) -> int:
        """The number of (pattern, subscriber) pairs."""
        return sum(len(s) for table in (self._exact, self._one, self._many) for s in table.values())
