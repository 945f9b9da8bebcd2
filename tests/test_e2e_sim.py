"""The watcher and index against the emulator over real sockets: sync, churn, faults.

After every scenario the index must equal the emulated cluster exactly: the
same pod uids, and for every IP a Pending/Running non-hostNetwork pod holds,
that pod as the holder. Nothing stale, nothing missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from podindex.cluster import ClusterSync, WatchOptions
from podindex.index import Index
from podindex.kube.client import KubeClient
from podindex.kube.config import explicit_access, kubeconfig_access
from podindex.kube.errors import TransportError
from podindex.sim import POD, Churn, FakeCluster, populate

CLUSTER = "sim"
TOKEN = "e2e-token"


def expected_holders(sim: FakeCluster) -> dict[str, str]:
    holders: dict[str, str] = {}
    for pod in sim.list_objects(POD):
        status: dict[str, Any] = pod.get("status", {})
        if pod.get("spec", {}).get("hostNetwork") or status.get("phase") not in (
            "Pending",
            "Running",
        ):
            continue
        for entry in status.get("podIPs") or []:
            holders[entry["ip"]] = pod["metadata"]["uid"]
    return holders


def mismatch(sim: FakeCluster, index: Index) -> str | None:
    """None when the index equals the cluster; else the first difference, for the message."""
    sim_uids = {p["metadata"]["uid"] for p in sim.list_objects(POD)}
    index_uids = {uid for (_, uid) in index.pods}
    if sim_uids != index_uids:
        return f"uids: missing {len(sim_uids - index_uids)}, stale {len(index_uids - sim_uids)}"
    for ip, uid in expected_holders(sim).items():
        holder = index.holder(CLUSTER, ip)
        if holder is None or holder.key[1] != uid:
            return f"{ip}: expected {uid}, index has {holder.key[1] if holder else None}"
    return None


async def eventually(check: Callable[[], str | None], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    problem = check()
    while problem is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not consistent after {timeout}s: {problem}")
        await asyncio.sleep(0.05)
        problem = check()


class Running:
    def __init__(self, sim: FakeCluster, sync: ClusterSync, index: Index, task: asyncio.Task[None]):
        self.sim, self.sync, self.index, self.task = sim, sync, index, task

    async def consistent(self, timeout: float = 20.0) -> None:
        await eventually(lambda: mismatch(self.sim, self.index), timeout)


@contextlib.asynccontextmanager
async def watching(sim: FakeCluster, **options: Any) -> AsyncIterator[Running]:
    index = Index(grace_seconds=30.0)
    client = KubeClient(explicit_access(sim.url, token=TOKEN))
    opts = WatchOptions(owner_wait=5.0, stall_timeout=options.pop("stall_timeout", 5.0), **options)
    sync = ClusterSync(CLUSTER, client, index, opts)
    for watcher in (sync.pods, sync.replicasets, sync.jobs):
        watcher.backoff = lambda error, attempt: min(0.5, 0.05 * attempt)
    task = asyncio.create_task(sync.run())
    try:
        yield Running(sim, sync, index, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


@pytest.fixture
async def sim() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(token=TOKEN, bookmark_interval=0.2, grace_scale=0.01)
    await cluster.start()
    yield cluster
    await cluster.stop()


@pytest.mark.timeout(120)
async def test_initial_sync_of_10k_pods_in_chunks(sim: FakeCluster) -> None:
    populate(sim, 10_000, seed=3)
    async with watching(sim, page_size=500) as run:
        await asyncio.wait_for(run.sync.pods.synced.wait(), 60)
        assert len(run.index) == 10_000
        assert run.sync.pods.stats.lists == 1
        await run.consistent()
        sample = next(iter(run.index))
        assert sample.workload.kind == "Deployment"


@pytest.mark.timeout(120)
async def test_stays_right_through_churn_with_ip_reuse(sim: FakeCluster) -> None:
    populate(sim, 300, seed=5)
    churn = Churn(sim, seed=11)
    async with watching(sim) as run:
        await asyncio.wait_for(run.sync.pods.synced.wait(), 20)
        stats = await churn.run(count=400, rate=400.0)
        assert stats.total == 400
        await asyncio.sleep(0.5)  # scaled grace timers finish pending deletes
        await run.consistent()
        assert run.sync.pods.stats.events > 100
        assert run.sync.pods.stats.relists_410 == 0


@pytest.mark.timeout(120)
async def test_disconnects_resume_without_relisting(sim: FakeCluster) -> None:
    populate(sim, 200, seed=6)
    churn = Churn(sim, seed=12)
    async with watching(sim) as run:
        await asyncio.wait_for(run.sync.pods.synced.wait(), 20)
        for _ in range(3):
            await churn.run(count=30, rate=300.0)
            sim.drop_watches()
        await asyncio.sleep(0.5)
        await run.consistent()
        assert run.sync.pods.stats.lists == 1
        assert run.sync.pods.stats.watches >= 4


@pytest.mark.timeout(120)
async def test_410_after_compaction_relists_and_drops_what_vanished(sim: FakeCluster) -> None:
    populate(sim, 200, seed=7)
    async with watching(sim) as run:
        await asyncio.wait_for(run.sync.pods.synced.wait(), 20)
        await run.consistent()
        # While the watch is cut, pods vanish and history is compacted past our version.
        sim.stall_watches()
        victims = sim.list_objects(POD)[:25]
        for pod in victims:
            sim.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], grace_seconds=0)
        sim.compact()
        sim.resume_watches()
        sim.drop_watches()
        await run.consistent()
        assert run.sync.pods.stats.relists_410 >= 1
        assert run.sync.pods.stats.lists >= 2
        for pod in victims:
            assert run.index.get(CLUSTER, pod["metadata"]["uid"]) is None


@pytest.mark.timeout(120)
async def test_api_server_restart_with_a_new_history(sim: FakeCluster) -> None:
    populate(sim, 200, seed=8)
    churn = Churn(sim, seed=13)
    async with watching(sim) as run:
        await asyncio.wait_for(run.sync.pods.synced.wait(), 20)
        restart = asyncio.create_task(sim.restart(new_history=True, downtime=0.5))
        await asyncio.sleep(0.1)
        await churn.run(count=50, rate=500.0)  # the world changes while it is down
        await restart
        await asyncio.sleep(0.5)
        await run.consistent()
        assert run.sync.pods.stats.relists_410 >= 1
        assert run.sync.pods.stats.errors >= 1  # connection refused while down


@pytest.mark.timeout(120)
async def test_stalled_stream_is_detected_and_restarted(sim: FakeCluster) -> None:
    populate(sim, 50, seed=9)
    async with watching(sim, stall_timeout=0.6) as run:
        await asyncio.wait_for(run.sync.pods.synced.wait(), 20)
        sim.stall_watches()
        await asyncio.sleep(1.5)
        assert run.sync.pods.stats.stalls >= 1
        sim.resume_watches()
        pod = sim.list_objects(POD)[0]
        sim.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], grace_seconds=0)
        await run.consistent()


@pytest.mark.timeout(60)
async def test_https_with_the_kubeconfig_ca_and_token(tmp_path: Any) -> None:
    secure = FakeCluster(token=TOKEN, tls=True, bookmark_interval=0.2)
    populate(secure, 100, seed=14)
    await secure.start()
    try:
        assert secure.url.startswith("https://")
        path = secure.write_kubeconfig(tmp_path / "kubeconfig")
        access = await kubeconfig_access(str(path), None)
        index = Index()
        client = KubeClient(access)
        sync = ClusterSync(CLUSTER, client, index, WatchOptions(owner_wait=5.0))
        task = asyncio.create_task(sync.run())
        try:
            await asyncio.wait_for(sync.pods.synced.wait(), 20)
            assert len(index) == 100
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()
        # A client that does not trust the cluster's CA must not sync.
        untrusting = KubeClient(explicit_access(secure.url, token=TOKEN))
        try:
            with pytest.raises(TransportError, match=r"(?i)certificate"):
                await untrusting.version()
        finally:
            await untrusting.close()
    finally:
        await secure.stop()


@pytest.mark.timeout(60)
async def test_namespace_and_selector_scope(sim: FakeCluster) -> None:
    populate(sim, 400, seed=15, namespaces=4)
    namespaces = sorted({p["metadata"]["namespace"] for p in sim.list_objects(POD)})
    target = namespaces[1]
    in_target = [p for p in sim.list_objects(POD) if p["metadata"]["namespace"] == target]
    key, value = next(iter(in_target[0]["metadata"]["labels"].items()))
    expected = {
        p["metadata"]["uid"] for p in in_target if p["metadata"]["labels"].get(key) == value
    }
    async with watching(sim, namespace=target, label_selector=f"{key}={value}") as run:
        await asyncio.wait_for(run.sync.pods.synced.wait(), 20)
        assert {uid for (_, uid) in run.index.pods} == expected
        # A pod created outside the scope never appears; one inside does.
        other = namespaces[0]
        sim.create_pod(other, "outsider", labels={key: value}, node="node-0")
        sim.create_pod(target, "insider", labels={key: value}, node="node-0")
        await eventually(
            lambda: (
                None
                if run.index.by_name(CLUSTER, target, "insider") is not None
                else "insider not indexed"
            )
        )
        assert run.index.by_name(CLUSTER, other, "outsider") is None
