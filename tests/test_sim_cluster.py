"""FakeCluster's Python API, fault injection, TLS and kubeconfig, exercised over real sockets."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from podindex.sim import POD, FakeCluster, NotFound
from podindex.sim.ipam import IpPool

TOKEN = "t0ken"


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    sim = FakeCluster(token=TOKEN, bookmark_interval=0.2)
    sim.create_node("node-1")
    sim.create_pod("default", "a", labels={"app": "a"}, node="node-1")
    sim.create_pod("default", "b", labels={"app": "b"}, node="node-1")
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        yield session


async def read_events(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events = []
    while len(events) < count:
        line = await asyncio.wait_for(resp.content.readline(), 5)
        if not line:
            break
        events.append(json.loads(line))
    return events


# --- Python API -------------------------------------------------------------------------


def test_revisions_and_pod_shape() -> None:
    sim = FakeCluster(initial_resource_version=500)
    node = sim.create_node("node-7", ip="192.168.7.7")
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "192.168.7.7"}
    pod = sim.create_pod("ns", "p", node="node-7", labels={"app": "x"})
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    assert list(pod) == ["kind", "apiVersion", "metadata", "spec", "status"]
    assert pod["metadata"]["resourceVersion"] == "502" == str(sim.resource_version)
    assert pod["status"]["hostIP"] == "192.168.7.7"
    assert pod["status"]["podIP"].startswith("10.244.")
    assert pod["status"]["containerStatuses"][0]["imageID"].startswith(
        "registry.example/app@sha256:"
    )
    host = sim.create_pod("ns", "h", node="node-7", host_network=True)
    assert host["status"]["podIP"] == host["status"]["hostIP"] == "192.168.7.7"
    pending = sim.create_pod("ns", "u")
    assert pending["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert "nodeName" not in pending["spec"]


def test_phase_changes_keep_ip_and_free_it() -> None:
    sim = FakeCluster()
    pod = sim.create_pod("ns", "job-1", node="n", restart_policy="Never")
    ip = pod["status"]["podIP"]
    done = sim.set_pod_phase("ns", "job-1", "Succeeded")
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["podIP"] == ip  # kept in status, like a real kubelet
    state = done["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["reason"] == "Completed"
    reused = sim.create_pod("ns", "next", node="n")
    assert reused["status"]["podIP"] == ip  # the freed address is handed out again


def test_update_bumps_generation_only_for_spec() -> None:
    sim = FakeCluster()
    sim.create_pod("ns", "p", node="n")
    labelled = sim.set_pod_labels("ns", "p", {"x": "1"})
    assert labelled["metadata"]["generation"] == 1
    changed = sim.update_pod("ns", "p", lambda p: p["spec"].update(activeDeadlineSeconds=5))
    assert changed["metadata"]["generation"] == 2
    assert list(changed["spec"]).index("activeDeadlineSeconds") < list(changed["spec"]).index(
        "dnsPolicy"
    )


def test_delete_missing_raises() -> None:
    sim = FakeCluster()
    with pytest.raises(NotFound):
        sim.delete_pod("ns", "nope")


def test_replicasets_and_jobs() -> None:
    sim = FakeCluster()
    rs = sim.create_replicaset(
        "ns", "web-abc", labels={"app": "web"}, replicas=2, owner=("Deployment", "web", "u1")
    )
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert sim.scale_replicaset("ns", "web-abc", 4)["spec"]["replicas"] == 4
    job = sim.create_job("ns", "report-1", owner=("CronJob", "report", "u2"))
    assert job["metadata"]["labels"]["job-name"] == "report-1"
    assert sim.complete_job("ns", "report-1")["status"]["succeeded"] == 1
    sim.delete_replicaset("ns", "web-abc")
    sim.delete_job("ns", "report-1")
    assert sim.count(POD) == 0


# --- faults ------------------------------------------------------------------------------


async def test_drop_watches_ends_streams_cleanly(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    url = f"{cluster.url}/api/v1/pods?watch=1&resourceVersion={cluster.resource_version}"
    async with http.get(url) as resp:
        await _until(lambda: cluster.active_watches == 1)
        cluster.drop_watches()
        assert await asyncio.wait_for(resp.content.read(), 2) == b""
    await _until(lambda: cluster.active_watches == 0)


async def test_stall_sends_nothing_then_resume_delivers(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    url = f"{cluster.url}/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion={cluster.resource_version}"
    async with http.get(url) as resp:
        await _until(lambda: cluster.active_watches == 1)
        cluster.stall_watches()
        cluster.set_pod_labels("default", "a", {"stalled": "yes"})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.content.readline(), 0.6)  # not even bookmarks
        cluster.resume_watches()
        (event,) = await read_events(resp, 1)
        assert event["type"] == "MODIFIED"
        assert event["object"]["metadata"]["labels"]["stalled"] == "yes"


async def test_periodic_bookmarks(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    url = f"{cluster.url}/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion={cluster.resource_version}"
    async with http.get(url) as resp:
        started = time.monotonic()
        events = await read_events(resp, 3)
    assert [e["type"] for e in events] == ["BOOKMARK"] * 3
    assert time.monotonic() - started < 1.5


async def test_restart_cuts_connections_and_refuses_during_downtime(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    url = f"{cluster.url}/api/v1/pods?watch=1&resourceVersion={cluster.resource_version}"
    async with http.get(url) as resp:
        await _until(lambda: cluster.active_watches == 1)
        restart = asyncio.create_task(cluster.restart(new_history=True, downtime=0.5))
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(resp.content.read(), 2)
    await asyncio.sleep(0.1)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{cluster.url}/version"):
            pass
    await restart
    async with http.get(f"{cluster.url}/api/v1/pods") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert (
        int(body["metadata"]["resourceVersion"])
        == cluster.resource_version
        == cluster.history_floor
    )


async def test_slow_watcher_is_cut_off_then_gets_410(http: aiohttp.ClientSession) -> None:
    sim = FakeCluster(token=TOKEN, history_limit=50)
    sim.create_pod("default", "a", node="n")
    await sim.start()
    try:
        start_rv = sim.resource_version
        url = f"{sim.url}/api/v1/pods?watch=1&resourceVersion={start_rv}"
        async with http.get(url) as resp:
            await _until(lambda: sim.active_watches == 1)
            for i in range(500):  # all at once: the watcher cannot run in between
                sim.set_pod_labels("default", "a", {"i": str(i)})
            assert await asyncio.wait_for(resp.content.read(), 2) == b""
        async with http.get(url) as resp:
            (event,) = await read_events(resp, 2)
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
    finally:
        await sim.stop()


async def test_too_large_resource_version_is_504(http: aiohttp.ClientSession) -> None:
    sim = FakeCluster(token=TOKEN, too_large_wait=0.2)
    await sim.start()
    try:
        future = sim.resource_version + 10
        async with http.get(f"{sim.url}/api/v1/pods?watch=1&resourceVersion={future}") as resp:
            assert resp.status == 504
            body = await resp.json()
        assert body["reason"] == "Timeout"
        assert (
            body["message"]
            == f"Too large resource version: {future}, current: {sim.resource_version}"
        )
    finally:
        await sim.stop()


async def _until(condition: Any, limit: float = 2.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# --- TLS and kubeconfig ---------------------------------------------------------------------


async def test_tls_with_ca_and_kubeconfig(tmp_path: Path) -> None:
    sim = FakeCluster(token=TOKEN, tls=True)
    sim.create_pod("default", "secure", node="node-1")
    await sim.start()
    try:
        assert sim.url.startswith("https://127.0.0.1:")
        assert sim.ca_pem is not None and sim.ca_file is not None
        ctx = ssl.create_default_context(cafile=sim.ca_file)
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
            session.get(f"{sim.url}/api/v1/pods", ssl=ctx) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["items"][0]["metadata"]["name"] == "secure"
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"{sim.url}/version", ssl=ssl.create_default_context()):
                    pass

        from kubernetes_asyncio import client, config

        path = sim.write_kubeconfig(tmp_path / "kubeconfig", context="sim")
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(path), context="sim", client_configuration=configuration
        )
        async with client.ApiClient(configuration) as api:
            pods = await client.CoreV1Api(api).list_pod_for_all_namespaces(limit=10)
        assert [p.metadata.name for p in pods.items] == ["secure"]
    finally:
        await sim.stop()


# --- process entry point -------------------------------------------------------------------


async def test_run_simulator_serves_until_stopped(tmp_path: Path) -> None:
    from podindex.sim.run import run_simulator

    stop = asyncio.Event()
    ready = tmp_path / "url"
    (tmp_path / "token").write_text("secret\n")
    task = asyncio.create_task(
        run_simulator(
            pods=300,
            churn_rate=100.0,
            token_file=tmp_path / "token",
            ready_file=ready,
            stop=stop,
        )
    )
    await _until(ready.exists, limit=10)
    url = ready.read_text().strip()
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bearer secret"}) as session,
        session.get(f"{url}/api/v1/pods?limit=500") as resp,
    ):
        assert resp.status == 200
        assert len((await resp.json())["items"]) >= 300
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0


def test_the_pod_network_can_be_loopback_for_forward_auth_tests() -> None:
    cluster = FakeCluster(pod_network="127.1.0.0/16")
    first = cluster.create_pod("a", "one", node="node-1")["status"]["podIP"]
    second = cluster.create_pod("a", "two", node="node-2")["status"]["podIP"]
    assert first.startswith("127.1.1.") and second.startswith("127.1.2.")
    assert cluster.ips.pod_cidr("node-1") == "127.1.1.0/24"
    assert (
        FakeCluster()
        .create_pod("a", "one", node="node-1")["status"]["podIP"]
        .startswith("10.244.1.")
    )
    with pytest.raises(ValueError, match=r"A\.B\.0\.0/16"):
        IpPool("fd00::/64")
