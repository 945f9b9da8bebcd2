"""The form in which the index keeps a pod: trimmed, and sharing what pods have in common.

A ReplicaSet's pods carry identical label and annotation maps, owner
references, container lists, workload identities, namespace, node and phase
strings; decoded
separately, each pod holds its own copies (~1.3 KB of 100k-pod RSS per pod).
:class:`ValueSharing` hands out one shared object per distinct value. Shared
objects are never mutated: index records are replaced, not edited.

Container statuses and conditions are dropped: they are most of a pod's
status, no lookup reads them, and keeping them would cost ~1.4 KB per pod.

Pure: no I/O.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

import msgspec

from podindex.model import Container, OwnerReference, Pod, PodStatus, Workload
from podindex.status import DisplayStatus, display_status

_K = TypeVar("_K")
_V = TypeVar("_V")

PRUNE_SLICE = 1000
"""Cache keys a pod's change looks at while a prune is under way (~1 ms)."""


class KeptPod(Pod, gc=False):
    """A pod in the form the index keeps; :meth:`ValueSharing.pod` passes one through."""

    display: DisplayStatus | None = None
    """kubectl's READY/STATUS/RESTARTS, computed before the container statuses were dropped."""


class ValueSharing:
    """Interns values among the pods of one index; forgets those no pod uses."""

    def __init__(self) -> None:
        self._maps: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._owners: dict[
            tuple[tuple[str, str, str, str, bool], ...], tuple[OwnerReference, ...]
        ] = {}
        self._containers: dict[tuple[tuple[str, str, str | None], ...], tuple[Container, ...]] = {}
        self._workloads: dict[tuple[object, ...], Workload] = {}
        self._displays: dict[tuple[object, ...], DisplayStatus] = {}
        self._prune_at = 4096
        self._pruning: list[tuple[dict[Any, Any], list[Any]]] = []
        """A prune under way: each cache with the keys of it still to look at."""

    def pod(self, pod: Pod) -> Pod:
        """A copy of ``pod`` to keep: no container statuses, repeated values shared."""
        if isinstance(pod, KeptPod):  # trimmed already, as the watcher does for LIST pages
            return pod
        meta, spec, status = pod.metadata, pod.spec, pod.status
        intern = sys.intern
        kept_meta = msgspec.structs.replace(
            meta,
            namespace=intern(meta.namespace),
            creationTimestamp=_intern_optional(meta.creationTimestamp),
            labels=self._map(meta.labels),
            annotations=self._map(meta.annotations),
            ownerReferences=self._owner_refs(meta.ownerReferences),
        )
        kept_spec = msgspec.structs.replace(
            spec,
            nodeName=intern(spec.nodeName),
            containers=self._container_list(spec.containers),
            initContainers=self._container_list(spec.initContainers),
            restartPolicy=intern(spec.restartPolicy),
        )
        kept_status = msgspec.structs.replace(
            status,
            phase=intern(status.phase),
            hostIP=intern(status.hostIP),
            startTime=_intern_optional(status.startTime),
            containerStatuses=None,
            initContainerStatuses=None,
            conditions=None,
        )
        display = self.display(pod)
        self.prune_if_due()
        return KeptPod(metadata=kept_meta, spec=kept_spec, status=kept_status, display=display)

    def display(self, pod: Pod) -> DisplayStatus:
        """kubectl's columns for ``pod``, one shared instance per distinct value (most
        running pods of a workload read the same); a kept pod's own, as computed."""
        if isinstance(pod, KeptPod) and pod.display is not None:
            return pod.display
        computed = display_status(pod)
        return self._displays.setdefault(computed.key(), computed)

    def workload(self, workload: Workload) -> Workload:
        """The shared instance equal to ``workload`` (a Deployment's pods share one)."""
        key = (
            workload.identity,
            workload.identity_source,
            workload.kind,
            workload.name,
            tuple(workload.selector_labels.items()),
        )
        return self._workloads.setdefault(key, workload)

    def prune_if_due(self) -> None:
        """Prune when the caches have doubled since the last time, a slice a call:
        all 100k+ values at once held the event loop ~110 ms."""
        if self._pruning:
            self._prune_some(PRUNE_SLICE)
        elif len(self) > self._prune_at:
            self._pruning = [(cache, list(cache)) for cache in self._caches()]
            self._prune_some(PRUNE_SLICE)

    def _map(self, values: dict[str, str]) -> dict[str, str]:
        if not values:
            return _EMPTY
        key = tuple(values.items())
        shared = self._maps.get(key)
        if shared is None:
            intern = sys.intern
            shared = {intern(k): intern(v) for k, v in key}
            self._maps[key] = shared
        return shared

    def _owner_refs(self, refs: tuple[OwnerReference, ...]) -> tuple[OwnerReference, ...]:
        if not refs:
            return ()
        # Keyed by plain values, not by the tuple itself: a key that is the value
        # would hold a second reference and the entry could never be pruned.
        key = tuple((r.kind, r.name, r.uid, r.apiVersion, r.controller) for r in refs)
        shared = self._owners.get(key)
        if shared is None:
            # A tuple of our own: the decoded pod's may outlive its use here.
            shared = self._owners[key] = tuple(list(refs))
        return shared

    def _container_list(
        self, containers: tuple[Container, ...] | None
    ) -> tuple[Container, ...] | None:
        if containers is None:
            return None
        key = tuple((c.name, c.image, c.restartPolicy) for c in containers)
        shared = self._containers.get(key)
        if shared is None:
            shared = tuple(
                Container(name=sys.intern(n), image=sys.intern(i), restartPolicy=p)
                for n, i, p in key
            )
            self._containers[key] = shared
        return shared

    def prune(self) -> None:
        """Forget values only the caches still hold, all at once."""
        self._pruning = [(cache, list(cache)) for cache in self._caches()]
        self._prune_some(None)

    def _prune_some(self, budget: int | None) -> None:
        """Look at up to ``budget`` keys (None: all) of the prune under way."""
        pruning = self._pruning
        while pruning and (budget is None or budget > 0):
            cache, keys = pruning[-1]
            n = len(keys) if budget is None else min(budget, len(keys))
            _prune(cache, keys[len(keys) - n :])
            del keys[len(keys) - n :]
            if budget is not None:
                budget -= n
            if not keys:
                pruning.pop()
        if not pruning:  # amortised: the bound doubles
            self._prune_at = max(4096, 2 * len(self))

    def _caches(self) -> list[dict[Any, Any]]:
        return [self._maps, self._owners, self._containers, self._workloads, self._displays]

    def __len__(self) -> int:
        return (
            len(self._maps)
            + len(self._owners)
            + len(self._containers)
            + len(self._workloads)
            + len(self._displays)
        )


_EMPTY: dict[str, str] = {}
"""Shared by every pod without labels (or annotations); never mutated."""


def _prune(cache: dict[_K, _V], keys: list[_K]) -> None:
    for key in keys:
        value = cache.get(key)
        # The cache's reference, ours and getrefcount's argument: nobody else's.
        if value is not None and sys.getrefcount(value) <= 3:
            del cache[key]


def _intern_optional(text: str | None) -> str | None:
    return sys.intern(text) if text is not None else None


def kept_status_equal(a: PodStatus, b: PodStatus) -> bool:
    """Equal in every status field the index keeps (container statuses aside)."""
    return (
        a.phase == b.phase
        and a.podIP == b.podIP
        and a.podIPs == b.podIPs
        and a.hostIP == b.hostIP
        and a.startTime == b.startTime
        and a.reason == b.reason
        and a.message == b.message
    )


def display_of(pod: Pod) -> DisplayStatus:
    """kubectl's columns for ``pod``: a kept pod's own, else computed (not shared)."""
    if isinstance(pod, KeptPod) and pod.display is not None:
        return pod.display
    return display_status(pod)
