"""Churn invariants and bulk population of podindex.sim."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import aiohttp
import msgspec
import pytest

from podindex.sim import JOB, POD, Churn, FakeCluster, populate


def live_pod_ips(cluster: FakeCluster) -> list[str]:
    """podIPs held by pods whose sandbox is alive (not terminal, not host-networked).

    Reads the selectable fields the emulator derives from each stored pod, which is
    much cheaper than decoding every pod after every churn step.
    """
    ips = []
    for obj in cluster.table(POD).objects.values():
        fields = obj.fields
        if fields["spec.hostNetwork"] == "true" or fields["status.phase"] not in (
            "Pending",
            "Running",
        ):
            continue
        if fields["status.podIP"]:
            ips.append(fields["status.podIP"])
    return ips


class _Meta(msgspec.Struct):
    name: str
    namespace: str
    labels: dict[str, str]
    ownerReferences: list[dict[str, object]]
    managedFields: list[msgspec.Raw]


class _Item(msgspec.Struct):
    metadata: _Meta
    spec: dict[str, msgspec.Raw]


class _ListMeta(msgspec.Struct):
    resourceVersion: str
    remainingItemCount: int = -1
    # "continue" is a Python keyword
    token: str = msgspec.field(default="", name="continue")


class _Page(msgspec.Struct):
    metadata: _ListMeta
    items: list[_Item]


_page_decoder = msgspec.json.Decoder(_Page)


async def test_churn_invariants() -> None:
    cluster = FakeCluster(grace_scale=0.001)
    churn = Churn(cluster, seed=7)
    owners_of_ip: dict[str, set[str]] = defaultdict(set)
    succeeded_pods: set[str] = set()
    completed_jobs: set[str] = set()
    for _ in range(400):
        churn.step()
        await asyncio.sleep(0)  # let scaled graceful deletions finish
        ips = live_pod_ips(cluster)
        assert len(ips) == len(set(ips)), "two live pods share an IP"
        for pod in cluster.list_objects(POD):
            status = pod.get("status", {})
            ip = status.get("podIP")
            if ip and not pod["spec"].get("hostNetwork"):
                owners_of_ip[ip].add(pod["metadata"]["uid"])
            if status.get("phase") == "Succeeded":
                assert ip, "a completed pod keeps its IP in status"
                succeeded_pods.add(pod["metadata"]["uid"])
        completed_jobs.update(
            j["metadata"]["name"]
            for j in cluster.list_objects(JOB)
            if j["status"].get("succeeded") == 1
        )
    assert any(len(uids) > 1 for uids in owners_of_ip.values()), "no IP was ever reused"
    assert len(succeeded_pods) >= 5 and len(completed_jobs) >= 5
    assert set(churn.stats.operations) >= {
        "rollout",
        "statefulset_restart",
        "job_start",
        "job_finish",
        "host_network",
    }
    host_pods = [p for p in cluster.list_objects(POD) if p["spec"].get("hostNetwork")]
    assert host_pods and all(p["status"]["podIP"] == p["status"]["hostIP"] for p in host_pods)


async def test_statefulset_restart_keeps_name_changes_uid_and_ip() -> None:
    cluster = FakeCluster(grace_scale=0.001)
    churn = Churn(cluster, seed=1, weights={"statefulset_restart": 1.0})
    churn.setup()
    before = {
        p["metadata"]["name"]: p
        for p in cluster.list_objects(POD, "churn")
        if p["metadata"]["name"].startswith("db-")
    }
    for _ in range(6):
        churn.step()
    after = {
        p["metadata"]["name"]: p
        for p in cluster.list_objects(POD, "churn")
        if p["metadata"]["name"].startswith("db-")
    }
    assert set(before) == set(after)
    restarted = [n for n in before if before[n]["metadata"]["uid"] != after[n]["metadata"]["uid"]]
    assert restarted
    for name in restarted:
        assert before[name]["status"]["podIP"] != after[name]["status"]["podIP"]


async def test_churn_is_reproducible_and_rate_limited() -> None:
    async def run(seed: int) -> list[str]:
        cluster = FakeCluster(grace_scale=0.001)
        churn = Churn(cluster, seed=seed)
        stats = await churn.run(count=50, rate=500.0)
        assert stats.total == 50
        # Graceful deletions end on (scaled) real-time timers: on a busy machine some
        # are still terminating when the steps end. Compare once none is.
        deadline = asyncio.get_running_loop().time() + 10
        while any("deletionTimestamp" in p["metadata"] for p in cluster.list_objects(POD)):
            assert asyncio.get_running_loop().time() < deadline, "deletions never finished"
            await asyncio.sleep(0.01)
        return sorted(p["metadata"]["name"] for p in cluster.list_objects(POD))

    assert await run(3) == await run(3)
    cluster = FakeCluster(grace_scale=0.001)
    stats = await Churn(cluster, seed=3).run(duration=0.3, rate=50.0)
    assert 10 <= stats.total <= 17


async def test_churn_events_reach_a_watcher() -> None:
    cluster = FakeCluster(grace_scale=0.001)
    await cluster.start()
    try:
        churn = Churn(cluster, seed=11)
        churn.setup()
        rv = cluster.resource_version
        async with aiohttp.ClientSession() as session:
            url = f"{cluster.url}/api/v1/namespaces/churn/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1"
            async with session.get(url) as resp:
                runner = asyncio.create_task(churn.run(count=100, rate=1000.0))
                types = [json.loads(line)["type"] async for line in resp.content]
                await runner
        assert {"ADDED", "MODIFIED", "DELETED"} <= set(types)
    finally:
        await cluster.stop()


@pytest.mark.timeout(120)
async def test_populate_lists_back_in_chunks() -> None:
    cluster = FakeCluster()
    result = populate(cluster, 20_000, seed=5)
    assert result.pods == cluster.count(POD) == 20_000
    assert result.seconds < 10
    await cluster.start()
    try:
        seen: set[str] = set()
        pages = 0
        token = ""
        async with aiohttp.ClientSession() as session:
            while True:
                url = f"{cluster.url}/api/v1/pods?limit=1000" + (
                    f"&continue={token}" if token else ""
                )
                async with session.get(url) as resp:
                    assert resp.status == 200
                    page = _page_decoder.decode(await resp.read())
                pages += 1
                names = [f"{i.metadata.namespace}/{i.metadata.name}" for i in page.items]
                assert names == sorted(names)
                seen.update(names)
                token = page.metadata.token
                if not token:
                    break
                assert page.metadata.remainingItemCount == 20_000 - len(seen)
        assert len(seen) == 20_000 and pages == 20
        pod = page.items[0]
        assert len(pod.metadata.labels) == 8
        assert len(msgspec.json.decode(pod.spec["containers"])) == 2
        assert len(pod.metadata.managedFields) == 2
        assert pod.metadata.ownerReferences[0]["kind"] == "ReplicaSet"
        ips = live_pod_ips(cluster)
        assert len(ips) == len(set(ips)) == 20_000
    finally:
        await cluster.stop()
