"""The running service: the index, the clusters that feed it, its history, its housekeeping.

The API's lifespan owns :meth:`Service.run`; every background task lives in
its task group and ends with it. History is loaded before the watchers start,
so their first lists reconcile it with the clusters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import msgspec

from podindex import heap
from podindex.cluster import ClusterSync, WatchOptions
from podindex.history import HistoryWriter
from podindex.index import Index, PodRecord
from podindex.instances import InstanceTracker
from podindex.integrations import Integrations
from podindex.ipsets import IpSets, IpSetSpec
from podindex.kube.client import KubeClient
from podindex.kube.config import ClusterAccess, discover_access, explicit_access
from podindex.kube.errors import ConfigError
from podindex.podsearch import Facts, PastPod, PastPods, Search, ips_of
from podindex.sealing import Sealer, SealingError
from podindex.settings import Settings
from podindex.store.base import StoreError, open_store

log = logging.getLogger("podindex.service")


@dataclass
class Service:
    settings: Settings
    index: Index = field(init=False)
    history: HistoryWriter = field(init=False)
    clusters: dict[str, ClusterSync] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    expiry_interval: float = 1.0
    integrations: Integrations = field(init=False)
    ipsets: IpSets = field(init=False)
    instances: InstanceTracker = field(init=False)
    past: PastPods = field(default_factory=PastPods, init=False)
    search: Search = field(init=False)
    past_loaded: bool = field(default=False, init=False)
    ipsets_loaded: bool = field(default=False, init=False)
    ipset_changes: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    """One change to the IP sets at a time (the API's, and the store's reconcile)."""
    integration_clusters: set[str] = field(default_factory=set)
    """Clusters that are integrations: readiness does not wait for them."""
    _group: asyncio.TaskGroup | None = field(default=None, init=False)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.index = Index(grace_seconds=self.settings.grace_period)
        self.history = HistoryWriter(
            open_store(self.settings.store, writer_process=self.settings.store_writer_process),
            self.index,
            retention=self.settings.retention,
        )
        key_file = self.settings.secret_key_file
        try:
            sealer = Sealer.from_file(key_file) if key_file else None
        except SealingError as exc:
            raise ConfigError(f"secret_key_file: {exc}") from None
        self.integrations = Integrations(self, sealer)
        # Revisions from the clock: a client's revision from before a restart is older
        # than any issued now, so it resyncs (see podindex.ipsets).
        self.ipsets = IpSets(self.index, revision_base=int(time.time()) * 1_000_000)
        self.index.observers.append(self.ipsets.observe)
        self.instances = InstanceTracker(self.history.store, keep=self.settings.instance_history)
        self.index.status_observer = self.instances.observe
        self.index.observers.append(self.past.observe)
        self.index.observers.append(self._pod_gone)
        self.search = Search(
            self.index, self.past, Facts(self.cluster_name, self.instances.digests)
        )

    def _pod_gone(self, old: PodRecord | None, new: PodRecord | None, now: float) -> None:
        if new is None and old is not None:
            self.instances.gone(old.key, now)

    def cluster_name(self, cluster_id: str) -> str:
        """An integration's name; the watched cluster's id otherwise."""
        row = self.integrations.rows.get(cluster_id)
        return row.name if row is not None else cluster_id

    _ready: bool = field(default=False, init=False)

    @property
    def ready(self) -> bool:
        """History is loaded and every configured cluster finished its initial sync.

        Integrations do not count: one unreachable registered cluster must not
        take every lookup down; each reports its own health instead. Without
        watching (a broker only), loaded history is enough. Asked on every
        lookup: once true it stays true until a configured cluster is added.
        """
        if not self._ready:
            core = [c for i, c in self.clusters.items() if i not in self.integration_clusters]
            synced = all(c.ready for c in core)
            watching = bool(core) or not self.settings.watch
            self._ready = self.history.loaded and watching and synced
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

    async def add_cluster(
        self,
        cluster_id: str,
        access: ClusterAccess,
        options: WatchOptions | None = None,
        *,
        integration: bool = False,
    ) -> ClusterSync:
        """Watch one more cluster (at once if the service is running)."""
        s = self.settings
        if cluster_id in self.clusters:
            raise ValueError(f"cluster {cluster_id} is already watched")
        sync = ClusterSync(
            cluster_id,
            KubeClient(access),
            self.index,
            options
            or WatchOptions(
                namespace=s.namespace,
                label_selector=s.selector,
                page_size=s.page_size,
                stall_timeout=s.stall_timeout,
            ),
        )
        self.clusters[cluster_id] = sync
        if integration:
            self.integration_clusters.add(cluster_id)
        else:
            self._ready = False
        if self._group is not None:
            self._start(sync)
        return sync

    async def remove_cluster(self, cluster_id: str, *, forget: bool) -> None:
        """Stop a cluster's watchers; with ``forget`` its pods leave the index (recorded dead)."""
        sync = self.clusters.pop(cluster_id, None)
        self.integration_clusters.discard(cluster_id)
        task = self._tasks.pop(cluster_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if sync is not None:
            await sync.client.close()
        if forget:
            self.index.forget_cluster(cluster_id, time.time())

    def _start(self, sync: ClusterSync) -> None:
        assert self._group is not None
        task = self._group.create_task(self._watch(sync), name=f"cluster {sync.cluster_id}")
        self._tasks[sync.cluster_id] = task

    async def _watch(self, sync: ClusterSync) -> None:
        """One cluster's watchers. A bug that stops an integration's is logged (its health
        shows it) rather than taking the service and the other clusters down."""
        try:
            await sync.run()
        except Exception:
            if sync.cluster_id not in self.integration_clusters:
                raise
            log.exception("cluster %s: watchers stopped by an unexpected error", sync.cluster_id)

    async def run(self) -> None:
        """Load history, then watch every cluster, write history and expire grace entries."""
        try:
            await self._load_history()
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self.history.run(), name="history")
                group.create_task(self.instances.run(), name="container instances")
                group.create_task(self._prune_past_loop(), name="past pods retention")
                for sync in self.clusters.values():
                    self._start(sync)
                group.create_task(self._expire_loop(), name="expiry")
                group.create_task(
                    self.integrations.run(reconcile_every=self.settings.reconcile_interval),
                    name="integration health",
                )
                group.create_task(self._reconcile_ipsets_loop(), name="ip sets from the store")
                group.create_task(
                    heap.keep_frozen(lambda: self.ready, lambda: len(self.index)),
                    name="heap freeze",
                )
        finally:
            self._group = None
            self._tasks.clear()
            for sync in self.clusters.values():
                await sync.client.close()
            if self.integrations.loaded:
                try:  # each integration's last sync and error, for the next start
                    await asyncio.wait_for(self.integrations.tick(), 5.0)
                except TimeoutError:
                    log.warning("integrations: health not saved at shutdown (store too slow)")
            await self._close_history()

    async def _load_history(self) -> None:
        """Open the store and load it, retrying while it is unreachable (not ready till then)."""
        delay = 1.0
        while True:
            try:
                await self.history.store.open()
                await self.integrations.load()
                # Stored objects carry the statuses of when they were written: stale
                # instances. The first list shows the current ones.
                observer, self.index.status_observer = self.index.status_observer, None
                try:
                    await self.history.load(set(self.clusters))
                finally:
                    self.index.status_observer = observer
                await self._load_past()
                await self._load_ipsets()
                return
            except StoreError as exc:
                log.error(
                    "history store %s unavailable (%s); retrying in %.0fs",
                    self.history.store.url,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _load_past(self) -> None:
        """Search's view of history: instances' facets and the pods that died."""
        store = self.history.store
        self.instances.load(await store.instance_facets())
        dead = await store.dead_pods(time.time() - self.settings.retention)
        containers = self.instances.containers
        self.past.load(
            PastPod(
                key=row.key,
                namespace=row.namespace,
                name=row.name,
                node=row.node,
                ips=row.ips or ips_of(row.pod_ip),
                created=row.created_at,
                labels=row.labels,
                workload_kind=row.workload_kind,
                workload_name=row.workload_name,
                containers=containers.get(row.key, ()),
                deleted_at=row.deleted_at or row.last_seen,
                seq=0,
            )
            for row in dead
            if row.key not in self.index.pods
        )
        for key in [k for k in containers if k not in self.past.pods]:
            del containers[key]  # a live pod's are in its spec
        self.past_loaded = True

    async def _prune_past_loop(self) -> None:
        while True:
            await asyncio.sleep(60.0)
            gone = self.past.prune(time.time() - self.settings.retention)
            self.instances.forget(gone)

    async def _load_ipsets(self) -> None:
        """The IP sets saved in the store, over the pods history brought back; the first
        sync then moves them to what the cluster holds."""
        await self.reconcile_ipsets()
        self.ipsets_loaded = True

    async def reconcile_ipsets(self) -> None:
        """Make the IP sets those the store holds: sets made, changed or deleted through
        another replica sharing it (and, at start, every saved set)."""
        now = time.time()
        stored: dict[str, IpSetSpec] = {}
        for name, spec_json in await self.history.store.ipsets():
            try:
                stored[name] = msgspec.json.decode(spec_json, type=IpSetSpec)
            except msgspec.DecodeError as exc:
                log.error("IP set %s: stored spec unreadable, skipped: %s", name, exc)
        for name in [n for n in self.ipsets.sets if n not in stored]:
            self.ipsets.delete(name)
            log.info("IP set %s: deleted elsewhere", name)
        for name, spec in stored.items():
            current = self.ipsets.sets.get(name)
            if current is None or current.spec != spec:
                self.ipsets.put(spec, now)

    async def _reconcile_ipsets_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            try:
                async with self.ipset_changes:
                    await self.reconcile_ipsets()
            except StoreError as exc:
                log.warning("IP sets: store unavailable (%s); retrying", exc)
            except Exception:  # a bug here must not stop the watchers beside it
                log.exception("IP sets: reconcile failed; retrying")

    async def _close_history(self) -> None:
        """Write what is pending (briefly: a stopping service must stop), then close."""
        try:
            if self.history.loaded:
                await asyncio.wait_for(self.history.flush(), 10.0)
                await asyncio.wait_for(self.instances.flush(), 5.0)
        except (StoreError, TimeoutError) as exc:
            log.error(
                "history: %d changes not written at shutdown (%s)", len(self.history.pending), exc
            )
        finally:
            await self.history.store.close()

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.expiry_interval)
            now = time.time()
            try:
                self.index.expire(now)
                self.ipsets.expire(now)
            except Exception:  # a bug here must not stop the watchers beside it
                log.exception("expiring grace-period entries failed; retrying next second")
