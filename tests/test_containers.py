"""Container instances from pod statuses: ids, runtimes, digests, restarts without duplicates."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from podindex.containers import (
    InstanceHistory,
    image_digest,
    observed,
    owner_id,
    pod_id,
    runtime_and_id,
    workload_id,
)
from podindex.model import Pod, Workload

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("container_id", "runtime", "bare"),
    [
        ("containerd://3f9a", "CONTAINERD_CONTAINER_RUNTIME", "3f9a"),
        ("docker://77", "DOCKER_CONTAINER_RUNTIME", "77"),
        ("cri-o://c0", "CRIO_CONTAINER_RUNTIME", "c0"),
        ("rkt://x", "UNKNOWN_CONTAINER_RUNTIME", "x"),
        ("bare", "UNKNOWN_CONTAINER_RUNTIME", "bare"),
    ],
)
def test_runtime_and_id(container_id: str, runtime: str, bare: str) -> None:
    assert runtime_and_id(container_id) == (runtime, bare)


@pytest.mark.parametrize(
    ("image_id", "digest"),
    [
        (f"registry.example/app@{DIGEST}", DIGEST),
        (DIGEST, DIGEST),
        (f"docker-pullable://app@{DIGEST}", DIGEST),
        ("", None),
    ],
)
def test_image_digest(image_id: str, digest: str | None) -> None:
    assert image_digest(image_id) == digest


def test_ids_are_stable_and_distinct() -> None:
    assert pod_id("u1") == pod_id("u1") != pod_id("u2")
    web = Workload("web", "label", "Deployment", "web", {})
    assert workload_id("c1", "ns", web) == workload_id("c1", "ns", web)
    assert workload_id("c2", "ns", web) != workload_id("c1", "ns", web)
    assert workload_id("c1", "ns", Workload("p", "pod", "", "", {})) is None


def status(restarts: int, current: str, last: str | None, *, crashed: bool = False) -> Pod:
    state: dict[str, Any] = (
        {"waiting": {"reason": "CrashLoopBackOff"}}
        if crashed
        else {"running": {"startedAt": f"2026-11-30T10:0{restarts}:00Z"}}
    )
    cs: dict[str, Any] = {
        "name": "app",
        "imageID": f"registry.example/app@{DIGEST}",
        "restartCount": restarts,
        "containerID": "" if crashed else f"containerd://{current}",
        "state": state,
    }
    if last is not None:
        cs["lastState"] = {
            "terminated": {
                "exitCode": 137,
                "reason": "OOMKilled",
                "startedAt": "2026-11-30T09:00:00Z",
                "finishedAt": f"2026-11-30T10:0{restarts}:00Z",
                "containerID": f"containerd://{last}",
            }
        }
    pod = {
        "metadata": {"uid": "u1", "name": "web-0", "namespace": "ns"},
        "spec": {"nodeName": "node-1", "initContainers": [{"name": "init"}]},
        "status": {
            "containerStatuses": [cs],
            "initContainerStatuses": [{"name": "init", "containerID": "containerd://i0"}],
        },
    }
    return msgspec.convert(pod, Pod)


def test_restarts_are_recorded_from_last_state_once_each() -> None:
    history = InstanceHistory(keep=2)
    assert history.observe(observed(status(0, "c0", None), ["10.0.0.1", "fd00::1"]))
    (live,) = history.live()
    assert (live.instanceId.id, live.instanceId.node, live.imageDigest) == ("c0", "node-1", DIGEST)
    assert live.containerIps == ("10.0.0.1", "fd00::1") and live.containingPodId == pod_id("u1")
    # The watch missed the crash: the next status shows c0 as the last state.
    assert history.observe(observed(status(1, "c1", "c0"), []))
    assert not history.observe(observed(status(1, "c1", "c0"), [])), "seen: no change"
    (bucket,) = history.terminated()
    assert [(i.instanceId.id, i.exitCode, i.terminationReason) for i in bucket] == [
        ("c0", 137, "OOMKilled")
    ]
    history.observe(observed(status(2, "c2", "c1"), []))
    history.observe(observed(status(3, "c3", "c2"), []))
    (bucket,) = history.terminated()
    assert [i.instanceId.id for i in bucket] == ["c1", "c2"], "the last two"
    assert [i.instanceId.id for i in history.live()] == ["c3"]
    assert "i0" not in history.by_id, "init containers are not instances"


def test_a_crash_loop_between_runs_and_the_pods_end() -> None:
    history = InstanceHistory()
    history.observe(observed(status(4, "c4", "c3", crashed=True), []))
    assert history.live() == [], "waiting to restart: nothing runs"
    assert [i.instanceId.id for i in history.terminated()[0]] == ["c3"]
    history.observe(observed(status(5, "c5", "c4"), []))
    assert history.finish_all("2026-11-30T11:00:00Z")
    assert history.live() == []
    ids = [i.instanceId.id for i in history.terminated()[0]]
    assert ids == ["c3", "c4", "c5"]


def test_instances_whose_times_tie_keep_the_order_they_were_seen_in() -> None:
    history = InstanceHistory(keep=5)
    # Both ended within one second: the times tie, the order podindex saw them decides.
    history.observe(observed(status(1, "c1", "c0"), []), seen=1.0)
    history.observe(observed(status(2, "c2", "c1"), []), seen=2.0)
    history.finish_all("2026-11-30T11:00:00Z")
    newer = InstanceHistory()
    newer.observe(observed(status(3, "c3", "c2"), []), seen=3.0)
    history.merge(newer)
    assert history.seen["c1"] == 1.0, "the first sighting's time stays"
    assert [i.instanceId.id for i in history.terminated()[0]][:3] == ["c0", "c1", "c2"]


def test_ids_are_rfc_4122_uuid5s() -> None:
    pods = uuid.uuid5(uuid.NAMESPACE_URL, "https://podindex.dev/ids/pod")
    for uid in ("", "3f9a7c1e-0000-4000-8000-000000000001", "ü-uid"):
        assert pod_id(uid) == str(uuid.uuid5(pods, uid))
    workloads = uuid.uuid5(uuid.NAMESPACE_URL, "https://podindex.dev/ids/workload")
    for _ in range(2):  # computed, then cached
        assert owner_id("c", "ns", "Deployment", "web") == str(
            uuid.uuid5(workloads, "c/Deployment/ns/web")
        )
