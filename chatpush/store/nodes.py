"""The ``nodes`` table: the push nodes of every instance, their heartbeats and drained flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection

from chatpush.store.tables import Node

_nodes = cast(Table, Node.__table__)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    group_name: str
    instance_id: str
    heartbeat_at_ms: int
    drained: bool

    def available_at(self, now_ms: int, node_timeout_ms: int) -> bool:
        """Another instance's view: not drained, and a heartbeat within the node timeout."""
        return not self.drained and now_ms - self.heartbeat_at_ms <= node_timeout_ms


def register_node(
    conn: Connection, name: str, group_name: str, instance_id: str, now_ms: int
) -> None:
    updated = conn.execute(
        update(_nodes)
        .where(_nodes.c.name == name)
        .values(group_name=group_name, instance_id=instance_id, heartbeat_at_ms=now_ms)
    )
    if not updated.rowcount:
        conn.execute(
            insert(_nodes).values(
                name=name,
                group_name=group_name,
                instance_id=instance_id,
                heartbeat_at_ms=now_ms,
                drained=False,
            )
        )


def heartbeat(conn: Connection, names: Sequence[str], now_ms: int) -> None:
    conn.execute(
        update(_nodes).where(_nodes.c.name.in_(list(names))).values(heartbeat_at_ms=now_ms)
    )


def list_nodes(conn: Connection) -> list[NodeRecord]:
    rows = conn.execute(select(_nodes).order_by(_nodes.c.group_name, _nodes.c.name))
    return [
        NodeRecord(
            name=row.name,
            group_name=row.group_name,
            instance_id=row.instance_id,
            heartbeat_at_ms=row.heartbeat_at_ms,
            drained=bool(row.drained),
        )
        for row in rows
    ]


def set_drained(conn: Connection, name: str, drained: bool) -> bool:
    result = conn.execute(update(_nodes).where(_nodes.c.name == name).values(drained=drained))
    return bool(result.rowcount)
