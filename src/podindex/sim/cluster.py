"""FakeCluster: an in-memory Kubernetes control plane with a Python API for tests and demos.

Tests, ``podindex demo`` and the benchmarks need a cluster whose contents they
control exactly and can break on purpose (compaction, dropped or stalled
watches, API server restarts). FakeCluster keeps pods, ReplicaSets, Jobs and
Nodes with etcd revision semantics, applies the real API server's delete rules
(graceful deletion, MODIFIED-then-DELETED), and serves them over real HTTP(S)
through :mod:`podindex.sim.server`. Mutation methods are synchronous and must
run on the event loop thread that serves the watches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from podindex.sim import status as st
from podindex.sim.events import (
    InvalidEvent,
    core_event,
    core_fields_of_v1,
    invalid_status,
    managed_entry,
    micro_time,
    validate,
)
from podindex.sim.events import selectable_fields as event_fields
from podindex.sim.ipam import DEFAULT_POD_NETWORK, IpPool
from podindex.sim.logs import DEFAULT_MAX_LINES, ContainerLog
from podindex.sim.manifests import (
    JSON,
    ContainerParams,
    PodParams,
    build_job,
    build_node,
    build_pod,
    build_replicaset,
    canonical_order,
    container_statuses,
    owner_reference,
    pod_status_managed_fields,
    refresh_managed_fields,
    rfc3339,
    sorted_fields,
)
from podindex.sim.server import SimServer
from podindex.sim.shell import ExecSession
from podindex.sim.store import (
    EVENT,
    JOB,
    NODE,
    POD,
    REPLICASET,
    RESOURCES,
    Event,
    History,
    Resource,
    StoredObject,
    Table,
    object_key,
)
from podindex.sim.tls import TlsMaterial, make_tls_material

Owner = tuple[str, str, str]  # (kind, name, uid)
Mutator = Callable[[JSON], object]

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.encode
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what apiserver's generateName uses
LIVE_PHASES = ("Pending", "Running")


class NotFound(KeyError):
    """The object does not exist (HTTP 404)."""

    def __init__(self, resource: Resource, name: str) -> None:
        super().__init__(f'{resource.plural} "{name}" not found')
        self.resource = resource
        self.name = name


class Conflict(Exception):
    """A delete precondition failed (HTTP 409); str() is the API server's message."""

    def __init__(self, resource: Resource, name: str, message: str) -> None:
        super().__init__(message)
        self.resource = resource
        self.name = name


_SUFFIX_PAIRS = [a + b for a in _SUFFIX_ALPHABET for b in _SUFFIX_ALPHABET]


def random_suffix(length: int = 5, rng: random.Random | None = None) -> str:
    """A generateName-style suffix; drawn from rng when given (reproducible and fast)."""
    if rng is None:
        return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))
    n = rng.getrandbits(64)
    out = []
    for _ in range((length + 1) // 2):
        n, pair = divmod(n, len(_SUFFIX_PAIRS))
        out.append(_SUFFIX_PAIRS[pair])
    return "".join(out)[:length]


def random_uuid(rng: random.Random) -> str:
    """A version-4 UUID string drawn from rng (reproducible, unlike uuid.uuid4)."""
    bits = rng.getrandbits(128)
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def container_id(rng: random.Random | None = None) -> str:
    bits = rng.getrandbits(256) if rng else secrets.randbits(256)
    return f"containerd://{bits:064x}"


def _pod_fields(obj: JSON) -> dict[str, str]:
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
    return {
        "metadata.name": meta["name"],
        "metadata.namespace": meta.get("namespace", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.restartPolicy": spec.get("restartPolicy", ""),
        "spec.schedulerName": spec.get("schedulerName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
        "status.phase": status.get("phase", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.nominatedNodeName": status.get("nominatedNodeName", ""),
    }


def selectable_fields(resource: Resource, obj: JSON) -> dict[str, str]:
    """The field-selector inputs of an object (what the API server's *ToSelectableFields return)."""
    if resource is POD:
        return _pod_fields(obj)
    if resource is EVENT:
        return event_fields(obj)
    meta = obj["metadata"]
    fields = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", "")}
    status = obj.get("status", {})
    if resource is REPLICASET:
        fields["status.replicas"] = str(status.get("replicas", 0))
    elif resource is JOB:
        fields["status.successful"] = str(status.get("succeeded", 0))
    elif resource is NODE:
        fields["spec.unschedulable"] = (
            "true" if obj.get("spec", {}).get("unschedulable") else "false"
        )
    return fields


def live_pod_ip(obj: JSON) -> str | None:
    """The pod IP a running sandbox holds: none once the pod is terminal or host-networked."""
    if obj.get("spec", {}).get("hostNetwork"):
        return None
    status = obj.get("status", {})
    if status.get("phase") not in LIVE_PHASES:
        return None
    ip = status.get("podIP")
    return ip if isinstance(ip, str) and ip else None


class FakeCluster:
    """In-memory pods/replicasets/jobs/nodes with one revision counter, served over HTTP."""

    def __init__(
        self,
        *,
        token: str | None = None,
        tls: bool = False,
        history_limit: int = 10_000,
        bookmark_interval: float = 60.0,
        grace_scale: float = 0.01,
        initial_resource_version: int = 100,
        too_large_wait: float = 3.0,
        pod_network: str = DEFAULT_POD_NETWORK,
        log_tick: float | None = 1.0,
        log_max_lines: int = DEFAULT_MAX_LINES,
        lifecycle_events: bool = False,
        event_ttl: float | None = 3600.0,
    ) -> None:
        self.token = token
        self.service_account_tokens: dict[str, JSON] = {}
        """Tokens a TokenReview accepts, with the user each authenticates as."""
        self.token_reviews_allowed = True
        self.tls = tls
        self.bookmark_interval = bookmark_interval
        self.grace_scale = grace_scale
        self.too_large_wait = too_large_wait
        self.tables: dict[Resource, Table] = {r: Table() for r in RESOURCES}
        self.history = History(history_limit, initial_resource_version)
        self.ips = IpPool(pod_network)
        """Pod ranges: per node a /24 of ``pod_network`` (``127.1.0.0/16``: loopback pods)."""
        self.node_ips: dict[str, str] = {}
        self.active_watches = 0
        self.watches_stalled = False
        self.drop_epoch = 0
        self.log_tick = log_tick
        """Seconds between the generated heartbeat lines of every container log (None: none)."""
        self.log_max_lines = log_max_lines
        self.container_logs: dict[str, ContainerLog] = {}
        """Appended log lines by containerID (one entry per container instance)."""
        self.active_log_follows = 0
        self.exec_sessions: list[ExecSession] = []
        """Every exec request that reached the emulated kubelet, oldest first."""
        self.container_files: dict[str, bytes] = {}
        """Extra files (path -> content) that every container's emulated shell can read."""
        self.lifecycle_events = lifecycle_events
        """Emit the scheduler's and kubelet's events on pod lifecycle changes (off: tests
        that count revisions see only the writes they make)."""
        self.event_ttl = event_ttl
        self._event_deadlines: dict[str, float] = {}
        self._event_keys: dict[tuple[str, ...], str] = {}
        self._next_event_purge = 0.0
        self._rv = initial_resource_version
        self._changed = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self._server: SimServer | None = None
        self._tls_material: TlsMaterial | None = None

    # --- revision bookkeeping --------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current global revision (etcd header revision)."""
        return self._rv

    @property
    def history_floor(self) -> int:
        """Oldest revision a watch, continue token or Exact list can still be served from."""
        return self.history.floor

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _signal(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self, max_wait: float | None) -> None:
        """Sleep until the next write or fault injection, or for at most max_wait seconds."""
        changed = self._changed
        if max_wait is not None and max_wait <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), max_wait)

    def _publish(self, event: Event) -> None:
        self.history.append(event)
        self._signal()

    # --- generic writes ---------------------------------------------------------------

    def table(self, resource: Resource) -> Table:
        return self.tables[resource]

    def stored(self, resource: Resource, namespace: str, name: str) -> StoredObject | None:
        return self.tables[resource].get(object_key(namespace, name))

    def _require(self, resource: Resource, namespace: str, name: str) -> StoredObject:
        stored = self.stored(resource, namespace, name)
        if stored is None:
            raise NotFound(resource, name)
        return stored

    def _commit(self, resource: Resource, obj: JSON, type_: str) -> StoredObject:
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        meta = obj["metadata"]
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        namespace = meta.get("namespace", "") if resource.namespaced else ""
        table = self.tables[resource]
        prev = table.get(object_key(namespace, meta["name"]))
        body = _encode(canonical_order(obj))
        stored = StoredObject(
            resource,
            namespace,
            meta["name"],
            rv,
            body,
            dict(meta.get("labels") or {}),
            selectable_fields(resource, obj),
        )
        if resource is POD:
            self._track_pod_ip(prev, obj)
        table.put(stored)
        self._publish(Event(rv, type_, stored, prev))
        return stored

    def _remove(self, resource: Resource, namespace: str, name: str) -> StoredObject:
        prev = self._require(resource, namespace, name)
        rv = self._next_rv()
        final = prev.with_resource_version(rv)
        if resource is POD:
            self._track_pod_ip(prev, None)
            if self.container_logs:
                self._forget_container_logs(_decode(prev.body))
        self.tables[resource].remove(prev.key)
        self._publish(Event(rv, "DELETED", final, prev))
        return final

    def _track_pod_ip(self, prev: StoredObject | None, obj: JSON | None) -> None:
        old_ip = live_pod_ip(_decode(prev.body)) if prev is not None else None
        new_ip = live_pod_ip(obj) if obj is not None else None
        if old_ip == new_ip:
            return
        if old_ip:
            self.ips.release(old_ip)
        if new_ip and obj is not None:
            self.ips.reserve(new_ip, obj.get("spec", {}).get("nodeName"))

    def get(self, resource: Resource, namespace: str, name: str) -> JSON | None:
        """The object as GET returns it (with kind/apiVersion), or None."""
        stored = self.stored(resource, namespace, name)
        return None if stored is None else _decode(stored.full_body())

    def list_objects(self, resource: Resource, namespace: str | None = None) -> list[JSON]:
        """All current objects of a resource (list-item form), in key order."""
        table = self.tables[resource]
        lo, hi = table.key_range(namespace)
        return [_decode(table.objects[k].body) for k in table.sorted_keys[lo:hi]]

    def count(self, resource: Resource) -> int:
        return len(self.tables[resource].objects)

    def update(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        fn: Mutator,
        *,
        bump_generation: bool = True,
    ) -> JSON:
        """Apply fn to a copy of the object (GET form) and write it back as MODIFIED.

        A spec change bumps metadata.generation unless ``bump_generation`` is false
        (subresource writes such as pods/binding do not).
        """
        stored = self._require(resource, namespace, name)
        obj = _decode(stored.full_body())
        uid = obj["metadata"]["uid"]
        spec_before = _encode(obj.get("spec"))
        status_before = _encode(obj.get("status"))
        meta_before = _encode([obj["metadata"].get("labels"), obj["metadata"].get("annotations")])
        fn(obj)
        meta = obj["metadata"]
        refresh_managed_fields(
            obj,
            metadata_changed=_encode([meta.get("labels"), meta.get("annotations")]) != meta_before,
            status_changed=_encode(obj.get("status")) != status_before,
            when=rfc3339(),
        )
        meta["name"], meta["uid"] = stored.name, uid
        if resource.namespaced:
            meta["namespace"] = namespace
        if bump_generation and resource is not NODE and _encode(obj.get("spec")) != spec_before:
            meta["generation"] = int(meta.get("generation", 1)) + 1
        return _decode(self._commit(resource, obj, "MODIFIED").full_body())

    def _check_preconditions(
        self, stored: StoredObject, uid: str | None, resource_version: str | None
    ) -> None:
        meta = _decode(stored.body)["metadata"]
        kind = stored.resource.kind
        if uid is not None and uid != meta["uid"]:
            raise Conflict(
                stored.resource,
                stored.name,
                f'Operation cannot be fulfilled on {kind} "{stored.name}": the UID in the '
                f"precondition ({uid}) does not match the UID in record ({meta['uid']}). "
                "The object might have been deleted and then recreated",
            )
        if resource_version is not None and resource_version != meta["resourceVersion"]:
            raise Conflict(
                stored.resource,
                stored.name,
                f'Operation cannot be fulfilled on {kind} "{stored.name}": the ResourceVersion '
                f"in the precondition ({resource_version}) does not match the ResourceVersion "
                f"in record ({meta['resourceVersion']}). The object might have been modified",
            )

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> JSON:
        """Immediate delete (ReplicaSets, Jobs, Nodes): one DELETED event."""
        if resource is POD:
            return self.delete_pod(namespace, name, uid=uid, resource_version=resource_version)
        self._check_preconditions(self._require(resource, namespace, name), uid, resource_version)
        return _decode(self._remove(resource, namespace, name).full_body())

    # --- nodes ----------------------------------------------------------------------

    def node_ip(self, node: str) -> str:
        """The InternalIP of a node, assigning one if the node is not known yet."""
        if node not in self.node_ips:
            self.node_ips[node] = self.ips.node_ip(node)
        return self.node_ips[node]

    def create_node(
        self, name: str, *, ip: str | None = None, labels: Mapping[str, str] | None = None
    ) -> JSON:
        if ip:
            self.node_ips[name] = ip
        obj = build_node(
            name=name,
            uid=str(uuid.uuid4()),
            resource_version="0",
            created=rfc3339(),
            ip=self.node_ip(name),
            labels=labels or {},
            pod_cidr=self.ips.pod_cidr(name),
        )
        return _decode(self._commit(NODE, obj, "ADDED").full_body())

    def delete_node(self, name: str) -> JSON:
        return self.delete(NODE, "", name)

    # --- pods ---------------------------------------------------------------------

    def create_pod(
        self,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        node: str | None = None,
        ip: str | None = None,
        ips: Sequence[str] | None = None,
        host_network: bool = False,
        phase: str = "Running",
        owner: Owner | None = None,
        containers: Sequence[str | tuple[str, str]] | None = None,
        restart_policy: str = "Always",
        generate_name: str | None = None,
        finalizers: Sequence[str] = (),
        uid: str | None = None,
    ) -> JSON:
        """Create a pod shaped like a kubelet-reported one; returns it as GET would.

        Without ``node`` the pod is unscheduled (Pending, no IPs). A scheduled
        pod that is not Pending gets ``ip``/``ips``, or the node IP when
        ``host_network``, or a fresh address from the node's pod range.
        ``containers`` is a list of names or (name, image) pairs.
        """
        if self.stored(POD, namespace, name) is not None:
            raise FileExistsError(f'pods "{name}" already exists')
        if node is None:
            phase = "Pending"
        host_ip = self.node_ip(node) if node else None
        pod_ips = self._initial_pod_ips(node, ip, ips, host_network, phase)
        created = rfc3339()
        params = PodParams(
            namespace=namespace,
            name=name,
            uid=uid or str(uuid.uuid4()),
            resource_version="0",
            created=created,
            labels=labels or {},
            annotations=annotations or {},
            owner=owner_reference(*owner) if owner else None,
            generate_name=generate_name,
            finalizers=finalizers,
            node=node,
            host_ip=host_ip,
            pod_ips=pod_ips,
            host_network=host_network,
            phase=phase,
            containers=self._container_params(containers),
            restart_policy=restart_policy,
            volume_suffix=random_suffix(),
            started=created,
            manager="kube-controller-manager" if owner else "kubectl-create",
        )
        created_pod = _decode(self._commit(POD, build_pod(params), "ADDED").full_body())
        if node is not None and self.lifecycle_events:
            self._lifecycle(namespace, name, "scheduled")
            if phase != "Pending":
                self._lifecycle(namespace, name, "started")
        return created_pod

    def _initial_pod_ips(
        self,
        node: str | None,
        ip: str | None,
        ips: Sequence[str] | None,
        host_network: bool,
        phase: str,
    ) -> list[str]:
        if ips:
            return list(ips)
        if ip:
            return [ip]
        if not node or phase == "Pending":
            return []
        if host_network:
            return [self.node_ip(node)]
        allocated = self.ips.allocate(node)
        if phase not in LIVE_PHASES:
            self.ips.release(allocated)  # the sandbox is gone; the status keeps the IP
        return [allocated]

    @staticmethod
    def _container_params(
        containers: Sequence[str | tuple[str, str]] | None,
    ) -> list[ContainerParams]:
        if not containers:
            return [ContainerParams(container_id=container_id())]
        out: list[ContainerParams] = []
        for c in containers:
            name, image = (c, "registry.example/app:1.0") if isinstance(c, str) else c
            out.append(ContainerParams(name=name, image=image, container_id=container_id()))
        return out

    def get_pod(self, namespace: str, name: str) -> JSON | None:
        return self.get(POD, namespace, name)

    def update_pod(self, namespace: str, name: str, fn: Mutator) -> JSON:
        return self.update(POD, namespace, name, fn)

    def bind_pod(self, namespace: str, name: str, node: str) -> JSON:
        """What the scheduler's pods/binding write does: set spec.nodeName (no generation bump)."""

        def apply(obj: JSON) -> None:
            obj["spec"]["nodeName"] = node
            main = next(
                (e for e in obj["metadata"].get("managedFields", []) if not e.get("subresource")),
                None,
            )
            if main is not None:
                main["fieldsV1"].setdefault("f:spec", {})["f:nodeName"] = {}
                main["fieldsV1"] = sorted_fields(main["fieldsV1"])

        bound = self.update(POD, namespace, name, apply, bump_generation=False)
        self._lifecycle(namespace, name, "scheduled")
        return bound

    def set_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> JSON:
        """Merge-patch labels (None removes a label), like `kubectl label`."""

        def apply(obj: JSON) -> None:
            current = obj["metadata"].setdefault("labels", {})
            for k, v in labels.items():
                if v is None:
                    current.pop(k, None)
                else:
                    current[k] = v
            if not current:
                del obj["metadata"]["labels"]

        return self.update_pod(namespace, name, apply)

    def set_pod_phase(
        self, namespace: str, name: str, phase: str, *, ip: str | None = None
    ) -> JSON:
        """Write the status a kubelet reports when the pod reaches ``phase``.

        Pending->Running assigns the pod IP (``ip`` or a fresh/reused one) and the
        running container statuses; Succeeded/Failed terminate the containers but
        keep podIP in the status (as a real kubelet does) while freeing the address.
        """

        before = (self.get_pod(namespace, name) or {}).get("status", {}).get("phase")

        def apply(obj: JSON) -> None:
            self._apply_phase(obj, phase, ip)

        updated = self.update_pod(namespace, name, apply)
        if before == "Pending" and phase != "Pending":
            self._lifecycle(namespace, name, "started")
        return updated

    def _apply_phase(self, obj: JSON, phase: str, ip: str | None) -> None:
        spec, status = obj["spec"], obj.setdefault("status", {})
        node = spec.get("nodeName")
        if not node:
            raise ValueError("an unscheduled pod cannot leave Pending")
        now = rfc3339()
        host_network = bool(spec.get("hostNetwork"))
        pod_ip = ip or status.get("podIP")
        if not pod_ip and phase != "Pending":
            pod_ip = self.node_ip(node) if host_network else self.ips.allocate(node)
        started = status.get("startTime", now)
        containers = [
            ContainerParams(
                name=c["name"],
                image=c["image"],
                container_id=self._existing_container_id(status, c["name"]),
                restart_count=self._existing_restart_count(status, c["name"]),
                started_at=self._existing_started_at(status, c["name"]),
            )
            for c in spec.get("containers", [])
        ]
        params = PodParams(
            namespace="",
            name="",
            uid="",
            resource_version="",
            created=started,
            node=node,
            host_ip=self.node_ip(node),
            pod_ips=[pod_ip] if pod_ip else [],
            host_network=host_network,
            phase=phase,
            containers=containers,
            started=started,
        )
        new_status: JSON = build_pod(params)["status"]
        if phase in ("Succeeded", "Failed"):
            new_status["containerStatuses"] = container_statuses(params, now)
            for cond in new_status["conditions"]:
                if cond["type"] in ("Ready", "ContainersReady"):
                    cond["lastTransitionTime"] = now
                    cond["reason"] = "PodCompleted"
        obj["status"] = new_status
        self._ensure_status_managed_fields(obj, [pod_ip] if pod_ip else [], now)

    @staticmethod
    def _existing_container_status(status: JSON, name: str) -> JSON:
        for cs in status.get("containerStatuses", []):
            if cs.get("name") == name:
                return dict(cs)
        return {}

    def _existing_container_id(self, status: JSON, name: str) -> str:
        return str(
            self._existing_container_status(status, name).get("containerID") or container_id()
        )

    def _existing_restart_count(self, status: JSON, name: str) -> int:
        return int(self._existing_container_status(status, name).get("restartCount", 0))

    def _existing_started_at(self, status: JSON, name: str) -> str | None:
        state = self._existing_container_status(status, name).get("state", {})
        running = state.get("running") if isinstance(state, dict) else None
        return str(running["startedAt"]) if running else None

    @staticmethod
    def _ensure_status_managed_fields(obj: JSON, pod_ips: list[str], when: str) -> None:
        entries = [
            e for e in obj["metadata"].get("managedFields", []) if e.get("subresource") != "status"
        ]
        entries.append(pod_status_managed_fields(pod_ips, when))
        obj["metadata"]["managedFields"] = entries

    def restart_container(
        self,
        namespace: str,
        name: str,
        container: str | None = None,
        *,
        exit_code: int = 1,
        last_state: bool = True,
    ) -> JSON:
        """A container restart as the kubelet reports it: restartCount+1, new id and startedAt.

        The instance that stopped becomes ``lastState.terminated`` (with its old
        containerID and ``exit_code``), so ``previous=true`` logs read it;
        ``last_state=False`` leaves lastState empty, like the hand-written status
        patch of recording 05. Without ``container`` the first container restarts.
        """

        def apply(obj: JSON) -> None:
            now = rfc3339()
            for cs in obj.get("status", {}).get("containerStatuses", []):
                if container is None or cs["name"] == container:
                    was_running = "running" in (cs.get("state") or {})
                    if last_state and (was_running or not cs.get("lastState")):
                        # After a crash loop the crashed instance already is lastState.
                        terminated = self._terminated_state(cs, exit_code, now)
                        cs["lastState"] = {"terminated": terminated}
                    cs["restartCount"] = int(cs.get("restartCount", 0)) + 1
                    cs["state"] = {"running": {"startedAt": now}}
                    cs["containerID"] = container_id()
                    restarted.append((cs["name"], cs.get("image", "")))
                    break

        restarted: list[tuple[str, str]] = []
        updated = self.update_pod(namespace, name, apply)
        for container_name, image in restarted:
            self._container_started(namespace, name, container_name, image)
        return updated

    def crash_container(
        self,
        namespace: str,
        name: str,
        container: str | None = None,
        *,
        exit_code: int = 1,
        backoff: str = "10s",
    ) -> JSON:
        """The container exited and the kubelet backs off: waiting CrashLoopBackOff.

        The stopped instance becomes ``lastState.terminated`` (its logs stay
        readable, as for a real crash loop) and restartCount goes up; the pod
        stays Running but not Ready.
        """

        def apply(obj: JSON) -> None:
            now = rfc3339()
            meta, status = obj["metadata"], obj.get("status", {})
            crashed = ""
            for cs in status.get("containerStatuses", []):
                if container is None or cs["name"] == container:
                    crashed = cs["name"]
                    cs["lastState"] = {"terminated": self._terminated_state(cs, exit_code, now)}
                    cs["state"] = {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off {backoff} restarting failed container="
                            f"{cs['name']} pod={meta['name']}_{meta['namespace']}({meta['uid']})",
                        }
                    }
                    cs["restartCount"] = int(cs.get("restartCount", 0)) + 1
                    cs["ready"] = False
                    cs["started"] = False
                    break
            for cond in status.get("conditions", []):
                if cond["type"] in ("Ready", "ContainersReady") and cond["status"] == "True":
                    cond["status"] = "False"
                    cond["lastTransitionTime"] = now
                    cond["reason"] = "ContainersNotReady"
                    cond["message"] = f"containers with unready status: [{crashed}]"

        updated = self.update_pod(namespace, name, apply)
        if self.lifecycle_events:
            for cs in updated["status"].get("containerStatuses", []):
                if container is None or cs["name"] == container:
                    meta = updated["metadata"]
                    self.record_event(
                        namespace,
                        name,
                        "Warning",
                        "BackOff",
                        f"Back-off restarting failed container {cs['name']} in pod "
                        f"{name}_{namespace}({meta['uid']})",
                        container=cs["name"],
                    )
                    break
        return updated

    @staticmethod
    def _terminated_state(cs: JSON, exit_code: int, finished: str) -> JSON:
        state = cs.get("state") or {}
        running = state.get("running") or state.get("terminated") or {}
        return {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": running.get("startedAt", finished),
            "finishedAt": finished,
            "containerID": cs.get("containerID", ""),
        }

    # --- container logs ---------------------------------------------------------------

    def container_log(self, container_id: str) -> ContainerLog:
        """The appended lines of one container instance (created empty on first use)."""
        log = self.container_logs.get(container_id)
        if log is None:
            log = self.container_logs[container_id] = ContainerLog(self.log_max_lines)
        return log

    def current_container_id(self, namespace: str, name: str, container: str | None = None) -> str:
        """containerID of a container's current instance (the pod's first container by default)."""
        pod = self.get_pod(namespace, name)
        if pod is None:
            raise NotFound(POD, name)
        status = pod.get("status", {})
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in status.get(key) or []:
                if (container is None or cs["name"] == container) and cs.get("containerID"):
                    return str(cs["containerID"])
        raise ValueError(f'container "{container}" of pod "{name}" has no running instance')

    def write_log(self, namespace: str, name: str, container: str | None, text: str | bytes) -> int:
        """Append lines to a container's current log, stamped now; returns how many.

        ``text`` is split at newlines (a missing final newline is added); followers
        of the log get the lines at once.
        """
        raw = text.encode() if isinstance(text, str) else text
        lines = [line + b"\n" for line in raw.split(b"\n")]
        if raw.endswith(b"\n"):
            lines.pop()
        self.container_log(self.current_container_id(namespace, name, container)).append(lines)
        return len(lines)

    def emit_log_lines(
        self,
        namespace: str,
        name: str,
        container: str | None,
        count: int,
        template: str = "line {n}",
    ) -> None:
        """Append ``count`` generated lines at once (``{n}`` = the line's index in this log)."""
        log = self.container_log(self.current_container_id(namespace, name, container))
        first = log.end
        log.append([(template.format(n=n) + "\n").encode() for n in range(first, first + count)])

    async def pump_log_lines(
        self,
        namespace: str,
        name: str,
        container: str | None,
        count: int,
        *,
        batch: int = 1000,
        rate: float | None = None,
        template: str = "line {n}",
    ) -> None:
        """Emit ``count`` lines in batches, at ``rate`` lines/s (None: as fast as possible)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        done = 0
        while done < count:
            size = min(batch, count - done)
            self.emit_log_lines(namespace, name, container, size, template)
            done += size
            delay = 0.0 if rate is None else started + done / rate - loop.time()
            await asyncio.sleep(max(0.0, delay))

    def _forget_container_logs(self, pod: JSON) -> None:
        """The kubelet removes a pod's container logs with the pod."""
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in pod.get("status", {}).get(key) or []:
                self.container_logs.pop(str(cs.get("containerID", "")), None)
                last = (cs.get("lastState") or {}).get("terminated") or {}
                self.container_logs.pop(str(last.get("containerID", "")), None)

    def delete_pod(
        self,
        namespace: str,
        name: str,
        grace_seconds: int | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> JSON:
        """Delete with the API server's pod rules; returns the object DELETE returns.

        Unscheduled or terminal pods and grace 0 go at once (MODIFIED with
        deletionTimestamp, then DELETED). Otherwise the pod turns Terminating
        (MODIFIED with deletionTimestamp = now + grace) and the emulated kubelet
        finishes the deletion after ``grace * grace_scale`` seconds.
        """
        stored = self._require(POD, namespace, name)
        self._check_preconditions(stored, uid, resource_version)
        obj = _decode(stored.body)
        meta, spec = obj["metadata"], obj["spec"]
        grace = (
            int(spec.get("terminationGracePeriodSeconds", 30))
            if grace_seconds is None
            else grace_seconds
        )
        phase = obj.get("status", {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            grace = 0
        existing = meta.get("deletionGracePeriodSeconds")
        if existing is not None and grace >= int(existing):
            return _decode(stored.full_body())
        if "deletionTimestamp" not in meta:
            meta["generation"] = int(meta.get("generation", 1)) + 1
        meta["deletionTimestamp"] = rfc3339(time.time() + grace)
        meta["deletionGracePeriodSeconds"] = grace
        running = phase == "Running" and "deletionTimestamp" not in _decode(stored.body)["metadata"]
        terminating = self._commit(POD, obj, "MODIFIED")
        if running and spec.get("nodeName"):
            self._lifecycle(namespace, name, "killing")
        if grace == 0:
            return _decode(self._remove(POD, namespace, name).full_body())
        self._schedule(
            grace * self.grace_scale, self._finish_pod_deletion, namespace, name, meta["uid"]
        )
        return _decode(terminating.full_body())

    def _finish_pod_deletion(self, namespace: str, name: str, uid: str) -> None:
        stored = self.stored(POD, namespace, name)
        if stored is not None and _decode(stored.body)["metadata"]["uid"] == uid:
            self.delete_pod(namespace, name, 0)

    def _schedule(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            fn(*args)  # no event loop: nothing could observe the wait anyway
            return

        def fire() -> None:
            self._timers.discard(handle)
            fn(*args)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    # --- events -------------------------------------------------------------------------

    def create_event(
        self, namespace: str, body: JSON, *, api_version: str = "v1", manager: str = "kubectl"
    ) -> JSON:
        """POST an Event through core/v1 (``api_version="v1"``) or events.k8s.io/v1.

        Returns the stored object in core/v1 list-item form. Raises
        :class:`InvalidEvent` (422, or 400 for a namespace mismatch) and
        FileExistsError (409) as the API server would answer.
        """
        v1_request = api_version != "v1"
        meta_in = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        assert isinstance(meta_in, dict)
        if meta_in.get("namespace") and meta_in["namespace"] != namespace:
            raise InvalidEvent(
                st.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            )
        name = meta_in.get("name") or ""
        if not name and meta_in.get("generateName"):
            name = str(meta_in["generateName"]) + random_suffix()
        now = rfc3339()
        meta: JSON = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())}
        meta["resourceVersion"] = "0"
        meta["creationTimestamp"] = now
        for key in ("labels", "annotations"):
            if meta_in.get(key):
                meta[key] = dict(meta_in[key])
        meta["managedFields"] = [managed_entry(manager, api_version, now, body)]
        fields = core_fields_of_v1(body) if v1_request else body
        obj = core_event(meta, fields)
        if not name:
            errors = [
                (
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                )
            ]
            raise InvalidEvent(invalid_status("", errors, v1_request=v1_request))
        errors = validate(obj, v1_request=v1_request)
        if errors:
            raise InvalidEvent(invalid_status(name, errors, v1_request=v1_request))
        if self.stored(EVENT, namespace, name) is not None:
            raise FileExistsError(name)
        return self._store_event(obj)

    def _store_event(self, obj: JSON) -> JSON:
        self._purge_events()
        meta = obj["metadata"]
        stored = self._commit(
            EVENT,
            obj,
            "MODIFIED" if self.stored(EVENT, meta["namespace"], meta["name"]) else "ADDED",
        )
        if self.event_ttl is not None:
            self._event_deadlines[stored.key] = time.time() + self.event_ttl
        return _decode(stored.body)

    def _purge_events(self) -> None:
        """--event-ttl: events not written for an hour expire (etcd lease), as DELETED."""
        now = time.time()
        if now < self._next_event_purge:
            return
        self._next_event_purge = now + 1.0
        for key, deadline in list(self._event_deadlines.items()):
            if deadline <= now:
                del self._event_deadlines[key]
                namespace, name = key.split("/", 1)
                if self.stored(EVENT, namespace, name) is not None:
                    self._remove(EVENT, namespace, name)

    def expire_events(self) -> int:
        """Expire every event now, as if the TTL had passed; returns how many went."""
        self._event_deadlines = dict.fromkeys(self._event_deadlines, 0.0)
        self._next_event_purge = 0.0
        count = len(self._event_deadlines)
        self._purge_events()
        return count

    def record_event(
        self,
        namespace: str,
        pod: str,
        type_: str = "Normal",
        reason: str = "",
        message: str = "",
        *,
        container: str | None = None,
        count: int = 1,
        api: str = "core",
        component: str | None = None,
        instance: str | None = None,
        action: str | None = None,
    ) -> JSON:
        """Report ``count`` occurrences of an event about a pod, as its producer would.

        ``api="core"`` is the kubelet's legacy recorder: source/reportingComponent
        ``component`` (default ``kubelet``) on the pod's node, and a repeat of the
        same (object, container, type, reason, message) bumps ``count`` and
        ``lastTimestamp`` of the existing event. ``api="events.k8s.io"`` is the new
        recorder (scheduler, controllers): ``eventTime``, ``action``,
        ``reportingController``/``reportingInstance``; repeats go into
        ``series.count``/``series.lastObservedTime``. Returns the event in core/v1
        list-item form.
        """
        obj = self.get_pod(namespace, pod)
        if obj is None:
            raise NotFound(POD, pod)
        meta = obj["metadata"]
        node = obj.get("spec", {}).get("nodeName") or ""
        new_api = api != "core"
        component = component or ("default-scheduler" if new_api else "kubelet")
        instance = instance or (f"{component}-control-plane" if new_api else node)
        ref: JSON = {
            "kind": "Pod",
            "namespace": namespace,
            "name": pod,
            "uid": meta["uid"],
            "apiVersion": "v1",
            "resourceVersion": meta["resourceVersion"],
        }
        if container:
            ref["fieldPath"] = f"spec.containers{{{container}}}"
        key = (api, namespace, meta["uid"], container or "", type_, reason, message, component)
        existing_name = self._event_keys.get(key)
        existing = self.stored(EVENT, namespace, existing_name) if existing_name else None
        now_s = rfc3339()
        if existing is not None:
            event = _decode(existing.body)
            if new_api:
                series = event.get("series") or {"count": 1}
                event["series"] = {
                    "count": int(series["count"]) + count,
                    "lastObservedTime": micro_time(),
                }
            else:
                event["count"] = int(event.get("count", 1)) + count
                event["lastTimestamp"] = now_s
            for entry in event["metadata"].get("managedFields", []):
                entry["time"] = now_s
            return self._store_event(core_event(event["metadata"], event))
        ns_now = time.time_ns()
        name = f"{pod}.{ns_now:x}"
        while self.stored(EVENT, namespace, name) is not None:
            ns_now += 1
            name = f"{pod}.{ns_now:x}"
        fields: JSON = {"involvedObject": ref, "reason": reason, "message": message, "type": type_}
        if new_api:
            fields.update(
                eventTime=micro_time(ns_now),
                action=action or reason,
                reportingComponent=component,
                reportingInstance=instance,
            )
            if count > 1:
                fields["series"] = {"count": count, "lastObservedTime": micro_time(ns_now)}
            request: JSON = {
                "eventTime": fields["eventTime"],
                "series": fields.get("series"),
                "reportingController": component,
                "reportingInstance": instance,
                "action": fields["action"],
                "reason": reason,
                "regarding": ref,
                "note": message,
                "type": type_,
            }
            manager, api_version = (
                ("kube-scheduler" if component == "default-scheduler" else component),
                "events.k8s.io/v1",
            )
        else:
            fields.update(
                source={"component": component, "host": node},
                firstTimestamp=now_s,
                lastTimestamp=now_s,
                count=count,
                reportingComponent=component,
                reportingInstance=instance,
            )
            request = fields
            manager, api_version = component, "v1"
        event_meta: JSON = {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "0",
            "creationTimestamp": now_s,
            "managedFields": [managed_entry(manager, api_version, now_s, request)],
        }
        self._event_keys[key] = name
        return self._store_event(core_event(event_meta, fields))

    def _lifecycle(self, namespace: str, pod: str, what: str) -> None:
        """The events a scheduler and kubelet emit for one pod lifecycle step."""
        if not self.lifecycle_events:
            return
        obj = self.get_pod(namespace, pod)
        if obj is None:
            return
        spec = obj.get("spec", {})
        containers = [(c["name"], c.get("image", "")) for c in spec.get("containers", [])]
        if what == "scheduled":
            self.record_event(
                namespace,
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {namespace}/{pod} to {spec.get('nodeName')}",
                api="events.k8s.io",
                action="Binding",
            )
        elif what == "started":
            for name, image in containers:
                self._container_started(namespace, pod, name, image)
        elif what == "killing":
            for name, _ in containers:
                self.record_event(
                    namespace,
                    pod,
                    "Normal",
                    "Killing",
                    f"Stopping container {name}",
                    container=name,
                )

    def _container_started(self, namespace: str, pod: str, name: str, image: str) -> None:
        if not self.lifecycle_events:
            return
        for reason, message in (
            ("Pulled", f'Container image "{image}" already present on machine'),
            ("Created", f"Created container: {name}"),
            ("Started", f"Started container {name}"),
        ):
            self.record_event(namespace, pod, "Normal", reason, message, container=name)

    # --- replicasets and jobs -----------------------------------------------------------

    def create_replicaset(
        self,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        replicas: int = 1,
        owner: Owner | None = None,
        uid: str | None = None,
    ) -> JSON:
        obj = build_replicaset(
            namespace=namespace,
            name=name,
            uid=uid or str(uuid.uuid4()),
            resource_version="0",
            created=rfc3339(),
            labels=labels or {},
            replicas=replicas,
            owner=owner_reference(*owner) if owner else None,
        )
        return _decode(self._commit(REPLICASET, obj, "ADDED").full_body())

    def update_replicaset(self, namespace: str, name: str, fn: Mutator) -> JSON:
        return self.update(REPLICASET, namespace, name, fn)

    def scale_replicaset(self, namespace: str, name: str, replicas: int) -> JSON:
        def apply(obj: JSON) -> None:
            obj["spec"]["replicas"] = replicas
            annotations = obj["metadata"].get("annotations", {})
            if "deployment.kubernetes.io/desired-replicas" in annotations:
                annotations["deployment.kubernetes.io/desired-replicas"] = str(replicas)
                annotations["deployment.kubernetes.io/max-replicas"] = str(replicas + 1)
            status = obj["status"]
            for k in ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
                status[k] = replicas
            status["observedGeneration"] = int(obj["metadata"].get("generation", 1)) + 1

        return self.update_replicaset(namespace, name, apply)

    def delete_replicaset(self, namespace: str, name: str) -> JSON:
        return self.delete(REPLICASET, namespace, name)

    def create_job(
        self,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        owner: Owner | None = None,
        uid: str | None = None,
    ) -> JSON:
        obj = build_job(
            namespace=namespace,
            name=name,
            uid=uid or str(uuid.uuid4()),
            resource_version="0",
            created=rfc3339(),
            labels=labels or {},
            owner=owner_reference(*owner) if owner else None,
        )
        return _decode(self._commit(JOB, obj, "ADDED").full_body())

    def update_job(self, namespace: str, name: str, fn: Mutator) -> JSON:
        return self.update(JOB, namespace, name, fn)

    def complete_job(self, namespace: str, name: str) -> JSON:
        """Job controller's status write once its single pod has succeeded."""

        def apply(obj: JSON) -> None:
            now = rfc3339()
            status = obj["status"]
            status.pop("active", None)
            status["succeeded"] = 1
            status["completionTime"] = now
            status["conditions"] = [
                {
                    "type": "SuccessCriteriaMet",
                    "status": "True",
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                    "reason": "CompletionsReached",
                    "message": "Reached expected number of succeeded pods",
                },
                {
                    "type": "Complete",
                    "status": "True",
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                    "reason": "CompletionsReached",
                    "message": "Reached expected number of succeeded pods",
                },
            ]

        return self.update_job(namespace, name, apply)

    def delete_job(self, namespace: str, name: str) -> JSON:
        return self.delete(JOB, namespace, name)

    # --- bulk load ---------------------------------------------------------------------

    def bulk_load(self, objects: Sequence[StoredObject]) -> None:
        """Insert pre-encoded objects without watch events (benchmark setup).

        Each object's bytes must carry its own revision, taken from
        :meth:`reserve_revisions`. Watches and continue tokens from before the
        load get 410, as after a compaction, because the load left no history.
        """
        by_resource: dict[Resource, list[StoredObject]] = {}
        for obj in objects:
            by_resource.setdefault(obj.resource, []).append(obj)
        for resource, batch in by_resource.items():
            self.tables[resource].put_many_unsorted(batch)
        self.history.compact(self._rv)
        self._signal()

    def reserve_revisions(self, count: int) -> int:
        """Advance the revision counter by count; returns the first reserved revision."""
        first = self._rv + 1
        self._rv += count
        return first

    # --- fault injection -------------------------------------------------------------

    def compact(self) -> None:
        """Forget all history: older watches, continue tokens and Exact lists now get 410."""
        self.history.compact(self._rv)

    def drop_watches(self) -> None:
        """End every open watch stream cleanly (EOF), as an API server does on timeout."""
        self.drop_epoch += 1
        self._signal()

    def stall_watches(self) -> None:
        """Keep watch connections open but send nothing (no events, no bookmarks, no timeout)."""
        self.watches_stalled = True
        self._signal()

    def resume_watches(self) -> None:
        self.watches_stalled = False
        self._signal()

    async def restart(
        self, *, new_history: bool = False, downtime: float = 0.0, revision_jump: int = 1000
    ) -> None:
        """Emulate an API server restart: every connection is cut, the port refuses for downtime.

        With ``new_history`` the revision counter jumps ahead and all history is
        dropped, so every old resourceVersion and continue token gets 410 (the
        restart-with-a-new-watch-cache case of recordings 84-87). Objects are
        untouched; mutate them during or after the restart to make them differ.
        """
        if self._server is not None:
            await self._server.suspend()
        if new_history:
            self._rv += revision_jump
            self.history.compact(self._rv)
        self._signal()
        if downtime > 0:
            await asyncio.sleep(downtime)
        if self._server is not None:
            await self._server.resume()

    # --- serving -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve the API on host:port (0 = any free port); sets :attr:`url`."""
        if self.tls and self._tls_material is None:
            self._tls_material = make_tls_material(host)
        self._server = SimServer(self, self._tls_material)
        await self._server.start(host, port)

    async def stop(self) -> None:
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def __aenter__(self) -> FakeCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeCluster is not started")
        return self._server.url

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeCluster is not started")
        return self._server.port

    @property
    def ca_pem(self) -> bytes | None:
        """PEM of the CA that signed the server certificate (None without TLS)."""
        return self._tls_material.ca_pem if self._tls_material else None

    @property
    def ca_file(self) -> str | None:
        """Path of a file holding :attr:`ca_pem` (None without TLS)."""
        return str(self._tls_material.ca_file) if self._tls_material else None

    def service_account_token(self, namespace: str, name: str) -> str:
        """A new token that TokenReview accepts as ``system:serviceaccount:<ns>:<name>``."""
        token = "sa-" + secrets.token_urlsafe(24)
        self.service_account_tokens[token] = {
            "username": f"system:serviceaccount:{namespace}:{name}",
            "uid": str(uuid.uuid4()),
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
        }
        return token

    def kubeconfig(self, context: str = "sim") -> JSON:
        cluster: JSON = {"server": self.url}
        if self.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        user: JSON = {"token": self.token} if self.token else {}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": user}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": context, "namespace": "default"},
                }
            ],
            "current-context": context,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path, context: str = "sim") -> Path:
        """Write a kubeconfig (JSON, which YAML loaders accept) pointing at this cluster."""
        target = Path(path)
        target.write_text(json.dumps(self.kubeconfig(context), indent=2) + "\n")
        return target
