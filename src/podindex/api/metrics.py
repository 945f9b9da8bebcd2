"""Prometheus metrics: counters the API increments, and watcher stats read at scrape time.

The watchers keep plain counters (:class:`podindex.kube.watcher.WatchStats`);
a custom collector turns them into metric families when Prometheus scrapes,
so the watch loop never touches prometheus_client.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from podindex.service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServiceCollector(Collector):
    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        index = self.service.index
        pods = GaugeMetricFamily("podindex_pods", "Pods in the index", labels=["cluster"])
        counts: dict[str, int] = {}
        for key in index.pods:
            counts[key[0]] = counts.get(key[0], 0) + 1
        for cluster, count in sorted(counts.items()):
            pods.add_metric([cluster], count)
        yield pods
        ips = GaugeMetricFamily("podindex_ips", "IP addresses with an answer (live, grace or node)")
        ips.add_metric([], len(index.answers))
        yield ips
        labels = ["cluster", "resource"]
        families = {
            "events": CounterMetricFamily(
                "podindex_watch_events", "Watch events applied", labels=labels
            ),
            "lists": CounterMetricFamily("podindex_watch_lists", "Completed LISTs", labels=labels),
            "relists_410": CounterMetricFamily(
                "podindex_watch_expired", "410 Gone answers (relists)", labels=labels
            ),
            "errors": CounterMetricFamily(
                "podindex_watch_errors", "Failed list/watch attempts", labels=labels
            ),
            "stalls": CounterMetricFamily(
                "podindex_watch_stalls", "Watch streams restarted for silence", labels=labels
            ),
        }
        synced = GaugeMetricFamily(
            "podindex_cluster_synced", "1 once the cluster's pods are listed", labels=["cluster"]
        )
        for cluster_id, sync in sorted(self.service.clusters.items()):
            synced.add_metric([cluster_id], 1.0 if sync.ready else 0.0)
            for resource, stats in sync.stats().items():
                for attr, family in families.items():
                    family.add_metric([cluster_id, resource], getattr(stats, attr))
        yield from families.values()
        yield synced
        updates = CounterMetricFamily(
            "podindex_index_updates",
            "Pod watch events by what the index did with them (applied, ignored as stale or "
            "replayed) and LISTs reconciled (relisted)",
            labels=["cluster", "result"],
        )
        for cluster_id, sync in sorted(self.service.clusters.items()):
            for result, count in sync.pod_sink.updates.items():
                updates.add_metric([cluster_id, result], count)
        yield updates
        yield from self._history()
        yield from self._integrations()

    def _integrations(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Per registered cluster: health (0 disconnected/pending, 1 degraded, 2 connected)."""
        index = self.service.index
        tracked = GaugeMetricFamily(
            "podindex_pods_tracked",
            "Pods in the index by cluster and namespace",
            labels=["cluster", "namespace"],
        )
        by_namespace: dict[tuple[str, str], int] = {}
        for record in index.pods.values():
            pair = (record.key[0], record.namespace)
            by_namespace[pair] = by_namespace.get(pair, 0) + 1
        for (cluster, namespace), count in sorted(by_namespace.items()):
            tracked.add_metric([cluster, namespace], count)
        yield tracked
        status = GaugeMetricFamily(
            "podindex_integration_status",
            "Connection status of a registered cluster (0 disconnected/pending, 1 degraded, "
            "2 connected)",
            labels=["cluster", "name"],
        )
        reconnects = CounterMetricFamily(
            "podindex_watch_reconnections",
            "Watch failures of a registered cluster after which its watchers reconnected",
            labels=["cluster"],
        )
        failures = GaugeMetricFamily(
            "podindex_integration_consecutive_failures",
            "Failed list/watch attempts since the last success",
            labels=["cluster"],
        )
        last_sync = GaugeMetricFamily(
            "podindex_integration_last_sync_timestamp_seconds",
            "Unix time of the last successful list or watch of a registered cluster (0: never)",
            labels=["cluster"],
        )
        integrations = self.service.integrations
        for cluster, monitor in sorted(integrations.monitors.items()):
            row = integrations.rows.get(cluster)
            status.add_metric([cluster, row.name if row else ""], monitor.value)
            reconnects.add_metric([cluster], monitor.reconnects)
            failures.add_metric([cluster], monitor.consecutive_failures)
            last_sync.add_metric([cluster], monitor.last_sync or 0.0)
        yield status
        yield reconnects
        yield failures
        yield last_sync

    def _history(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        history = self.service.history
        stats = history.stats
        for name, help_text, value in (
            ("podindex_history_writes", "Pod rows written to the history store", stats.written),
            ("podindex_history_batches", "Batches committed to the history store", stats.batches),
            ("podindex_history_failures", "Failed writes to the history store", stats.failures),
            (
                "podindex_history_dropped",
                "Pod changes dropped while the store was down (then resynced)",
                stats.dropped,
            ),
            ("podindex_history_resyncs", "Whole-index writes after drops", stats.resyncs),
            (
                "podindex_history_rejected",
                "Pod changes the store refused (bad data); logged, not retried",
                stats.rejected,
            ),
            ("podindex_history_pruned", "Dead pods pruned by retention", stats.pruned),
        ):
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], value)
            yield counter
        pending = GaugeMetricFamily(
            "podindex_history_pending", "Pod changes waiting to be written to the store"
        )
        pending.add_metric([], len(history.pending) + len(history.index.changes or ()))
        yield pending
        success = GaugeMetricFamily(
            "podindex_history_last_success_seconds",
            "Unix time of the last successful write to the history store (0: none yet)",
        )
        success.add_metric([], stats.last_success)
        yield success
        yield from self._instances()

    def _instances(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        tracker = self.service.instances
        stats = tracker.stats
        for name, help_text, value in (
            ("podindex_instances_writes", "Container instances written", stats.written),
            ("podindex_instances_failures", "Failed writes of container instances", stats.failures),
            (
                "podindex_instances_dropped",
                "Pods whose queued instances were dropped while the store was down",
                stats.dropped,
            ),
        ):
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], value)
            yield counter
        pending = GaugeMetricFamily(
            "podindex_instances_pending", "Pods with container instances waiting to be written"
        )
        pending.add_metric([], len(tracker.pending))
        yield pending
        past = GaugeMetricFamily(
            "podindex_search_past_pods", "Deleted pods kept searchable (within --retention)"
        )
        past.add_metric([], len(self.service.past))
        yield past


_OUTCOMES = {200: "found", 400: "bad_request", 404: "not_found", 409: "ambiguous", 503: "not_ready"}


class Metrics:
    def __init__(self, service: Service, auth_outcomes: dict[str, int] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(service))
        self.lookup_outcomes: dict[int, int] = dict.fromkeys(_OUTCOMES, 0)
        """Lookups by HTTP status. Plain ints: the hot path cannot afford a lock per request
        (one event loop thread increments them; a scrape reads them)."""
        self.registry.register(LookupCollector(self.lookup_outcomes))
        self.latency = RouteLatency()
        self.registry.register(self.latency)
        if auth_outcomes is not None:
            self.registry.register(AuthCollector(auth_outcomes))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LookupCollector(Collector):
    def __init__(self, outcomes: dict[int, int]) -> None:
        self.outcomes = outcomes

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "podindex_lookups", "IP lookups by outcome", labels=["outcome"]
        )
        for status, outcome in _OUTCOMES.items():
            family.add_metric([outcome], self.outcomes[status])
        yield family
        hits = CounterMetricFamily(
            "podindex_ip_lookups",
            "IP lookups that found an answer (hit: a pod, a node, or an ambiguous IP) or not",
            labels=["result"],
        )
        hits.add_metric(["hit"], self.outcomes[200] + self.outcomes[409])
        hits.add_metric(["miss"], self.outcomes[404])
        yield hits


LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


class RouteLatency(Collector):
    """Request latency by route, as a histogram; plain ints, no lock (one event loop)."""

    def __init__(self) -> None:
        self.series: dict[str, list[float]] = {}
        """route -> per-bucket counts (not cumulative), then +Inf, then the sum."""

    def observe(self, route: str, seconds: float) -> None:
        counts = self.series.get(route)
        if counts is None:
            counts = self.series[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "podindex_request_duration_seconds",
            "HTTP request latency by route (the route's path template)",
            labels=["route"],
        )
        for route, counts in sorted(self.series.items()):
            cumulative = list(itertools.accumulate(counts[:-1]))
            buckets = [(repr(bound), cumulative[i]) for i, bound in enumerate(LATENCY_BUCKETS)] + [
                ("+Inf", cumulative[-1])
            ]
            family.add_metric([route], buckets, counts[-1])
        yield family


class TimedRoutes:
    """ASGI middleware: time every HTTP request, labelled by the route that answered it."""

    def __init__(self, app: ASGIApp, latency: RouteLatency) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) if route is not None else None
            self.latency.observe(path or "unmatched", time.perf_counter() - started)


class AuthCollector(Collector):
    def __init__(self, outcomes: dict[str, int]) -> None:
        self.outcomes = outcomes

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "podindex_api_auth",
            "Checks of API callers that needed a role, by outcome",
            labels=["outcome"],
        )
        for outcome, count in self.outcomes.items():
            family.add_metric([outcome], count)
        yield family
