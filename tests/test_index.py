"""Example-based tests of the pod index, one named scenario per rule of DESIGN.md.

Pods are built from real kube-apiserver recordings (shared/k8s-recordings)
and changed with ``msgspec.structs.replace`` so every scenario reads as the
events a watch would deliver.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from podindex.addresses import normalise_ip
from podindex.index import Index
from podindex.listing import Listing
from podindex.model import (
    ContainerState,
    ContainerStatus,
    ObjectMeta,
    OwnerRecord,
    OwnerReference,
    PartialObjectMetadataList,
    Pod,
    PodIP,
    PodList,
    PodSpec,
    PodStatus,
    RawWatchEvent,
    StateTerminated,
    StateWaiting,
)
from podindex.selectors import parse_selector
from podindex.sharing import PRUNE_SLICE
from tests.recordings import RECORDINGS

C1 = "prod"
C2 = "staging"
T0 = 1_000.0


def recorded_list(name: str) -> list[Pod]:
    body = json.loads((RECORDINGS / name).read_text())["response"]["body"]
    return msgspec.json.decode(body, type=PodList).items or []


def recorded_pod(list_name: str, pod_name: str) -> Pod:
    (pod,) = [p for p in recorded_list(list_name) if p.metadata.name == pod_name]
    return pod


def web1() -> Pod:
    """team-a/web-1: Running on node-1 with 10.244.1.11 (recorded)."""
    return recorded_pod("02-list-pods-all-namespaces-limit2.json", "web-1")


def db0() -> Pod:
    """team-a/db-0: Running on node-2 with 10.244.2.10 (recorded)."""
    return recorded_pod("02-list-pods-all-namespaces-limit2.json", "db-0")


def changed(
    pod: Pod,
    *,
    uid: str | None = None,
    rv: int | None = None,
    name: str | None = None,
    namespace: str | None = None,
    created: str | None = None,
    labels: dict[str, str] | None = None,
    owners: list[OwnerReference] | None = None,
    phase: str | None = None,
    ips: list[str] | None = None,
    node: str | None = None,
    host_ip: str | None = None,
    host_network: bool | None = None,
) -> Pod:
    """A copy of ``pod`` with the given fields changed (the original is untouched)."""
    meta = msgspec.structs.replace(pod.metadata)
    spec = msgspec.structs.replace(pod.spec)
    status = msgspec.structs.replace(pod.status)
    if uid is not None:
        meta.uid = uid
    if rv is not None:
        meta.resourceVersion = str(rv)
    if name is not None:
        meta.name = name
    if namespace is not None:
        meta.namespace = namespace
    if created is not None:
        meta.creationTimestamp = created
    if labels is not None:
        meta.labels = labels
    if owners is not None:
        meta.ownerReferences = tuple(owners)
    if phase is not None:
        status.phase = phase
    if ips is not None:
        status.podIP = ips[0] if ips else ""
        status.podIPs = tuple(PodIP(ip) for ip in ips) if ips else None
    if node is not None:
        spec.nodeName = node
    if host_ip is not None:
        status.hostIP = host_ip
    if host_network is not None:
        spec.hostNetwork = host_network
    return Pod(metadata=meta, spec=spec, status=status)


def new_pod(
    name: str,
    uid: str,
    *,
    namespace: str = "default",
    ips: list[str] | None = None,
    created: str = "2026-11-23T13:00:00Z",
    rv: int = 1,
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    node: str = "node-1",
    host_network: bool = False,
    host_ip: str = "10.0.0.11",
    owners: list[OwnerReference] | None = None,
) -> Pod:
    ip_list = ips or []
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            uid=uid,
            resourceVersion=str(rv),
            creationTimestamp=created,
            labels=labels or {},
            ownerReferences=tuple(owners or ()),
        ),
        spec=PodSpec(nodeName=node, hostNetwork=host_network),
        status=PodStatus(
            phase=phase,
            hostIP=host_ip,
            podIP=ip_list[0] if ip_list else "",
            podIPs=tuple(PodIP(ip) for ip in ip_list) or None,
        ),
    )


def answer(index: Index, ip: str, now: float) -> tuple[int, dict[str, Any]] | None:
    found = index.lookup_ip(ip, now)
    if found is None:
        return None
    status, body = found
    decoded: dict[str, Any] = msgspec.json.decode(body)
    return status, decoded


def live(index: Index, ip: str, now: float = T0) -> dict[str, Any]:
    found = answer(index, ip, now)
    assert found is not None, f"{ip} resolves to nothing"
    status, body = found
    assert status == 200
    assert body["state"] == "live", body
    return body


# --- IP -> pod, now ------------------------------------------------------------


def test_recorded_pod_resolves_by_ip() -> None:
    index = Index()
    pod = web1()
    index.upsert_pod(C1, pod, T0)
    body = live(index, "10.244.1.11")
    assert body["uid"] == pod.metadata.uid
    assert (body["namespace"], body["name"], body["cluster"]) == ("team-a", "web-1", C1)
    assert body["pod_ip"] == "10.244.1.11"
    assert body["node_name"] == "node-1"
    assert body["labels"] == {"app": "web", "tier": "demo"}
    assert index.lookup_ip("10.244.1.12", T0) is None


def test_ip_reuse_after_delete() -> None:
    index = Index()
    old = web1()
    index.upsert_pod(C1, old, T0)
    index.delete_pod(C1, old, T0 + 1)
    successor = changed(old, uid="web-1-second-life", rv=400, created="2026-11-23T13:05:00Z")
    index.upsert_pod(C1, successor, T0 + 2)
    body = live(index, "10.244.1.11", T0 + 2)
    assert body["uid"] == "web-1-second-life"
    assert index.by_name(C1, "team-a", "web-1") is index.get(C1, "web-1-second-life")


def test_late_modified_of_older_pod_does_not_displace_newer_owner() -> None:
    index = Index()
    old = web1()  # created 12:56:34
    newer = changed(old, uid="new-uid", name="web-9", rv=500, created="2026-11-23T13:10:00Z")
    index.upsert_pod(C1, old, T0)
    index.upsert_pod(C1, newer, T0 + 1)  # the old pod's DELETE was missed
    assert live(index, "10.244.1.11")["uid"] == "new-uid"
    # A late MODIFIED for the older pod (a newer resourceVersion of *that* pod).
    assert index.upsert_pod(C1, changed(old, rv=501, labels={"late": "yes"}), T0 + 2)
    assert live(index, "10.244.1.11")["uid"] == "new-uid"


def test_late_modified_after_delete_is_ignored() -> None:
    index = Index()
    old = web1()
    index.upsert_pod(C1, old, T0)
    index.delete_pod(C1, changed(old, rv=700), T0 + 1)  # DELETED carries the deletion's version
    newer = changed(old, uid="new-uid", rv=500, created="2026-11-23T13:10:00Z")
    index.upsert_pod(C1, newer, T0 + 2)
    assert not index.upsert_pod(C1, changed(old, rv=600), T0 + 3)
    assert index.get(C1, old.metadata.uid) is None
    assert len(index) == 1
    assert live(index, "10.244.1.11", T0 + 3)["uid"] == "new-uid"


def test_pod_leaving_and_reentering_a_selector_scope_comes_back() -> None:
    # A label-selector watch sends DELETED when a pod stops matching and ADDED,
    # same uid, newer version, when it matches again.
    index = Index()
    pod = web1()
    index.upsert_pod(C1, changed(pod, rv=300), T0)
    index.delete_pod(C1, changed(pod, rv=310, labels={"team": "b"}), T0 + 1)
    assert index.get(C1, pod.metadata.uid) is None
    assert not index.upsert_pod(C1, changed(pod, rv=305), T0 + 2)  # older than the DELETED
    assert index.upsert_pod(C1, changed(pod, rv=320), T0 + 3)
    assert live(index, "10.244.1.11", T0 + 3)["uid"] == pod.metadata.uid


def test_replayed_event_with_older_resource_version_is_ignored() -> None:
    index = Index()
    pod = web1()
    index.upsert_pod(C1, changed(pod, rv=300, phase="Succeeded"), T0)
    assert not index.upsert_pod(C1, changed(pod, rv=299), T0 + 1)
    assert not index.upsert_pod(C1, changed(pod, rv=300, phase="Running"), T0 + 1)
    record = index.get(C1, pod.metadata.uid)
    assert record is not None
    assert record.pod.status.phase == "Succeeded"


def test_delete_of_old_uid_keeps_the_new_pods_ip() -> None:
    index = Index()
    old = web1()
    newer = changed(old, uid="new-uid", rv=500, created="2026-11-23T13:10:00Z")
    index.upsert_pod(C1, old, T0)
    index.upsert_pod(C1, newer, T0 + 1)
    assert index.delete_pod(C1, old, T0 + 2)
    assert live(index, "10.244.1.11", T0 + 2)["uid"] == "new-uid"
    # And a DELETE for a uid the index never saw changes nothing.
    assert not index.delete_pod(C1, changed(old, uid="never-seen"), T0 + 3)
    assert live(index, "10.244.1.11", T0 + 3)["uid"] == "new-uid"


def test_late_delete_after_the_ip_moved_on_keeps_the_new_owner() -> None:
    index = Index()
    old = web1()
    index.upsert_pod(C1, changed(old, phase="Succeeded", rv=300), T0)  # IP freed
    newer = changed(old, uid="new-uid", rv=500, created="2026-11-23T13:10:00Z")
    index.upsert_pod(C1, newer, T0 + 1)
    index.delete_pod(C1, old, T0 + 2)  # the old pod's DELETE arrives late
    assert live(index, "10.244.1.11", T0 + 2)["uid"] == "new-uid"


def test_same_creation_time_the_pod_seen_later_wins() -> None:
    index = Index()
    first = new_pod("a", "uid-a", ips=["10.1.0.1"])
    second = new_pod("b", "uid-b", ips=["10.1.0.1"])  # same creationTimestamp
    index.upsert_pod(C1, first, T0)
    index.upsert_pod(C1, second, T0)
    assert live(index, "10.1.0.1")["uid"] == "uid-b"
    index.upsert_pod(C1, changed(first, rv=2), T0)  # updates keep first-seen order
    assert live(index, "10.1.0.1")["uid"] == "uid-b"


def test_terminated_within_grace_then_gone() -> None:
    index = Index(grace_seconds=30)
    pod = web1()
    index.upsert_pod(C1, pod, T0)
    index.delete_pod(C1, pod, T0 + 10)
    found = answer(index, "10.244.1.11", T0 + 10)
    assert found is not None
    status, body = found
    assert status == 200
    assert body["state"] == "terminated"
    assert body["uid"] == pod.metadata.uid
    assert body["pod_ip"] == "10.244.1.11"
    assert body["released_at"] is not None
    assert answer(index, "10.244.1.11", T0 + 39.9) is not None
    index.expire(T0 + 39.9)
    assert answer(index, "10.244.1.11", T0 + 39.9) is not None
    # The lookup itself refuses a stale grace answer, before ``expire`` runs.
    assert index.lookup_ip("10.244.1.11", T0 + 40) is None
    index.expire(T0 + 40)
    assert index.lookup_ip("10.244.1.11", T0 + 40) is None
    assert "10.244.1.11" not in index.answers
    assert len(index) == 0


def test_the_grace_answer_and_history_show_the_deleted_pods_final_state() -> None:
    index = Index(grace_seconds=30)
    index.changes = []
    pod = web1()
    index.upsert_pod(C1, pod, T0)
    final = changed(pod, rv=900, phase="Succeeded", labels={"app": "web", "done": "yes"})
    index.delete_pod(C1, final, T0 + 10)
    found = answer(index, "10.244.1.11", T0 + 10)
    assert found is not None
    assert found[1]["state"] == "terminated"
    assert found[1]["phase"] == "Succeeded"
    assert found[1]["labels"] == {"app": "web", "done": "yes"}
    change = index.changes[-1]
    assert change.dead
    assert change.record.pod.status.phase == "Succeeded"
    assert change.record.resource_version == "900"


def test_a_delete_that_only_moves_the_version_keeps_the_kept_pod() -> None:
    """The usual DELETED event: the last MODIFIED pod with a new resourceVersion."""
    index = Index()
    index.changes = []
    pod = web1()
    index.upsert_pod(C1, pod, T0)
    kept = index.get(C1, pod.metadata.uid)
    assert kept is not None
    index.delete_pod(C1, changed(pod, rv=901), T0 + 10)
    final = index.changes[-1].record
    assert final.pod.metadata is kept.pod.metadata  # not copied and re-shared again
    assert final.resource_version == "901"
    assert final.ips == kept.ips
    found = answer(index, "10.244.1.11", T0 + 10)
    assert found is not None
    assert (found[1]["state"], found[1]["uid"]) == ("terminated", pod.metadata.uid)


def test_grace_is_configurable() -> None:
    index = Index(grace_seconds=5)
    pod = web1()
    index.upsert_pod(C1, pod, T0)
    index.delete_pod(C1, pod, T0)
    assert answer(index, "10.244.1.11", T0 + 4.9) is not None
    index.expire(T0 + 5)
    assert index.lookup_ip("10.244.1.11", T0 + 5) is None


def test_reuse_within_grace_replaces_the_terminated_answer() -> None:
    index = Index()
    old = web1()
    index.upsert_pod(C1, old, T0)
    index.delete_pod(C1, old, T0 + 1)
    successor = new_pod("other", "uid-other", namespace="team-b", ips=["10.244.1.11"])
    index.upsert_pod(C1, successor, T0 + 2)
    body = live(index, "10.244.1.11", T0 + 2)
    assert body["uid"] == "uid-other"
    # The end of the old pod's grace changes nothing for its successor.
    index.expire(T0 + 100)
    assert live(index, "10.244.1.11", T0 + 100)["uid"] == "uid-other"


def test_succeeded_pod_frees_its_ip() -> None:
    index = Index()
    job_pod = new_pod("job-x", "uid-job", ips=["10.1.0.7"], rv=1)
    index.upsert_pod(C1, job_pod, T0)
    index.upsert_pod(C1, changed(job_pod, rv=2, phase="Succeeded"), T0 + 1)
    # The pod stays in the index (kubectl still lists it) but no longer holds the IP.
    record = index.get(C1, "uid-job")
    assert record is not None
    assert record.ips == ()
    found = answer(index, "10.1.0.7", T0 + 1)
    assert found is not None
    assert found[1]["state"] == "terminated"
    assert found[1]["phase"] == "Succeeded"
    # A new pod takes the IP at once, within the grace period.
    index.upsert_pod(C1, new_pod("next", "uid-next", ips=["10.1.0.7"]), T0 + 2)
    assert live(index, "10.1.0.7", T0 + 2)["uid"] == "uid-next"


def test_pods_listed_already_terminal_never_claim() -> None:
    index = Index()
    index.replace_pods(C1, recorded_list("09-list-pods-rv0-limit2.json"), T0)
    # st-completed (Succeeded), st-error and st-oomkilled (Failed) keep podIP in status.
    for ip in ("10.244.1.105", "10.244.1.106", "10.244.1.107"):
        assert index.lookup_ip(ip, T0) is None
    assert live(index, "10.244.1.101")["name"] == "st-running"
    # Pending with an IP (init containers running) holds it.
    assert live(index, "10.244.1.108")["name"] == "st-init-running"
    assert index.get(C1, "f7597771-0000") is None
    assert len(index) == 28


def test_host_network_pods_answer_as_their_node() -> None:
    index = Index()
    proxy = new_pod(
        "kube-proxy-x",
        "uid-proxy",
        namespace="kube-system",
        host_network=True,
        ips=["10.0.0.11"],
        node="node-1",
        host_ip="10.0.0.11",
    )
    cni = new_pod(
        "cni-x",
        "uid-cni",
        namespace="kube-system",
        host_network=True,
        ips=["10.0.0.11"],
        node="node-1",
        host_ip="10.0.0.11",
    )
    index.upsert_pod(C1, proxy, T0)
    index.upsert_pod(C1, cni, T0)
    found = answer(index, "10.0.0.11", T0)
    assert found is not None
    status, body = found
    assert status == 200
    assert body["state"] == "node"
    assert body["node_name"] == "node-1"
    assert body["host_network"] is True
    assert [p["name"] for p in body["pods"]] == ["cni-x", "kube-proxy-x"]
    assert {p["uid"] for p in body["pods"]} == {"uid-proxy", "uid-cni"}
    # Neither pod holds a pod IP of its own.
    assert index.holder(C1, "10.0.0.11") is None
    # One leaves: the node answer lists the other, never a terminated pod.
    index.delete_pod(C1, cni, T0 + 1)
    found = answer(index, "10.0.0.11", T0 + 1)
    assert found is not None
    assert found[1]["state"] == "node"
    assert [p["name"] for p in found[1]["pods"]] == ["kube-proxy-x"]
    index.delete_pod(C1, proxy, T0 + 2)
    assert index.lookup_ip("10.0.0.11", T0 + 2) is None


def test_ordinary_pod_on_node_ip_wins_over_node_answer() -> None:
    index = Index()
    index.upsert_pod(C1, new_pod("proxy", "uid-proxy", host_network=True, ips=["10.0.0.11"]), T0)
    index.upsert_pod(C1, new_pod("odd", "uid-odd", ips=["10.0.0.11"]), T0)
    assert live(index, "10.0.0.11")["uid"] == "uid-odd"


def test_ip_in_two_clusters_is_ambiguous() -> None:
    index = Index()
    index.upsert_pod(C1, web1(), T0)
    index.upsert_pod(C2, changed(web1(), uid="staging-uid"), T0)
    found = answer(index, "10.244.1.11", T0)
    assert found is not None
    status, body = found
    assert status == 409
    assert body["error"] == "ambiguous"
    assert sorted(m["cluster"] for m in body["matches"]) == [C1, C2]
    assert index.holder(C2, "10.244.1.11") is index.get(C2, "staging-uid")
    index.delete_pod(C2, changed(web1(), uid="staging-uid"), T0 + 1)
    assert live(index, "10.244.1.11", T0 + 1)["cluster"] == C1


def test_node_ip_in_two_clusters_is_ambiguous() -> None:
    """Overlapping node CIDRs: 409, like a pod IP in two clusters, never a 200 error body."""
    index = Index()
    for cluster in (C1, C2):
        index.upsert_pod(
            cluster, new_pod("proxy", "uid-" + cluster, host_network=True, ips=["10.0.0.11"]), T0
        )
    found = answer(index, "10.0.0.11", T0)
    assert found is not None
    status, body = found
    assert status == 409
    assert sorted(m["cluster"] for m in body["matches"]) == [C1, C2]
    assert all(m["state"] == "node" for m in body["matches"])


@pytest.mark.parametrize(
    "query",
    [
        "fd00:10:244::1b",
        "FD00:10:244:0:0:0:0:1B",
        "fd00:10:244::001b",
        "[fd00:10:244::1b]",
        "fd00:10:244::1b%eth0",
    ],
)
def test_ipv6_lookup_after_normalising(query: str) -> None:
    index = Index()
    dual = changed(web1(), ips=["10.244.1.11", "fd00:10:244:0::1b"])
    index.upsert_pod(C1, dual, T0)
    canonical = normalise_ip(query)
    assert canonical == "fd00:10:244::1b"
    body = live(index, canonical)
    assert body["uid"] == dual.metadata.uid
    assert body["pod_ips"] == ["10.244.1.11", "fd00:10:244::1b"]
    assert live(index, "10.244.1.11")["uid"] == dual.metadata.uid


@pytest.mark.parametrize(
    "query",
    [
        "::ffff:10.244.1.11",
        "::FFFF:10.244.1.11",
        "10.244.001.011",
        " 10.244.1.11 ",
        "::ffff:af4:10b",
    ],
)
def test_ipv4_spellings_find_the_pod(query: str) -> None:
    index = Index()
    index.upsert_pod(C1, web1(), T0)
    canonical = normalise_ip(query)
    assert canonical == "10.244.1.11"
    assert live(index, canonical)["name"] == "web-1"


def test_deleting_a_dual_stack_pod_releases_both_families() -> None:
    index = Index()
    dual = changed(web1(), ips=["10.244.1.11", "fd00::1b"])
    index.upsert_pod(C1, dual, T0)
    index.delete_pod(C1, dual, T0)
    for ip in ("10.244.1.11", "fd00::1b"):
        found = answer(index, ip, T0)
        assert found is not None
        assert found[1]["state"] == "terminated"
        assert found[1]["pod_ips"] == ["10.244.1.11", "fd00::1b"]


# --- relist ----------------------------------------------------------------------


def test_relist_removes_vanished_pods_and_keeps_no_stale_entries() -> None:
    index = Index()
    first = [
        *recorded_list("02-list-pods-all-namespaces-limit2.json"),
        *recorded_list("03-list-pods-continue.json"),
        *recorded_list("04-list-pods-continue-last.json"),
    ]
    index.replace_pods(C1, first, T0)
    index.replace_pods(C2, [changed(web1(), uid="other-cluster")], T0)
    assert len(index) == 6
    assert live(index, "10.244.2.10")["name"] == "db-0"

    # 410 Gone; meanwhile db-0 was deleted, web-2 moved to another IP, web-1 got a new label.
    web2 = next(p for p in first if p.metadata.name == "web-2")
    second = [p for p in first if p.metadata.name not in ("db-0", "web-2", "web-1")] + [
        changed(web2, rv=250, ips=["10.244.1.99"]),
        changed(web1(), rv=281, labels={"app": "web2"}),
    ]
    index.replace_pods(C1, second, T0 + 5, version="1000")

    assert len(index) == 5
    assert index.by_name(C1, "team-a", "db-0") is None
    assert [r.name for r in index.select(cluster=C1, namespace="team-a")] == ["web-1", "web-2"]
    assert index.select(selector=parse_selector("app=db")) == []
    assert [(r.name, r.cluster) for r in index.select(selector=parse_selector("app=web"))] == [
        ("web-1", C2),
        ("web-2", C1),
    ]
    # Listed even though its resourceVersion went down: the list is the truth.
    assert live(index, "10.244.1.99", T0 + 5)["name"] == "web-2"
    # Vanished and moved-away IPs are in their grace period, then gone.
    for ip in ("10.244.2.10", "10.244.1.12"):
        found = answer(index, ip, T0 + 5)
        assert found is not None
        assert found[1]["state"] == "terminated"
    index.expire(T0 + 36)
    assert index.lookup_ip("10.244.2.10", T0 + 36) is None
    assert index.lookup_ip("10.244.1.12", T0 + 36) is None
    # Other clusters are untouched.
    assert index.get(C2, "other-cluster") is not None
    # A late watch event for the vanished pod (older than the list) does not bring it back.
    db = next(p for p in first if p.metadata.name == "db-0")
    assert not index.upsert_pod(C1, changed(db, rv=999), T0 + 37)
    # One newer than the list does: it re-entered a selector-scoped watch.
    assert index.upsert_pod(C1, changed(db, rv=1001), T0 + 38)


def test_relist_brings_back_a_pod_marked_deleted() -> None:
    index = Index()
    pod = web1()
    index.upsert_pod(C1, pod, T0)
    index.delete_pod(C1, pod, T0 + 1)
    index.replace_pods(C1, [pod], T0 + 2)
    assert live(index, "10.244.1.11", T0 + 2)["uid"] == pod.metadata.uid
    assert index.upsert_pod(C1, changed(pod, rv=10_000), T0 + 3)


def test_relist_shows_the_holder_when_it_and_a_stale_claimant_both_vanish() -> None:
    """The grace answer names the pod that held the IP, whatever the dict order."""
    index = Index()
    newer = new_pod("new", "uid-new", ips=["10.1.0.5"], created="2026-11-23T13:00:09Z")
    stale = new_pod("stale", "uid-stale", ips=["10.1.0.5"], created="2026-11-23T13:00:01Z")
    index.upsert_pod(C1, newer, T0)  # seen first, but created later: the holder
    index.upsert_pod(C1, stale, T0)
    assert live(index, "10.1.0.5")["uid"] == "uid-new"
    index.replace_pods(C1, [], T0 + 1)
    found = answer(index, "10.1.0.5", T0 + 1)
    assert found is not None
    assert (found[1]["uid"], found[1]["state"]) == ("uid-new", "terminated")


def test_recorded_watch_after_recorded_list() -> None:
    """LIST (02-04), then the WATCH of 05: status patch, label change, graceful delete, create."""
    index = Index()
    pods = [
        *recorded_list("02-list-pods-all-namespaces-limit2.json"),
        *recorded_list("03-list-pods-continue.json"),
        *recorded_list("04-list-pods-continue-last.json"),
    ]
    index.replace_pods(C1, pods, T0)
    stream = json.loads((RECORDINGS / "05-watch-pods-bookmarks.json").read_text())
    now = T0
    for line in stream["response"]["body"]:
        if "line" not in line:
            continue
        now = T0 + line["ms"] / 1000
        event = msgspec.json.decode(line["line"], type=RawWatchEvent)
        if event.type in ("ADDED", "MODIFIED"):
            assert index.upsert_pod(C1, msgspec.json.decode(event.object, type=Pod), now)
        elif event.type == "DELETED":
            assert index.delete_pod(C1, msgspec.json.decode(event.object, type=Pod), now)
        if event.type == "MODIFIED" and T0 + 6 < now < T0 + 8.1:
            # Terminating (deletionTimestamp set) still holds its IP until DELETED.
            assert live(index, "10.244.2.10", now)["deletion_timestamp"] is not None
    assert [r.name for r in index.select(selector=parse_selector("version=v2"))] == ["web-2"]
    assert index.by_name(C1, "team-a", "db-0") is None
    web3 = index.by_name(C1, "team-a", "web-3")
    assert web3 is not None
    assert web3.ips == ()
    assert [r.name for r in index.select(node="node-2")] == ["web-3", "api-1"]
    # db-0 was deleted at ~8.06 s; the stream ended at 70 s.
    assert index.lookup_ip("10.244.2.10", T0 + 30) is not None
    index.expire(T0 + 70)
    assert index.lookup_ip("10.244.2.10", T0 + 70) is None


# --- workload identity --------------------------------------------------------------


def apps_demo(name_prefix: str) -> Pod:
    (pod,) = [
        p
        for p in recorded_list("55-list-pods-apps-demo.json")
        if p.metadata.name.startswith(name_prefix)
    ][:1]
    return pod


def recorded_owners(list_name: str, kind: str, cluster: str = C1) -> list[OwnerRecord]:
    body = json.loads((RECORDINGS / list_name).read_text())["response"]["body"]
    items = msgspec.json.decode(body, type=PartialObjectMetadataList).items or []
    return [
        OwnerRecord(
            cluster=cluster,
            kind=kind,  # type: ignore[arg-type]
            namespace=i.metadata.namespace,
            name=i.metadata.name,
            uid=i.metadata.uid,
            owner=next(iter(i.metadata.ownerReferences), None),
        )
        for i in items
    ]


def test_owner_walk_replicaset_to_deployment() -> None:
    index = Index()
    index.replace_owners(
        C1, "ReplicaSet", recorded_owners("50-metadata-list-replicasets.json", "ReplicaSet")
    )
    pod = changed(apps_demo("frontend-"), ips=["10.244.3.4"], phase="Running")
    index.upsert_pod(C1, pod, T0)
    record = index.get(C1, pod.metadata.uid)
    assert record is not None
    assert (record.workload.kind, record.workload.name) == ("Deployment", "frontend")
    assert record.workload.identity == "frontend"
    assert record.workload.identity_source == "owner"
    # The selector labels leave out the per-revision pod-template-hash.
    assert record.workload.selector_labels == {"app": "frontend"}
    body = live(index, "10.244.3.4")
    assert body["workload"] == {"kind": "Deployment", "name": "frontend"}
    assert body["owner"]["kind"] == "ReplicaSet"
    assert [r.key for r in index.select(workload=(C1, "apps-demo", "Deployment", "frontend"))] == [
        record.key
    ]


def test_owner_arriving_after_the_pod_updates_its_identity() -> None:
    index = Index()
    pod = changed(apps_demo("standalone-rs-"), ips=["10.244.3.9"], phase="Running")
    renamed = changed(
        pod,
        uid="uid-rs-pod-2",
        name="api-5d8f-x",
        ips=["10.244.3.10"],
        labels={"app": "api", "pod-template-hash": "5d8f"},
        owners=[
            OwnerReference(kind="ReplicaSet", name="api-5d8f", uid="rs-uid-2", controller=True)
        ],
    )
    index.upsert_pod(C1, pod, T0)
    index.upsert_pod(C1, renamed, T0)
    # Before the ReplicaSet is known: a bare RS stays a ReplicaSet; with a template
    # hash the Deployment name is inferred.
    assert index.get(C1, pod.metadata.uid).workload.kind == "ReplicaSet"  # type: ignore[union-attr]
    inferred = index.get(C1, "uid-rs-pod-2")
    assert inferred is not None
    assert (inferred.workload.kind, inferred.workload.name) == ("Deployment", "api")

    # The ReplicaSet arrives, owned by a Deployment whose name is not the prefix.
    index.upsert_owner(
        OwnerRecord(
            cluster=C1,
            kind="ReplicaSet",
            namespace="apps-demo",
            name="standalone-rs",
            uid=pod.metadata.ownerReferences[0].uid,
            owner=OwnerReference(kind="Deployment", name="adopted", uid="dep-uid", controller=True),
        )
    )
    record = index.get(C1, pod.metadata.uid)
    assert record is not None
    assert (record.workload.kind, record.workload.name, record.workload.identity) == (
        "Deployment",
        "adopted",
        "adopted",
    )
    assert live(index, "10.244.3.9")["workload"] == {"kind": "Deployment", "name": "adopted"}
    assert [r.key for r in index.select(workload=(C1, "apps-demo", "Deployment", "adopted"))] == [
        record.key
    ]
    assert index.select(workload=(C1, "apps-demo", "ReplicaSet", "standalone-rs")) == []

    # The ReplicaSet goes away again: back to what the pod alone says.
    index.delete_owner(C1, pod.metadata.ownerReferences[0].uid)
    record = index.get(C1, pod.metadata.uid)
    assert record is not None
    assert record.workload.kind == "ReplicaSet"
    assert live(index, "10.244.3.9")["workload"] == {"kind": "ReplicaSet", "name": "standalone-rs"}


def test_job_owned_by_cronjob() -> None:
    index = Index()
    pod = changed(apps_demo("migrate-"), ips=["10.244.3.20"], phase="Running")
    index.upsert_pod(C1, pod, T0)
    record = index.get(C1, pod.metadata.uid)
    assert record is not None
    assert (record.workload.kind, record.workload.name) == ("Job", "migrate")
    # The controller-stamped labels are not part of the workload's selector.
    assert record.workload.selector_labels == {"app": "batch"}

    (job,) = recorded_owners("51-metadata-list-jobs.json", "Job")
    index.upsert_owner(
        msgspec.structs.replace(
            job,
            owner=OwnerReference(kind="CronJob", name="nightly-migrate", uid="cj", controller=True),
        )
    )
    record = index.get(C1, pod.metadata.uid)
    assert record is not None
    assert (record.workload.kind, record.workload.name) == ("CronJob", "nightly-migrate")
    assert record.workload.identity == "nightly-migrate"
    assert live(index, "10.244.3.20")["identity"] == "nightly-migrate"


def test_job_without_cronjob_stays_a_job() -> None:
    index = Index()
    index.replace_owners(C1, "Job", recorded_owners("51-metadata-list-jobs.json", "Job"))
    pod = apps_demo("migrate-")
    index.upsert_pod(C1, pod, T0)
    record = index.get(C1, pod.metadata.uid)
    assert record is not None
    assert (record.workload.kind, record.workload.name, record.workload.identity) == (
        "Job",
        "migrate",
        "migrate",
    )


@pytest.mark.parametrize(
    ("labels", "identity", "source"),
    [
        (
            {"app.kubernetes.io/name": "shop", "app.kubernetes.io/component": "db", "k8s-app": "x"},
            "shop",
            "label:app.kubernetes.io/name",
        ),
        (
            {"app.kubernetes.io/component": "db", "k8s-app": "x"},
            "db",
            "label:app.kubernetes.io/component",
        ),
        ({"k8s-app": "kube-dns", "app": "ignored"}, "kube-dns", "label:k8s-app"),
        ({"app": "not-an-identity-label"}, "deploy", "owner"),
    ],
)
def test_label_priority(labels: dict[str, str], identity: str, source: str) -> None:
    index = Index()
    owners = [OwnerReference(kind="ReplicaSet", name="deploy-7c9", uid="rs", controller=True)]
    pod = new_pod(
        "p", "uid-p", ips=["10.1.0.1"], owners=owners, labels={**labels, "pod-template-hash": "7c9"}
    )
    index.upsert_pod(C1, pod, T0)
    body = live(index, "10.1.0.1")
    assert (body["identity"], body["identity_source"]) == (identity, source)
    # The owner walk still names the controller, whatever label gave the identity.
    assert body["workload"] == {"kind": "Deployment", "name": "deploy"}


def test_bare_pod_is_its_own_identity() -> None:
    index = Index()
    index.upsert_pod(C1, web1(), T0)
    body = live(index, "10.244.1.11")
    assert (body["identity"], body["identity_source"], body["workload"]) == ("web-1", "pod", None)


# --- select ---------------------------------------------------------------------------


def test_select_by_namespace_node_labels_and_workload() -> None:
    index = Index()
    index.replace_pods(C1, recorded_list("09-list-pods-rv0-limit2.json"), T0)
    index.replace_owners(
        C1, "ReplicaSet", recorded_owners("50-metadata-list-replicasets.json", "ReplicaSet")
    )
    index.upsert_pod(C2, changed(web1(), uid="c2-web-1"), T0)

    team_a = index.select(namespace="team-a")
    assert [(r.name, r.cluster) for r in team_a] == [
        ("web-1", C1),
        ("web-1", C2),
        ("web-2", C1),
        ("web-3", C1),
    ]
    assert [r.name for r in index.select(namespace="team-a", cluster=C2)] == ["web-1"]
    assert {r.name for r in index.select(node="node-2")} == {"web-3", "api-1"}
    assert {r.name for r in index.select(node="node-2", namespace="team-b")} == {"api-1"}
    # Pods not yet scheduled are on node "".
    assert "st-pending" in {r.name for r in index.select(node="")}
    # web-2 got a version label in the recorded watch (05), before this LIST (09).
    assert [r.name for r in index.select(selector=parse_selector("app=web,version"))] == ["web-2"]
    assert [r.name for r in index.select(selector=parse_selector("app=web,!version"))] == [
        "web-1",
        "web-1",
        "web-3",
    ]
    assert {r.key for r in index.select(selector=parse_selector("app in (web, db)"))} == {
        (C1, p.metadata.uid)
        for p in recorded_list("09-list-pods-rv0-limit2.json")
        if p.metadata.labels.get("app") in ("web", "db")
    } | {(C2, "c2-web-1")}
    assert {
        r.name for r in index.select(namespace="team-b", selector=parse_selector("app!=api"))
    } == {
        r.name
        for r in index.select(namespace="team-b")
        if r.pod.metadata.labels.get("app") != "api"
    }
    frontend = index.select(workload=(C1, "apps-demo", "Deployment", "frontend"))
    assert len(frontend) == 3
    assert all(r.name.startswith("frontend-") for r in frontend)
    assert index.select(workload=(C2, "apps-demo", "Deployment", "frontend")) == []
    assert len(index.select()) == len(index) == 29
    # Selection follows changes: a label removed, a pod moved off node-2.
    api1 = index.by_name(C1, "team-b", "api-1")
    assert api1 is not None
    index.upsert_pod(C1, changed(api1.pod, rv=10_000, labels={}, node="node-3"), T0 + 1)
    assert {r.name for r in index.select(node="node-2")} == {"web-3"}
    assert [r.name for r in index.select(node="node-3")] == ["api-1"]
    assert "api-1" not in {r.name for r in index.select(selector=parse_selector("app=api"))}


def test_by_name_follows_the_newest_pod_of_a_name() -> None:
    """A StatefulSet pod restarting keeps its name and gets a new uid."""
    index = Index()
    first = new_pod("db-0", "uid-1", ips=["10.1.0.1"], created="2026-11-23T13:00:00Z")
    second = new_pod("db-0", "uid-2", ips=["10.1.0.2"], created="2026-11-23T13:05:00Z")
    index.upsert_pod(C1, second, T0)
    index.upsert_pod(C1, first, T0)  # late event of the older instance
    found = index.by_name(C1, "default", "db-0")
    assert found is not None
    assert found.key == (C1, "uid-2")
    index.delete_pod(C1, second, T0 + 1)
    found = index.by_name(C1, "default", "db-0")
    assert found is not None
    assert found.key == (C1, "uid-1")


def test_forget_cluster_drops_its_pods_and_answers() -> None:
    index = Index()
    index.upsert_pod(C1, web1(), T0)
    index.upsert_pod(C2, db0(), T0)
    index.delete_pod(C2, db0(), T0)  # in grace
    index.forget_cluster(C2, T0 + 1)
    assert index.lookup_ip("10.244.2.10", T0 + 1) is None
    assert index.clusters() == {C1}


def test_status_only_events_keep_the_answer_and_the_version_moves() -> None:
    index = Index()
    pod = db0()
    index.upsert_pod("c1", pod, T0)
    before = index.get("c1", pod.metadata.uid)
    assert before is not None
    restarted = changed(pod, rv=int(pod.metadata.resourceVersion) + 5)
    assert restarted.status.containerStatuses  # a real pod's, from the recording
    restarted.status.containerStatuses[0].restartCount += 1
    assert index.upsert_pod("c1", restarted, T0)
    after = index.get("c1", pod.metadata.uid)
    assert after is not None
    assert after.body is before.body
    assert after.resource_version == restarted.metadata.resourceVersion
    # The next replay of the older version is still recognised as stale.
    assert not index.upsert_pod("c1", pod, T0)
    # Container statuses are not kept in the index.
    assert after.pod.status.containerStatuses is None
    assert pod.status.containerStatuses is not None  # the caller's object is untouched


def test_version_only_comparison_covers_every_kept_metadata_field() -> None:
    import inspect

    from podindex import index as index_module

    compared = set(
        re.findall(r"a\.(\w+) == b\.", inspect.getsource(index_module._same_but_version))
    )
    assert compared | {"resourceVersion"} == set(ObjectMeta.__struct_fields__)


def test_shared_values_are_forgotten_when_no_pod_uses_them() -> None:
    index = Index(grace_seconds=0.0)
    pods = [
        new_pod(
            f"p{i}",
            f"u{i}",
            labels={"app.kubernetes.io/name": f"app-{i}"},
            ips=[f"10.9.{i // 250}.{i % 250}"],
            owners=[
                OwnerReference(kind="Job", name=f"job-{i}", uid=f"job-uid-{i}", controller=True)
            ],
        )
        for i in range(3000)
    ]
    for pod in pods:
        index.upsert_pod("c1", pod, T0)
    assert len(index.sharing) >= 3000
    survivor = index.get("c1", "u0")
    assert survivor is not None
    for pod in pods[1:]:
        index.delete_pod("c1", pod, T0)
    index.expire(T0 + 1)
    index.sharing.prune()
    assert len(index.sharing) < 10
    # What a live pod uses stays shared and intact.
    again = new_pod(
        "q",
        "u-new",
        labels={"app.kubernetes.io/name": "app-0"},
        ips=["10.8.0.1"],
        owners=[OwnerReference(kind="Job", name="job-0", uid="job-uid-0", controller=True)],
    )
    index.upsert_pod("c1", again, T0 + 2)
    kept = index.get("c1", "u-new")
    assert kept is not None
    assert kept.pod.metadata.labels is survivor.pod.metadata.labels
    assert kept.workload is survivor.workload
    assert kept.pod.metadata.ownerReferences is survivor.pod.metadata.ownerReferences


def test_shared_values_are_pruned_a_slice_at_a_time_as_pods_change() -> None:
    """A due prune looks at PRUNE_SLICE cache keys a change, never all at once."""
    index = Index(grace_seconds=0.0)
    pods = [
        new_pod(f"p{i}", f"u{i}", labels={"n": f"v-{i}"}, ips=[f"10.9.{i // 250}.{i % 250}"])
        for i in range(5000)
    ]
    for pod in pods:
        index.upsert_pod("c1", pod, T0)
    for pod in pods[1:]:
        index.delete_pod("c1", pod, T0)
    index.expire(T0 + 1)
    sharing = index.sharing
    sharing._prune_at = 0  # due now
    before = len(sharing)
    sharing.prune_if_due()
    assert before - PRUNE_SLICE <= len(sharing) < before, "one slice, not everything"
    for _ in range(before // PRUNE_SLICE + 1):
        sharing.prune_if_due()
    assert len(sharing) < 10
    kept = index.get("c1", "u0")
    assert kept is not None and kept.pod.metadata.labels == {"n": "v-0"}
    assert sharing._map({"n": "v-0"}) is kept.pod.metadata.labels, "what a pod uses stays shared"


def test_pods_of_one_replicaset_share_their_values() -> None:
    index = Index()
    first = new_pod(
        "web-a", "ua", labels={"app": "web", "pod-template-hash": "h1"}, ips=["10.7.0.1"]
    )
    second = new_pod(
        "web-b", "ub", labels={"app": "web", "pod-template-hash": "h1"}, ips=["10.7.0.2"]
    )
    index.upsert_pod("c1", first, T0)
    index.upsert_pod("c1", second, T0)
    a, b = index.get("c1", "ua"), index.get("c1", "ub")
    assert a is not None and b is not None
    assert a.pod.metadata.labels is b.pod.metadata.labels
    assert a.pod.metadata.namespace is b.pod.metadata.namespace
    assert first.metadata.labels is not second.metadata.labels  # the inputs were separate


def test_rapid_restarts_replace_the_grace_entry() -> None:
    """A StatefulSet pod restarting twice within the grace: the newest instance is shown,
    for its own full grace, and the first deadline expires nothing."""
    index = Index(grace_seconds=30)
    first = new_pod("db-0", "uid-1", ips=["10.244.1.50"], created="2026-11-23T13:00:00Z")
    second = new_pod("db-0", "uid-2", ips=["10.244.1.50"], created="2026-11-23T13:00:05Z")
    index.upsert_pod(C1, first, T0)
    index.delete_pod(C1, first, T0 + 1)
    index.upsert_pod(C1, second, T0 + 2)  # the IP comes back: the grace is cancelled
    assert live(index, "10.244.1.50", T0 + 2)["uid"] == "uid-2"
    index.delete_pod(C1, second, T0 + 3)
    index.expire(T0 + 31)  # the first instance's deadline
    found = answer(index, "10.244.1.50", T0 + 31)
    assert found is not None and found[1]["uid"] == "uid-2"
    assert found[1]["state"] == "terminated"
    index.expire(T0 + 33)
    assert index.lookup_ip("10.244.1.50", T0 + 33) is None


def test_forgetting_a_cluster_drops_its_pods_and_grace_entries_only() -> None:
    index = Index(grace_seconds=30)
    index.changes = []
    kept = new_pod("a", "uid-a", ips=["10.244.1.60"])
    gone = new_pod("b", "uid-b", ips=["10.244.1.61"])
    leaving = new_pod("c", "uid-c", ips=["10.244.1.62"])
    index.upsert_pod(C1, kept, T0)
    index.upsert_pod(C2, gone, T0)
    index.upsert_pod(C2, leaving, T0)
    index.delete_pod(C2, leaving, T0 + 1)  # in its grace period
    index.changes.clear()
    index.forget_cluster(C2, T0 + 2)
    assert index.lookup_ip("10.244.1.61", T0 + 2) is None
    assert index.lookup_ip("10.244.1.62", T0 + 2) is None
    assert live(index, "10.244.1.60", T0 + 2)["uid"] == "uid-a"
    assert [(c.record.key, c.dead) for c in index.changes] == [((C2, "uid-b"), True)]


def test_kubectl_columns_follow_status_only_events_without_a_history_change() -> None:
    index = Index()
    index.changes = []
    pod = web1()
    index.upsert_pod("c1", pod, T0)
    record = index.get("c1", pod.metadata.uid)
    assert record is not None
    before = index.sharing.display(record.pod)
    assert len(index.changes) == 1

    crashed = changed(pod, rv=int(pod.metadata.resourceVersion) + 1)
    crashed.status.containerStatuses = (
        ContainerStatus(
            name=before.containers[0][0],
            ready=False,
            restartCount=4,
            state=ContainerState(waiting=StateWaiting(reason="CrashLoopBackOff")),
            lastState=ContainerState(
                terminated=StateTerminated(exitCode=1, finishedAt="2026-11-23T12:00:00Z")
            ),
        ),
    )
    index.upsert_pod("c1", crashed, T0 + 1)
    after = index.get("c1", pod.metadata.uid)
    assert after is not None and after.body is record.body, "the lookup answer is unchanged"
    display = index.sharing.display(after.pod)
    assert (display.status, display.restarts, display.ready) == ("CrashLoopBackOff", 4, "0/1")
    assert display.last_restart == "2026-11-23T12:00:00Z"
    assert len(index.changes) == 1, "no history write for a readiness change"


def test_the_listing_follows_status_only_events_as_a_fresh_one_would() -> None:
    """A status-only event keeps the pod's row in place; only its STATUS moves."""
    index = Index()
    pod = web1()
    other = changed(pod, uid="uid-other", name="web-2", rv=5)
    index.upsert_pod("c1", pod, T0)
    index.upsert_pod("c1", other, T0)
    listing = index.listing  # built now: kept up to date from here on

    def crashed(base: Pod, rv: int, restarts: int) -> Pod:
        bumped = changed(base, rv=rv)
        bumped.status.containerStatuses = (
            ContainerStatus(
                name="web",
                ready=False,
                restartCount=restarts,
                state=ContainerState(waiting=StateWaiting(reason="CrashLoopBackOff")),
            ),
        )
        return bumped

    def fresh() -> Listing:
        rebuilt = Listing()
        for record in index:
            rebuilt.put(record.key, record.pod, record.ips)
        return rebuilt

    rv = int(pod.metadata.resourceVersion)
    steps = [
        crashed(pod, rv + 1, 1),  # STATUS moves, the row stays
        crashed(pod, rv + 2, 2),  # nothing the listing shows moves
        changed(pod, rv=rv + 3, labels={"app": "web", "v": "2"}),  # back to Running
        changed(pod, rv=rv + 4, node="node-9"),  # the row's search text changes
    ]
    seen = set()
    for step in steps:
        assert index.upsert_pod("c1", step, T0 + 1)
        seen.add(tuple(sorted(listing.statuses("c1").items())))
        again = fresh()
        assert listing.statuses("c1") == again.statuses("c1")
        for status in (None, "Running", "CrashLoopBackOff"):
            assert listing.query("c1", status=status, stop=10) == again.query(
                "c1", status=status, stop=10
            )
        assert listing.query("c1", search="node-9", stop=10) == again.query(
            "c1", search="node-9", stop=10
        )
    assert (("CrashLoopBackOff", 1), ("Running", 1)) in seen
    assert listing.statuses("c1") == {"Running": 2}
    assert listing.query("c1", search="node-9", stop=10) == (1, [("c1", pod.metadata.uid)])
