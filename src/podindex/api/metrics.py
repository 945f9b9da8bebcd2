"""Prometheus metrics: counters the API increments, and watcher stats read at scrape time.

The watchers keep plain counters (:class:`podindex.kube.watcher.WatchStats`);
a custom collector turns them into metric families when Prometheus scrapes,
so the watch loop never touches prometheus_client.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from podindex.service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


_OUTCOMES = {200: "found", 400: "bad_request", 404: "not_found", 409: "ambiguous", 503: "not_ready"}


class Metrics:
    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(service))
        self.lookup_outcomes: dict[int, int] = dict.fromkeys(_OUTCOMES, 0)
        """Lookups by HTTP status. Plain ints: the hot path cannot afford a lock per request
        (one event loop thread increments them; a scrape reads them)."""
        self.registry.register(LookupCollector(self.lookup_outcomes))

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
