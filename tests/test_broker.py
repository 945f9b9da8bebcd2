"""The broker API and time-aware attribution, on both history backends.

Each test runs the whole service (no cluster watched: a broker) with its
history writer against a real SQLite file or a real PostgreSQL database, and
talks to it through the ASGI app. The scenarios are the original broker's
known flaws: IP reuse answering an arbitrary row, name collisions across
namespaces, a racing restart marked dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podindex.api.app import create_app
from podindex.service import Service
from podindex.settings import Settings
from tests.auth import ADMIN_TOKEN, READER_TOKEN, bearer, standard_tokens


@pytest.fixture
async def service(store_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    access = str(standard_tokens(tmp_path))
    svc = Service(Settings(store=store_url, watch=False, grace_period=0.5, tokens_file=access))
    svc.history.flush_interval = 0.02
    task = asyncio.create_task(svc.run())
    try:
        for _ in range(500):
            if svc.ready:
                break
            await asyncio.sleep(0.01)
        assert svc.ready, "the broker did not load its history"
        yield svc
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service, run_background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://podindex", headers=bearer(ADMIN_TOKEN)
    ) as c:
        yield c


async def push(client: httpx.AsyncClient, name: str, ip: str, **fields: Any) -> dict[str, Any]:
    body = {"pod_name": name, "pod_namespace": "team-a", "pod_ip": ip, "node_name": "node-1"}
    response = await client.post("/pod/spec", json={**body, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def pod_obj(uid: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"uid": uid, "labels": labels or {"app": "web"}, "resourceVersion": "7"},
        "spec": {"containers": [{"name": "app", "image": "web:1"}]},
        "status": {"phase": "Running", "startTime": "2024-05-01T10:00:00Z"},
    }


async def test_a_pushed_pod_is_read_back_by_every_endpoint(client: httpx.AsyncClient) -> None:
    stored = await push(
        client,
        "web-0",
        "10.1.0.5",
        pod_obj=pod_obj("uid-web-0"),
        pod_identity="web",
        workload_selector_labels={"app": "web"},
        time_stamp="2024-05-01T10:00:05Z",
    )
    assert stored["status"] == "stored" and stored["uid"] == "uid-web-0"
    by_name = (await client.get("/pod/name/web-0")).json()
    assert by_name["pod_name"] == "web-0" and by_name["pod_namespace"] == "team-a"
    assert by_name["pod_ip"] == "10.1.0.5" and by_name["node_name"] == "node-1"
    assert by_name["pod_identity"] == "web"
    assert by_name["workload_selector_labels"] == {"app": "web"}
    assert by_name["is_dead"] is False and by_name["source"] == "push"
    assert by_name["time_stamp"] == "2024-05-01T10:00:05Z"
    assert by_name["pod_obj"]["metadata"]["uid"] == "uid-web-0", "the object as the agent sent it"
    assert (await client.get("/pod/ip/10.1.0.5")).json()["uid"] == "uid-web-0"
    listed = (await client.get("/pod/list/node-1")).json()
    assert [(p["pod_namespace"], p["pod_name"]) for p in listed] == [("team-a", "web-0")]
    assert (await client.get("/pod/list/node-2")).json() == []
    # Pushed pods are in the same index the lookups read.
    lookup = (await client.get("/pod", params={"ip": "10.1.0.5"})).json()
    assert (lookup["name"], lookup["source"], lookup["identity"]) == ("web-0", "push", "web")


async def test_empty_names_are_refused_and_store_nothing(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="podindex.broker"):
        for name in ("", "   "):
            response = await client.post(
                "/pod/spec", json={"pod_name": name, "pod_namespace": "a", "pod_ip": "10.1.0.1"}
            )
            assert response.status_code == 400
            assert response.json()["error"] == "invalid_pod_name"
        dead = await client.post("/pod/mark_dead", json={"pod_name": " "})
        assert dead.status_code == 400
    assert "empty pod_name" in caplog.text
    assert (await client.get("/pod/info")).json() == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"pod_name": "a", "pod_namespace": "x", "pod_ip": "10.1.0.300"}, "invalid_pod_ip"),
        ({"pod_name": "a", "pod_namespace": ""}, "invalid_pod_namespace"),
        ({"pod_name": 5, "pod_namespace": "x"}, "invalid_body"),
        ({"pod_name": "a", "pod_namespace": "x", "pod_obj": [1, 2]}, "invalid_pod_obj"),
    ],
)
async def test_bad_pushes_name_the_problem_and_change_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], error: str
) -> None:
    response = await client.post("/pod/spec", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert (await client.get("/pod/info")).json() == []
    bad_json = await client.post("/pod/spec", content=b"{not json")
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid_json"


async def test_same_name_in_two_namespaces_are_two_pods(client: httpx.AsyncClient) -> None:
    await push(client, "web-0", "10.1.0.5", pod_namespace="team-a")
    await push(client, "web-0", "10.2.0.5", pod_namespace="team-b")
    rows = (await client.get("/pod/info")).json()
    assert [(r["pod_namespace"], r["pod_ip"], r["is_dead"]) for r in rows] == [
        ("team-a", "10.1.0.5", False),
        ("team-b", "10.2.0.5", False),
    ]
    b = (await client.get("/pod/name/web-0", params={"namespace": "team-b"})).json()
    assert b["pod_ip"] == "10.2.0.5"


async def test_a_restart_under_the_same_name_replaces_the_row_in_place(
    client: httpx.AsyncClient,
) -> None:
    first = await push(client, "web-0", "10.1.0.5")
    second = await push(client, "web-0", "10.1.0.9")
    assert first["uid"] == second["uid"], "no uid from the agent: the name is the key"
    rows = (await client.get("/pod/info")).json()
    assert [(r["pod_ip"], r["is_dead"]) for r in rows] == [("10.1.0.9", False)]
    # The old address still says who had it.
    assert (await client.get("/pod/ip/10.1.0.5")).json()["uid"] == first["uid"]


async def test_a_restart_with_a_new_uid_keeps_the_old_instance_as_history(
    client: httpx.AsyncClient,
) -> None:
    await push(client, "db-0", "10.1.0.5", pod_obj=pod_obj("uid-1"))
    await push(client, "db-0", "10.1.0.6", pod_obj=pod_obj("uid-2"))
    rows = (await client.get("/pod/info")).json()
    assert sorted((r["uid"], r["is_dead"]) for r in rows) == [("uid-1", True), ("uid-2", False)]
    assert (await client.get("/pod/name/db-0")).json()["uid"] == "uid-2"
    assert (await client.get("/pod/list/node-1")).json()[0]["uid"] == "uid-2"


async def test_ip_reuse_answers_the_live_holder_else_the_latest_never_an_older_one(
    client: httpx.AsyncClient,
) -> None:
    # b-0 and a-0 held 10.1.0.7 in that order; "a" sorts first, so an
    # unordered or name-ordered query would wrongly answer a-0.
    await push(client, "b-0", "10.1.0.7")
    await client.post("/pod/mark_dead", json={"pod_name": "b-0", "pod_namespace": "team-a"})
    await push(client, "c-0", "10.1.0.7")
    assert (await client.get("/pod/ip/10.1.0.7")).json()["pod_name"] == "c-0"
    await client.post(
        "/pod/mark_dead", json={"pod_name": "c-0", "pod_namespace": "team-a", "pod_ip": "10.1.0.7"}
    )
    await push(client, "a-0", "10.1.0.99")
    latest = (await client.get("/pod/ip/10.1.0.7")).json()
    assert (latest["pod_name"], latest["is_dead"]) == ("c-0", True)
    missing = await client.get("/pod/ip/10.9.9.9")
    assert missing.status_code == 404 and missing.json()["error"] == "No data found"


async def test_mark_dead_with_an_ip_spares_a_racing_restart(client: httpx.AsyncClient) -> None:
    await push(client, "web-0", "10.1.0.5")
    await push(client, "web-0", "10.1.0.6")  # the restart lands before the reconciler's mark
    stale = await client.post(
        "/pod/mark_dead",
        json={"pod_name": "web-0", "pod_namespace": "team-a", "pod_ip": "10.1.0.5"},
    )
    assert stale.json() == {"marked": 0}
    live = (await client.get("/pod/name/web-0")).json()
    assert (live["pod_ip"], live["is_dead"]) == ("10.1.0.6", False)
    exact = await client.post(
        "/pod/mark_dead",
        json={"pod_name": "web-0", "pod_namespace": "team-a", "pod_ip": "10.1.0.6"},
    )
    assert exact.json() == {"marked": 1}
    gone = (await client.get("/pod/name/web-0")).json()
    assert gone["is_dead"] is True and gone["deleted_at"] is not None
    assert (await client.get("/pod/list/node-1")).json() == []
    assert (await client.get("/pod", params={"ip": "10.1.0.6"})).json()["state"] == "terminated"


async def test_mark_dead_by_name_only_is_the_legacy_fallback_and_warns(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await push(client, "web-0", "10.1.0.5")
    with caplog.at_level(logging.WARNING, logger="podindex.broker"):
        response = await client.post("/pod/mark_dead", json={"pod_name": "web-0"})
    assert response.json() == {"marked": 1}
    assert "without pod_ip" in caplog.text


async def test_a_late_push_for_an_instance_marked_dead_does_not_revive_it(
    client: httpx.AsyncClient,
) -> None:
    await push(client, "db-0", "10.1.0.5", pod_obj=pod_obj("uid-1"))
    await client.post(
        "/pod/mark_dead", json={"pod_name": "db-0", "pod_namespace": "team-a", "pod_ip": "10.1.0.5"}
    )
    late = await push(client, "db-0", "10.1.0.5", pod_obj=pod_obj("uid-1"))
    assert late["status"] == "ignored"
    assert (await client.get("/pod/name/db-0")).json()["is_dead"] is True
    # Nor does it end the instance that replaced it.
    await push(client, "db-0", "10.1.0.6", pod_obj=pod_obj("uid-2"))
    again = await push(client, "db-0", "10.1.0.5", pod_obj=pod_obj("uid-1"))
    assert again["status"] == "ignored"
    live = (await client.get("/pod/name/db-0")).json()
    assert (live["uid"], live["is_dead"]) == ("uid-2", False)


async def test_who_held_an_ip_at_an_instant(client: httpx.AsyncClient) -> None:
    before = time.time()
    await asyncio.sleep(0.05)
    await push(client, "old-0", "10.1.0.7")
    await asyncio.sleep(0.05)
    during_old = time.time()
    await asyncio.sleep(0.05)
    await client.post(
        "/pod/mark_dead",
        json={"pod_name": "old-0", "pod_namespace": "team-a", "pod_ip": "10.1.0.7"},
    )
    draining = time.time()
    await asyncio.sleep(0.7)  # past the 0.5 s grace period
    gap = time.time()
    await push(client, "new-0", "10.1.0.7")
    await asyncio.sleep(0.05)
    now = time.time()

    async def at(instant: float | str) -> httpx.Response:
        return await client.get("/pod/ip/10.1.0.7", params={"at": str(instant)})

    assert (await at(before)).status_code == 404
    held = (await at(during_old)).json()
    assert (held["pod_name"], held["state"]) == ("old-0", "held")
    released = (await at(draining + 0.01)).json()
    assert (released["pod_name"], released["state"]) == ("old-0", "released")
    assert (await at(gap)).status_code == 404
    assert (await at(now)).json()["pod_name"] == "new-0"
    rfc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 1)) + "Z"
    assert (await at(rfc)).json()["pod_name"] == "new-0"
    bad = await at("yesterday")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_at"


async def test_attribute_answers_each_pair_in_one_call(client: httpx.AsyncClient) -> None:
    await push(client, "a-0", "10.1.0.1", pod_identity="alpha")
    await asyncio.sleep(0.05)
    t1 = time.time()
    await push(client, "b-0", "fd00::2")
    await asyncio.sleep(0.05)
    t2 = time.time()
    pairs = [
        {"ip": "10.1.0.1", "at": t1},
        {"ip": "fd00:0::2", "at": t2},
        {"ip": "fd00::2", "at": t1},  # before b-0 had it
        {"ip": "10.9.9.9", "at": t2},
        {"ip": "::ffff:10.1.0.1", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t2 + 1))},
    ]
    response = await client.post("/attribute", json={"pairs": pairs})
    assert response.status_code == 200, response.text
    answer = response.json()
    holders, results = answer["holders"], answer["results"]
    names = [None if r["holder"] is None else holders[r["holder"]]["name"] for r in results]
    assert names == ["a-0", "b-0", None, None, "a-0"]
    assert results[0]["holder"] == results[4]["holder"], "each holder is listed once"
    assert [r["ip"] for r in results] == [p["ip"] for p in pairs], "as the pairs gave them"
    first = holders[results[0]["holder"]]
    assert first["namespace"] == "team-a" and first["workload_identity"] == "alpha"
    assert first["ip"] == "10.1.0.1" and first["held_to"] is None
    assert results[0]["state"] == "held" and results[2]["state"] is None


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([{"ip": "10.1.0.1", "at": 1}, {"ip": "nope", "at": 1}], "pairs[1].ip"),
        ([{"ip": "10.1.0.1", "at": "soon"}], "pairs[0].at"),
        ([{"ip": "10.1.0.1"}], "at"),
    ],
)
async def test_attribute_rejects_a_bad_pair_by_its_position(
    client: httpx.AsyncClient, pairs: list[dict[str, Any]], message: str
) -> None:
    response = await client.post("/attribute", json={"pairs": pairs})
    assert response.status_code == 400
    assert message in response.json()["message"]


async def test_a_pod_object_sent_as_a_json_string_is_kept_as_an_object(
    client: httpx.AsyncClient,
) -> None:
    await push(client, "web-0", "10.1.0.5", pod_obj=json.dumps(pod_obj("uid-s")))
    row = (await client.get("/pod/name/web-0")).json()
    assert row["uid"] == "uid-s" and row["pod_obj"]["metadata"]["uid"] == "uid-s"


async def test_attribution_answers_the_same_after_a_restart(
    service: Service, client: httpx.AsyncClient, store_url: str
) -> None:
    await push(client, "a-0", "10.1.0.1")
    await asyncio.sleep(0.02)
    t_a = time.time()
    await client.post(
        "/pod/mark_dead", json={"pod_name": "a-0", "pod_namespace": "team-a", "pod_ip": "10.1.0.1"}
    )
    await asyncio.sleep(0.6)
    await push(client, "b-0", "10.1.0.1")
    await asyncio.sleep(0.02)
    t_b = time.time()
    pairs = {"pairs": [{"ip": "10.1.0.1", "at": t} for t in (t_a, t_b, t_a - 60)]}
    before = (await client.post("/attribute", json=pairs)).json()
    assert [r["state"] for r in before["results"]] == ["held", "held", None]

    second = Service(Settings(store=store_url, watch=False, grace_period=0.5))
    task = asyncio.create_task(second.run())
    try:
        while not second.ready:
            await asyncio.sleep(0.01)
        app = create_app(second, run_background=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as again:
            after = (await again.post("/attribute", json=pairs)).json()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert after == before


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "unauthenticated"),
        (bearer("not-a-known-token"), 401, "unauthenticated"),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, 401, "unauthenticated"),
        (bearer(READER_TOKEN), 403, "forbidden"),
    ],
)
async def test_pushes_and_marks_need_the_admin_role(
    service: Service, headers: dict[str, str], status: int, error: str
) -> None:
    app = create_app(service, run_background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x", headers=headers) as c:
        body = {"pod_name": "web-0", "pod_namespace": "team-a", "pod_ip": "10.1.0.9"}
        for path in ("/pod/spec", "/pod/mark_dead"):
            response = await c.post(path, json=body)
            assert response.status_code == status, response.text
            assert response.json()["error"] == error
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
        # Nothing changed: reads are open by default and find no such pod.
        assert (await c.get("/pod/name/web-0")).status_code == 404
    assert service.index.named("web-0") == []
