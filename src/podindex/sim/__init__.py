"""podindex.sim: a Kubernetes API server emulator for tests, demos and benchmarks.

podindex only ever talks to Kubernetes over HTTP(S) LIST/WATCH, so the most
faithful stand-in is a real HTTP server that answers exactly like
kube-apiserver v1.36 (as recorded in ../shared/k8s-recordings) while letting
the caller script the cluster's contents and inject faults. See
:class:`FakeCluster` for the cluster and :mod:`podindex.sim.churn` for load.
Beyond LIST/WATCH/GET/DELETE it serves what a dashboard needs: pod logs
(:mod:`podindex.sim.logs`), exec over WebSocket with an emulated shell
(:mod:`podindex.sim.kubelet`, :mod:`podindex.sim.shell`) and Events in both
core/v1 and events.k8s.io/v1 (:mod:`podindex.sim.events`).
"""

from podindex.sim.churn import Churn, ChurnStats, PopulateResult, populate
from podindex.sim.cluster import Conflict, FakeCluster, NotFound
from podindex.sim.shell import ExecSession
from podindex.sim.store import EVENT, EVENT_V1, JOB, NODE, POD, REPLICASET, Resource

__all__ = [
    "EVENT",
    "EVENT_V1",
    "JOB",
    "NODE",
    "POD",
    "REPLICASET",
    "Churn",
    "ChurnStats",
    "Conflict",
    "ExecSession",
    "FakeCluster",
    "NotFound",
    "PopulateResult",
    "Resource",
    "populate",
]
