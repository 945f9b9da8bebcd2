"""The JSON answers of the pod-watcher API (``GET /pod?ip=``), built once per change.

The index keeps each pod's answer encoded next to the pod, so a lookup is a
dict hit that returns bytes: nothing is serialised per request. The field
names extend the original pod-watcher's (``name``, ``namespace``, ``uid``,
``labels``, ``pod_ip``, ``node_name``, ``phase``) so its clients keep working.

Pure: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

import time

import msgspec

from podindex.model import Pod, PodState, Workload


class OwnerAnswer(msgspec.Struct, gc=False):
    kind: str
    name: str
    uid: str


class WorkloadAnswer(msgspec.Struct, gc=False):
    kind: str
    name: str


class PodAnswer(msgspec.Struct, gc=False):
    cluster: str
    name: str
    namespace: str
    uid: str
    state: PodState
    phase: str
    pod_ip: str | None
    pod_ips: list[str]
    node_name: str
    host_ip: str
    host_network: bool
    labels: dict[str, str]
    annotations: dict[str, str]
    identity: str
    identity_source: str
    workload: WorkloadAnswer | None
    selector_labels: dict[str, str]
    owner: OwnerAnswer | None
    containers: tuple[ContainerAnswer, ...]
    creation_timestamp: str | None
    start_time: str | None
    deletion_timestamp: str | None
    released_at: str | None
    source: str


class ContainerAnswer(msgspec.Struct, gc=False):
    name: str
    image: str


class PodRef(msgspec.Struct, gc=False):
    cluster: str
    namespace: str
    name: str
    uid: str


class NodeAnswer(msgspec.Struct, gc=False):
    """An IP that only hostNetwork pods use: the node's own address."""

    ip: str
    state: str
    cluster: str
    node_name: str
    host_network: bool
    pods: list[PodRef]


class AmbiguousAnswer(msgspec.Struct, gc=False):
    error: str
    message: str
    ip: str
    matches: list[msgspec.Raw]


class ErrorAnswer(msgspec.Struct, gc=False):
    error: str
    message: str


_encoder = msgspec.json.Encoder()


def rfc3339(wall_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_seconds))


def pod_answer(
    cluster: str,
    pod: Pod,
    ips: list[str],
    workload: Workload,
    *,
    source: str,
    released_at: str | None = None,
) -> bytes:
    """The encoded answer for one pod; ``released_at`` set means its IP is no longer held."""
    meta = pod.metadata
    owner = None
    if meta.ownerReferences:
        ref = next((r for r in meta.ownerReferences if r.controller), meta.ownerReferences[0])
        owner = OwnerAnswer(kind=ref.kind, name=ref.name, uid=ref.uid)
    status = pod.status
    spec = pod.spec
    if not ips:  # a released or terminal pod: show what its status declared
        ips = (
            [p.ip for p in status.podIPs]
            if status.podIPs
            else ([status.podIP] if status.podIP else [])
        )
    # Positional: this runs for every pod change, and keywords cost a quarter of it.
    answer = PodAnswer(
        cluster,
        meta.name,
        meta.namespace,
        meta.uid,
        "terminated" if released_at is not None else "live",
        status.phase,
        ips[0] if ips else None,
        ips,
        spec.nodeName,
        status.hostIP,
        spec.hostNetwork,
        meta.labels,
        meta.annotations,
        workload.identity,
        workload.identity_source,
        WorkloadAnswer(workload.kind, workload.name) if workload.kind else None,
        workload.selector_labels,
        owner,
        tuple(ContainerAnswer(c.name, c.image) for c in spec.containers or ()),
        meta.creationTimestamp,
        status.startTime,
        meta.deletionTimestamp,
        released_at,
        source,
    )
    return _encoder.encode(answer)


def node_answer(ip: str, cluster: str, node_name: str, pods: list[PodRef]) -> bytes:
    return _encoder.encode(
        NodeAnswer(
            ip=ip, state="node", cluster=cluster, node_name=node_name, host_network=True, pods=pods
        )
    )


def ambiguous_answer(ip: str, bodies: list[bytes]) -> bytes:
    return _encoder.encode(
        AmbiguousAnswer(
            error="ambiguous",
            message=f"IP {ip} is held by pods in {len(bodies)} clusters",
            ip=ip,
            matches=[msgspec.Raw(b) for b in bodies],
        )
    )


def error_body(error: str, message: str) -> bytes:
    return _encoder.encode(ErrorAnswer(error=error, message=message))
