"""Events on the emulator, core/v1 and events.k8s.io/v1, against recordings 60-65 over sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from podindex.sim import FakeCluster
from podindex.sim.store import EVENT
from tests.recordings import recording

TOKEN = "t0ken"
UID = "9786f2ef-f7f2-464b-879c-0fd426588daf"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "realk8s-recorder/1.0"}


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    sim = FakeCluster(token=TOKEN)
    sim.create_node("node-1")
    sim.create_pod("team-a", "web-1", node="node-1", uid=UID)
    sim.create_pod("team-a", "web-2", node="node-1")
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        yield session


def masked(value: Any, key: str = "") -> Any:
    """The server-assigned values (uid, revisions, creation and write times) masked."""
    if isinstance(value, dict):
        return {k: masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if key in ("resourceVersion", "creationTimestamp", "time") and isinstance(value, str):
        return f"<{key}>"
    return value


def mask_event_uids(body: Any) -> Any:
    for item in body.get("items", [body]):
        if "uid" in item["metadata"]:
            item["metadata"]["uid"] = "<uid>"
    return body


async def call(
    http: aiohttp.ClientSession, cluster: FakeCluster, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body))
    async with http.request(method, cluster.url + path, data=data) as resp:
        raw = await resp.read()
        return resp.status, dict(resp.headers), json.loads(raw)


def recorded(name: str) -> tuple[str, str, Any, int, Any, dict[str, str]]:
    rec = recording(name)
    req, resp = rec["request"], rec["response"]
    return (
        req["method"],
        req["path"],
        req["body"],
        resp["status"],
        json.loads(resp["body"]),
        resp["headers"],
    )


def exact(body: Any) -> str:
    """Masked and key-order preserving: the Go field order matters as much as the values."""
    return json.dumps(mask_event_uids(masked(body)))


async def seed_recorded_events(http: aiohttp.ClientSession, cluster: FakeCluster) -> None:
    """The writes of the recording session: 60, a BackOff x5, an event of web-2, then 61."""
    method, path, body, status, expected, headers = recorded("60")
    got_status, got_headers, got = await call(http, cluster, method, path, body)
    assert got_status == status == 201
    assert exact(got) == exact(expected)
    assert got_headers["Content-Type"] == headers["Content-Type"]
    assert "Content-Length" in got_headers  # small bodies are not chunked
    backoff = json.loads(body)
    backoff["metadata"]["name"] = "web-1.3e9"
    backoff.update(
        reason="BackOff",
        message="Back-off restarting failed container app in pod web-1_team-a",
        type="Warning",
        count=5,
    )
    got_status, _, _ = await call(http, cluster, "POST", path, backoff)
    assert got_status == 201
    other = json.loads(body)
    other["metadata"]["name"] = "web-2.3ea"
    other["involvedObject"].update(name="web-2", uid="00000000-0000-4000-8000-000000000002")
    got_status, _, _ = await call(http, cluster, "POST", path, other)
    assert got_status == 201
    method, path, body, status, expected, _ = recorded("61")
    got_status, _, got = await call(http, cluster, method, path, body)
    assert got_status == status == 201
    assert exact(got) == exact(expected)


@pytest.mark.parametrize("name", ["62", "63", "64", "65"])
async def test_recorded_lists(name: str, cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    await seed_recorded_events(http, cluster)
    method, path, _, status, expected, headers = recorded(name)
    got_status, got_headers, got = await call(http, cluster, method, path)
    assert got_status == status
    assert exact(got) == exact(expected)
    assert got_headers["Content-Type"] == headers["Content-Type"]
    assert ("Transfer-Encoding" in headers) == (got_headers.get("Transfer-Encoding") == "chunked")


async def test_list_revision_and_get_in_both_apis(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    await seed_recorded_events(http, cluster)
    _, _, core = await call(http, cluster, "GET", "/api/v1/namespaces/team-a/events")
    assert core["metadata"]["resourceVersion"] == str(cluster.resource_version)
    assert [e["metadata"]["name"] for e in core["items"]] == [
        "web-1.3000",
        "web-1.3e8",
        "web-1.3e9",
        "web-2.3ea",
    ]
    status, _, one = await call(
        http, cluster, "GET", "/apis/events.k8s.io/v1/namespaces/team-a/events/web-1.3e9"
    )
    assert status == 200
    assert (one["kind"], one["apiVersion"]) == ("Event", "events.k8s.io/v1")
    assert one["deprecatedCount"] == 5 and one["note"].startswith("Back-off")
    status, _, missing = await call(
        http, cluster, "GET", "/apis/events.k8s.io/v1/namespaces/team-a/events/nope"
    )
    assert status == 404
    assert missing["message"] == 'events.events.k8s.io "nope" not found'
    assert missing["details"] == {"name": "nope", "group": "events.k8s.io", "kind": "events"}


async def test_create_errors(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    _, path, body, _, _, _ = recorded("60")
    await call(http, cluster, "POST", path, body)
    status, _, again = await call(http, cluster, "POST", path, body)
    assert status == 409
    assert again == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'events "web-1.3e8" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "web-1.3e8", "kind": "events"},
        "code": 409,
    }
    # events.k8s.io requires the new-style fields.
    status, _, invalid = await call(
        http,
        cluster,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/team-a/events",
        {"metadata": {"name": "x"}, "reason": "R", "type": "Normal", "regarding": {"kind": "Pod"}},
    )
    assert status == 422 and invalid["reason"] == "Invalid"
    assert invalid["message"].startswith('Event.events.k8s.io "x" is invalid: [')
    assert {c["field"] for c in invalid["details"]["causes"]} >= {"eventTime"}
    assert invalid["details"]["group"] == "events.k8s.io"
    # The object's namespace must be the request's.
    elsewhere = json.loads(body)
    elsewhere["metadata"]["namespace"] = "team-b"
    status, _, mismatch = await call(http, cluster, "POST", path, elsewhere)
    assert (status, mismatch["reason"], mismatch["message"]) == (
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
    )
    assert "details" not in mismatch
    # A legacy event must be in its object's namespace.
    wrong = json.loads(body)
    wrong["metadata"]["name"] = "y"
    wrong["involvedObject"]["namespace"] = "team-b"
    status, _, invalid = await call(http, cluster, "POST", path, wrong)
    assert status == 422
    assert invalid["message"] == (
        'Event "y" is invalid: involvedObject.namespace: Invalid value: "team-b": '
        "does not match event.namespace"
    )


async def test_record_event_aggregates_like_the_recorders(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    first = cluster.record_event("team-a", "web-1", "Warning", "BackOff", "boom", container="app")
    again = cluster.record_event("team-a", "web-1", "Warning", "BackOff", "boom", container="app")
    assert again["metadata"]["name"] == first["metadata"]["name"]
    assert (first["count"], again["count"]) == (1, 2)
    assert again["involvedObject"]["fieldPath"] == "spec.containers{app}"
    assert again["source"] == {"component": "kubelet", "host": "node-1"}
    sched = cluster.record_event(
        "team-a", "web-1", "Normal", "Scheduled", "assigned", api="events.k8s.io", count=3
    )
    assert sched["series"]["count"] == 3 and sched["reportingComponent"] == "default-scheduler"
    sched = cluster.record_event(
        "team-a", "web-1", "Normal", "Scheduled", "assigned", api="events.k8s.io"
    )
    assert sched["series"]["count"] == 4 and sched["eventTime"].endswith("Z")
    fs = f"involvedObject.uid={UID},reason=BackOff"
    _, _, core = await call(
        http, cluster, "GET", f"/api/v1/namespaces/team-a/events?fieldSelector={fs}"
    )
    assert [e["count"] for e in core["items"]] == [2]
    _, _, v1 = await call(
        http,
        cluster,
        "GET",
        "/apis/events.k8s.io/v1/events?fieldSelector=reportingController%3Ddefault-scheduler",
    )
    assert [e["series"]["count"] for e in v1["items"]] == [4]
    assert cluster.expire_events() == 2
    _, _, core = await call(http, cluster, "GET", "/api/v1/events")
    assert core["items"] == []


async def test_lifecycle_events() -> None:
    async with FakeCluster(lifecycle_events=True, grace_scale=0.001) as sim:
        sim.create_node("node-1")
        pod = sim.create_pod("team-a", "web-1", node="node-1", containers=["app", "side"])
        sim.restart_container("team-a", "web-1", "app")
        sim.crash_container("team-a", "web-1", "app")
        sim.crash_container("team-a", "web-1", "app")
        sim.delete_pod("team-a", "web-1")
        events = sim.list_objects(EVENT)
        seen = [(e["reason"], e.get("count"), e["involvedObject"].get("fieldPath")) for e in events]
        by_reason: dict[str, list[Any]] = {}
        for reason, count, path in seen:
            by_reason.setdefault(reason, []).append((count, path))
        assert sorted(by_reason["Created"]) == [
            (1, "spec.containers{side}"),
            (2, "spec.containers{app}"),
        ]
        assert by_reason["BackOff"] == [(2, "spec.containers{app}")]
        assert len(by_reason["Killing"]) == 2
        scheduled = next(e for e in events if e["reason"] == "Scheduled")
        assert scheduled["message"] == "Successfully assigned team-a/web-1 to node-1"
        assert scheduled["action"] == "Binding" and scheduled["eventTime"]
        assert scheduled["involvedObject"]["uid"] == pod["metadata"]["uid"]
        await asyncio.sleep(0.1)  # the graceful delete completes; events outlive the pod
        assert sim.get_pod("team-a", "web-1") is None
        assert len(sim.list_objects(EVENT)) == len(events)


async def test_watch_events_k8s_io(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    url = cluster.url + "/apis/events.k8s.io/v1/namespaces/team-a/events"
    params = {"watch": "1", "fieldSelector": f"regarding.uid={UID}", "timeoutSeconds": "5"}
    async with http.get(url, params=params) as resp:
        assert resp.status == 200
        cluster.record_event("team-a", "web-2", "Normal", "Pulled", "other pod")
        cluster.record_event("team-a", "web-1", "Normal", "Pulled", "mine")
        line = await asyncio.wait_for(resp.content.readline(), 5)
    event = json.loads(line)
    assert event["type"] == "ADDED"
    assert event["object"]["apiVersion"] == "events.k8s.io/v1"
    assert event["object"]["note"] == "mine"


async def test_discovery_lists_events(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    _, _, groups = await call(http, cluster, "GET", "/apis")
    assert "events.k8s.io" in [g["name"] for g in groups["groups"]]
    _, _, core = await call(http, cluster, "GET", "/api/v1")
    names = [r["name"] for r in core["resources"]]
    assert {"events", "pods/log", "pods/exec"} <= set(names)
    status, _, v1 = await call(http, cluster, "GET", "/apis/events.k8s.io/v1")
    assert status == 200 and v1["resources"][0]["kind"] == "Event"
