"""The pod-watcher API in process: every status code, JSON errors everywhere."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest

from podindex.api.app import create_app
from podindex.cluster import ClusterSync
from podindex.index import Index
from podindex.kube.client import KubeClient
from podindex.kube.config import explicit_access
from podindex.model import Pod, PodList
from podindex.service import Service
from podindex.settings import Settings
from tests.recordings import body_bytes, recording


def recorded_pods() -> list[Pod]:
    items: list[Pod] = []
    for name in ("02", "03", "04"):
        page = msgspec.json.decode(body_bytes(recording(name)), type=PodList)
        items.extend(page.items or ())
    return items


def host_network_pod(name: str, node: str, node_ip: str, uid: str) -> Pod:
    pod = msgspec.json.decode(msgspec.json.encode(recorded_pods()[0]), type=Pod)
    pod.metadata.name = name
    pod.metadata.uid = uid
    pod.spec.hostNetwork = True
    pod.spec.nodeName = node
    pod.status.hostIP = node_ip
    pod.status.podIP = node_ip
    pod.status.podIPs = None
    return pod


@pytest.fixture
def service(tmp_path: Path) -> Service:
    svc = Service(Settings(grace_period=30.0, store=f"sqlite:///{tmp_path}/history.db"))
    svc.clusters["default"] = ClusterSync(
        "default", KubeClient(explicit_access("http://127.0.0.1:1", token=None)), svc.index
    )
    return svc


def mark_synced(service: Service, pods: list[Pod]) -> None:
    service.index.replace_pods("default", pods, time.time())
    service.clusters["default"].pods.synced.set()
    service.history.loaded = True  # nothing to load: the store is new


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service, run_background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://podindex") as c:
        yield c


async def test_lookups_fail_closed_before_the_initial_sync(
    client: httpx.AsyncClient, service: Service
) -> None:
    response = await client.get("/pod", params={"ip": "10.244.2.10"})
    assert response.status_code == 503
    assert response.json()["error"] == "not_ready"
    ready = await client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["clusters"]["default"]["synced"] is False
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/pods")).status_code == 503


async def test_pod_by_ip_answers_the_seed_fields(
    client: httpx.AsyncClient, service: Service
) -> None:
    mark_synced(service, recorded_pods())
    response = await client.get("/pod?ip=10.244.2.10")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["name"] == "db-0" and body["namespace"] == "team-a"
    assert body["uid"] == "4bb2884a-859f-4b6b-9dc7-72ed6245b716"
    assert body["pod_ip"] == "10.244.2.10" and body["pod_ips"] == ["10.244.2.10"]
    assert body["node_name"] == "node-2" and body["phase"] == "Running"
    assert body["labels"] == {"app": "db", "tier": "demo"}
    assert body["state"] == "live" and body["host_network"] is False
    assert body["containers"] == [{"name": "app", "image": "registry.example/app:1.0"}]
    assert body["identity"] == "db-0" and body["cluster"] == "default"
    assert (await client.get("/ready")).status_code == 200


@pytest.mark.parametrize(
    "spelling", ["::ffff:10.244.2.10", "010.244.002.010", "[::FFFF:0af4:020a]"]
)
async def test_other_spellings_of_an_ip_find_the_same_pod(
    client: httpx.AsyncClient, service: Service, spelling: str
) -> None:
    mark_synced(service, recorded_pods())
    response = await client.get("/pod", params={"ip": spelling})
    assert response.status_code == 200
    assert response.json()["name"] == "db-0"


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("", 400, "missing_parameter"),
        ("?ip=", 400, "missing_parameter"),
        ("?ip=10.244.2", 400, "invalid_ip"),
        ("?ip=not-an-ip", 400, "invalid_ip"),
        ("?ip=10.244.2.256", 400, "invalid_ip"),
        ("?ip=10.9.9.9", 404, "not_found"),
        ("?ip=fd00::1", 404, "not_found"),
    ],
)
async def test_bad_and_unknown_ips(
    client: httpx.AsyncClient, service: Service, query: str, status: int, error: str
) -> None:
    mark_synced(service, recorded_pods())
    response = await client.get("/pod" + query)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["message"]


async def test_node_ip_of_host_network_pods_names_the_node(
    client: httpx.AsyncClient, service: Service
) -> None:
    pods = recorded_pods()
    pods += [
        host_network_pod("kube-proxy-a", "node-9", "10.0.0.99", "uid-hn-1"),
        host_network_pod("node-exporter-a", "node-9", "10.0.0.99", "uid-hn-2"),
    ]
    mark_synced(service, pods)
    response = await client.get("/pod?ip=10.0.0.99")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "node" and body["node_name"] == "node-9"
    assert sorted(p["name"] for p in body["pods"]) == ["kube-proxy-a", "node-exporter-a"]
    assert "uid" not in body


async def test_deleted_pod_resolves_as_terminated_within_grace(
    client: httpx.AsyncClient, service: Service
) -> None:
    pods = recorded_pods()
    mark_synced(service, pods)
    service.index.delete_pod("default", pods[0], time.time())
    body = (await client.get("/pod?ip=10.244.2.10")).json()
    assert body["state"] == "terminated" and body["released_at"]
    service.index.expire(time.time() + 31)
    assert (await client.get("/pod?ip=10.244.2.10")).status_code == 404


async def test_pods_filters(client: httpx.AsyncClient, service: Service) -> None:
    mark_synced(service, recorded_pods())
    team_a = (await client.get("/pods", params={"namespace": "team-a"})).json()
    assert team_a["count"] == 3
    assert [p["name"] for p in team_a["items"]] == ["db-0", "web-1", "web-2"]
    web = (await client.get("/pods", params={"labelSelector": "app in (web,api)"})).json()
    assert sorted(p["name"] for p in web["items"]) == ["api-1", "web-1", "web-2"]
    node = (await client.get("/pods", params={"node": "node-2", "labelSelector": "app!=db"})).json()
    assert all(p["node_name"] == "node-2" and p["labels"]["app"] != "db" for p in node["items"])
    everything = (await client.get("/pods")).json()
    assert everything["count"] == 5


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"labelSelector": "app in (web"}, "invalid_label_selector"),
        ({"labelSelector": "=x"}, "invalid_label_selector"),
        ({"namspace": "team-a"}, "unknown_parameter"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"limit": "10001"}, "invalid_limit"),
        ({"limit": "\u00b2"}, "invalid_limit"),  # a digit to str.isdigit, not to int()
        ({"continue": "not-a-token"}, "invalid_continue"),
        ({"continue": "WzEsMiwzXQ"}, "invalid_continue"),  # [1,2,3]: right shape, wrong types
    ],
)
async def test_pods_rejects_bad_input(
    client: httpx.AsyncClient, service: Service, query: dict[str, str], error: str
) -> None:
    mark_synced(service, recorded_pods())
    response = await client.get("/pods", params=query)
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = await client.post("/pods")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


async def test_openapi_and_metrics(client: httpx.AsyncClient, service: Service) -> None:
    mark_synced(service, recorded_pods())
    await client.get("/pod?ip=10.244.2.10")
    await client.get("/pod?ip=10.9.9.9")
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and "/pod" in doc["paths"]
    metrics = (await client.get("/metrics")).text
    assert 'podindex_lookups_total{outcome="found"} 1.0' in metrics
    assert 'podindex_lookups_total{outcome="not_found"} 1.0' in metrics
    assert 'podindex_pods{cluster="default"} 5.0' in metrics


async def test_head_answers_without_a_body(client: httpx.AsyncClient, service: Service) -> None:
    mark_synced(service, recorded_pods())
    response = await client.head("/pod?ip=10.244.2.10")
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) > 100


def test_index_is_shared(service: Service) -> None:
    assert isinstance(service.index, Index)


async def test_pods_pages_with_limit_and_continue(
    client: httpx.AsyncClient, service: Service
) -> None:
    mark_synced(service, recorded_pods())
    names: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"continue": token} if token else {})
        page = (await client.get("/pods", params=params)).json()
        pages += 1
        assert page["total"] == 5 and page["count"] == len(page["items"]) <= 2
        names += [p["name"] for p in page["items"]]
        token = page["continue"]
        if token is None:
            break
    assert pages == 3
    assert names == ["db-0", "web-1", "web-2", "api-1", "worker-1"]
    unpaged = (await client.get("/pods")).json()
    assert unpaged["continue"] is None and unpaged["count"] == 5


async def test_paging_never_skips_pods_that_share_a_name(
    client: httpx.AsyncClient, service: Service
) -> None:
    pods = recorded_pods()
    twin = msgspec.json.decode(msgspec.json.encode(pods[0]), type=Pod)
    twin.metadata.uid = "twin-uid"  # a missed delete: two live uids, one name
    twin.status.podIP = "10.244.9.9"
    twin.status.podIPs = None
    mark_synced(service, [*pods, twin])
    uids: list[str] = []
    token: str | None = None
    while True:
        params = {"limit": "1"} | ({"continue": token} if token else {})
        page = (await client.get("/pods", params=params)).json()
        uids += [p["uid"] for p in page["items"]]
        token = page["continue"]
        if token is None:
            break
    assert len(uids) == 6 == len(set(uids))
    assert "twin-uid" in uids


async def test_plus_in_the_query_is_a_space_on_every_path(
    client: httpx.AsyncClient, service: Service
) -> None:
    mark_synced(service, recorded_pods())
    assert (await client.get("/pod?ip=10.244.2.10+")).status_code == 200
    assert (await client.get("/pod?ip=10.244.2.10%20")).status_code == 200


async def test_metrics_count_lookups_updates_and_time_routes(
    client: httpx.AsyncClient, service: Service
) -> None:
    pods = recorded_pods()
    mark_synced(service, pods)
    ip = pods[0].status.podIP
    assert ip
    await client.get("/pod", params={"ip": ip})
    await client.get("/pod", params={"ip": "10.99.99.99"})
    await client.get("/pods")
    await client.get("/nowhere")
    text = (await client.get("/metrics")).text
    assert 'podindex_ip_lookups_total{result="hit"} 1.0' in text
    assert 'podindex_ip_lookups_total{result="miss"} 1.0' in text
    assert 'podindex_request_duration_seconds_count{route="/pod"} 2.0' in text
    assert 'podindex_request_duration_seconds_count{route="/pods"} 1.0' in text
    assert 'podindex_request_duration_seconds_count{route="unmatched"} 1.0' in text
    assert 'podindex_request_duration_seconds_bucket{le="+Inf",route="/pods"} 1.0' in text
    assert 'podindex_index_updates_total{cluster="default",result="applied"} 0.0' in text
    namespace = pods[0].metadata.namespace
    assert f'podindex_pods_tracked{{cluster="default",namespace="{namespace}"}}' in text
