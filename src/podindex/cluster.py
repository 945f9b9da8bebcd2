"""One cluster's watchers, feeding the index.

Three watchers per cluster: ReplicaSets and Jobs (metadata only, for the owner
walk) and pods. The owner lists are awaited (briefly) before pods are listed,
so the first pass already names Deployments and CronJobs; an owner that
arrives later still re-labels its pods.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from podindex.identity import controller_of
from podindex.index import Index
from podindex.kube.client import JOBS, PODS, REPLICASETS, KubeClient, Resource
from podindex.kube.watcher import EventType, Page, Sink, T, Watcher, WatchStats
from podindex.model import (
    OwnerRecord,
    PartialObjectMetadata,
    PartialObjectMetadataList,
    Pod,
    PodList,
)

log = logging.getLogger("podindex.cluster")


class PodSink:
    def __init__(self, index: Index, cluster: str, clock: Callable[[], float]) -> None:
        self.index = index
        self.cluster = cluster
        self.clock = clock
        self.updates = {"applied": 0, "ignored": 0, "relisted": 0}
        """Index updates by result: an event applied, an event ignored (stale, replayed, or
        a delete of a pod not held), a whole LIST reconciled. Read by the metrics."""

    def replace(self, items: list[Pod], resource_version: str) -> None:
        self.index.replace_pods(self.cluster, items, self.clock(), resource_version)
        self.updates["relisted"] += 1

    def apply(self, event_type: EventType, item: Pod) -> None:
        if event_type == "DELETED":
            applied = self.index.delete_pod(self.cluster, item, self.clock())
        else:
            applied = self.index.upsert_pod(self.cluster, item, self.clock())
        self.updates["applied" if applied else "ignored"] += 1


class OwnerSink:
    def __init__(
        self,
        index: Index,
        cluster: str,
        kind: Literal["ReplicaSet", "Job"],
        clock: Callable[[], float],
    ) -> None:
        self.index = index
        self.cluster = cluster
        self.kind: Literal["ReplicaSet", "Job"] = kind
        self.clock = clock

    def _record(self, item: PartialObjectMetadata) -> OwnerRecord:
        meta = item.metadata
        return OwnerRecord(
            cluster=self.cluster,
            kind=self.kind,
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            owner=controller_of(meta),
        )

    def replace(self, items: list[PartialObjectMetadata], resource_version: str) -> None:
        records = [self._record(i) for i in items]
        self.index.replace_owners(self.cluster, self.kind, records, self.clock())

    def apply(self, event_type: EventType, item: PartialObjectMetadata) -> None:
        if event_type == "DELETED":
            self.index.delete_owner(self.cluster, item.metadata.uid, self.clock())
        else:
            self.index.upsert_owner(self._record(item), self.clock())


@dataclass
class WatchOptions:
    namespace: str | None = None
    label_selector: str | None = None
    page_size: int = 500
    stall_timeout: float = 90.0
    owner_wait: float = 10.0


class ClusterSync:
    """Runs the watchers of one cluster until cancelled."""

    def __init__(
        self,
        cluster_id: str,
        client: KubeClient,
        index: Index,
        options: WatchOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster_id = cluster_id
        self.client = client
        self.options = options or WatchOptions()
        self.pod_sink = PodSink(index, cluster_id, clock)
        keep = index.sharing.pod

        def trim(pod: Pod) -> Pod:
            # The statuses are dropped here, as each pod is decoded: whoever
            # follows container instances sees them first.
            observer = index.status_observer
            if observer is not None:
                observer((cluster_id, pod.metadata.uid), pod)
            return keep(pod)

        self.pods: Watcher[Pod] = self._watcher(PODS, Pod, PodList, self.pod_sink, trim=trim)
        # Owners are not filtered by the pods' label selector: their labels differ.
        self.replicasets: Watcher[PartialObjectMetadata] = self._watcher(
            REPLICASETS,
            PartialObjectMetadata,
            PartialObjectMetadataList,
            OwnerSink(index, cluster_id, "ReplicaSet", clock),
        )
        self.jobs: Watcher[PartialObjectMetadata] = self._watcher(
            JOBS,
            PartialObjectMetadata,
            PartialObjectMetadataList,
            OwnerSink(index, cluster_id, "Job", clock),
        )

    def _watcher(
        self,
        resource: Resource,
        item_type: type[T],
        list_type: type[Page[T]],
        sink: Sink[T],
        trim: Callable[[T], T] | None = None,
    ) -> Watcher[T]:
        opts = self.options
        return Watcher(
            self.client,
            resource,
            item_type,
            list_type,
            sink,
            namespace=opts.namespace,
            label_selector=opts.label_selector if resource is PODS else None,
            page_size=opts.page_size,
            stall_timeout=opts.stall_timeout,
            trim=trim,
        )

    @property
    def ready(self) -> bool:
        """Pods have been listed once: lookups answer for this cluster."""
        return self.pods.synced.is_set()

    def stats(self) -> dict[str, WatchStats]:
        return {
            "pods": self.pods.stats,
            "replicasets": self.replicasets.stats,
            "jobs": self.jobs.stats,
        }

    async def run(self) -> None:
        log.info("cluster %s: syncing from %s", self.cluster_id, self.client.access.source)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.replicasets.run(), name=f"{self.cluster_id}/replicasets")
            group.create_task(self.jobs.run(), name=f"{self.cluster_id}/jobs")
            owners_synced = asyncio.gather(self.replicasets.synced.wait(), self.jobs.synced.wait())
            try:
                await asyncio.wait_for(owners_synced, self.options.owner_wait)
            except TimeoutError:
                log.warning(
                    "cluster %s: owners not listed after %.0fs; pods first, identities refine later",
                    self.cluster_id,
                    self.options.owner_wait,
                )
            group.create_task(self.pods.run(), name=f"{self.cluster_id}/pods")
