"""Counters in one place, exposed in the Prometheus text format at ``/metrics``."""

from __future__ import annotations

from collections import defaultdict

_HELP = {
    "chatpush_notifications_enqueued_total": "Notifications put in the outbox, by kind.",
    "chatpush_deliveries_total": "Delivery attempts, by outcome, node and device type.",
    "chatpush_triggers_resent_total": "Reliable triggers resent after their delay ran out.",
    "chatpush_resend_exhausted_total": "Subscriptions marked failed after the last resend.",
    "chatpush_no_node_total": "Notifications parked because no node was available.",
    "chatpush_node_failovers_total": "Subscriptions re-pinned to another node.",
    "chatpush_chats_expired_total": "Chats ended by flex-push-timeout.",
    "chatpush_dead_tokens_total": "Device tokens a provider reported dead, by device type.",
    "chatpush_body_read_timeouts_total": "Requests refused: the body did not arrive in time.",
}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        assert name in _HELP, f"undeclared metric {name}"
        self._counters[name][tuple(sorted(labels.items()))] += amount

    def value(self, name: str, **labels: str) -> float:
        """The sum over every series of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(count for key, count in self._counters[name].items() if wanted <= set(key))

    def render(self) -> str:
        lines = []
        for name, help_text in _HELP.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            for labels, count in sorted(self._counters.get(name, {}).items()):
                rendered = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
                lines.append(f"{name}{{{rendered}}} {count:g}" if rendered else f"{name} {count:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
