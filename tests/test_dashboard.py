"""The dashboard Pod API against the emulator: list, detail, delete, in the document's envelope."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podindex.api.app import create_app
from podindex.api.auth import token_digest
from podindex.kube.config import explicit_access
from podindex.service import Service
from podindex.settings import Settings
from podindex.sim import FakeCluster
from tests.auth import ADMIN_TOKEN, READER_TOKEN, bearer, standard_tokens
from tests.test_e2e_serve import TOKEN

BASE = "/api/clusters/default"


def crashloop(obj: dict[str, Any]) -> None:
    status = obj["status"]
    status["conditions"] = [{"type": "Ready", "status": "False"}]
    for cs in status["containerStatuses"]:
        cs.update(
            ready=False,
            restartCount=5,
            state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
            lastState={"terminated": {"exitCode": 1, "finishedAt": "2026-11-30T10:00:00Z"}},
        )


class Dashboard:
    def __init__(self, sim: FakeCluster, service: Service, client: httpx.AsyncClient) -> None:
        self.sim, self.service, self.client = sim, service, client

    async def settled(self, check: Any, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "the index never caught up"
            await asyncio.sleep(0.02)

    async def get(self, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
        response = await self.client.get(path, params=params)
        body: dict[str, Any] = response.json()
        assert body["code"] == response.status_code, body
        return response.status_code, body


@pytest.fixture
async def dash(tmp_path: Path) -> AsyncIterator[Dashboard]:
    async with FakeCluster(token=TOKEN, bookmark_interval=0.2, grace_scale=0.01) as sim:
        for i in range(30):
            sim.create_pod(
                "team-a" if i % 2 else "team-b",
                f"web-{i:02d}",
                labels={"app": "web", "tier": "front" if i < 10 else "back"},
                node=f"node-{i % 3}",
                ip=f"10.1.0.{i + 10}",
                containers=["app", "sidecar"] if i == 7 else ["app"],
            )
            await asyncio.sleep(0.002 if i % 10 == 0 else 0)  # distinct creation seconds are
            # not guaranteed: the tie-break must order them anyway
        sim.update_pod("team-a", "web-05", crashloop)
        settings = Settings(
            store=f"sqlite:///{tmp_path}/h.db", tokens_file=str(standard_tokens(tmp_path))
        )
        service = Service(settings)
        await service.add_cluster("default", explicit_access(sim.url, token=TOKEN))
        task = asyncio.create_task(service.run())
        try:
            app = create_app(service, run_background=False)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://podindex"
            ) as client:
                d = Dashboard(sim, service, client)
                await d.settled(lambda: service.ready and len(service.index) == 30)
                yield d
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_list_is_paged_newest_first_in_the_envelope(dash: Dashboard) -> None:
    status, body = await dash.get(BASE + "/pods")
    assert status == 200 and body["message"] == "success"
    data = body["data"]
    assert data["total"] == 30 and len(data["items"]) == 20
    item = data["items"][0]
    assert set(item) >= {
        "name",
        "namespace",
        "status",
        "phase",
        "nodeName",
        "podIP",
        "hostIP",
        "restarts",
        "containers",
        "createdAt",
    }
    keys = [(i["createdAt"], i["namespace"], i["name"]) for i in data["items"]]
    assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)
    _, second = await dash.get(BASE + "/pods", page=2)
    names = [i["name"] for i in data["items"]] + [i["name"] for i in second["data"]["items"]]
    assert len(names) == 30 and len(set(names)) == 30, "pages neither overlap nor skip"


async def test_status_filter_uses_kubectls_column(dash: Dashboard) -> None:
    _, body = await dash.get(BASE + "/pods", status="CrashLoopBackOff")
    assert body["data"]["total"] == 1
    item = body["data"]["items"][0]
    assert (item["name"], item["status"], item["phase"]) == (
        "web-05",
        "CrashLoopBackOff",
        "Running",
    )
    assert item["restarts"] == 5
    assert item["containers"] == [
        {"name": "app", "image": item["containers"][0]["image"], "ready": False, "restartCount": 5}
    ]
    _, running = await dash.get(BASE + "/pods", status="Running", pageSize=500)
    assert running["data"]["total"] == 29


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"search": "WEB-2"}, {f"web-{i}" for i in range(20, 30)}),
        ({"search": "10.1.0.17"}, {"web-07"}),
        (
            {"search": "node-2", "namespace": "team-a"},
            {"web-05", "web-11", "web-17", "web-23", "web-29"},
        ),
        (
            {"nodeName": "node-0", "labelSelector": "tier=front"},
            {"web-00", "web-03", "web-06", "web-09"},
        ),
        (
            {"labelSelector": "tier notin (back)", "namespace": "team-b"},
            {f"web-0{i}" for i in (0, 2, 4, 6, 8)},
        ),
    ],
)
async def test_filters(dash: Dashboard, params: dict[str, str], names: set[str]) -> None:
    _, body = await dash.get(BASE + "/pods", pageSize=100, **params)
    assert {i["name"] for i in body["data"]["items"]} == names
    assert body["data"]["total"] == len(names)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"page": "0"}, "page"),
        ({"page": "two"}, "page"),
        ({"pageSize": "0"}, "pageSize"),
        ({"pageSize": "501"}, "pageSize"),
        ({"labelSelector": "a in (b"}, "labelSelector"),
    ],
)
async def test_bad_paging_is_400_naming_the_parameter(
    dash: Dashboard, params: dict[str, str], named: str
) -> None:
    status, body = await dash.get(BASE + "/pods", **params)
    assert status == 400 and body["message"].startswith(named) and body["data"] is None


async def test_unknown_cluster_and_pod_are_404_in_the_envelope(dash: Dashboard) -> None:
    status, body = await dash.get("/api/clusters/nowhere/pods")
    assert status == 404 and "nowhere" in body["message"]
    status, body = await dash.get(BASE + "/namespaces/team-a/pods/nope")
    assert status == 404 and "team-a/nope" in body["message"]


async def test_detail_is_current_and_complete(dash: Dashboard) -> None:
    status, body = await dash.get(BASE + "/namespaces/team-b/pods/web-00")
    assert status == 200
    data = body["data"]
    assert data["name"] == "web-00" and data["labels"]["app"] == "web"
    assert data["spec"]["nodeName"] == "node-0" and data["spec"]["containers"][0]["name"] == "app"
    assert data["status"]["containerStatuses"][0]["ready"] is True
    assert data["createdAt"] and data["displayStatus"] == "Running"
    dash.sim.set_pod_labels("team-b", "web-00", {"release": "canary"})
    _, again = await dash.get(BASE + "/namespaces/team-b/pods/web-00")
    assert again["data"]["labels"]["release"] == "canary", "read from the cluster, not a cache"


async def test_delete_needs_admin_and_is_audited(
    dash: Dashboard, caplog: pytest.LogCaptureFixture
) -> None:
    path = BASE + "/namespaces/team-a/pods/web-01"
    anonymous = await dash.client.delete(path)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == 401
    reader = await dash.client.delete(path, headers=bearer(READER_TOKEN))
    assert reader.status_code == 403 and reader.json()["data"] is None
    assert dash.sim.get_pod("team-a", "web-01") is not None
    with caplog.at_level(logging.INFO, logger="podindex.audit"):
        done = await dash.client.delete(path, params={"force": "true"}, headers=bearer(ADMIN_TOKEN))
    assert done.status_code == 200, done.text
    assert done.json() == {"code": 200, "message": "Pod deleted successfully", "data": None}
    assert dash.sim.get_pod("team-a", "web-01") is None, "force: grace period 0"
    audits = [r for r in caplog.records if r.name == "podindex.audit"]
    assert len(audits) == 1
    record: Any = audits[0]
    assert record.audit["by"].endswith("admin") and record.audit["result"] == 200
    assert record.audit["gracePeriodSeconds"] == 0 and ADMIN_TOKEN not in caplog.text


async def test_delete_passes_the_grace_period_and_never_hits_a_successor(dash: Dashboard) -> None:
    admin = bearer(ADMIN_TOKEN)
    path = BASE + "/namespaces/team-a/pods/web-03"
    bad = await dash.client.delete(path, params={"gracePeriod": "-1"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["message"].startswith("gracePeriod")
    done = await dash.client.delete(path, params={"gracePeriod": "60"}, headers=admin)
    assert done.status_code == 200
    terminating = dash.sim.get_pod("team-a", "web-03")
    assert terminating is not None and terminating["metadata"]["deletionGracePeriodSeconds"] == 60

    # A same-name successor the index has not seen yet (the watch is held back): the uid
    # precondition protects it, and Kubernetes' 409 is passed on.
    dash.sim.stall_watches()
    dash.sim.delete_pod("team-a", "web-09", 0)
    successor = dash.sim.create_pod("team-a", "web-09", ip="10.1.0.99")
    stale = dash.service.index.by_name("default", "team-a", "web-09")
    assert stale is not None and stale.key[1] != successor["metadata"]["uid"]
    conflict = await dash.client.delete(BASE + "/namespaces/team-a/pods/web-09", headers=admin)
    assert conflict.status_code == 409, conflict.text
    assert "precondition" in conflict.json()["message"].lower()
    assert dash.sim.get_pod("team-a", "web-09") is not None
    dash.sim.resume_watches()


async def test_a_namespace_scoped_reader_sees_only_its_namespace(
    dash: Dashboard, tmp_path: Path
) -> None:
    (tmp_path / "access.yaml").write_text(
        "tokens:\n  - {name: team-a-viewer, role: reader, namespaces: [team-a], sha256: "
        + token_digest("scoped")
        + "}\n  - {name: team-a-admin, role: admin, namespaces: [team-a], sha256: "
        + token_digest("scoped-admin")
        + "}\n"
    )
    settings = Settings(
        store=dash.service.settings.store,
        tokens_file=str(tmp_path / "access.yaml"),
        lookup_access="reader",
    )
    scoped_service = Service(settings)
    scoped_service.index = dash.service.index
    scoped_service.clusters = dash.service.clusters
    app = create_app(scoped_service, run_background=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://x", headers=bearer("scoped")
    ) as client:
        listed = (await client.get(BASE + "/pods", params={"pageSize": 100})).json()["data"]
        assert {i["namespace"] for i in listed["items"]} == {"team-a"} and listed["total"] == 15
        other = await client.get(BASE + "/pods", params={"namespace": "team-b"})
        assert other.status_code == 403
        detail = await client.get(BASE + "/namespaces/team-b/pods/web-00")
        assert detail.status_code == 403 and detail.json()["code"] == 403
        anonymous = await client.get(BASE + "/pods", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        for path in ("/events", "/logs"):
            elsewhere = await client.get(BASE + "/namespaces/team-b/pods/web-00" + path)
            assert elsewhere.status_code == 403, path
        admin_a = bearer("scoped-admin")
        refused = await client.delete(BASE + "/namespaces/team-b/pods/web-02", headers=admin_a)
        assert refused.status_code == 403 and "only in team-a" in refused.json()["message"]
        assert dash.sim.get_pod("team-b", "web-02") is not None
        viewer = await client.delete(BASE + "/namespaces/team-a/pods/web-11")
        assert viewer.status_code == 403, "a reader of team-a may not delete there"
        done = await client.delete(
            BASE + "/namespaces/team-a/pods/web-11", params={"force": "1"}, headers=admin_a
        )
        assert done.status_code == 200 and dash.sim.get_pod("team-a", "web-11") is None
