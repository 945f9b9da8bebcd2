"""Pod search and export (``/v1/pods``, ``/v1/export/pods``) against the emulator, on both
history backends: the PodService's shapes, the query language end to end, total and
stable paging, container-instance history across restarts, deletion and a restart of
podindex, and grpc-gateway's errors."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from podindex.api.app import create_app
from podindex.api.podservice import export_chunk, export_line
from podindex.instances import InstanceTracker
from podindex.kube.config import explicit_access
from podindex.model import Pod
from podindex.podsearch import PastPod
from podindex.query import parse
from podindex.service import Service
from podindex.settings import Settings
from podindex.sim import FakeCluster
from podindex.store.base import Store, StoreError
from tests.auth import READER_TOKEN, bearer, standard_tokens
from tests.test_e2e_serve import TOKEN

POD_FIELDS = {
    "id",
    "name",
    "deploymentId",
    "namespace",
    "clusterId",
    "liveInstances",
    "terminatedInstances",
    "started",
}
INSTANCE_FIELDS = {
    "instanceId",
    "containingPodId",
    "containerName",
    "containerIps",
    "started",
    "imageDigest",
    "finished",
    "exitCode",
    "terminationReason",
}


class Api:
    def __init__(self, sim: FakeCluster, service: Service, client: httpx.AsyncClient) -> None:
        self.sim, self.service, self.client = sim, service, client

    async def settled(self, check: Any, timeout: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "never caught up"
            await asyncio.sleep(0.02)

    async def pods(self, query: str = "", **params: Any) -> list[dict[str, Any]]:
        status, body = await self.get("/v1/pods", query=query, **params)
        assert status == 200, body
        pods: list[dict[str, Any]] = body["pods"]
        return pods

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        response = await self.client.get(path, params=params)
        return response.status_code, response.json()

    async def names(self, query: str = "", **params: Any) -> list[str]:
        return [p["name"] for p in await self.pods(query, **params)]

    async def export(self, query: str = "", **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/export/pods", params={"query": query, **params})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        return [msgspec.json.decode(line) for line in response.content.splitlines()]


POSTGRES_ID = "registry.example/postgres@sha256:" + "cd" * 32


def other_image(obj: dict[str, Any]) -> None:
    for status in obj["status"]["containerStatuses"]:
        status["imageID"] = POSTGRES_ID


def seed(sim: FakeCluster) -> None:
    rs = sim.create_replicaset(
        "team-a", "web-5d8f", labels={"app": "web"}, replicas=4, owner=("Deployment", "web", "d1")
    )
    rs_owner = ("ReplicaSet", "web-5d8f", rs["metadata"]["uid"])
    for i in range(4):
        sim.create_pod(
            "team-a",
            f"web-5d8f-{i}",
            labels={"app": "web", "pod-template-hash": "5d8f"},
            node=f"node-{i % 2}",
            ip=f"10.1.0.{i + 10}",
            owner=rs_owner,
            containers=["app", "proxy"],
        )
    for i in range(3):
        sim.create_pod(
            "team-b",
            f"db-{i}",
            labels={"app": "db", "tier": "data+cache"},
            node="node-2",
            ips=[f"10.2.0.{i + 10}", f"fd00::{i + 10}"],
            containers=[("postgres", "registry.example/postgres:16")],
        )
        sim.update_pod("team-b", f"db-{i}", other_image)
    sim.create_pod("Team-C", "Mixed-Case", labels={"App": "Web"}, node="node-1", ip="10.3.0.1")


@contextlib.asynccontextmanager
async def serving(
    sim: FakeCluster, store_url: str, tmp_path: Path, **settings: Any
) -> AsyncIterator[Api]:
    service = Service(Settings(store=store_url, **settings))
    service.history.flush_interval = 0.02
    service.instances.flush_interval = 0.02
    await service.add_cluster("default", explicit_access(sim.url, token=TOKEN))
    task = asyncio.create_task(service.run())
    try:
        app = create_app(service, run_background=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://podindex"
        ) as client:
            api = Api(sim, service, client)
            await api.settled(lambda: service.ready and service.past_loaded)
            yield api
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def sim() -> AsyncIterator[FakeCluster]:
    async with FakeCluster(token=TOKEN, bookmark_interval=0.2, grace_scale=0.0) as cluster:
        seed(cluster)
        yield cluster


@pytest.fixture
async def api(sim: FakeCluster, store_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(sim, store_url, tmp_path) as running:
        await running.settled(lambda: len(running.service.index) == 8)
        yield running


def by_name(pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in pods}


# --- objects ---------------------------------------------------------------------


async def test_pods_have_the_documented_shape_and_stable_ids(api: Api) -> None:
    pods = by_name(await api.pods())
    assert len(pods) == 8
    web = pods["web-5d8f-0"]
    assert set(web) == POD_FIELDS
    uid = api.sim.get_pod("team-a", "web-5d8f-0")["metadata"]["uid"]
    assert web["id"] == str(
        uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "https://podindex.dev/ids/pod"), uid)
    )
    assert web["clusterId"] == "default" and web["namespace"] == "team-a"
    assert web["started"].endswith("Z")
    # Every pod of one Deployment shares its id; a bare pod has none (null, not absent).
    assert len({pods[f"web-5d8f-{i}"]["deploymentId"] for i in range(4)}) == 1
    assert web["deploymentId"] is not None and pods["db-0"]["deploymentId"] is None
    assert web["terminatedInstances"] == []
    live = web["liveInstances"]
    assert [i["containerName"] for i in live] == ["app", "proxy"]
    app = live[0]
    assert set(app) == INSTANCE_FIELDS
    assert app["instanceId"]["containerRuntime"] == "CONTAINERD_CONTAINER_RUNTIME"
    status = api.sim.get_pod("team-a", "web-5d8f-0")["status"]["containerStatuses"][0]
    assert "containerd://" + app["instanceId"]["id"] == status["containerID"]
    assert app["instanceId"]["node"] == "node-0"
    assert app["containingPodId"] == web["id"]
    assert app["containerIps"] == ["10.1.0.10"]
    assert app["imageDigest"].startswith("sha256:") and status["imageID"].endswith(
        app["imageDigest"]
    )
    assert app["finished"] is None and app["exitCode"] is None
    assert app["terminationReason"] is None
    # Dual-stack: every IP of the pod.
    assert pods["db-1"]["liveInstances"][0]["containerIps"] == ["10.2.0.11", "fd00::11"]


# --- the query language, end to end --------------------------------------------


QUERIES: list[tuple[str, set[str]]] = [
    ("Namespace:team-a+Pod Label:app=web", {f"web-5d8f-{i}" for i in range(4)}),
    (
        "namespace:TEAM",
        {f"web-5d8f-{i}" for i in range(4)} | {"db-0", "db-1", "db-2"} | {"Mixed-Case"},
    ),
    ('Namespace:"team-a"', {f"web-5d8f-{i}" for i in range(4)}),
    ('Namespace:"TEAM-A"', set()),
    ("Namespace:team-a,team-b+Node:node-2", {"db-0", "db-1", "db-2"}),
    ("Pod Label:tier=data+cache", {"db-0", "db-1", "db-2"}),
    ('Pod Label:"tier=data+cache"', {"db-0", "db-1", "db-2"}),
    ("Pod Label:App=web", {"Mixed-Case"}),
    ("Pod Name:!web", {"db-0", "db-1", "db-2", "Mixed-Case"}),
    ("Pod Name:r/^db-[12]$", {"db-1", "db-2"}),
    ("Pod Name:!r/^(web|db)", {"Mixed-Case"}),
    ("Deployment:web", {f"web-5d8f-{i}" for i in range(4)}),
    ("Deployment:-", {"db-0", "db-1", "db-2", "Mixed-Case"}),
    ("Deployment ID:*+Node:node-1", {"web-5d8f-1", "web-5d8f-3"}),
    ("Container Name:proxy", {f"web-5d8f-{i}" for i in range(4)}),
    ("Pod IP:fd00::1", {"db-0", "db-1", "db-2"}),
    ("Pod IP:10.2.0.12", {"db-2"}),
    ("Created:<1h+Namespace:team-c", {"Mixed-Case"}),
    ("Created:>1d", set()),
    ("Deleted:false+Namespace:team-b", {"db-0", "db-1", "db-2"}),
    ("Deleted:true", set()),
    ("Cluster:default+Pod Name:db-0", {"db-0"}),
]


async def test_queries_select_the_documented_pods(api: Api) -> None:
    for query, expected in QUERIES:
        assert set(await api.names(query, **{"pagination.limit": 1000})) == expected, query


async def test_search_by_pod_id_uid_and_digest(api: Api) -> None:
    pod = by_name(await api.pods())["db-1"]
    uid = api.sim.get_pod("team-b", "db-1")["metadata"]["uid"]
    assert await api.names(f'Pod ID:"{pod["id"]}"') == ["db-1"]
    assert await api.names(f"Pod UID:{uid}") == ["db-1"]
    digest = pod["liveInstances"][0]["imageDigest"]
    assert digest == "sha256:" + "cd" * 32
    assert set(await api.names(f'Container Image Digest:"{digest}"')) == {"db-0", "db-1", "db-2"}


BAD_INPUT: list[tuple[dict[str, str], str]] = [
    ({"query": "Colour:red"}, "Colour"),
    ({"query": "Pod Name:r/(unclosed"}, "bad regex"),
    ({"query": "Created:>yesterday"}, "Created"),
    ({"query": "Created:2026-13-45"}, "bad date"),
    ({"query": 'Pod Name:"open'}, "quote"),
    ({"query": "Deleted:maybe"}, "true or false"),
    ({"pagination.limit": "0"}, "pagination.limit"),
    ({"pagination.limit": "-5"}, "pagination.limit"),
    ({"pagination.limit": "1001"}, "pagination.limit"),
    ({"pagination.limit": "ten"}, "pagination.limit"),
    ({"pagination.offset": "-1"}, "pagination.offset"),
    ({"pagination.sortOption.field": "Colour"}, "sort field"),
    ({"pagination.sortOption.reversed": "sideways"}, "reversed"),
    ({"pagination.sortOption.aggregateBy.aggrFunc": "COUNT"}, "not supported"),
    ({"pagination.sortOption.aggregateBy.distinct": "true"}, "not supported"),
]


async def test_bad_input_is_a_400_naming_it(api: Api) -> None:
    for params, named in BAD_INPUT:
        status, body = await api.get("/v1/pods", **params)
        assert status == 400, (params, body)
        assert set(body) == {"error", "code", "message", "details"}
        assert body["code"] == 3 and body["details"] == [] and named in body["message"], params
        assert body["error"] == body["message"]


async def test_export_refuses_bad_input_before_streaming(api: Api) -> None:
    for params in ({"query": "Colour:red"}, {"timeout": "-1"}, {"timeout": "soon"}):
        status, body = await api.get("/v1/export/pods", **params)
        assert status == 400 and body["code"] == 3, body


# --- order and paging --------------------------------------------------------------


async def test_sorting_is_total_and_pages_neither_overlap_nor_skip(api: Api) -> None:
    for field in ("Pod Name", "Namespace", "Node", "Created", "Deployment", "Pod IP", None):
        params: dict[str, Any] = {"pagination.limit": 3}
        if field:
            params["pagination.sortOption.field"] = field
        seen: list[str] = []
        for offset in range(0, 12, 3):
            seen += await api.names(**params, **{"pagination.offset": offset})
        assert sorted(seen) == sorted(await api.names()), field
        assert len(seen) == len(set(seen)) == 8, field
        everything = await api.names(**{**params, "pagination.limit": 100})
        assert seen == everything, field
        backwards = await api.names(
            **{**params, "pagination.limit": 100, "pagination.sortOption.reversed": "true"}
        )
        assert backwards == everything[::-1], field
    by_node = await api.pods(**{"pagination.sortOption.field": "node", "pagination.limit": 100})
    nodes = [p["liveInstances"][0]["instanceId"]["node"] for p in by_node]
    assert nodes == sorted(nodes)


async def test_paging_is_stable_while_pods_are_added(api: Api) -> None:
    before = set(await api.names(**{"pagination.limit": 1000}))
    seen: list[str] = []
    offset, added = 0, 0
    while True:
        page = await api.names(**{"pagination.limit": 2, "pagination.offset": offset})
        if not page:
            break
        seen += page
        offset += len(page)
        if added < 6:  # new pods arrive between every two pages
            api.sim.create_pod("team-a", f"late-{added}", node="node-0", labels={"app": "late"})
            added += 1
            await api.settled(lambda n=added: len(api.service.index) == 8 + n)
    assert len(seen) == len(set(seen)), "a pod was repeated"
    assert before <= set(seen), "a pod was skipped"


# --- container instances -------------------------------------------------------


async def instances_of(api: Api, name: str) -> dict[str, Any]:
    await api.service.instances.flush()
    return by_name(await api.pods(f'Pod Name:"{name}"'))[name]


async def test_restarts_are_kept_once_each_newest_last(api: Api) -> None:
    sim = api.sim
    first = sim.get_pod("team-b", "db-0")["status"]["containerStatuses"][0]["containerID"]
    sim.restart_container("team-b", "db-0", exit_code=137)
    await asyncio.sleep(0.1)
    second = sim.get_pod("team-b", "db-0")["status"]["containerStatuses"][0]["containerID"]
    # The next restart's status alone shows the second instance ended (never the transition).
    sim.restart_container("team-b", "db-0", exit_code=2)
    third = sim.get_pod("team-b", "db-0")["status"]["containerStatuses"][0]["containerID"]
    await api.settled(
        lambda: (
            api.service.index.get("default", sim.get_pod("team-b", "db-0")["metadata"]["uid"])
            is not None
        )
    )
    await asyncio.sleep(0.2)
    pod = await instances_of(api, "db-0")
    [bucket] = pod["terminatedInstances"]
    ids = [i["instanceId"]["id"] for i in bucket["instances"]]
    assert ids == [first.split("://")[1], second.split("://")[1]]
    assert [i["exitCode"] for i in bucket["instances"]] == [137, 2]
    assert all(i["finished"] for i in bucket["instances"])
    [live] = pod["liveInstances"]
    assert live["instanceId"]["id"] == third.split("://")[1] and live["finished"] is None
    # A status seen again changes nothing.
    sim.update_pod("team-b", "db-0", lambda obj: obj["metadata"]["labels"].update(x="y"))
    await asyncio.sleep(0.2)
    again = await instances_of(api, "db-0")
    assert again["terminatedInstances"] == pod["terminatedInstances"]


async def test_only_the_last_n_finished_instances_are_kept(
    sim: FakeCluster, store_url: str, tmp_path: Path
) -> None:
    async with serving(sim, store_url, tmp_path, instance_history=2) as api:
        await api.settled(lambda: len(api.service.index) == 8)
        ids = []
        for code in range(4):
            ids.append(
                sim.get_pod("team-b", "db-2")["status"]["containerStatuses"][0]["containerID"]
            )
            sim.restart_container("team-b", "db-2", exit_code=code)
            await asyncio.sleep(0.15)
            await api.service.instances.flush()
        pod = await instances_of(api, "db-2")
        kept = [i["instanceId"]["id"] for i in pod["terminatedInstances"][0]["instances"]]
        assert kept == [i.split("://")[1] for i in ids[-2:]]


async def test_deleted_pods_stay_searchable_across_a_restart(
    sim: FakeCluster, store_url: str, tmp_path: Path
) -> None:
    async with serving(sim, store_url, tmp_path) as api:
        await api.settled(lambda: len(api.service.index) == 8)
        sim.restart_container("team-a", "web-5d8f-2", exit_code=1)
        await asyncio.sleep(0.2)
        sim.delete_pod("team-a", "web-5d8f-2", grace_seconds=0)
        await api.settled(lambda: len(api.service.index) == 7)
        await api.service.history.commit()
        gone = await instances_of(api, "web-5d8f-2")
        assert await api.names("Deleted:true") == ["web-5d8f-2"]
        metrics = (await api.client.get("/metrics")).text
        assert "podindex_search_past_pods 1.0" in metrics
        written = next(
            line
            for line in metrics.splitlines()
            if line.startswith("podindex_instances_writes_total")
        )
        assert float(written.split()[1]) >= 12, written
        assert "web-5d8f-2" not in await api.names("Deleted:false")
        assert gone["liveInstances"] == []
        buckets = {
            b["instances"][0]["containerName"]: b["instances"] for b in gone["terminatedInstances"]
        }
        assert set(buckets) == {"app", "proxy"}
        assert len(buckets["app"]) == 2 and buckets["app"][0]["exitCode"] == 1
        # Deleted pods of a live Deployment, by the Deployment.
        assert "web-5d8f-2" in await api.names("Deployment:web")
        # A pod that dies while podindex is down is history too.
        sim.delete_pod("team-b", "db-1", grace_seconds=0)
    await asyncio.sleep(0.05)
    sim.delete_pod("team-b", "db-0", grace_seconds=0)
    async with serving(sim, store_url, tmp_path) as api:
        await api.settled(lambda: len(api.service.index) == 5)
        await api.service.history.commit()
        assert set(await api.names("Deleted:true")) == {"web-5d8f-2", "db-1", "db-0"}
        after = await instances_of(api, "web-5d8f-2")
        assert after == gone
        db0 = await instances_of(api, "db-0")
        assert db0["liveInstances"] == [] and db0["terminatedInstances"]
        assert await api.names("Container Name:postgres+Deleted:true") == ["db-0", "db-1"] or set(
            await api.names("Container Name:postgres+Deleted:true")
        ) == {"db-0", "db-1"}


# --- export ----------------------------------------------------------------------


async def test_export_streams_one_result_per_line_in_a_stable_order(api: Api) -> None:
    lines = await api.export()
    assert all(set(line) == {"result"} and set(line["result"]) == {"pod"} for line in lines)
    exported = [line["result"]["pod"] for line in lines]
    assert [p["name"] for p in exported] == await api.names(**{"pagination.limit": 1000})
    assert exported == await api.pods(**{"pagination.limit": 1000})
    assert [line["result"]["pod"]["name"] for line in await api.export()] == [
        p["name"] for p in exported
    ]
    team_b = await api.export("Namespace:team-b")
    assert {line["result"]["pod"]["name"] for line in team_b} == {"db-0", "db-1", "db-2"}


async def test_a_failure_mid_export_ends_with_an_error_line(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from podindex.api import podservice

    monkeypatch.setattr(podservice, "EXPORT_CHUNK", 3)
    store = api.service.instances.store
    first_chunk = {(e.key) for e in api.service.search.ordered(parse(""), time.time())[:3]}

    def failing(read: Any) -> Any:
        async def call(keys: Any) -> Any:
            if not set(keys) <= first_chunk:
                raise StoreError("the database went away")
            return await read(keys)

        return call

    def failing_lines(read: Any) -> Any:
        async def call(cluster: str, uids: Any, deployment_ids: Any) -> Any:
            if not {(cluster, uid) for uid in uids} <= first_chunk:
                raise StoreError("the database went away")
            return await read(cluster, uids, deployment_ids)

        return call

    # Pods with instances not yet written are read apart: the first read of any kind.
    monkeypatch.setattr(store, "export_lines", failing_lines(store.export_lines))
    monkeypatch.setattr(store, "instance_documents", failing(store.instance_documents))
    monkeypatch.setattr(store, "instances", failing(store.instances))
    api.service.instances.flush_interval = 3600.0
    await api.service.instances.flush()
    lines = await api.export()
    assert [set(line) for line in lines] == [{"result"}] * 3 + [{"error"}]
    error = lines[-1]["error"]
    assert error["code"] == 14 and error["message"] and error["details"] == []


async def test_an_export_past_its_timeout_ends_with_deadline_exceeded(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from podindex.api import podservice

    monkeypatch.setattr(podservice, "EXPORT_CHUNK", 2)
    api.service.instances.flush_interval = 3600.0
    await api.service.instances.flush()
    store = api.service.instances.store

    def slow(read: Any) -> Any:
        async def call(*asked: Any) -> Any:
            await asyncio.sleep(0.6)
            return await read(*asked)

        return call

    monkeypatch.setattr(store, "export_lines", slow(store.export_lines))
    monkeypatch.setattr(store, "instance_documents", slow(store.instance_documents))
    monkeypatch.setattr(store, "instances", slow(store.instances))
    lines = await api.export(timeout=1)
    assert "result" in lines[0]
    assert lines[-1]["error"]["code"] == 4 and "deadline" in lines[-1]["error"]["message"]
    assert len(lines) - 1 < len(await api.names()), "the export stopped at the deadline"


def _pod(cluster: str, uid: str) -> tuple[tuple[str, str], Pod, PastPod]:
    status = {
        "name": "app",
        "containerID": f"containerd://{uid}-1",
        "imageID": "registry.example/app@sha256:" + "ab" * 32,
        "state": {"running": {"startedAt": "2026-11-30T10:00:00Z"}},
    }
    meta = {"uid": uid, "name": f'web-"{uid}"', "namespace": "ns"}
    if uid != "no-created":
        meta["creationTimestamp"] = "2026-11-30T09:00:00Z"
    pod = msgspec.convert(
        {"metadata": meta, "spec": {}, "status": {"containerStatuses": [status]}}, Pod
    )
    entry = PastPod(
        key=(cluster, uid),
        namespace="ns",
        name=meta["name"],
        node="",
        ips=(),
        created=meta.get("creationTimestamp", ""),
        labels={},
        workload_kind="Deployment" if uid.startswith("w") else "",
        workload_name="web",
        containers=("app",),
        deleted_at=0.0,
        seq=0,
    )
    return (cluster, uid), pod, entry


async def test_an_export_chunk_writes_every_kind_of_pod_as_the_api_does(store: Store) -> None:
    """The database writes the lines of pods with their facts kept; the rest (queued,
    without instances, written before facts were kept) are written in Python."""
    tracker = InstanceTracker(store)
    uids = ("w-facts", "facts", "no-created", "older", "queued", "nothing")
    pods = {uid: _pod("c1", uid) for uid in uids}
    for uid in ("w-facts", "facts", "no-created"):
        key, pod, _ = pods[uid]
        tracker.observe(key, pod)
    key, pod, _ = other = _pod("c2", "w-elsewhere")
    tracker.observe(key, pod)
    await tracker.flush()
    older_key, older_pod, _ = pods["older"]
    tracker.observe(older_key, older_pod)
    tracker._facts.clear()  # as an older podindex wrote it: instances, no facts
    await tracker.flush()
    key, pod, _ = pods["queued"]
    tracker.observe(key, pod)
    entries = [pods[uid][2] for uid in uids] + [other[2]]
    fallbacks = await store.export_lines("c1", ["older", "nothing"], ["null", "null"])
    assert [line[:1] for line in fallbacks.split(b"\n")] == [b"\x1f", b"\x1f"]

    body = await export_chunk(tracker, entries)

    lines = body.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(entries) + 1
    expected = [
        export_line(e, d)
        for e, d in zip(entries, await tracker.documents([e.key for e in entries]), strict=True)
    ]
    for entry, line, python in zip(entries, lines[:-1], expected, strict=True):
        assert msgspec.json.decode(line) == msgspec.json.decode(python), entry.key
    pod_c1 = msgspec.json.decode(lines[0])["result"]["pod"]
    assert pod_c1["deploymentId"] and pod_c1["liveInstances"][0]["instanceId"]["id"] == "w-facts-1"
    assert msgspec.json.decode(lines[5])["result"]["pod"]["liveInstances"] == []
    assert msgspec.json.decode(lines[2])["result"]["pod"]["started"] is None
    # One cluster, nothing queued, every pod's facts kept: the database's text is the body.
    await tracker.flush()
    assert await export_chunk(tracker, entries[:3]) == b"\n".join(lines[:3]) + b"\n"


# --- access ------------------------------------------------------------------------


async def test_reads_need_a_reader_when_configured(
    sim: FakeCluster, store_url: str, tmp_path: Path
) -> None:
    tokens = standard_tokens(tmp_path)
    async with serving(
        sim, store_url, tmp_path, tokens_file=str(tokens), lookup_access="reader"
    ) as api:
        await api.settled(lambda: len(api.service.index) == 8)
        status, body = await api.get("/v1/pods")
        assert (
            status == 401
            and body["code"] == 16
            and set(body)
            == {
                "error",
                "code",
                "message",
                "details",
            }
        )
        response = await api.client.get("/v1/export/pods", headers=bearer("wrong"))
        assert response.status_code == 401
        response = await api.client.get("/v1/pods", headers=bearer(READER_TOKEN))
        assert response.status_code == 200 and len(response.json()["pods"]) == 8
