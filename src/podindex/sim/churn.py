"""Realistic cluster load for FakeCluster: bulk population and seeded churn.

podindex's hard cases come from how real workloads move: Deployment rollouts
replace every pod, StatefulSet pods come back under the same name with a new
uid and IP, Job pods finish but keep their podIP in status while the address is
handed to a new pod, host-network pods share their node's IP. :class:`Churn`
produces exactly those sequences of writes, reproducibly from a seed and at a
bounded rate; :func:`populate` loads a large steady-state cluster (100k pods) in
seconds by rendering pre-encoded byte templates instead of building dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podindex.sim.cluster import FakeCluster, NotFound, random_suffix, random_uuid
from podindex.sim.manifests import (
    ByteTemplate,
    ContainerParams,
    PodParams,
    build_pod,
    build_replicaset,
    canonical_order,
    inline_slot,
    owner_reference,
    rfc3339,
)
from podindex.sim.store import NODE, POD, REPLICASET, StoredObject

# --- populate -------------------------------------------------------------------------

POPULATE_LABELS = (
    "app",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "team",
    "env",
    "pod-template-hash",
)
COMPONENTS = ("api", "web", "worker", "cache", "gateway", "scheduler", "ingest", "search")
TEAMS = ("payments", "search", "identity", "platform", "data", "growth", "infra", "mobile")


def _pod_template() -> ByteTemplate:
    """One pod of a Deployment-owned ReplicaSet with two containers, all variable parts as slots."""
    params = PodParams(
        namespace=inline_slot("ns"),
        name=inline_slot("name"),
        generate_name=inline_slot("gen"),
        uid=inline_slot("uid"),
        resource_version=inline_slot("rv"),
        created=inline_slot("created"),
        labels={key: inline_slot(f"label{i}") for i, key in enumerate(POPULATE_LABELS)},
        owner=owner_reference("ReplicaSet", inline_slot("owner"), inline_slot("owner_uid")),
        node=inline_slot("node"),
        host_ip=inline_slot("host_ip"),
        pod_ips=[inline_slot("ip")],
        phase="Running",
        containers=[
            ContainerParams(
                name="app", image="registry.example/app:1.0", container_id=inline_slot("cid0")
            ),
            ContainerParams(
                name="proxy", image="registry.example/proxy:2.3", container_id=inline_slot("cid1")
            ),
        ],
        volume_suffix=inline_slot("vol"),
        started=inline_slot("created"),
        manager="kube-controller-manager",
    )
    return ByteTemplate(build_pod(params))


def _replicaset_template(replicas: int) -> ByteTemplate:
    return ByteTemplate(
        canonical_order(
            build_replicaset(
                namespace=inline_slot("ns"),
                name=inline_slot("name"),
                uid=inline_slot("uid"),
                resource_version=inline_slot("rv"),
                created=inline_slot("created"),
                labels={key: inline_slot(f"label{i}") for i, key in enumerate(POPULATE_LABELS)},
                replicas=replicas,
                owner=owner_reference("Deployment", inline_slot("owner"), inline_slot("owner_uid")),
            )
        )
    )


@dataclass(slots=True)
class PopulateResult:
    pods: int
    replicasets: int
    nodes: int
    namespaces: int
    seconds: float


class _Populator:
    """Renders ReplicaSets and their pods straight to bytes (values are known JSON-safe)."""

    def __init__(self, cluster: FakeCluster, rng: random.Random, node_names: list[str]) -> None:
        self.cluster = cluster
        self.rng = rng
        self.node_names = node_names
        self.pod_template = _pod_template()
        self.rs_templates: dict[int, ByteTemplate] = {}
        self.created = rfc3339().encode()
        self.objects: list[StoredObject] = []
        self.pods = 0

    def add_deployment(self, namespace: str, replicas: int) -> None:
        rng = self.rng
        component = rng.choice(COMPONENTS)
        app = f"{component}-{random_suffix(4, rng)}"
        pod_hash = f"{rng.getrandbits(40):010x}"
        rs_name = f"{app}-{pod_hash}"
        labels = {
            "app": app,
            "app.kubernetes.io/name": component,
            "app.kubernetes.io/instance": app,
            "app.kubernetes.io/version": f"1.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
            "app.kubernetes.io/component": component,
            "team": namespace.split("-")[0],
            "env": rng.choice(("prod", "staging", "dev")),
            "pod-template-hash": pod_hash,
        }
        common = {f"label{i}": labels[key].encode() for i, key in enumerate(POPULATE_LABELS)}
        common["ns"] = namespace.encode()
        common["created"] = self.created
        rs_uid = random_uuid(rng)
        rv = self.cluster.reserve_revisions(replicas + 1)
        template = self.rs_templates.get(replicas)
        if template is None:
            template = self.rs_templates[replicas] = _replicaset_template(replicas)
        rs_values = {
            **common,
            "name": rs_name.encode(),
            "uid": rs_uid.encode(),
            "rv": str(rv).encode(),
            "owner": app.encode(),
            "owner_uid": random_uuid(rng).encode(),
        }
        rs_fields = {
            "metadata.name": rs_name,
            "metadata.namespace": namespace,
            "status.replicas": str(replicas),
        }
        self.objects.append(
            StoredObject(
                REPLICASET,
                namespace,
                rs_name,
                rv,
                template.render_trusted(rs_values),
                labels,
                rs_fields,
            )
        )
        pod_values = {
            **common,
            "gen": f"{rs_name}-".encode(),
            "owner": rs_name.encode(),
            "owner_uid": rs_uid.encode(),
        }
        for i in range(replicas):
            self._add_pod(namespace, rs_name, labels, pod_values, rv + 1 + i)

    def _add_pod(
        self,
        namespace: str,
        rs_name: str,
        labels: dict[str, str],
        values: dict[str, bytes],
        rv: int,
    ) -> None:
        rng = self.rng
        node = rng.choice(self.node_names)
        name = f"{rs_name}-{random_suffix(5, rng)}"
        ip = self.cluster.ips.allocate(node)
        host_ip = self.cluster.node_ip(node)
        values["name"] = name.encode()
        values["uid"] = random_uuid(rng).encode()
        values["rv"] = str(rv).encode()
        values["node"] = node.encode()
        values["host_ip"] = host_ip.encode()
        values["ip"] = ip.encode()
        values["cid0"] = b"containerd://%064x" % rng.getrandbits(256)
        values["cid1"] = b"containerd://%064x" % rng.getrandbits(256)
        values["vol"] = random_suffix(5, rng).encode()
        fields = {
            "metadata.name": name,
            "metadata.namespace": namespace,
            "spec.nodeName": node,
            "spec.restartPolicy": "Always",
            "spec.schedulerName": "default-scheduler",
            "spec.serviceAccountName": "default",
            "spec.hostNetwork": "false",
            "status.phase": "Running",
            "status.podIP": ip,
            "status.hostIP": host_ip,
            "status.nominatedNodeName": "",
        }
        body = self.pod_template.render_trusted(values)
        self.objects.append(StoredObject(POD, namespace, name, rv, body, labels, fields))
        self.pods += 1


def populate(
    cluster: FakeCluster,
    n_pods: int,
    *,
    namespaces: int | None = None,
    nodes: int | None = None,
    seed: int = 0,
    max_replicas: int = 10,
) -> PopulateResult:
    """Bulk-create n_pods running pods (plus their ReplicaSets and Nodes) without watch events.

    Pods carry 8 labels, 2 containers and full managedFields, belong to
    Deployment-owned ReplicaSets, and are spread over namespaces and nodes.
    Afterwards the history is compacted (there is nothing to replay), as after
    an etcd compaction; start watchers after populating.
    """
    started = time.perf_counter()
    rng = random.Random(seed)
    n_nodes = nodes or max(3, math.ceil(n_pods / 50))
    n_namespaces = namespaces or max(1, min(50, math.ceil(n_pods / 2000)))
    node_names = [f"node-{i:04d}" for i in range(1, n_nodes + 1)]
    for name in node_names:
        if cluster.stored(NODE, "", name) is None:
            cluster.create_node(name)
    namespace_names = [f"{TEAMS[i % len(TEAMS)]}-{i:02d}" for i in range(n_namespaces)]
    populator = _Populator(cluster, rng, node_names)
    replicasets = 0
    # Hundreds of thousands of new long-lived objects would trigger many full GC
    # passes that find nothing to free.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while populator.pods < n_pods:
            replicas = min(rng.randint(1, max_replicas), n_pods - populator.pods)
            populator.add_deployment(rng.choice(namespace_names), replicas)
            replicasets += 1
        cluster.bulk_load(populator.objects)
    finally:
        if gc_was_enabled:
            gc.enable()
    return PopulateResult(
        pods=populator.pods,
        replicasets=replicasets,
        nodes=n_nodes,
        namespaces=n_namespaces,
        seconds=time.perf_counter() - started,
    )


# --- churn ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Deployment:
    name: str
    uid: str
    replicas: int
    rs_name: str = ""
    rs_uid: str = ""
    pods: list[str] = field(default_factory=list)
    old_replicasets: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    name: str
    pod: str
    done: bool = False


@dataclass(slots=True)
class ChurnStats:
    operations: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.operations.values())


OPERATION_WEIGHTS: dict[str, float] = {
    "rollout": 1.0,
    "statefulset_restart": 2.0,
    "job_start": 2.0,
    "job_finish": 2.0,
    "job_cleanup": 1.0,
    "host_network": 1.0,
    "container_restart": 3.0,
    "label_change": 3.0,
}


class Churn:
    """Seeded, rate-limited workload activity against a FakeCluster.

    ``setup()`` (called by the first ``step()``) creates the namespace's
    Deployments, StatefulSet pods and host-network pods; every ``step()`` then
    performs one weighted random operation. Graceful deletes complete on the
    cluster's scaled grace timers, so run inside the event loop.
    """

    def __init__(
        self,
        cluster: FakeCluster,
        *,
        seed: int = 0,
        namespace: str = "churn",
        nodes: int = 3,
        deployments: int = 3,
        replicas: int = 3,
        statefulset_replicas: int = 3,
        host_network_per_node: int = 2,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.namespace = namespace
        self.node_names = [f"{namespace}-node-{i}" for i in range(1, nodes + 1)]
        self.deployment_count = deployments
        self.replicas = replicas
        self.statefulset_replicas = statefulset_replicas
        self.host_network_per_node = host_network_per_node
        self.weights = dict(weights or OPERATION_WEIGHTS)
        self.stats = ChurnStats()
        self.deployments: list[_Deployment] = []
        self.statefulset_uid = ""
        self.jobs: list[_Job] = []
        self.host_network_pods: list[str] = []
        self._ready = False

    # --- helpers ------------------------------------------------------------------

    def _uid(self) -> str:
        return random_uuid(self.rng)

    def _node(self) -> str:
        return self.rng.choice(self.node_names)

    def _exists(self, name: str) -> bool:
        return self.cluster.stored(POD, self.namespace, name) is not None

    def _start_pod(
        self, name: str, *, labels: Mapping[str, str], owner: tuple[str, str, str], **kw: Any
    ) -> None:
        """Controller create (Pending, unscheduled), scheduler bind, kubelet Running with an IP."""
        self.cluster.create_pod(
            self.namespace,
            name,
            labels=labels,
            owner=owner,
            uid=self._uid(),
            generate_name=kw.pop("generate_name", None),
            restart_policy=kw.pop("restart_policy", "Always"),
            finalizers=kw.pop("finalizers", ()),
        )
        self.cluster.bind_pod(self.namespace, name, self._node())
        self.cluster.set_pod_phase(self.namespace, name, "Running", ip=kw.pop("ip", None))

    def _new_replicaset(self, deployment: _Deployment) -> None:
        pod_hash = "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(10))
        deployment.rs_name = f"{deployment.name}-{pod_hash}"
        deployment.rs_uid = self._uid()
        self.cluster.create_replicaset(
            self.namespace,
            deployment.rs_name,
            labels=self._deployment_labels(deployment),
            replicas=deployment.replicas,
            owner=("Deployment", deployment.name, deployment.uid),
            uid=deployment.rs_uid,
        )

    @staticmethod
    def _deployment_labels(deployment: _Deployment) -> dict[str, str]:
        pod_hash = deployment.rs_name.rsplit("-", 1)[-1]
        return {"app": deployment.name, "pod-template-hash": pod_hash}

    def _start_deployment_pod(self, deployment: _Deployment) -> str:
        name = f"{deployment.rs_name}-{random_suffix(5, self.rng)}"
        self._start_pod(
            name,
            labels=self._deployment_labels(deployment),
            owner=("ReplicaSet", deployment.rs_name, deployment.rs_uid),
            generate_name=f"{deployment.rs_name}-",
        )
        return name

    def _sts_labels(self, ordinal: int) -> dict[str, str]:
        return {
            "app": "db",
            "apps.kubernetes.io/pod-index": str(ordinal),
            "statefulset.kubernetes.io/pod-name": f"db-{ordinal}",
        }

    def _delete(self, name: str, grace: int | None = None) -> None:
        with contextlib.suppress(NotFound):
            self.cluster.delete_pod(self.namespace, name, grace)

    # --- setup and operations ----------------------------------------------------------

    def setup(self) -> None:
        if self._ready:
            return
        self._ready = True
        for node in self.node_names:
            if self.cluster.stored(NODE, "", node) is None:
                self.cluster.create_node(node)
        for i in range(self.deployment_count):
            deployment = _Deployment(f"deploy-{i}", self._uid(), self.replicas)
            self._new_replicaset(deployment)
            deployment.pods = [self._start_deployment_pod(deployment) for _ in range(self.replicas)]
            self.deployments.append(deployment)
        self.statefulset_uid = self._uid()
        for ordinal in range(self.statefulset_replicas):
            self._start_pod(
                f"db-{ordinal}",
                labels=self._sts_labels(ordinal),
                owner=("StatefulSet", "db", self.statefulset_uid),
            )
        for node in self.node_names:
            for _ in range(self.host_network_per_node):
                self._create_host_network_pod(node)

    def step(self) -> str:
        """Perform one random operation; returns its name."""
        self.setup()
        names = list(self.weights)
        operation = self.rng.choices(names, weights=[self.weights[n] for n in names])[0]
        getattr(self, f"_op_{operation}")()
        self.stats.operations[operation] += 1
        return operation

    async def run(
        self, *, duration: float | None = None, count: int | None = None, rate: float = 100.0
    ) -> ChurnStats:
        """Step at most ``rate`` times per second until ``duration`` seconds or ``count`` steps."""
        if duration is None and count is None:
            raise ValueError("give duration or count")
        loop = asyncio.get_running_loop()
        started = loop.time()
        interval = 1.0 / rate
        done = 0
        while (count is None or done < count) and (
            duration is None or loop.time() - started < duration
        ):
            self.step()
            done += 1
            next_at = started + done * interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        self.stats.seconds += loop.time() - started
        return self.stats

    def _op_rollout(self) -> None:
        deployment = self.rng.choice(self.deployments)
        old_rs, old_pods = deployment.rs_name, deployment.pods
        self._new_replicaset(deployment)
        deployment.pods = []
        for old in old_pods:
            deployment.pods.append(self._start_deployment_pod(deployment))
            self._delete(old)
        self.cluster.scale_replicaset(self.namespace, old_rs, 0)
        deployment.old_replicasets.append(old_rs)
        while len(deployment.old_replicasets) > 2:  # revisionHistoryLimit
            with contextlib.suppress(NotFound):
                self.cluster.delete_replicaset(self.namespace, deployment.old_replicasets.pop(0))

    def _op_statefulset_restart(self) -> None:
        ordinal = self.rng.randrange(self.statefulset_replicas)
        name = f"db-{ordinal}"
        old = self.cluster.get_pod(self.namespace, name)
        old_ip = (old or {}).get("status", {}).get("podIP")
        self._delete(name, 0)
        # The controller recreates the same name; the CNI hands out a different address.
        self.cluster.create_pod(
            self.namespace,
            name,
            labels=self._sts_labels(ordinal),
            owner=("StatefulSet", "db", self.statefulset_uid),
            uid=self._uid(),
        )
        node = self._node()
        self.cluster.bind_pod(self.namespace, name, node)
        avoid = frozenset({old_ip}) if old_ip else frozenset()
        self.cluster.set_pod_phase(
            self.namespace, name, "Running", ip=self.cluster.ips.allocate(node, avoid=avoid)
        )

    def _op_job_start(self) -> None:
        cron = "report"
        job_name = f"{cron}-{self.rng.randrange(10**8):08d}"
        job_uid = self._uid()
        self.cluster.create_job(
            self.namespace,
            job_name,
            labels={"app": cron},
            owner=("CronJob", cron, self._uid()),
            uid=job_uid,
        )
        pod = f"{job_name}-{random_suffix(5, self.rng)}"
        self._start_pod(
            pod,
            labels={
                "app": cron,
                "batch.kubernetes.io/controller-uid": job_uid,
                "batch.kubernetes.io/job-name": job_name,
                "controller-uid": job_uid,
                "job-name": job_name,
            },
            owner=("Job", job_name, job_uid),
            generate_name=f"{job_name}-",
            restart_policy="Never",
            finalizers=["batch.kubernetes.io/job-tracking"],
        )
        self.jobs.append(_Job(job_name, pod))

    def _op_job_finish(self) -> None:
        running = [j for j in self.jobs if not j.done]
        if not running:
            self._op_job_start()
            return
        job = self.rng.choice(running)
        job.done = True
        if not self._exists(job.pod):
            return
        # Succeeded keeps podIP in the status; the address itself goes back to the pool.
        self.cluster.set_pod_phase(self.namespace, job.pod, "Succeeded")
        self.cluster.update_pod(
            self.namespace, job.pod, lambda p: p["metadata"].pop("finalizers", None)
        )
        with contextlib.suppress(NotFound):
            self.cluster.complete_job(self.namespace, job.name)

    def _op_job_cleanup(self) -> None:
        done = [j for j in self.jobs if j.done]
        if not done:
            return
        job = done[0]
        self.jobs.remove(job)
        with contextlib.suppress(NotFound):
            self.cluster.delete_job(self.namespace, job.name)
        self._delete(job.pod)

    def _create_host_network_pod(self, node: str) -> None:
        name = f"node-agent-{random_suffix(5, self.rng)}"
        self.cluster.create_pod(
            self.namespace,
            name,
            labels={"app": "node-agent"},
            node=node,
            host_network=True,
            owner=("DaemonSet", "node-agent", "00000000-0000-4000-8000-00000000da05"),
            uid=self._uid(),
        )
        self.host_network_pods.append(name)

    def _op_host_network(self) -> None:
        if self.host_network_pods and self.rng.random() < 0.5:
            name = self.host_network_pods.pop(self.rng.randrange(len(self.host_network_pods)))
            self._delete(name)
        else:
            self._create_host_network_pod(self._node())

    def _random_live_pod(self) -> str | None:
        candidates = [p for d in self.deployments for p in d.pods if self._exists(p)]
        return self.rng.choice(candidates) if candidates else None

    def _op_container_restart(self) -> None:
        name = self._random_live_pod()
        if name:
            self.cluster.restart_container(self.namespace, name)

    def _op_label_change(self) -> None:
        name = self._random_live_pod()
        if name:
            self.cluster.set_pod_labels(self.namespace, name, {"churn/seq": str(self.stats.total)})
