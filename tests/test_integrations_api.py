"""Integrations end to end: two emulated HTTPS clusters registered over the API.

The service watches its configured cluster (an emulator over HTTP) and two
more registered as integrations (emulators over HTTPS, each with its own CA
and token). Everything an operator does goes through the API; every answer
and every log line, across the whole lifecycle and its failures, is checked
for the tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from podindex.api.app import create_app
from podindex.api.auth import token_digest
from podindex.kube.config import explicit_access
from podindex.service import Service
from podindex.settings import Settings
from podindex.sim import POD, FakeCluster, populate
from tests.auth import ADMIN_TOKEN, READER_TOKEN, bearer, standard_tokens

CORE_TOKEN = "core-token-aaaaaaaaaaaaaaaa"
TOKEN_B = "secret-token-b-0123456789abcdef"
TOKEN_C = "secret-token-c-fedcba9876543210"
TOKEN_C2 = "secret-token-c-rotated-55555555"
SECRETS = (TOKEN_B, TOKEN_C, TOKEN_C2, "wrong-" + TOKEN_B)
PREFIX = "/api/v1/integrations/kubernetes"


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def emulator(token: str, pods: int, seed: int, tls: bool) -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(token=token, tls=tls, bookmark_interval=0.2, grace_scale=0.0)
    populate(cluster, pods, seed=seed, namespaces=3)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@contextlib.asynccontextmanager
async def serving(
    core: FakeCluster, store_url: str, key_file: Path | None
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    access_file = standard_tokens(Path(store_dir()))
    settings = Settings(
        store=store_url,
        cluster_id="core",
        secret_key_file=str(key_file) if key_file else None,
        tokens_file=str(access_file),
        log_level="debug",
    )
    service = Service(settings)
    service.history.flush_interval = 0.02
    await service.add_cluster("core", explicit_access(core.url, token=CORE_TOKEN))
    task = asyncio.create_task(service.run())
    app = create_app(service, run_background=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://podindex",
            headers=bearer(ADMIN_TOKEN),
        ) as client:
            await eventually(lambda: service.ready or task.done(), 30)
            assert not task.done(), task
            for sync in service.clusters.values():
                for watcher in (sync.pods, sync.replicasets, sync.jobs):
                    watcher.backoff = lambda error, attempt: 0.05
            yield service, client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def store_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="podindex-access-")


def body_for(cluster: FakeCluster, name: str, token: str, **extra: Any) -> dict[str, Any]:
    assert cluster.ca_pem is not None
    return {
        "name": name,
        "endpoint": cluster.url,
        "ca_cert": cluster.ca_pem.decode(),
        "bearer_token": token,
        **extra,
    }


def grant_in_namespace(access: Path, token: str, namespace: str) -> None:
    """Add an admin limited to ``namespace`` to the access file."""
    access.write_text(
        access.read_text()
        + f"  - {{name: {namespace}-admin, role: admin, namespaces: [{namespace}], "
        + f"sha256: {token_digest(token)}}}\n"
    )


class Transcript:
    """Every response body, to check for tokens at the end."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def __call__(self, response: httpx.Response) -> httpx.Response:
        self.bodies.append(response.text)
        return response


def assert_no_secret(texts: list[str]) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a token leaked: {text[:300]}"


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect the closed TLS transports and settled futures each test leaves in cycles now.

    Left to a later collection, their finalizers may run inside the ``ast.parse``
    of a module imported at the end of the session (hypothesis' summary hook),
    which CPython 3.11.7 reports as "SystemError: AST constructor recursion depth
    mismatch" and pytest as an INTERNALERROR.
    """
    yield
    gc.collect()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    path.write_bytes(Fernet.generate_key())
    return path


@pytest.mark.timeout(120)
async def test_register_watch_update_and_remove_two_clusters(
    store_url: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = Transcript()
    async with (
        emulator(CORE_TOKEN, 20, seed=1, tls=False) as core,
        emulator(TOKEN_B, 30, seed=2, tls=True) as b,
        emulator(TOKEN_C, 30, seed=3, tls=True) as c,
        serving(core, store_url, key_file) as (service, client),
    ):
        assert seen(await client.get(PREFIX)).json() == {"items": []}

        # A rejected token: refused, nothing saved, the phase named.
        refused = seen(await client.post(PREFIX, json=body_for(b, "b", "wrong-" + TOKEN_B)))
        assert refused.status_code == 422
        assert refused.json()["phase"] == "authentication"
        assert seen(await client.get(PREFIX)).json() == {"items": []}

        created = seen(await client.post(PREFIX, json=body_for(b, "Cluster B", TOKEN_B)))
        assert created.status_code == 201, created.text
        b_view = created.json()
        b_id = b_view["id"]
        assert b_id.startswith("cluster-b-") and b_view["cluster"] == b_id
        assert "bearer_token" not in b_view and "token" not in b_view
        assert b_view["status"] in ("Pending", "Connected")

        namespaces = sorted({p["metadata"]["namespace"] for p in c.list_objects(POD)})
        scoped = namespaces[0]
        created_c = seen(
            await client.post(PREFIX, json=body_for(c, "cluster-c", TOKEN_C, namespace=scoped))
        )
        assert created_c.status_code == 201, created_c.text
        c_id = created_c.json()["id"]

        def connected(integration_id: str) -> bool:
            view = service.integrations.view(integration_id)
            return view.status == "Connected" and view.synced

        await eventually(lambda: connected(b_id) and connected(c_id))
        assert service.integrations.pod_count(b_id) == 30
        in_scope = [p for p in c.list_objects(POD) if p["metadata"]["namespace"] == scoped]
        assert service.integrations.pod_count(c_id) == len(in_scope)

        listed = seen(await client.get(PREFIX)).json()["items"]
        assert [i["name"] for i in listed] == ["Cluster B", "cluster-c"]
        got = seen(await client.get(f"{PREFIX}/{b_id}")).json()
        assert got["status"] == "Connected" and got["last_sync"] is not None
        assert got["pods"] == 30 and got["reconnect_count"] == 0

        # Lookups span the clusters and say which answered; a shared IP is ambiguous.
        b_ips = {p["status"]["podIP"]: p for p in b.list_objects(POD) if p["status"].get("podIP")}
        core_ips = {p["status"]["podIP"] for p in core.list_objects(POD)}
        only_b = next(ip for ip in b_ips if ip not in core_ips)
        answer = seen(await client.get("/pod", params={"ip": only_b}))
        assert answer.status_code == 200
        assert answer.json()["cluster"] == b_id
        assert answer.json()["name"] == b_ips[only_b]["metadata"]["name"]
        shared = sorted(set(b_ips) & core_ips)
        if shared:
            both = seen(await client.get("/pod", params={"ip": shared[0]}))
            assert both.status_code == 409
            assert {m["cluster"] for m in both.json()["matches"]} >= {"core", b_id}

        # Preview: pods with IPs matching a selector, from the index.
        some = next(iter(b_ips.values()))
        key, value = next(iter(some["metadata"]["labels"].items()))
        preview = seen(
            await client.get(f"{PREFIX}/{b_id}/pods", params={"selector": f"{key}={value}"})
        ).json()
        expected = [p for p in b_ips.values() if p["metadata"]["labels"].get(key) == value]
        assert preview["total_count"] == len(expected) and preview["truncated"] is False
        assert {(p["name"], p["ip"]) for p in preview["pods"]} == {
            (p["metadata"]["name"], p["status"]["podIP"]) for p in expected
        }
        bad = seen(await client.get(f"{PREFIX}/{b_id}/pods", params={"selector": "a in (b"}))
        assert bad.status_code == 400

        # Rotating C's token restarts C's watchers only.
        b_sync, c_sync = service.clusters[b_id], service.clusters[c_id]
        b_lists = b_sync.pods.stats.lists
        c.token = TOKEN_C2
        rotated = seen(await client.patch(f"{PREFIX}/{c_id}", json={"bearer_token": TOKEN_C2}))
        assert rotated.status_code == 200, rotated.text
        assert service.clusters[c_id] is not c_sync
        assert service.clusters[b_id] is b_sync and b_sync.pods.stats.lists == b_lists
        await eventually(lambda: connected(c_id))
        # A rename touches nothing that is watched: no restart.
        c_sync = service.clusters[c_id]
        renamed = seen(await client.patch(f"{PREFIX}/{c_id}", json={"name": "cluster-c2"}))
        assert renamed.json()["name"] == "cluster-c2" and service.clusters[c_id] is c_sync

        # The API server goes away: Disconnected; it comes back: Connected, reconnects counted.
        c_port = int(c.url.rsplit(":", 1)[1])
        await c.stop()
        await eventually(lambda: service.integrations.view(c_id).status == "Disconnected")
        down = seen(await client.get(f"{PREFIX}/{c_id}")).json()
        assert down["last_error_phase"] == "reachability" and down["consecutive_failures"] >= 1
        await c.start(port=c_port)
        await eventually(lambda: connected(c_id), 30)
        assert service.integrations.view(c_id).reconnect_count >= 1

        metrics = seen(await client.get("/metrics")).text
        assert f'podindex_integration_status{{cluster="{b_id}"' in metrics

        # Deleting B stops its watcher; its pods leave the index and are dead in history.
        deleted = await client.delete(f"{PREFIX}/{b_id}")
        assert deleted.status_code == 204
        assert b_id not in service.clusters
        assert service.integrations.pod_count(b_id) == 0
        assert seen(await client.get(f"{PREFIX}/{b_id}")).status_code == 404
        assert seen(await client.get("/pod", params={"ip": only_b})).status_code == 404
        await service.history.commit()
        rows = [r for r in await service.history.store.rows() if r.cluster == b_id]
        assert len(rows) == 30 and all(r.is_dead for r in rows)
        assert service.ready  # never waited on the integrations

        # The stored token is sealed.
        (stored,) = await service.history.store.integrations()
        assert TOKEN_C2.encode() not in stored.token

    assert_no_secret(seen.bodies)
    assert_no_secret([r.getMessage() for r in caplog.records])
    assert_no_secret([caplog.text])


@pytest.mark.timeout(90)
async def test_integrations_survive_a_restart(
    store_url: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        emulator(CORE_TOKEN, 5, seed=4, tls=False) as core,
        emulator(TOKEN_B, 12, seed=5, tls=True) as b,
    ):
        async with serving(core, store_url, key_file) as (service, client):
            created = await client.post(PREFIX, json=body_for(b, "b", TOKEN_B))
            b_id = created.json()["id"]
            await eventually(lambda: service.integrations.view(b_id).status == "Connected")
            last_sync = service.integrations.monitors[b_id].last_sync
        async with serving(core, store_url, key_file) as (service, client):
            # Before its first list: the pods from history, the last sync saved at shutdown.
            view = (await client.get(f"{PREFIX}/{b_id}")).json()
            assert view["name"] == "b" and view["last_sync"] >= (last_sync or 0) > 0
            await eventually(lambda: service.integrations.pod_count(b_id) == 12)
            await eventually(lambda: service.integrations.view(b_id).status == "Connected")
        # Another key cannot open the token: the integration is shown broken, not started.
        other_key = key_file.with_name("other.key")
        other_key.write_bytes(Fernet.generate_key())
        async with serving(core, store_url, other_key) as (service, client):
            view = (await client.get(f"{PREFIX}/{b_id}")).json()
            assert view["status"] == "Disconnected" and "secret key" in view["last_error"]
            assert b_id not in service.clusters
            # Its token cannot be opened: a change needs a new one, which starts it again.
            renamed = await client.patch(f"{PREFIX}/{b_id}", json={"name": "b2"})
            assert renamed.status_code == 409 and renamed.json()["error"] == "token_unreadable"
            fixed = await client.patch(f"{PREFIX}/{b_id}", json={"bearer_token": TOKEN_B})
            assert fixed.status_code == 200, fixed.text
            await eventually(lambda: service.integrations.pod_count(b_id) == 12)
            assert service.integrations.view(b_id).status == "Connected"
    assert_no_secret([caplog.text])


async def test_without_a_key_no_integration_is_created(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        emulator(CORE_TOKEN, 3, seed=6, tls=False) as core,
        emulator(TOKEN_B, 3, seed=7, tls=True) as b,
        serving(core, store_url, None) as (service, client),
    ):
        response = await client.post(PREFIX, json=body_for(b, "b", TOKEN_B))
        assert response.status_code == 409
        assert response.json()["error"] == "no_secret_key"
        assert await service.history.store.integrations() == []


async def test_phased_test_endpoint_and_input_errors(
    store_url: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with (
        emulator(CORE_TOKEN, 3, seed=8, tls=False) as core,
        emulator(TOKEN_B, 3, seed=9, tls=True) as b,
        serving(core, store_url, key_file) as (service, client),
    ):
        ok = await client.post(f"{PREFIX}/test", json=body_for(b, "", TOKEN_B))
        assert ok.json()["status"] == "success" and ok.json()["server_version"]
        for body, phase in (
            (body_for(b, "", TOKEN_B, ca_cert="junk"), "certificate"),
            (body_for(b, "", "wrong-" + TOKEN_B), "authentication"),
            (body_for(b, "", TOKEN_B, endpoint="https://127.0.0.1:1"), "reachability"),
        ):
            answer = await client.post(f"{PREFIX}/test", json=body)
            texts.append(answer.text)
            assert answer.status_code == 200
            assert answer.json()["status"] == "error" and answer.json()["phase"] == phase
        for body, code in (
            (body_for(b, "x", TOKEN_B, endpoint="http://127.0.0.1:1"), "invalid_endpoint"),
            (body_for(b, "", TOKEN_B), "invalid_name"),
            (body_for(b, "x", TOKEN_B, namespace="Not_A_Label"), "invalid_namespace"),
            (body_for(b, "x", TOKEN_B, label_selector="a in (b"), "invalid_label_selector"),
            (
                body_for(b, "x", TOKEN_B, selector_requirements=[{"key": "a", "operator": "~"}]),
                "invalid_selector_requirement",
            ),
            ({"name": "x", "endpoint": b.url}, "invalid_ca_cert"),
            ({**body_for(b, "x", TOKEN_B), "surprise": 1}, "invalid_body"),
        ):
            answer = await client.post(PREFIX, json=body)
            texts.append(answer.text)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == code
        requirement = await client.post(
            f"{PREFIX}/selector",
            json={"requirements": [{"key": "a", "operator": "="}, {"key": "b", "operator": "in"}]},
        )
        assert requirement.status_code == 400
        assert "requirements[0]" in requirement.json()["message"]
        built = await client.post(
            f"{PREFIX}/selector",
            json={"requirements": [{"key": "app", "operator": "==", "values": ["web"]}]},
        )
        assert built.json() == {"selector": "app=web"}
        assert await service.history.store.integrations() == []
    assert_no_secret(texts)
    assert_no_secret([caplog.text])


async def test_reads_need_a_reader_and_changes_an_admin(
    store_url: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        emulator(CORE_TOKEN, 3, seed=10, tls=False) as core,
        emulator(TOKEN_B, 4, seed=11, tls=True) as b,
        serving(core, store_url, key_file) as (service, admin),
    ):
        created = await admin.post(PREFIX, json=body_for(b, "b", TOKEN_B))
        b_id = created.json()["id"]
        reader = bearer(READER_TOKEN)
        for method, path in (("GET", PREFIX), ("GET", f"{PREFIX}/{b_id}")):
            assert (await admin.request(method, path, headers=reader)).status_code == 200
            anonymous = await admin.request(method, path, headers={"Authorization": ""})
            assert anonymous.status_code == 401
        pods = await admin.get(f"{PREFIX}/{b_id}/pods", headers=reader)
        assert pods.status_code == 200
        for method, path, body in (
            ("POST", PREFIX, body_for(b, "c", TOKEN_B)),
            ("POST", f"{PREFIX}/test", body_for(b, "", TOKEN_B)),
            ("PATCH", f"{PREFIX}/{b_id}", {"name": "renamed"}),
            ("DELETE", f"{PREFIX}/{b_id}", None),
        ):
            answer = await admin.request(method, path, json=body, headers=reader)
            assert answer.status_code == 403, (method, path, answer.text)
            answer = await admin.request(method, path, json=body, headers={"Authorization": ""})
            assert answer.status_code == 401, (method, path, answer.text)
        assert [i.name for i in service.integrations.views()] == ["b"]
        # A grant limited to namespaces does not reach cluster-wide integrations.
        grant_in_namespace(Path(service.settings.tokens_file or ""), "team-a-token", "team-a")
        await asyncio.sleep(1.1)  # the access file is re-read when it changes, checked each second
        limited = await admin.get(PREFIX, headers=bearer("team-a-token"))
        assert limited.status_code == 403 and "cluster-wide" in limited.json()["message"]
        limited = await admin.delete(f"{PREFIX}/{b_id}", headers=bearer("team-a-token"))
        assert limited.status_code == 403


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.timeout(60)
async def test_health_follows_injected_faults_on_a_fake_clock(
    store_url: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    async with (
        emulator(CORE_TOKEN, 3, seed=12, tls=False) as core,
        emulator(TOKEN_B, 6, seed=13, tls=True) as b,
        serving(core, store_url, key_file) as (service, client),
    ):
        service.integrations.clock = clock
        b_id = (await client.post(PREFIX, json=body_for(b, "b", TOKEN_B))).json()["id"]
        sync = service.clusters[b_id]
        for watcher in (sync.pods, sync.replicasets, sync.jobs):
            watcher.backoff = lambda error, attempt: 0.05
        monitor = service.integrations.monitors[b_id]
        await eventually(lambda: monitor.status == "Connected")
        assert monitor.last_sync == clock.now

        # The cluster starts refusing the token (revoked): Degraded, phase authentication.
        b.token = "revoked"
        b.drop_watches()
        await eventually(lambda: monitor.last_error_phase == "authentication")
        view = (await client.get(f"{PREFIX}/{b_id}")).json()
        assert (view["status"], view["last_error_phase"]) == ("Degraded", "authentication")
        assert "401" in view["last_error"]

        # Five minutes pass (on the fake clock): Disconnected.
        clock.now += 299.0
        await service.integrations.tick()
        assert monitor.status == "Degraded"
        clock.now += 1.0
        await service.integrations.tick()
        assert (await client.get(f"{PREFIX}/{b_id}")).json()["status"] == "Disconnected"
        metrics = (await client.get("/metrics")).text
        assert f'podindex_integration_status{{cluster="{b_id}",name="b"}} 0.0' in metrics

        # The token is accepted again: silent recovery on the next sync.
        b.token = TOKEN_B
        await eventually(lambda: monitor.status == "Connected")
        view = (await client.get(f"{PREFIX}/{b_id}")).json()
        assert view["consecutive_failures"] == 0 and view["last_error"] == ""
        assert view["reconnect_count"] >= 2 and view["last_sync"] == clock.now
        # What was saved for the next start: the last sync, no error.
        await service.integrations.tick()
        (stored,) = await service.history.store.integrations()
        assert stored.last_sync == clock.now and stored.last_error == ""
        metrics = (await client.get("/metrics")).text
        assert f'podindex_integration_status{{cluster="{b_id}",name="b"}} 2.0' in metrics
        assert f'podindex_watch_reconnections_total{{cluster="{b_id}"}}' in metrics
    assert_no_secret([caplog.text])


def test_every_integration_route_is_documented() -> None:
    from podindex.api import integrations as api
    from podindex.api.openapi import document

    paths = document()["paths"]
    service = Service(Settings(store="sqlite:///:memory:"))
    for route in api.routes(service):
        assert route.path in paths, route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in paths[route.path], (route.path, method)


async def test_a_kubeconfig_context_registers_as_an_integration(
    store_url: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        emulator(CORE_TOKEN, 3, seed=14, tls=False) as core,
        emulator(TOKEN_B, 7, seed=15, tls=True) as b,
        serving(core, store_url, key_file) as (service, client),
    ):
        text = json.dumps(b.kubeconfig("prod-eu"))
        tested = await client.post(f"{PREFIX}/test", json={"kubeconfig": text})
        assert tested.json()["status"] == "success"
        created = await client.post(
            PREFIX, json={"name": "eu", "kubeconfig": text, "context": "prod-eu"}
        )
        assert created.status_code == 201, created.text
        view = created.json()
        assert (view["context"], view["endpoint"]) == ("prod-eu", b.url)
        await eventually(lambda: service.integrations.pod_count(view["id"]) == 7)
        for body, fragment in (
            ({"name": "x", "kubeconfig": text, "context": "nope"}, "no context named"),
            ({"name": "x", "kubeconfig": "[1, 2"}, "not YAML"),
            ({"name": "x", "kubeconfig": text, "endpoint": b.url}, "not both"),
        ):
            answer = await client.post(PREFIX, json=body)
            assert answer.status_code == 400 and fragment in answer.json()["message"]
        no_token = b.kubeconfig("c")
        no_token["users"][0]["user"] = {"exec": {"command": "get-token"}}
        answer = await client.post(PREFIX, json={"name": "x", "kubeconfig": json.dumps(no_token)})
        assert answer.json()["error"] == "invalid_kubeconfig"
        assert "bearer token" in answer.json()["message"]
    assert_no_secret([caplog.text])


async def test_before_the_store_is_loaded_the_answer_is_503_not_an_empty_list(
    tmp_path: Path,
) -> None:
    settings = Settings(
        store=f"sqlite:///{tmp_path}/h.db", tokens_file=str(standard_tokens(tmp_path))
    )
    app = create_app(Service(settings), run_background=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://podindex",
        headers=bearer(ADMIN_TOKEN),
    ) as client:
        answer = await client.get(PREFIX)
        assert answer.status_code == 503 and answer.json()["error"] == "not_ready"
        assert (await client.get(PREFIX, headers={"Authorization": ""})).status_code == 401


@pytest.mark.timeout(120)
async def test_the_dashboard_lists_pods_of_a_registered_cluster_beside_the_configured_one(
    store_url: str, key_file: Path
) -> None:
    async with (
        emulator(CORE_TOKEN, 20, seed=1, tls=False) as core,
        emulator(TOKEN_B, 30, seed=2, tls=True) as b,
        serving(core, store_url, key_file) as (service, client),
    ):
        created = await client.post(PREFIX, json=body_for(b, "Cluster B", TOKEN_B))
        b_id = created.json()["id"]
        await eventually(lambda: service.integrations.pod_count(b_id) == 30)
        for cluster_id, sim in (("core", core), (b_id, b)):
            page = (
                await client.get(f"/api/clusters/{cluster_id}/pods", params={"pageSize": 100})
            ).json()
            assert page["code"] == 200 and page["data"]["total"] == len(sim.list_objects(POD))
            names = {i["name"] for i in page["data"]["items"]}
            assert names == {p["metadata"]["name"] for p in sim.list_objects(POD)}
            assert {i["cluster"] for i in page["data"]["items"]} == {cluster_id}
        some = b.list_objects(POD)[0]["metadata"]
        detail = await client.get(
            f"/api/clusters/{b_id}/namespaces/{some['namespace']}/pods/{some['name']}"
        )
        assert detail.json()["data"]["uid"] == some["uid"], "read from cluster B itself"
        gone = await client.delete(f"{PREFIX}/{b_id}")
        assert gone.status_code in (200, 204)
        unknown = await client.get(f"/api/clusters/{b_id}/pods")
        assert unknown.status_code == 404 and unknown.json()["code"] == 404
