"""Container instances of a pod, as the search/export API shows them (``StoragePod``).

An instance is one run of one container: one container id. A pod's status
says which instance runs now (``state``) and which ran before
(``lastState.terminated``); :class:`InstanceHistory` merges what each
status showed, keyed by container id, so a restart is recorded whether the
watch saw the transition or only the next status, and never twice. Init
containers are not instances (the original leaves them out too).

Ids are stable across restarts of podindex: a pod's ``id`` is a UUIDv5 of
its Kubernetes uid, a workload's of (cluster, kind, namespace, name).

Pure: no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable

import msgspec

from podindex.model import ContainerStatus, Pod, Workload

RUNTIMES = {
    "docker": "DOCKER_CONTAINER_RUNTIME",
    "cri-o": "CRIO_CONTAINER_RUNTIME",
    "containerd": "CONTAINERD_CONTAINER_RUNTIME",
}
"""Kubernetes' container id schemes and the runtime each names (others: UNKNOWN)."""
UNKNOWN_RUNTIME = "UNKNOWN_CONTAINER_RUNTIME"
DEFAULT_KEEP = 10

_PODS = hashlib.sha1(uuid.uuid5(uuid.NAMESPACE_URL, "https://podindex.dev/ids/pod").bytes)
_WORKLOADS = hashlib.sha1(uuid.uuid5(uuid.NAMESPACE_URL, "https://podindex.dev/ids/workload").bytes)
"""SHA-1 states that have hashed each id namespace: an id copies one and hashes the name."""
_VARIANT = "89ab89ab89ab89ab"
"""The first hex digit of the fourth group once the RFC 4122 variant bits are set."""


def uuid5(namespace: hashlib._Hash, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` without the UUID object: an export
    computes one or two a pod, and the object costs twice the hash."""
    digest = namespace.copy()
    digest.update(name.encode())
    x = digest.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[int(x[16], 16)]}{x[17:20]}-{x[20:32]}"


def pod_id(uid: str) -> str:
    return uuid5(_PODS, uid)


def workload_id(cluster: str, namespace: str, workload: Workload) -> str | None:
    """The owning workload's id (Deployment, StatefulSet, DaemonSet, CronJob, Job, …);
    None for a pod nothing owns."""
    if not workload.kind:
        return None
    return owner_id(cluster, namespace, workload.kind, workload.name)


@functools.lru_cache(maxsize=65536)
def owner_id(cluster: str, namespace: str, kind: str, name: str) -> str:
    # Cached: many pods share an owner, and an export asks once a pod.
    return uuid5(_WORKLOADS, f"{cluster}/{kind}/{namespace}/{name}")


def runtime_and_id(container_id: str) -> tuple[str, str]:
    """``containerd://3f9a…`` as (``CONTAINERD_CONTAINER_RUNTIME``, ``3f9a…``)."""
    scheme, sep, bare = container_id.partition("://")
    if not sep:
        return UNKNOWN_RUNTIME, container_id
    return RUNTIMES.get(scheme, UNKNOWN_RUNTIME), bare


def image_digest(image_id: str) -> str | None:
    """The ``sha256:…`` part of an ``imageID`` (``registry/app@sha256:…``, ``sha256:…``,
    ``docker-pullable://…@sha256:…``); None when there is none."""
    at = image_id.rfind("sha256:")
    return image_id[at:] if at != -1 else None


class InstanceId(msgspec.Struct, frozen=True):
    containerRuntime: str
    id: str
    node: str


class ContainerInstance(msgspec.Struct, frozen=True, omit_defaults=False):
    """Every field always present, null where empty, as the original's gateway emits."""

    instanceId: InstanceId
    containingPodId: str
    containerName: str
    containerIps: tuple[str, ...]
    started: str | None
    imageDigest: str | None
    finished: str | None
    exitCode: int | None
    terminationReason: str | None


def observed(pod: Pod, ips: Iterable[str]) -> list[ContainerInstance]:
    """The instances a pod's status shows: each container's current one (if it has a
    container id) and its last terminated one."""
    uid, node = pod.metadata.uid, pod.spec.nodeName
    held = tuple(ips)
    found: list[ContainerInstance] = []
    for status in pod.status.containerStatuses or ():
        state = status.state
        if status.containerID:
            terminated = state.terminated if state is not None else None
            running = state.running if state is not None else None
            found.append(
                _instance(
                    status,
                    status.containerID,
                    uid,
                    node,
                    held,
                    started=(terminated.startedAt if terminated else None)
                    or (running.startedAt if running else None),
                    finished=terminated.finishedAt or "" if terminated else None,
                    exit_code=terminated.exitCode if terminated else None,
                    reason=terminated.reason or None if terminated else None,
                )
            )
        last = status.lastState.terminated if status.lastState is not None else None
        if last is not None and last.containerID:
            found.append(
                _instance(
                    status,
                    last.containerID,
                    uid,
                    node,
                    held,
                    started=last.startedAt,
                    finished=last.finishedAt or "",
                    exit_code=last.exitCode,
                    reason=last.reason or None,
                )
            )
    return found


def _instance(
    status: ContainerStatus,
    container_id: str,
    uid: str,
    node: str,
    ips: tuple[str, ...],
    *,
    started: str | None,
    finished: str | None,
    exit_code: int | None,
    reason: str | None,
) -> ContainerInstance:
    runtime, bare = runtime_and_id(container_id)
    return ContainerInstance(
        instanceId=InstanceId(runtime, bare, node),
        containingPodId=pod_id(uid),
        containerName=status.name,
        containerIps=ips,
        started=started,
        imageDigest=image_digest(status.imageID),
        # A terminated state without a finish time is still finished: "" until known.
        finished=finished,
        exitCode=exit_code,
        terminationReason=reason,
    )


class InstanceHistory:
    """One pod's instances, merged from every status seen; the last ``keep`` terminated
    ones per container name, newest last.

    ``seen`` is when podindex first saw each (by container id): it orders instances
    whose times tie to the second.
    """

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self.keep = keep
        self.by_id: dict[str, ContainerInstance] = {}
        self.seen: dict[str, float] = {}

    def add(self, instance: ContainerInstance, seen: float) -> None:
        """One as it was stored (no merging)."""
        key = instance.instanceId.id
        self.by_id[key] = instance
        self.seen[key] = seen

    def observe(self, instances: Iterable[ContainerInstance], seen: float = 0.0) -> bool:
        """Merge what a status showed at ``seen`` (newer sightings win, but a finished
        instance is final); True when anything changed (worth writing)."""
        changed = False
        for instance in instances:
            key = instance.instanceId.id
            known = self.by_id.get(key)
            if known is not None and (known.finished is not None or known == instance):
                continue
            self.by_id[key] = instance
            self.seen.setdefault(key, seen)
            changed = True
        if changed:
            self._trim()
        return changed

    def merge(self, other: InstanceHistory) -> None:
        """``other``'s sightings, newer than this one's."""
        for key, instance in other.by_id.items():
            self.observe((instance,), other.seen.get(key, 0.0))

    def finish_all(self, at: str) -> bool:
        """The pod is gone: its live instances ended (at ``at``, reason unknown)."""
        live = [i for i in self.by_id.values() if i.finished is None]
        for instance in live:
            self.by_id[instance.instanceId.id] = msgspec.structs.replace(instance, finished=at)
        if live:
            self._trim()
        return bool(live)

    def live(self) -> list[ContainerInstance]:
        seen = self.seen
        return sorted(
            (i for i in self.by_id.values() if i.finished is None),
            key=lambda i: (i.containerName, seen.get(i.instanceId.id, 0.0)),
        )

    def terminated(self) -> list[list[ContainerInstance]]:
        """One bucket per container name (sorted), each oldest first."""
        buckets = self._buckets()
        return [buckets[name] for name in sorted(buckets)]

    def _buckets(self) -> dict[str, list[ContainerInstance]]:
        buckets: dict[str, list[ContainerInstance]] = {}
        for instance in self.by_id.values():
            if instance.finished is not None:
                buckets.setdefault(instance.containerName, []).append(instance)
        seen = self.seen
        for instances in buckets.values():
            instances.sort(
                key=lambda i: (
                    i.finished or "",
                    i.started or "",
                    seen.get(i.instanceId.id, 0.0),
                )
            )
        return buckets

    def _trim(self) -> None:
        for instances in self._buckets().values():
            for old in instances[: max(0, len(instances) - self.keep)]:
                del self.by_id[old.instanceId.id]
                self.seen.pop(old.instanceId.id, None)
