"""Counters in one place, exposed in the Prometheus text format at ``/metrics``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

_HELP = {
    "chatpush_notifications_enqueued_total": "Notifications put in the outbox, by kind.",
    "chatpush_deliveries_total": "Delivery attempts, by outcome, node and device type.",
    "chatpush_triggers_resent_total": "Reliable triggers resent after their delay ran out.",
    "chatpush_resend_exhausted_total": "Subscriptions marked failed after the last resend.",
    "chatpush_no_node_total": "Notifications parked because no node was available.",
    "chatpush_node_failovers_total": "Subscriptions re-pinned to another node.",
    "chatpush_chats_expired_total": "Chats ended by flex-push-timeout.",
    "chatpush_dead_tokens_total": "Device tokens a provider reported dead, by device type.",
    "chatpush_delivery_failures_total": (
        "Failed sends, by device type, failure (permanent or temporary) and reason (http_<status>"
        " or no_answer)."
    ),
    "chatpush_sends_deferred_total": (
        "Sends held by a service-wide backoff (FCM 429, a receiver's 503 with Retry-After)."
    ),
    "chatpush_subscriptions_failed_permanently_total": (
        "Subscriptions whose attempts a permanent send failure ended."
    ),
    "chatpush_cometd_refused_total": "CometD requests refused by a limit, by reason.",
    "chatpush_cometd_sessions_removed_total": "CometD sessions removed, by reason.",
    "chatpush_cometd_bad_requests_total": "CometD bodies or frames that were not Bayeux at all.",
    "chatpush_requests_refused_total": "Client requests refused (4xx), by error code.",
    "chatpush_rate_limited_total": "Requests refused by a per-address rate limit, by limit.",
    "chatpush_chats_idle_ended_total": "Chats without push ended by chat.idle_chat_timeout_s.",
    "chatpush_body_read_timeouts_total": "Requests refused: the body did not arrive in time.",
}

Labels = tuple[tuple[str, str], ...]
Collector = Callable[[], Iterable[tuple[str, Mapping[str, str], float]]]
"""Counters kept elsewhere (e.g. by the CometD server), read at each render:
``(name, labels, value)`` for names declared in ``_HELP``."""


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._collectors: list[Collector] = []

    def add_collector(self, collector: Collector) -> None:
        """Read ``collector`` at every :meth:`value` and :meth:`render`."""
        self._collectors.append(collector)

    def _series(self, name: str) -> dict[Labels, float]:
        series = dict(self._counters.get(name, {}))
        for collector in self._collectors:
            for sample_name, labels, count in collector():
                assert sample_name in _HELP, f"undeclared metric {sample_name}"
                if sample_name == name:
                    key = tuple(sorted(labels.items()))
                    series[key] = series.get(key, 0.0) + count
        return series

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        assert name in _HELP, f"undeclared metric {name}"
        self._counters[name][tuple(sorted(labels.items()))] += amount

    def value(self, name: str, **labels: str) -> float:
        """The sum over every series of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(count for key, count in self._series(name).items() if wanted <= set(key))

    def render(self) -> str:
        lines = []
        for name, help_text in _HELP.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            for labels, count in sorted(self._series(name).items()):
                rendered = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
                lines.append(f"{name}{{{rendered}}} {count:g}" if rendered else f"{name} {count:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
