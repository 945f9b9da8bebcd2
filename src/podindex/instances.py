"""Container instances, from the pods' statuses to the store, written behind.

The index keeps no container statuses (they are most of a pod's status and
of its events), so it hands every pod it applies to :meth:`InstanceTracker.observe`
first. A cheap fingerprint of the statuses (container ids, which ended, the
image, the node and the IPs) says whether anything an instance shows changed;
only then are the pod's instances worked out and queued. Queued instances are
merged per pod by container id (a finished one is final), so a pod that
restarts twice between two writes loses neither run, and written in batches
off the hot path, like the pods' history (:mod:`podindex.history`).

When a pod goes, its running instances end then (:meth:`InstanceTracker.gone`).

The store keeps the last ``keep`` finished instances per container; the
tracker keeps in memory only what search needs (each pod's image digests)
and what is not written yet. Nothing here is acknowledged to anyone: a crash
loses at most the queue, and the next list of the cluster shows every pod's
running and last finished instance again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from podindex.containers import (
    DEFAULT_KEEP,
    ContainerInstance,
    InstanceHistory,
    InstanceId,
    observed,
    pod_id,
)
from podindex.model import Pod, PodKey
from podindex.store.base import PodFacts, Store, StoredInstance, StoreError

log = logging.getLogger("podindex.instances")


def pod_ips(pod: Pod) -> tuple[str, ...]:
    """Every IP the pod reports (v4 and v6), as it reports them."""
    status = pod.status
    if status.podIPs:
        return tuple(p.ip for p in status.podIPs if p.ip)
    return (status.podIP,) if status.podIP else ()


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fingerprint(pod: Pod, ips: tuple[str, ...]) -> int:
    parts: list[object] = [pod.spec.nodeName, ips]
    for status in pod.status.containerStatuses or ():
        state, last = status.state, status.lastState
        terminated = state.terminated if state is not None else None
        previous = last.terminated if last is not None else None
        parts.append(
            (
                status.containerID,
                status.imageID,
                None if terminated is None else (terminated.exitCode, terminated.finishedAt),
                None if previous is None else previous.containerID,
            )
        )
    return hash(tuple(parts))


def stored(cluster: str, uid: str, instance: ContainerInstance, seen: float) -> StoredInstance:
    ident = instance.instanceId
    return StoredInstance(
        cluster=cluster,
        uid=uid,
        pod_id=instance.containingPodId,
        container_id=ident.id,
        runtime=ident.containerRuntime,
        container_name=instance.containerName,
        node=ident.node,
        ips=instance.containerIps,
        started=instance.started,
        image_digest=instance.imageDigest,
        finished=instance.finished,
        exit_code=instance.exitCode,
        reason=instance.terminationReason,
        observed_at=seen,
    )


def shown(row: StoredInstance) -> ContainerInstance:
    return ContainerInstance(
        instanceId=InstanceId(row.runtime, row.container_id, row.node),
        containingPodId=row.pod_id,
        containerName=row.container_name,
        containerIps=row.ips,
        started=row.started,
        imageDigest=row.image_digest,
        finished=row.finished,
        exitCode=row.exit_code,
        terminationReason=row.reason,
    )


_encode = msgspec.json.Encoder().encode

Documents = tuple[str | bytes, str | bytes]
"""A pod's ``liveInstances`` and ``terminatedInstances`` as JSON arrays."""

Instances = tuple[list[ContainerInstance], list[list[ContainerInstance]]]
"""A pod's running instances, and its finished ones: a bucket per container, oldest first."""


def _split(rows: list[StoredInstance]) -> Instances:
    """Rows in the store's order (container, running first, then by end) as Instances."""
    live: list[ContainerInstance] = []
    buckets: list[list[ContainerInstance]] = []
    name = None
    for row in rows:
        if row.finished is None:
            live.append(shown(row))
            continue
        if row.container_name != name:
            name = row.container_name
            buckets.append([])
        buckets[-1].append(shown(row))
    return live, buckets


@dataclass
class InstanceStats:
    written: int = 0
    failures: int = 0
    dropped: int = 0


class InstanceTracker:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        keep: int = DEFAULT_KEEP,
        flush_interval: float = 0.5,
        batch_size: int = 5000,
        max_pending: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keep = keep
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.clock = clock
        self.stats = InstanceStats()
        self.digests: dict[PodKey, tuple[str, ...]] = {}
        """Each known pod's image digests (live pods, and dead ones until pruned)."""
        self.containers: dict[PodKey, tuple[str, ...]] = {}
        """Container names of pods known only from history (a live pod's are in its spec)."""
        self._shared: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._seen: dict[PodKey, int] = {}
        self.pending: dict[PodKey, InstanceHistory] = {}
        self.gone_at: dict[PodKey, str] = {}
        """Pods gone and not yet written so: when."""
        self._writing: tuple[dict[PodKey, InstanceHistory], dict[PodKey, str]] = ({}, {})
        """The batch being written: still read from here until it is committed."""
        self._ended: set[PodKey] = set()
        """Pods gone: a late event of theirs (which the index ignores) is ignored here too."""
        self._facts: dict[PodKey, PodFacts] = {}
        """Of each queued pod: what its export line needs, written with its instances."""

    # --- from the index -----------------------------------------------------

    def observe(self, key: PodKey, pod: Pod) -> None:
        """A pod as the cluster reports it (with its container statuses)."""
        if not pod.status.containerStatuses or key in self._ended:
            return
        ips = pod_ips(pod)
        fingerprint = _fingerprint(pod, ips)
        if self._seen.get(key) == fingerprint:
            return
        self._seen[key] = fingerprint
        found = observed(pod, ips)
        if not found:
            return
        pending = self.pending.get(key)
        if pending is None:
            pending = self.pending[key] = InstanceHistory(self.keep)
        if key not in self._facts:
            meta = pod.metadata
            created = meta.creationTimestamp or None
            self._facts[key] = PodFacts(*key, pod_id(key[1]), meta.name, meta.namespace, created)
        pending.observe(found, self.clock())
        digests = tuple(sorted({i.imageDigest for i in found if i.imageDigest}))
        known = self.digests.get(key, ())
        if not set(digests) <= set(known):
            self.digests[key] = self._share(tuple(sorted(set(known) | set(digests))))
        if len(self.pending) > self.max_pending:
            self._drop()

    def gone(self, key: PodKey, at: float) -> None:
        """The pod is gone: its running instances ended at ``at``."""
        self._seen.pop(key, None)
        self._ended.add(key)
        when = rfc3339(at)
        self.gone_at[key] = when
        pending = self.pending.get(key)
        if pending is not None:
            pending.finish_all(when)

    def forget(self, keys: Iterable[PodKey]) -> None:
        """Pods pruned from history."""
        for key in keys:
            self._ended.discard(key)
            self.digests.pop(key, None)
            self.containers.pop(key, None)

    def load(self, facets: Iterable[tuple[str, str, str, str]]) -> None:
        """What search needs of the stored instances (at start)."""
        names: dict[PodKey, set[str]] = {}
        digests: dict[PodKey, set[str]] = {}
        for cluster, uid, name, digest in facets:
            key = (cluster, uid)
            names.setdefault(key, set()).add(name)
            if digest:
                digests.setdefault(key, set()).add(digest)
        for key, found in names.items():
            self.containers[key] = self._share(tuple(sorted(found)))
        for key, found in digests.items():
            self.digests[key] = self._share(tuple(sorted(found)))

    def _share(self, values: tuple[str, ...]) -> tuple[str, ...]:
        return self._shared.setdefault(values, values)

    def _drop(self) -> None:
        """The store has been away too long: forget what is queued, and what was seen,
        so each pod's next status (and the next list) writes its instances again."""
        dropped = len(self.pending)
        self.stats.dropped += dropped
        self.pending.clear()
        self._facts.clear()
        self._seen.clear()
        log.error(
            "container instances: store unreachable and %d pods' instances queued (more than "
            "%d): dropped; each pod's are written again at its next change",
            dropped,
            self.max_pending,
        )

    # --- reading ------------------------------------------------------------

    async def of(self, keys: Collection[PodKey]) -> dict[PodKey, Instances]:
        """Each pod's instances, running and finished (a bucket per container, oldest
        first): the store's, with what is not written yet."""
        # What is queued now, taken before the store is read: a flush that commits
        # meanwhile takes it out of the queue, and the read may not show it yet.
        writing, writing_gone = self._writing
        queued_now = {
            key: (
                [q for q in (writing.get(key), self.pending.get(key)) if q is not None],
                self.gone_at.get(key) or writing_gone.get(key),
            )
            for key in keys
        }
        rows: dict[PodKey, list[StoredInstance]] = {}
        if keys:
            for row in await self.store.instances(keys):  # ordered for _split
                found = rows.get(row.pod_key)
                if found is None:
                    rows[row.pod_key] = [row]
                else:
                    found.append(row)
        answers: dict[PodKey, Instances] = {}
        for key, (queued, when) in queued_now.items():
            if not queued and when is None:
                if key in rows:
                    answers[key] = _split(rows[key])
                continue
            history = InstanceHistory(self.keep)
            for row in rows.get(key, ()):
                history.add(shown(row), row.observed_at)
            for newer in queued:
                history.merge(newer)
            if when is not None:
                history.finish_all(when)
            answers[key] = (history.live(), history.terminated())
        return answers

    def queued(self, keys: Collection[PodKey]) -> set[PodKey]:
        """Those of ``keys`` with something not yet written: the store's documents of
        the others are whole."""
        writing, writing_gone = self._writing
        queues: tuple[Collection[PodKey], ...] = (self.pending, writing, self.gone_at, writing_gone)
        if sum(map(len, queues)) < len(keys):  # nearly always: look the few queued up
            asked = set(keys)
            return {k for queue in queues for k in queue if k in asked}
        return {k for k in keys if any(k in queue for queue in queues)}

    async def documents(self, keys: Sequence[PodKey]) -> Sequence[Documents | None]:
        """Each pod's instances as the search API's JSON, in ``keys``' order (None for
        a pod with none): the store keeps each pod's ready; pods with instances not
        yet written are merged here instead."""
        queued = self.queued(keys)
        if not queued:
            return await self.store.instance_documents(keys)
        plain = [k for k in keys if k not in queued]
        stored = iter(await self.store.instance_documents(plain) if plain else ())
        merged = await self.merged_documents(queued)
        return [merged.get(k) if k in queued else next(stored) for k in keys]

    async def merged_documents(self, keys: Collection[PodKey]) -> dict[PodKey, Documents]:
        """:meth:`documents` of queued pods: the store's instances with the queue's."""
        return {
            key: (_encode(running), _encode([{"instances": bucket} for bucket in finished]))
            for key, (running, finished) in (await self.of(keys)).items()
        }

    # --- writing ------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.0
        while True:
            await asyncio.sleep(backoff or self.flush_interval)
            try:
                await self.flush()
            except StoreError as exc:
                self.stats.failures += 1
                if not backoff:
                    log.warning("container instances: cannot write (%s); retrying", exc)
                backoff = min(max(backoff * 2, 0.5), 30.0)
            except Exception:  # a bug must not stop instance history for good
                backoff = min(max(backoff * 2, 0.5), 30.0)
                log.exception("container instances: writing failed unexpectedly")
            else:
                backoff = 0.0

    async def flush(self) -> None:
        """Write what is queued, ``batch_size`` pods a transaction (a first list queues
        every pod: one transaction of them all would hold all their rows at once); on
        failure the rest stays queued (under anything newer)."""
        keys = [*self.pending, *(k for k in self.gone_at if k not in self.pending)]
        for start in range(0, len(keys), self.batch_size):
            chunk = keys[start : start + self.batch_size]
            pending = {k: self.pending.pop(k) for k in chunk if k in self.pending}
            gone = {k: self.gone_at.pop(k) for k in chunk if k in self.gone_at}
            if pending or gone:
                await self._write(pending, gone)

    async def _write(self, pending: dict[PodKey, InstanceHistory], gone: dict[PodKey, str]) -> None:
        rows = [
            stored(*key, i, found.seen.get(i.instanceId.id, 0.0))
            for key, found in pending.items()
            for i in found.by_id.values()
        ]
        facts = [self._facts.pop(k) for k in pending if k in self._facts]
        self._writing = (pending, gone)
        try:
            await self.store.write_instances(
                rows, [(*key, at) for key, at in gone.items()], self.keep, facts
            )
        except BaseException:
            for found in facts:
                self._facts.setdefault((found.cluster, found.uid), found)
            for key, older in pending.items():  # back in the queue, under anything newer
                newer = self.pending.get(key)
                if newer is not None:
                    older.merge(newer)
                self.pending[key] = older
            for key, at in gone.items():
                self.gone_at.setdefault(key, at)
            raise
        finally:
            self._writing = ({}, {})
        self.stats.written += len(rows)
