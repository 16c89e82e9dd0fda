"""Which node delivers a chat's next notification, and with which group's provider settings.

A node hosted by this instance is available while this instance runs and the node is not
drained; a node of another instance while its heartbeat in the database is fresh. A subscription
stays pinned to its node until that node becomes unavailable; then it moves to another available
node of its group, then of another group that enables its device type (docs/push.md).

With several instances, a node's notifications are sent by the instance that hosts it. A chat not
yet pinned goes to one of its group's available nodes chosen by a hash of the chat id, whichever
instance hosts it, so chats spread evenly; when that node is another instance's, the instance that
claimed the notification pins the chat there and hands the notification over.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from chatpush.clock import Clock
from chatpush.config import ConfigError, GroupSettings, ProviderSettings, Settings
from chatpush.providers.base import Target
from chatpush.store import nodes as store
from chatpush.store.database import Database

log = logging.getLogger("chatpush.routing")


@dataclass(frozen=True, slots=True)
class Route:
    node: str
    group_name: str
    target: Target
    failover: bool
    """The node is not in the subscription's own group."""
    local: bool = True
    """This instance hosts the node; if not, the node's own instance delivers."""


@dataclass(frozen=True, slots=True)
class NodeState:
    name: str
    group_name: str
    local: bool
    drained: bool
    heartbeat_at_ms: int
    available: bool


def target_for(
    group: GroupSettings, provider: str | None, debug: bool, group_name: str = ""
) -> Target:
    settings: ProviderSettings = group
    named = group.providers.get(provider) if provider else None

    def pick(attribute: str) -> object:
        value = getattr(named, attribute) if named is not None else None
        return value if value is not None else getattr(settings, attribute)

    url, message = pick("customhttp_url"), pick("customhttp_message")
    secret, authorization = pick("customhttp_signing_secret"), pick("customhttp_authorization")
    if debug and pick("debug_customhttp_url") is not None:
        url = pick("debug_customhttp_url")
        message = pick("debug_customhttp_message") or message
        secret = pick("debug_customhttp_signing_secret") or secret
        authorization = pick("debug_customhttp_authorization") or authorization
    return Target(
        url=url if isinstance(url, str) else None,
        message=message if isinstance(message, str) else None,
        signing_secret=secret.get_secret_value() if secret is not None else None,  # type: ignore[attr-defined]
        authorization=(
            authorization.get_secret_value() if authorization is not None else None  # type: ignore[attr-defined]
        ),
        group_name=group_name,
        provider=provider,
        debug=debug,
        **{
            name: value if isinstance(value := pick(name), str) else None
            for name in ("fcm_title", "fcm_body", "apple_title", "apple_body")
        },
        options={**settings.options, **(named.options if named is not None else {})},
    )


def _spread(chat_id: str, candidates: list[str]) -> str:
    """A stable choice per chat, spreading chats evenly over the candidates."""
    digest = hashlib.blake2b(chat_id.encode(), digest_size=8).digest()
    return candidates[int.from_bytes(digest, "big") % len(candidates)]


class Router:
    def __init__(self, settings: Settings, db: Database, clock: Clock, instance_id: str) -> None:
        self._settings = settings
        self._db = db
        self._clock = clock
        self.instance_id = instance_id
        self._group_of = {
            node: name for name, group in settings.groups.items() for node in group.nodes
        }
        self.local_nodes = tuple(settings.hosted_nodes)
        self._drained: dict[str, bool] = dict.fromkeys(self.local_nodes, False)
        self._remote: dict[str, store.NodeRecord] = {}

    async def start(self) -> None:
        now_ms = self._clock.now_ms()
        timeout_ms = int(self._settings.delivery.node_timeout_s * 1000)

        def register(conn: Connection) -> None:
            for record in store.list_nodes(conn):
                live = now_ms - record.heartbeat_at_ms <= timeout_ms
                if record.name in self._drained and record.instance_id != self.instance_id and live:
                    raise ConfigError(
                        f"node {record.name!r} is hosted by instance {record.instance_id!r}, "
                        "which is alive (fresh heartbeat): give each instance its own "
                        "server.nodes, or wait delivery.node_timeout_s after stopping the other"
                    )
            for node in self.local_nodes:
                store.register_node(conn, node, self._group_of[node], self.instance_id, now_ms)

        await self._db.write(register)
        await self.refresh()

    async def heartbeat(self) -> None:
        if self.local_nodes:
            await self._db.write(store.heartbeat, self.local_nodes, self._clock.now_ms())
        await self.refresh()

    async def refresh(self) -> None:
        """Re-read drained flags (the CLI drains through the database) and remote nodes."""
        nodes = await self._db.read(store.list_nodes)
        remote = {}
        for node in nodes:
            if node.name in self._drained and node.instance_id == self.instance_id:
                self._drained[node.name] = node.drained
            elif node.name not in self._drained:
                remote[node.name] = node
        self._remote = remote

    def remote_available(self) -> list[str]:
        """Other instances' nodes that are available: their pinned chats are theirs to send."""
        return sorted(name for name in self._remote if self.available(name))

    async def set_drained(self, name: str, drained: bool) -> bool:
        """Drain or undrain a node of the configuration (every instance shares it); False for any
        other name, without asking the database (a name holding NUL broke PostgreSQL's query)."""
        if name not in self._group_of:
            return False
        found = await self._db.write(store.set_drained, name, drained)
        if found:
            if name in self._drained:
                self._drained[name] = drained
            await self.refresh()
            log.info(
                "node %s %s",
                name,
                "drained" if drained else "undrained",
                extra={"action": "node_drained" if drained else "node_undrained", "node": name},
            )
        return found

    def available(self, node: str) -> bool:
        if node in self._drained:
            return not self._drained[node]
        remote = self._remote.get(node)
        if remote is None:
            return False
        timeout_ms = int(self._settings.delivery.node_timeout_s * 1000)
        return remote.available_at(self._clock.now_ms(), timeout_ms)

    def group_of(self, node: str) -> str | None:
        if node in self._group_of:
            return self._group_of[node]
        remote = self._remote.get(node)
        return remote.group_name if remote else None

    def _available_in(self, group_name: str, prefer_local: bool = False) -> list[str]:
        """The group's available nodes, this instance's and the others' alike: a chat's node is
        chosen by a hash of its id, so chats spread evenly over nodes and instances.
        ``prefer_local``: only this instance's, when any is available."""
        local = [n for n in self.local_nodes if self._group_of[n] == group_name]
        if prefer_local:
            own = sorted(n for n in local if self.available(n))
            if own:
                return own
        remote = [n for n, r in self._remote.items() if r.group_name == group_name]
        return sorted(n for n in (*local, *remote) if self.available(n))

    def route(
        self,
        chat_id: str,
        *,
        group_name: str,
        device_type: str,
        provider: str | None,
        debug: bool,
        pinned: str | None,
        prefer_local: bool = False,
    ) -> Route | None:
        """The node for ``chat_id`` (any key: a hash of it spreads them over the candidates).
        ``prefer_local``: among a group's available nodes, this instance's own when it has any
        (a notification no chat made has no pin to hand it over by)."""
        if pinned is not None and self.available(pinned):
            pinned_group = self.group_of(pinned)
            if pinned_group is not None and pinned_group in self._settings.groups:
                return self._route(pinned, pinned_group, group_name, provider, debug)
        candidates = self._available_in(group_name, prefer_local)
        if candidates:
            return self._route(
                _spread(chat_id, candidates), group_name, group_name, provider, debug
            )
        groups = self._settings.groups
        others = sorted(
            (name for name in groups if name != group_name),
            key=lambda name: (not groups[name].default, name),
        )
        for other in others:
            if device_type not in groups[other].push_enabled:
                continue
            candidates = self._available_in(other, prefer_local)
            if candidates:
                return self._route(_spread(chat_id, candidates), other, group_name, provider, debug)
        return None

    def _route(
        self, node: str, group_name: str, own_group: str, provider: str | None, debug: bool
    ) -> Route:
        group = self._settings.groups[group_name]
        return Route(
            node=node,
            group_name=group_name,
            target=target_for(group, provider, debug, group_name),
            failover=group_name != own_group,
            local=node in self._drained,
        )

    def nodes(self) -> list[NodeState]:
        states = [
            NodeState(
                name=name,
                group_name=self._group_of[name],
                local=True,
                drained=self._drained[name],
                heartbeat_at_ms=self._clock.now_ms(),
                available=self.available(name),
            )
            for name in self.local_nodes
        ]
        states += [
            NodeState(
                name=node.name,
                group_name=node.group_name,
                local=False,
                drained=node.drained,
                heartbeat_at_ms=node.heartbeat_at_ms,
                available=self.available(node.name),
            )
            for node in self._remote.values()
        ]
        return sorted(states, key=lambda state: (state.group_name, state.name))
