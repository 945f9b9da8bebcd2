"""Two replicas, as deploy/overlays/replicated runs them: one PostgreSQL, one cluster, churn.

Two real ``podindex serve`` processes share a fresh PostgreSQL database (they
migrate it at the same moment: the advisory lock serialises them) and watch
the same emulated cluster while it churns (rollouts, StatefulSet restarts,
Jobs, hostNetwork pods, IP reuse). Each answers on its own, with no leader:
once the churn stops, both answer every pod IP with the same bytes, list the
same pods, and agree with the emulator. Both wrote every change to history;
the writes are upserts by (cluster, uid) and (cluster, uid, ip), so the store
holds each pod once, with exactly one open lease per held IP.

Integrations and pushed pods are the exception, and the test pins down how:
one registered (or pushed) through replica A is served by A at once; replica
B learns of it only when it (re)starts and loads the store (README, "Deploy
to a cluster", "Several replicas"); and B's health saves do not undo what was
changed through A.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from podindex.sim import POD, Churn, FakeCluster, populate
from podindex.store.postgres import MIGRATIONS
from tests.auth import ADMIN_TOKEN, bearer, standard_tokens
from tests.pg import postgres_url
from tests.test_e2e_serve import start_podindex, stop, wait_ready

TOKEN = "replicas-core-token"
TOKEN_B = "replicas-integration-token-0123456789"
CLUSTER = "core"
PUSHED_IP = "192.0.2.77"


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s (last: {str(last)[:500]})")


@pytest.fixture
async def core() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(token=TOKEN, bookmark_interval=0.5, grace_scale=0.01)
    populate(cluster, 300, seed=31, namespaces=3)
    await cluster.start()
    yield cluster
    await cluster.stop()


@pytest.fixture
async def remote() -> AsyncIterator[FakeCluster]:
    """A second cluster, over HTTPS, to register as an integration."""
    cluster = FakeCluster(
        token=TOKEN_B, tls=True, bookmark_interval=0.5, grace_scale=0.0, pod_network="10.77.0.0/16"
    )
    populate(cluster, 12, seed=32, namespaces=2)
    await cluster.start()
    yield cluster
    await cluster.stop()


def held_ips(cluster: FakeCluster) -> dict[str, str]:
    """IP → uid of every pod that holds its IP now (Pending/Running, not hostNetwork)."""
    held = {}
    for pod in cluster.list_objects(POD):
        status, spec = pod.get("status", {}), pod.get("spec", {})
        holds = status.get("podIP") and status.get("phase") in ("Pending", "Running")
        if holds and not spec.get("hostNetwork"):
            for entry in status.get("podIPs") or [{"ip": status["podIP"]}]:
                held[entry["ip"]] = pod["metadata"]["uid"]
    return held


async def listing(client: httpx.AsyncClient) -> list[tuple[str, str, str, str | None]]:
    answer = (await client.get("/pods", params={"limit": "10000"})).json()
    assert answer["continue"] is None
    return [(p["cluster"], p["uid"], p["state"], p["pod_ip"]) for p in answer["items"]]


@pytest.mark.timeout(180)
async def test_two_replicas_on_one_postgresql_answer_alike_through_churn(
    core: FakeCluster, remote: FakeCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database = postgres_url(request)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    key_file = tmp_path / "secret.key"  # one Secret mounted by every replica
    key_file.write_bytes(Fernet.generate_key())
    env = {
        "PODINDEX_STORE": database,
        "PODINDEX_SERVER": core.url,
        "PODINDEX_TOKEN_FILE": str(token_file),
        "PODINDEX_CLUSTER_ID": CLUSTER,
        "PODINDEX_TOKENS_FILE": str(standard_tokens(tmp_path)),
        "PODINDEX_SECRET_KEY_FILE": str(key_file),
        "PODINDEX_GRACE_PERIOD": "1",
        "PODINDEX_LOG_LEVEL": "warning",
        "PODINDEX_RECONCILE_INTERVAL": "1",
    }
    churn = Churn(core, seed=33, nodes=4, deployments=4, replicas=4)
    churning = asyncio.create_task(churn.run(duration=8.0, rate=40.0))
    # Both start at once, as a fresh Deployment's pods do, on one empty database.
    a, base_a = start_podindex("serve", env=env)
    b, base_b = start_podindex("serve", env=env)
    outputs: list[str] = []
    try:
        await asyncio.gather(wait_ready(base_a, a, 60), wait_ready(base_b, b, 60))
        async with (
            httpx.AsyncClient(base_url=base_a, headers=bearer(ADMIN_TOKEN)) as client_a,
            httpx.AsyncClient(base_url=base_b, headers=bearer(ADMIN_TOKEN)) as client_b,
        ):
            # During the churn both keep answering (no leader, no lock between them).
            while not churning.done():
                for client in (client_a, client_b):
                    assert (await client.get("/pods", params={"limit": "1"})).status_code == 200
                await asyncio.sleep(0.5)
            stats = await churning
            assert stats.total >= 100, stats

            # Then they converge: the same pods, in the same states, as the emulator.
            async def alike() -> bool:
                first, second = await listing(client_a), await listing(client_b)
                live = {(uid, ip) for _, uid, state, ip in first if state == "live" and ip}
                truth = {(uid, ip) for ip, uid in held_ips(core).items()}
                return first == second and truth <= live

            await eventually(alike, 30, "both replicas list the emulator's pods")
            totals = [(await c.get("/pods")).json()["total"] for c in (client_a, client_b)]
            assert totals[0] == totals[1] == len(core.list_objects(POD)), totals

            # Every held IP: the same answer, byte for byte, from both.
            held = held_ips(core)
            assert len(held) > 250
            for ip, uid in held.items():
                answers = [await c.get("/pod", params={"ip": ip}) for c in (client_a, client_b)]
                assert [r.status_code for r in answers] == [200, 200], ip
                assert answers[0].content == answers[1].content, ip
                assert answers[0].json()["uid"] == uid

            # History: each pod once, one open lease per held IP, both replicas agreeing.
            async def settled() -> bool:
                conn = await asyncpg.connect(database)
                try:
                    open_leases = await conn.fetch(
                        "SELECT ip, uid FROM leases WHERE cluster = $1 AND held_to IS NULL",
                        CLUSTER,
                    )
                    live = await conn.fetchval(
                        "SELECT count(*) FROM pods WHERE cluster = $1 AND NOT is_dead", CLUSTER
                    )
                finally:
                    await conn.close()
                ips = [row["ip"] for row in open_leases]
                return (
                    len(ips) == len(set(ips))
                    and {r["ip"]: r["uid"] for r in open_leases} == held
                    and live == len(core.list_objects(POD))
                )

            await eventually(settled, 20, "history holds one open lease per held IP")
            conn = await asyncpg.connect(database)
            try:
                rows = await conn.fetchval("SELECT count(*) FROM pods WHERE cluster = $1", CLUSTER)
                distinct = await conn.fetchval(
                    "SELECT count(DISTINCT uid) FROM pods WHERE cluster = $1", CLUSTER
                )
                versions = await conn.fetch("SELECT version FROM podindex_schema ORDER BY 1")
            finally:
                await conn.close()
            assert rows == distinct >= 300 + stats.total // 4  # churn made and killed pods
            # Both migrated the empty database at once: each migration ran exactly once.
            assert [row["version"] for row in versions] == list(range(1, len(MIGRATIONS) + 1))
            sample = list(held)[:20]
            for ip in sample:  # history answers come from the one database
                at = str(time.time())
                answers = [
                    await c.get(f"/pod/ip/{ip}", params={"at": at}) for c in (client_a, client_b)
                ]
                assert answers[0].json()["uid"] == answers[1].json()["uid"] == held[ip]

            # An integration registered through A: A watches it at once.
            assert remote.ca_pem is not None
            created = await client_a.post(
                "/api/v1/integrations/kubernetes",
                json={
                    "name": "remote",
                    "endpoint": remote.url,
                    "ca_cert": remote.ca_pem.decode(),
                    "bearer_token": TOKEN_B,
                },
            )
            assert created.status_code == 201, created.text
            remote_id = created.json()["id"]
            remote_ip, remote_uid = next(iter(held_ips(remote).items()))

            async def served_by(client: httpx.AsyncClient) -> bool:
                found = await client.get("/pod", params={"ip": remote_ip})
                return found.status_code == 200 and found.json()["cluster"] == remote_id

            await eventually(lambda: served_by(client_a), 20, "A serves the integration")
            # B reads the store every reconcile interval (1 s here): it watches it too.
            await eventually(lambda: served_by(client_b), 30, "B picks up the integration")
            listed_b = (await client_b.get("/api/v1/integrations/kubernetes")).json()["items"]
            assert [i["id"] for i in listed_b] == [remote_id]

            # An IP set made through A is followed by B as well.
            made = await client_a.post(
                "/api/v1/ipsets", json={"name": "all", "cluster": CLUSTER, "selector": ""}
            )
            assert made.status_code == 201, made.text

            async def set_on_b() -> bool:
                return (await client_b.get("/api/v1/ipsets/all")).status_code == 200

            await eventually(set_on_b, 10, "B follows the IP set")

            # A pod an agent pushes (the broker API) lands in the index of the replica the
            # Service sent the push to, and in history: the broker's reads, which come from
            # the database, see it on both at once; the other's index, at its restart.
            pushed = await client_a.post(
                "/pod/spec",
                json={
                    "pod_name": "agent-pod",
                    "pod_namespace": "edge",
                    "pod_ip": PUSHED_IP,
                    "node_name": "edge-node",
                },
            )
            assert pushed.status_code == 200 and pushed.json()["status"] == "stored", pushed.text
            assert (await client_a.get("/pod", params={"ip": PUSHED_IP})).status_code == 200

            async def in_history_of_b() -> bool:
                return (await client_b.get(f"/pod/ip/{PUSHED_IP}")).status_code == 200

            await eventually(in_history_of_b, 10, "B's broker reads see the pushed pod")
            assert (await client_b.get("/pod", params={"ip": PUSHED_IP})).status_code == 404

        # B restarts (a rollout, a crash, `kubectl rollout restart`): its index has the
        # pushed pod too now (pushes reach another replica's memory only this way).
        outputs.append(stop(b))
        b, base_b = start_podindex("serve", env=env)
        await wait_ready(base_b, b, 60)
        async with httpx.AsyncClient(base_url=base_b, headers=bearer(ADMIN_TOKEN)) as client_b:
            listed_b = (await client_b.get("/api/v1/integrations/kubernetes")).json()["items"]
            assert [i["id"] for i in listed_b] == [remote_id]
            await eventually(lambda: served_by(client_b), 20, "B serves the integration")
            found = (await client_b.get("/pod", params={"ip": remote_ip})).json()
            assert found["uid"] == remote_uid
            by_ip = await client_b.get("/pod", params={"ip": PUSHED_IP})
            assert by_ip.status_code == 200 and by_ip.json()["name"] == "agent-pod"
    finally:
        churning.cancel()
        outputs += [stop(a), stop(b)]
    for output in outputs:
        assert TOKEN not in output and TOKEN_B not in output
        assert "Traceback" not in output, output[-3000:]


@pytest.mark.timeout(90)
async def test_a_change_through_one_replica_is_not_undone_by_the_other(
    request: pytest.FixtureRequest, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two services in one process on one database; B's health saves come every tick.

    Each replica saves the health it observes of every integration it runs. Those saves
    write the health columns only, so B's older copy of an integration neither reverts
    A's rename nor brings back what A deleted; B's reconcile then follows both.
    """
    from podindex import integrations
    from tests.test_integrations_api import CORE_TOKEN, PREFIX, body_for, emulator, serving
    from tests.test_integrations_api import eventually as soon

    monkeypatch.setattr(integrations, "SYNC_SAVE_EVERY", 0.0)  # else up to a minute apart
    database = postgres_url(request)
    async with (
        emulator(CORE_TOKEN, 5, seed=41, tls=False) as core,
        emulator(TOKEN_B, 6, seed=42, tls=True) as remote,
        serving(core, database, key_file) as (service_a, client_a),
    ):
        created = await client_a.post(PREFIX, json=body_for(remote, "remote", TOKEN_B))
        assert created.status_code == 201, created.text
        remote_id = created.json()["id"]
        async with serving(core, database, key_file) as (service_b, _):
            await soon(lambda: service_b.integrations.pod_count(remote_id) == 6)
            renamed = await client_a.patch(f"{PREFIX}/{remote_id}", json={"name": "renamed"})
            assert renamed.status_code == 200, renamed.text
            await asyncio.sleep(3.0)  # a few of B's health ticks
            stored = {row.id: row for row in await service_a.history.store.integrations()}
            assert stored[remote_id].name == "renamed"
            await service_b.integrations.reconcile()
            assert service_b.integrations.view(remote_id).name == "renamed"
            assert service_b.integrations.pod_count(remote_id) == 6, "a rename restarts nothing"
            assert (await client_a.delete(f"{PREFIX}/{remote_id}")).status_code == 204
            await asyncio.sleep(3.0)
            stored = {row.id: row for row in await service_a.history.store.integrations()}
            assert remote_id not in stored
            await service_b.integrations.reconcile()
            assert remote_id not in service_b.clusters
            assert service_b.integrations.pod_count(remote_id) == 0


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    path.write_bytes(Fernet.generate_key())
    return path
