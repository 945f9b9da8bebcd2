"""The running service: the index, the clusters that feed it, and its housekeeping.

The API's lifespan owns :meth:`Service.run`; every background task lives in
its task group and ends with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from podindex.cluster import ClusterSync, WatchOptions
from podindex.index import Index
from podindex.kube.client import KubeClient
from podindex.kube.config import ClusterAccess, discover_access, explicit_access
from podindex.kube.errors import ConfigError
from podindex.settings import Settings

log = logging.getLogger("podindex.service")


@dataclass
class Service:
    settings: Settings
    index: Index = field(init=False)
    clusters: dict[str, ClusterSync] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    expiry_interval: float = 1.0

    def __post_init__(self) -> None:
        self.index = Index(grace_seconds=self.settings.grace_period)

    _ready: bool = field(default=False, init=False)

    @property
    def ready(self) -> bool:
        """Every configured cluster finished its initial sync (and there is one).

        Asked on every lookup: once true it stays true until a cluster is added.
        """
        if not self._ready:
            self._ready = bool(self.clusters) and all(c.ready for c in self.clusters.values())
        return self._ready

    async def resolve_access(self) -> ClusterAccess:
        s = self.settings
        if s.server:
            return explicit_access(s.server, token_file=s.token_file, ca_file=s.ca_file)
        access = await discover_access(s.kubeconfig, s.context)
        if access is None:
            raise ConfigError(
                "no cluster configured: set --kubeconfig/KUBECONFIG, run in a cluster, "
                "give --server, or use `podindex demo`"
            )
        return access

    async def add_cluster(self, cluster_id: str, access: ClusterAccess) -> ClusterSync:
        s = self.settings
        sync = ClusterSync(
            cluster_id,
            KubeClient(access),
            self.index,
            WatchOptions(
                namespace=s.namespace,
                label_selector=s.selector,
                page_size=s.page_size,
                stall_timeout=s.stall_timeout,
            ),
        )
        self.clusters[cluster_id] = sync
        self._ready = False
        return sync

    async def run(self) -> None:
        """Watch every cluster and expire grace entries, until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for sync in self.clusters.values():
                    group.create_task(sync.run(), name=f"cluster {sync.cluster_id}")
                group.create_task(self._expire_loop(), name="expiry")
        finally:
            for sync in self.clusters.values():
                await sync.client.close()

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.expiry_interval)
            try:
                self.index.expire(time.time())
            except Exception:  # a bug here must not stop the watchers beside it
                log.exception("expiring grace-period entries failed; retrying next second")
