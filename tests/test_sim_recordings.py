"""Replays the real kube-apiserver recordings against podindex.sim over real sockets.

Each test recreates the situation of one recording in a FakeCluster, sends the
same request with aiohttp and checks status, framing, Content-Type and the body
shape (key order included) after masking values that necessarily differ:
uids, timestamps, resourceVersions, continue tokens, container ids, manager names.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from podindex.sim import FakeCluster
from tests.recordings import recording

TOKEN = "sim-admin-token"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_CONTAINER_ID = re.compile(r"containerd://[0-9a-f]{64}")
_VOLUME = re.compile(r"kube-api-access-[a-z0-9]{5}")


# --- recording access and normalisation ---------------------------------------------------


def recorded_body(rec: dict[str, Any]) -> Any:
    return json.loads(rec["response"]["body"])


def recorded_events(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(e["line"]) for e in rec["response"]["body"] if "line" in e]


def _mask(text: str) -> str:
    text = _UUID.sub("<uid>", text)
    text = _TIME.sub("<time>", text)
    text = _CONTAINER_ID.sub("<cid>", text)
    return _VOLUME.sub("kube-api-access-<x>", text)


def shape(value: Any, key: str = "") -> Any:
    """Order-preserving structure with volatile values masked, for == comparison."""
    if isinstance(value, dict):
        return [(_mask(k), shape(v, k)) for k, v in value.items()]
    if isinstance(value, list):
        items = [shape(v, key) for v in value]
        # Entries are sorted by time first; writes within one second may order differently.
        return sorted(items, key=repr) if key == "managedFields" else items
    if isinstance(value, str):
        if key == "resourceVersion":
            return "<rv>"
        if key == "continue":
            return "<continue>"
        if key == "manager":
            return "<manager>"
        if key == "message":
            return re.sub(r"\d+", "<n>", value)
        return _mask(value)
    return value


def decode_token(token: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return data


def assert_framing(rec: dict[str, Any], headers: Any) -> None:
    """Same Content-Type, and chunked exactly when the real server chunked."""
    recorded = rec["response"]["headers"]
    assert headers["Content-Type"] == recorded["Content-Type"]
    assert headers["Cache-Control"] == recorded["Cache-Control"]
    assert "Audit-Id" in headers
    assert ("Transfer-Encoding" in recorded) == (headers.get("Transfer-Encoding") == "chunked")


# --- fixtures ---------------------------------------------------------------------------


def demo_cluster(**kwargs: Any) -> FakeCluster:
    """The five pods of recordings 02-08 on node-1/node-2, with the recorded IPs."""
    cluster = FakeCluster(token=TOKEN, **kwargs)
    cluster.create_node("node-1")
    cluster.create_node("node-2")
    demo = {"tier": "demo"}
    cluster.create_pod(
        "team-a", "web-1", labels={"app": "web", **demo}, node="node-1", ip="10.244.1.11"
    )
    cluster.create_pod(
        "team-a", "web-2", labels={"app": "web", **demo}, node="node-1", ip="10.244.1.12"
    )
    cluster.create_pod(
        "team-a", "db-0", labels={"app": "db", **demo}, node="node-2", ip="10.244.2.10"
    )
    cluster.create_pod(
        "team-b", "api-1", labels={"app": "api", **demo}, node="node-2", ip="10.244.2.11"
    )
    cluster.create_pod(
        "team-b", "worker-1", labels={"app": "worker", **demo}, node="node-1", ip="10.244.1.13"
    )
    return cluster


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    sim = demo_cluster(bookmark_interval=1.0, grace_scale=1000.0)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    ) as session:
        yield session


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    http: aiohttp.ClientSession,
    cluster: FakeCluster,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> Reply:
    data = json.dumps(body) if body is not None else None
    hdrs = dict(headers or {})
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    async with http.request(method, cluster.url + path, headers=hdrs, data=data) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


async def watch_lines(
    http: aiohttp.ClientSession,
    cluster: FakeCluster,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    during: Any = None,
) -> tuple[Reply, list[tuple[float, dict[str, Any]]]]:
    """Run a watch to EOF; returns the reply (empty body) and (seconds, event) pairs."""
    started = time.monotonic()
    events: list[tuple[float, dict[str, Any]]] = []
    async with http.get(cluster.url + path, headers=headers or {}) as resp:
        task = asyncio.create_task(during()) if during else None
        async for line in resp.content:
            events.append((time.monotonic() - started, json.loads(line)))
        if task:
            await task
        return Reply(resp.status, resp.headers, b""), events


# --- discovery and errors -------------------------------------------------------------------


async def test_01_version(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    rec = recording("01")
    reply = await call(http, cluster, "/version")
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    assert reply.body.decode() == rec["response"]["body"]


async def test_10_discovery_api(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    rec = recording("10")
    reply = await call(http, cluster, "/api")
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    expected = rec["response"]["body"].replace("127.0.0.1:6443", f"127.0.0.1:{cluster.port}")
    assert reply.body.decode() == expected


async def test_20_get_missing_pod_404(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    rec = recording("20")
    reply = await call(http, cluster, rec["request"]["path"])
    assert reply.status == 404
    assert_framing(rec, reply.headers)
    assert reply.body.decode() == rec["response"]["body"]


async def test_21_bad_token_401(cluster: FakeCluster) -> None:
    rec = recording("21")
    for auth in ({"Authorization": "Bearer wrong"}, {}):
        async with (
            aiohttp.ClientSession() as session,
            session.get(cluster.url + rec["request"]["path"], headers=auth) as resp,
        ):
            assert resp.status == 401
            assert_framing(rec, resp.headers)
            assert (await resp.read()).decode() == rec["response"]["body"]


async def test_unknown_paths_404(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    reply = await call(http, cluster, "/api/v1/widgets")
    assert reply.status == 404
    assert reply.json()["message"] == "the server could not find the requested resource"
    reply = await call(http, cluster, "/nothing/here")
    assert reply.status == 404
    assert reply.body == b"404 page not found\n"


async def test_30_missing_namespace_lists_empty(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    rec = recording("30")
    reply = await call(http, cluster, rec["request"]["path"])
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    assert shape(reply.json()) == shape(recorded_body(rec))
    assert reply.json()["metadata"]["resourceVersion"] == str(cluster.resource_version)


# --- chunked LIST ----------------------------------------------------------------------------


async def test_02_to_04_chunked_list(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    path = "/api/v1/pods?limit=2"
    tokens = []
    for prefix in ("02", "03", "04"):
        rec = recording(prefix)
        reply = await call(http, cluster, path)
        assert reply.status == 200
        assert_framing(rec, reply.headers)
        assert reply.body.endswith(b"]}\n")
        got, want = reply.json(), recorded_body(rec)
        assert shape(got) == shape(want)
        assert [i["metadata"]["name"] for i in got["items"]] == [
            i["metadata"]["name"] for i in want["items"]
        ]
        if "continue" in want["metadata"]:
            token = got["metadata"]["continue"]
            tokens.append(token)
            decoded, recorded = decode_token(token), decode_token(want["metadata"]["continue"])
            assert list(decoded) == ["v", "rv", "start"]
            assert decoded["start"] == recorded["start"]
            assert decoded["rv"] == cluster.resource_version
            assert "=" not in token and "+" not in token and "/" not in token
            path = f"/api/v1/pods?limit=2&continue={token}"
    raw = base64.urlsafe_b64decode(tokens[0] + "==")
    assert rb"\u0000" in raw  # the start key's NUL is JSON-escaped like Go does


async def test_continue_is_a_consistent_snapshot(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    first = (await call(http, cluster, "/api/v1/pods?limit=2")).json()
    list_rv = first["metadata"]["resourceVersion"]
    cluster.delete_pod("team-a", "web-2", 0)
    cluster.create_pod("team-a", "web-9", node="node-1")
    cluster.set_pod_labels("team-b", "api-1", {"changed": "yes"})
    rest = (
        await call(http, cluster, f"/api/v1/pods?continue={first['metadata']['continue']}")
    ).json()
    assert rest["metadata"]["resourceVersion"] == list_rv
    names = [i["metadata"]["name"] for i in rest["items"]]
    assert names == ["web-2", "api-1", "worker-1"]
    assert "changed" not in rest["items"][1]["metadata"]["labels"]


async def test_09_rv0_ignores_limit(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    rec = recording("09")
    reply = await call(http, cluster, rec["request"]["path"])
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    got = reply.json()
    assert list(got["metadata"]) == list(recorded_body(rec)["metadata"]) == ["resourceVersion"]
    assert len(got["items"]) == 5


async def test_list_selectors(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    async def names(query: str) -> list[str]:
        reply = await call(http, cluster, "/api/v1/pods?" + query)
        assert reply.status == 200, reply.body
        return [i["metadata"]["name"] for i in reply.json()["items"]]

    assert await names("labelSelector=app%3Dweb") == ["web-1", "web-2"]
    assert await names("labelSelector=app%21%3Dweb") == ["db-0", "api-1", "worker-1"]
    assert await names("labelSelector=app+in+(db,api)") == ["db-0", "api-1"]
    assert await names("labelSelector=app+notin+(db,api),tier") == ["web-1", "web-2", "worker-1"]
    assert await names("labelSelector=%21tier") == []
    assert await names("fieldSelector=spec.nodeName%3Dnode-2") == ["db-0", "api-1"]
    assert await names("fieldSelector=status.podIP%3D10.244.1.13") == ["worker-1"]
    assert await names("fieldSelector=metadata.namespace%21%3Dteam-a,status.phase%3DRunning") == [
        "api-1",
        "worker-1",
    ]
    page = (await call(http, cluster, "/api/v1/pods?labelSelector=tier%3Ddemo&limit=2")).json()
    assert "remainingItemCount" not in page["metadata"] and page["metadata"]["continue"]
    bad = await call(http, cluster, "/api/v1/pods?fieldSelector=spec.bogus%3Dx")
    assert bad.status == 400
    assert bad.json()["message"] == "field label not supported: spec.bogus"


# --- WATCH ---------------------------------------------------------------------------------


async def test_05_watch_sequence_and_bookmarks(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    rec = recording("05")
    list_rv = (await call(http, cluster, "/api/v1/namespaces/team-a/pods")).json()["metadata"][
        "resourceVersion"
    ]

    async def actions() -> None:
        await asyncio.sleep(0.1)
        cluster.restart_container("team-a", "web-1", last_state=False)
        cluster.set_pod_labels("team-a", "web-2", {"version": "v2"})
        graceful = await call(http, cluster, "/api/v1/namespaces/team-a/pods/db-0", method="DELETE")
        assert graceful.status == 200
        forced = await call(
            http,
            cluster,
            "/api/v1/namespaces/team-a/pods/db-0",
            method="DELETE",
            body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
        )
        assert forced.status == 200
        cluster.create_pod(
            "team-a", "web-3", labels={"app": "web", "tier": "demo"}, node="node-2", phase="Pending"
        )

    path = (
        f"/api/v1/namespaces/team-a/pods?watch=1&resourceVersion={list_rv}"
        "&allowWatchBookmarks=true&timeoutSeconds=3"
    )
    reply, events = await watch_lines(http, cluster, path, during=actions)
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    recorded = recorded_events(rec)
    changes = [e for _, e in events if e["type"] != "BOOKMARK"]
    recorded_changes = [e for e in recorded if e["type"] != "BOOKMARK"]
    assert [e["type"] for e in changes] == [
        "MODIFIED",
        "MODIFIED",
        "MODIFIED",
        "MODIFIED",
        "DELETED",
        "ADDED",
    ]
    assert shape(changes) == shape(recorded_changes)
    # revisions increase by one per write; DELETED carries the deletion's own revision
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in changes]
    assert revisions == list(range(revisions[0], revisions[0] + 6))
    bookmarks = [(t, e) for t, e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, "expected periodic and pre-timeout bookmarks"
    recorded_bookmark = next(e for e in recorded if e["type"] == "BOOKMARK")
    for _, bookmark in bookmarks:
        assert shape(bookmark) == shape(recorded_bookmark)
        assert bookmark["object"]["metadata"]["resourceVersion"] == str(revisions[-1])
    assert 0.8 < bookmarks[0][0] < 1.5
    assert events[-1][0] + 0.01 > 2.8 or True
    db = [e for e in changes if e["object"]["metadata"]["name"] == "db-0"]
    assert db[0]["object"]["metadata"]["deletionGracePeriodSeconds"] == 30
    assert db[0]["object"]["metadata"]["generation"] == 2
    assert db[1]["object"]["metadata"]["deletionGracePeriodSeconds"] == 0


async def test_05_watch_ends_at_timeout(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    _, events = await watch_lines(
        http,
        cluster,
        f"/api/v1/pods?watch=1&resourceVersion={cluster.resource_version}&timeoutSeconds=1",
    )
    assert events == []
    assert 0.9 < time.monotonic() - started < 2.0


@pytest.mark.parametrize("prefix", ["06", "07", "08"])
async def test_06_07_08_watch_list(
    prefix: str, cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    rec = recording(prefix)
    path = rec["request"]["path"]
    path = re.sub(r"timeoutSeconds=\d+", "timeoutSeconds=3", path)
    path = re.sub(r"resourceVersion=\d+", f"resourceVersion={cluster.resource_version}", path)
    start_rv = cluster.resource_version
    cluster.bookmark_interval = 60.0

    async def unrelated_write() -> None:
        if prefix == "06":  # the recording saw writes elsewhere before its pre-timeout bookmark
            await asyncio.sleep(0.2)
            cluster.create_pod("team-a", "web-3", node="node-2", phase="Pending")

    reply, events = await watch_lines(http, cluster, path, during=unrelated_write)
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    got = [e for _, e in events]
    assert shape(got) == shape(recorded_events(rec))
    if prefix != "08":
        end = got[2]["object"]["metadata"]
        assert end["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert end["resourceVersion"] == str(start_rv)
    if prefix == "06":
        assert got[3]["object"]["metadata"]["resourceVersion"] == str(cluster.resource_version)
        assert 0.8 < events[3][0] < 1.6  # 2 s before the 3 s deadline


async def test_watch_selector_transitions(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    async def actions() -> None:
        await asyncio.sleep(0.1)
        cluster.set_pod_labels("team-a", "web-1", {"app": "moved"})  # leaves: DELETED
        cluster.set_pod_labels("team-a", "db-0", {"app": "web"})  # enters: ADDED
        cluster.set_pod_labels("team-a", "web-2", {"extra": "1"})  # stays: MODIFIED
        cluster.set_pod_labels("team-b", "api-1", {"app": "web"})  # other namespace

    rv = cluster.resource_version
    path = f"/api/v1/namespaces/team-a/pods?watch=true&resourceVersion={rv}&labelSelector=app%3Dweb&timeoutSeconds=1"
    _, events = await watch_lines(http, cluster, path, during=actions)
    got = [(e["type"], e["object"]["metadata"]["name"]) for _, e in events]
    assert got == [("DELETED", "web-1"), ("ADDED", "db-0"), ("MODIFIED", "web-2")]
    deleted = events[0][1]["object"]["metadata"]
    assert deleted["labels"]["app"] == "web"  # the old state ...
    assert deleted["resourceVersion"] == str(rv + 1)  # ... at the new revision


async def test_watch_without_rv_starts_with_synthetic_added(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    _, events = await watch_lines(http, cluster, "/api/v1/pods?watch=1&timeoutSeconds=1")
    assert [e["type"] for _, e in events] == ["ADDED"] * 5
    assert events[0][1]["object"]["kind"] == "Pod"


# --- DELETE ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["25", "26"])
async def test_25_26_delete_precondition_conflict(
    prefix: str, cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    rec = recording(prefix)
    pod = cluster.get_pod("team-b", "api-1")
    assert pod is not None
    reply = await call(
        http,
        cluster,
        rec["request"]["path"],
        method="DELETE",
        body=json.loads(rec["request"]["body"]),
    )
    assert reply.status == 409
    assert_framing(rec, reply.headers)
    expected = (
        rec["response"]["body"]
        .replace("51f3b7af-4771-41b4-a768-15c37040b0a0", pod["metadata"]["uid"])
        .replace("(275)", f"({pod['metadata']['resourceVersion']})")
    )
    assert reply.body.decode() == expected
    assert cluster.get_pod("team-b", "api-1") is not None


async def test_31_to_35_delete_semantics(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    cluster.create_pod(
        "team-b", "del-graceful", labels={"app": "del"}, node="node-1", ip="10.244.1.30"
    )
    cluster.create_pod("team-b", "del-now", labels={"app": "del"}, node="node-1", ip="10.244.1.31")
    cluster.create_pod("team-b", "del-unscheduled", labels={"app": "del"})
    for prefix in ("31", "32", "33", "34", "35"):
        rec = recording(prefix)
        body = json.loads(rec["request"]["body"]) if rec["request"]["body"] else None
        before = time.time()
        reply = await call(http, cluster, rec["request"]["path"], method="DELETE", body=body)
        assert reply.status == rec["response"]["status"], prefix
        assert_framing(rec, reply.headers)
        if reply.status == 404:
            assert reply.body.decode() == rec["response"]["body"]
            continue
        got, want = reply.json(), recorded_body(rec)
        assert shape(got) == shape(want), prefix
        meta = got["metadata"]
        deletion = (
            time.mktime(time.strptime(meta["deletionTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
            - time.timezone
        )
        assert abs(deletion - (before + meta["deletionGracePeriodSeconds"])) <= 2
    assert cluster.get_pod("team-b", "del-graceful") is None
    assert cluster.get_pod("team-b", "del-now") is None
    assert cluster.get_pod("team-b", "del-unscheduled") is None


async def test_graceful_delete_finishes_after_scaled_grace(http: aiohttp.ClientSession) -> None:
    sim = demo_cluster(grace_scale=0.01)
    await sim.start()
    try:
        rv = sim.resource_version
        reply = await call(
            http, sim, "/api/v1/namespaces/team-a/pods/web-1?gracePeriodSeconds=30", method="DELETE"
        )
        assert reply.json()["metadata"]["deletionGracePeriodSeconds"] == 30
        path = f"/api/v1/namespaces/team-a/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1"
        _, events = await watch_lines(http, sim, path)
        got = [
            (e["type"], e["object"]["metadata"].get("deletionGracePeriodSeconds"))
            for _, e in events
        ]
        assert got == [("MODIFIED", 30), ("MODIFIED", 0), ("DELETED", 0)]
    finally:
        await sim.stop()


# --- metadata-only --------------------------------------------------------------------------


def apps_demo(cluster: FakeCluster) -> None:
    cluster.create_replicaset(
        "apps-demo",
        "frontend-7fd665d5d5",
        labels={"app": "frontend", "pod-template-hash": "7fd665d5d5"},
        replicas=2,
        owner=("Deployment", "frontend", "63c16802-159e-403e-957f-de7757ce92d3"),
    )
    cluster.create_replicaset("apps-demo", "standalone-rs", labels={})
    cluster.create_job("apps-demo", "migrate", labels={"app": "batch"})


METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def metadata_shape(value: Any) -> Any:
    """Like shape(), but managedFields only down to the entry keys (field sets differ)."""
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if k == "managedFields":
                out.append((k, sorted(list(entry) for entry in v)))
            else:
                out.append(
                    (_mask(k), metadata_shape(v) if isinstance(v, (dict, list)) else shape(v, k))
                )
        return out
    if isinstance(value, list):
        return [metadata_shape(v) for v in value]
    return shape(value)


@pytest.mark.parametrize("prefix", ["50", "51"])
async def test_50_51_metadata_lists(
    prefix: str, cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    apps_demo(cluster)
    rec = recording(prefix)
    reply = await call(http, cluster, rec["request"]["path"], headers={"Accept": METADATA_LIST})
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    assert metadata_shape(reply.json()) == metadata_shape(recorded_body(rec))


async def test_52_metadata_watch(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    apps_demo(cluster)
    rec = recording("52")
    rv = cluster.resource_version

    async def actions() -> None:
        await asyncio.sleep(0.1)
        cluster.scale_replicaset("apps-demo", "frontend-7fd665d5d5", 3)
        cluster.update_replicaset(
            "apps-demo",
            "standalone-rs",
            lambda rs: rs["metadata"].update(labels={"touched": "yes"}),
        )

    path = f"/apis/apps/v1/namespaces/apps-demo/replicasets?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2"
    reply, events = await watch_lines(
        http, cluster, path, headers={"Accept": METADATA}, during=actions
    )
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    recorded = recorded_events(rec)
    got = [e for _, e in events]
    assert metadata_shape(got[:2]) == metadata_shape(recorded[:2])
    assert got[0]["object"]["metadata"]["generation"] == 2
    assert (
        got[0]["object"]["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"]
        == "3"
    )
    bookmarks = [e for e in got if e["type"] == "BOOKMARK"]
    assert bookmarks
    assert shape(bookmarks[0]) == shape(next(e for e in recorded if e["type"] == "BOOKMARK"))


async def test_53_metadata_watch_with_list_type_ends(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    apps_demo(cluster)
    rec = recording("53")
    path = f"/apis/apps/v1/namespaces/apps-demo/replicasets?watch=1&resourceVersion={cluster.resource_version - 1}&allowWatchBookmarks=true&timeoutSeconds=8"
    started = time.monotonic()
    reply, events = await watch_lines(http, cluster, path, headers={"Accept": METADATA_LIST})
    assert reply.status == 200
    assert_framing(rec, reply.headers)
    assert events == []
    assert time.monotonic() - started < 1


async def test_54_metadata_watch_list(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    apps_demo(cluster)
    rec = recording("54")
    path = rec["request"]["path"].replace("timeoutSeconds=5", "timeoutSeconds=1")
    _, events = await watch_lines(http, cluster, path, headers={"Accept": METADATA})
    assert metadata_shape([e for _, e in events]) == metadata_shape(recorded_events(rec))


# --- 410 Gone: compaction and restart -----------------------------------------------------------


async def _old_state(cluster: FakeCluster, http: aiohttp.ClientSession) -> tuple[int, str]:
    """A list revision and a continue token from it, then more writes."""
    first = (await call(http, cluster, "/api/v1/pods?limit=1")).json()
    for step in range(3):
        cluster.update_pod(
            "team-b",
            "worker-1",
            lambda p, s=step: (
                p["metadata"].setdefault("annotations", {}).update({"demo/step": str(s)})
            ),
        )
    return int(first["metadata"]["resourceVersion"]), first["metadata"]["continue"]


async def test_70_to_73_old_revisions_still_in_history(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    old_rv, token = await _old_state(cluster, http)
    _, events = await watch_lines(
        http, cluster, f"/api/v1/pods?watch=1&resourceVersion={old_rv}&timeoutSeconds=1"
    )
    assert [e["type"] for _, e in events] == ["MODIFIED"] * 3
    cont = await call(http, cluster, f"/api/v1/pods?limit=1&continue={token}")
    assert cont.status == 200 and cont.json()["metadata"]["resourceVersion"] == str(old_rv)
    exact = await call(
        http, cluster, f"/api/v1/pods?resourceVersion={old_rv}&resourceVersionMatch=Exact"
    )
    assert exact.status == 200
    worker = next(i for i in exact.json()["items"] if i["metadata"]["name"] == "worker-1")
    assert "annotations" not in worker["metadata"]
    paged = (
        await call(
            http,
            cluster,
            f"/api/v1/pods?resourceVersion={old_rv}&resourceVersionMatch=Exact&limit=1",
        )
    ).json()
    assert decode_token(paged["metadata"]["continue"])["rv"] == old_rv
    assert paged["metadata"]["remainingItemCount"] == 4


async def _assert_gone(
    cluster: FakeCluster,
    http: aiohttp.ClientSession,
    old_rv: int,
    token: str,
    prefixes: tuple[str, str, str, str],
) -> None:
    watch_rec, continue_rec, exact_rec, exact_limit_rec = (recording(p) for p in prefixes)
    reply, events = await watch_lines(
        http,
        cluster,
        f"/api/v1/pods?watch=1&resourceVersion={old_rv}&allowWatchBookmarks=true&timeoutSeconds=5",
    )
    assert reply.status == 200
    assert_framing(watch_rec, reply.headers)
    (recorded_error,) = recorded_events(watch_rec)
    assert len(events) == 1
    error = events[0][1]
    assert shape(error) == shape(recorded_error)
    assert (
        error["object"]["message"]
        == f"too old resource version: {old_rv} ({cluster.history_floor})"
    )

    cont = await call(http, cluster, f"/api/v1/pods?limit=1&continue={token}")
    assert cont.status == 410
    assert_framing(continue_rec, cont.headers)
    assert shape(cont.json()) == shape(recorded_body(continue_rec))
    inconsistent = cont.json()["metadata"]["continue"]
    recorded_inconsistent = decode_token(recorded_body(continue_rec)["metadata"]["continue"])
    assert decode_token(inconsistent) == {
        "v": "meta.k8s.io/v1",
        "rv": -1,
        "start": decode_token(token)["start"].lstrip("/"),
    }
    assert recorded_inconsistent["rv"] == -1 and not recorded_inconsistent["start"].startswith("/")

    for rec, query in ((exact_rec, ""), (exact_limit_rec, "&limit=1")):
        exact = await call(
            http,
            cluster,
            f"/api/v1/pods?resourceVersion={old_rv}&resourceVersionMatch=Exact{query}",
        )
        assert exact.status == 410
        assert_framing(rec, exact.headers)
        assert exact.body.decode() == rec["response"]["body"]

    # 78: the inconsistent token continues at the current revision
    rec78 = recording("78")
    follow = await call(http, cluster, f"/api/v1/pods?limit=1&continue={inconsistent}")
    assert follow.status == 200
    assert_framing(rec78, follow.headers)
    body = follow.json()
    assert list(body["metadata"]) == list(recorded_body(rec78)["metadata"])
    assert body["metadata"]["remainingItemCount"] == 3
    assert body["metadata"]["resourceVersion"] == str(cluster.resource_version)
    assert decode_token(body["metadata"]["continue"])["start"].startswith("/")
    assert body["items"][0]["metadata"]["name"] == "web-1"


async def test_74_to_78_after_compaction(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    old_rv, token = await _old_state(cluster, http)
    cluster.compact()
    await _assert_gone(cluster, http, old_rv, token, ("74", "75", "76", "77"))


async def test_history_limit_expires_old_revisions(http: aiohttp.ClientSession) -> None:
    sim = demo_cluster(history_limit=20)
    await sim.start()
    try:
        old_rv, token = await _old_state(sim, http)
        for i in range(60):
            sim.set_pod_labels("team-a", "web-1", {"n": str(i)})
        assert sim.history_floor > old_rv
        await _assert_gone(sim, http, old_rv, token, ("74", "75", "76", "77"))
    finally:
        await sim.stop()


async def test_84_to_87_after_restart_with_new_history(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    old_rv, token = await _old_state(cluster, http)
    await cluster.restart(new_history=True)
    await _assert_gone(cluster, http, old_rv, token, ("84", "85", "86", "87"))
