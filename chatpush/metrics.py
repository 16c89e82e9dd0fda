"""Metrics in one place, exposed in the Prometheus text format at ``/metrics``.

Each application has its own :class:`Metrics` and, in it, its own prometheus-client
``CollectorRegistry`` (tests run many applications in one process). Three kinds of series:

- counters, declared in ``_HELP`` and counted by :meth:`Metrics.inc` (a dict increment: the hot
  path pays nothing more), plus counters kept elsewhere and read at each scrape
  (:meth:`Metrics.add_collector`, e.g. the Bayeux server's);
- gauges, declared in ``_GAUGES`` and computed at scrape time only, by the sources given to
  :meth:`Metrics.add_gauges` (one aggregate database query per scrape, bounded in time, never a
  count per event); :meth:`Metrics.refresh` runs them before the text is rendered;
- histograms, declared in ``_HISTOGRAMS`` and fed by :meth:`Metrics.observe`; their labels take
  few values (a route group, a device type, a notification kind), never an id.

The registry also carries prometheus-client's process and Python collectors (CPU seconds, memory,
open files, garbage collections) and ``chatpush_build_info{version}``.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as RegistryCollector

import chatpush

log = logging.getLogger("chatpush.metrics")

_HELP = {
    "chatpush_notifications_enqueued_total": "Notifications put in the outbox, by kind.",
    "chatpush_deliveries_total": (
        "Delivery attempts, by outcome, node and device type (and source, but for chat's)."
    ),
    "chatpush_notifications_dropped_total": (
        "Notifications of a source other than chat given up after their last try, by source."
    ),
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
    "chatpush_cometd_handshakes_total": "CometD handshakes that opened a session.",
    "chatpush_cometd_messages_queued_total": "Messages queued for CometD sessions.",
    "chatpush_cometd_broadcasts_total": "Messages published to CometD channels.",
    # Agent alerts (docs/agents.md).
    "chatpush_agent_events_total": (
        "Routing events received for agent alerts, by event type and outcome (accepted, dropped"
        " by a filter, unknown)."
    ),
    "chatpush_agent_rings_total": "Devices rung for an agent's conversation.",
    "chatpush_agent_cancels_total": "Cancel-ring notifications sent to devices.",
    "chatpush_agent_rings_suppressed_total": (
        "Rings suppressed, by reason (duplicate within the window, no devices)."
    ),
    "chatpush_agent_dead_tokens_total": "Agent device tokens removed as dead, by device type.",
    "chatpush_agent_stream_connections_total": (
        "Event-stream connections, by outcome (connected, refused, lost)."
    ),
}

_GAUGES = {
    "chatpush_outbox_due": "Notifications waiting in the outbox to be delivered.",
    "chatpush_outbox_parked": "Notifications parked in the outbox for want of a node.",
    "chatpush_outbox_oldest_age_seconds": "Age of the oldest notification waiting to be "
    "delivered (0 when none waits).",
    "chatpush_reliable_triggers_outstanding": "Reliable subscriptions waiting for a refresh that "
    "acknowledges their trigger.",
    "chatpush_subscriptions_failing": "Subscriptions marked failed (resends exhausted), kept "
    "until their chat is purged.",
    "chatpush_metrics_database_ok": "1 when the last scrape's database query answered in time, "
    "else 0 (the outbox and subscription gauges are then left out).",
    "chatpush_cometd_sessions": "Open CometD sessions on this instance.",
    "chatpush_cometd_queued_bytes": "Bytes queued for every CometD session together.",
    "chatpush_nodes": "Nodes known to this instance, by group.",
    "chatpush_nodes_available": "Nodes available for delivery, by group (0: notifications of "
    "the group park or fail over).",
}

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELAY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "chatpush_request_duration_seconds": (
        "Time to answer an HTTP request, by route group (CometD long polls wait by design).",
        ("route",),
        LATENCY_BUCKETS_S,
    ),
    "chatpush_delivery_duration_seconds": (
        "Time a provider took for one delivery attempt, by device type.",
        ("device_type",),
        LATENCY_BUCKETS_S,
    ),
    "chatpush_trigger_enqueue_delay_seconds": (
        "From a chat event to the enqueue of the first trigger for it (0 when the event's own "
        "commit enqueues it; longer when push waited for a refresh or the foreground to end).",
        (),
        DELAY_BUCKETS_S,
    ),
    "chatpush_notification_delivery_delay_seconds": (
        "From the enqueue of a notification to the end of its delivery attempt, by kind.",
        ("kind",),
        DELAY_BUCKETS_S,
    ),
}

BUILD_INFO = "chatpush_build"
SCRAPE_QUERY_TIMEOUT_S = 2.0
"""A scrape waits this long for the database's aggregate query, then leaves those gauges out."""

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Mapping[str, str], float]
Collector = Callable[[], Iterable[Sample]]
"""Counters kept elsewhere (e.g. by the CometD server), read at each render:
``(name, labels, value)`` for names declared in ``_HELP``."""
GaugeSource = Callable[[], Awaitable[Iterable[Sample]]]
"""Gauges computed at scrape time: ``(name, labels, value)`` for names declared in ``_GAUGES``."""


class _Histogram:
    """One series' buckets: a count per upper bound (cumulated at render) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class Metrics:
    def __init__(self, version: str = chatpush.__version__) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[tuple[str, Labels], _Histogram] = {}
        self._collectors: list[Collector] = []
        self._gauge_sources: list[GaugeSource] = []
        self._gauges: list[Sample] = []
        self.version = version
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Exporter(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def add_collector(self, collector: Collector) -> None:
        """Read ``collector`` at every :meth:`value` and :meth:`render`."""
        self._collectors.append(collector)

    def add_gauges(self, source: GaugeSource) -> None:
        """Run ``source`` at every :meth:`refresh` (each scrape), never between scrapes."""
        self._gauge_sources.append(source)

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

    def observe(self, name: str, value_s: float, **labels: str) -> None:
        """One observation of histogram ``name`` (seconds)."""
        key = (name, tuple(labels.items()))
        histogram = self._histograms.get(key)
        if histogram is None:
            _help, names, bounds = _HISTOGRAMS[name]
            assert set(labels) == set(names), f"{name} takes the labels {names}"
            key = (name, tuple((label, labels[label]) for label in names))
            histogram = self._histograms.setdefault(key, _Histogram(bounds))
            # Callers pass the labels in one order; remember that order as well.
            self._histograms[(name, tuple(labels.items()))] = histogram
        histogram.observe(value_s)

    def value(self, name: str, **labels: str) -> float:
        """The sum over every series of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(count for key, count in self._series(name).items() if wanted <= set(key))

    async def refresh(self) -> None:
        """Recompute the scrape-time gauges; a source that fails or takes longer than
        :data:`SCRAPE_QUERY_TIMEOUT_S` is left out of this scrape (and logged)."""
        gauges: list[Sample] = []
        for source in self._gauge_sources:
            try:
                samples = await asyncio.wait_for(source(), SCRAPE_QUERY_TIMEOUT_S + 1)
            except Exception as exc:
                log.warning("metrics source failed: %r", exc, extra={"action": "metrics_failed"})
                continue
            for sample in samples:
                assert sample[0] in _GAUGES, f"undeclared gauge {sample[0]}"
                gauges.append(sample)
        self._gauges = gauges

    def render(self) -> str:
        """The registry in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry).decode()

    def _families(self) -> Iterator[Metric]:
        info = InfoMetricFamily(BUILD_INFO, "The running chatpush version.")
        info.add_metric([], {"version": self.version})
        yield info
        for name, help_text in _HELP.items():
            series = self._series(name)
            names = sorted({label for key in series for label, _value in key})
            counter = CounterMetricFamily(name, help_text, labels=names)
            for key, count in sorted(series.items()):
                values = dict(key)
                counter.add_metric([values.get(label, "") for label in names], count)
            yield counter
        by_gauge: dict[str, list[Sample]] = defaultdict(list)
        for sample in self._gauges:
            by_gauge[sample[0]].append(sample)
        for name, help_text in _GAUGES.items():
            samples = by_gauge.get(name)
            if samples is None:
                continue  # its source failed (or there is none): absent, not a made-up 0
            names = sorted({label for _name, labels, _value in samples for label in labels})
            gauge = GaugeMetricFamily(name, help_text, labels=names)
            for _name, labels, value in samples:
                gauge.add_metric([labels.get(label, "") for label in names], value)
            yield gauge
        for name, (help_text, label_names, _bounds) in _HISTOGRAMS.items():
            family = HistogramMetricFamily(name, help_text, labels=list(label_names))
            seen: set[int] = set()
            for (series_name, key), histogram in sorted(
                self._histograms.items(), key=lambda item: item[0]
            ):
                if series_name != name or id(histogram) in seen:
                    continue
                seen.add(id(histogram))
                values = dict(key)
                family.add_metric(
                    [values[label] for label in label_names],
                    _cumulate(histogram),
                    histogram.total,
                )
            yield family


def _cumulate(histogram: _Histogram) -> Sequence[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return buckets


class _Exporter(RegistryCollector):
    """chatpush's own series, for the application's registry."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics._families())
