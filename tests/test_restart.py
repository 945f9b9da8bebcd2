"""History across restarts of a watching service, against the emulator over real sockets.

The service watches an emulated cluster and writes history; it stops; pods
are deleted (and others created, one taking a freed IP) while it is down; a
new service on the same store loads its history, and its first list marks
the vanished pods dead, so "who had this IP" stays right across the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from podindex.kube.config import explicit_access
from podindex.service import Service
from podindex.settings import Settings
from podindex.sim import POD, FakeCluster, populate
from podindex.store.base import StoredPod
from tests.test_store import leases_on

TOKEN = "restart-token"


@pytest.fixture
async def sim() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(token=TOKEN, bookmark_interval=0.2, grace_scale=0.0)
    await cluster.start()
    yield cluster
    await cluster.stop()


@contextlib.asynccontextmanager
async def running(sim: FakeCluster, store_url: str) -> AsyncIterator[Service]:
    service = Service(Settings(store=store_url, cluster_id="sim"))
    service.history.flush_interval = 0.02
    await service.add_cluster("sim", explicit_access(sim.url, token=TOKEN))
    task = asyncio.create_task(service.run())
    try:
        deadline = time.monotonic() + 30
        while not service.ready:
            assert time.monotonic() < deadline, "not ready"
            assert not task.done(), task
            await asyncio.sleep(0.02)
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def pods_of(sim: FakeCluster) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["uid"]: p for p in sim.list_objects(POD)}


async def stored(service: Service) -> dict[str, StoredPod]:
    await service.history.commit()
    return {r.uid: r for r in await service.history.store.rows()}


@pytest.mark.timeout(90)
async def test_pods_that_vanished_while_down_are_marked_dead(
    sim: FakeCluster, store_url: str
) -> None:
    populate(sim, 60, seed=4)
    async with running(sim, store_url) as first:
        rows = await stored(first)
        live = {u for u, r in rows.items() if not r.is_dead}
        assert live == set(pods_of(sim)), "every watched pod is in history"

    # Down: three pods go away for good.
    victims = [p for p in pods_of(sim).values() if p["status"].get("podIP")][:3]
    for pod in victims:
        meta = pod["metadata"]
        sim.delete_pod(meta["namespace"], meta["name"], grace_seconds=0)
    gone = {p["metadata"]["uid"] for p in victims}
    down_until = time.time()

    async with running(sim, store_url) as second:
        rows = await stored(second)
        assert {u for u, r in rows.items() if r.is_dead} >= gone
        for uid in gone:
            deleted_at = rows[uid].deleted_at
            assert deleted_at is not None and deleted_at >= down_until
        assert {u for u, r in rows.items() if not r.is_dead} == set(pods_of(sim))
        # The victims' IPs: held until podindex learnt they were gone, then free.
        ip = victims[0]["status"]["podIP"]
        leases = await leases_on(second.history.store, [ip])
        closed = [lease for lease in leases if lease.uid == victims[0]["metadata"]["uid"]]
        assert closed and closed[0].held_to is not None
