"""A real PostgreSQL outage under a running broker: lookups go on, pushes wait, nothing is lost.

The database is made unreachable the way an outage looks to a client:
new connections refused (``ALLOW_CONNECTIONS false``) and the open ones
terminated. Then it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from podindex.api.app import create_app
from podindex.service import Service
from podindex.settings import Settings
from tests.auth import ADMIN_TOKEN, bearer, standard_tokens
from tests.pg import admin_url, postgres_url


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    return postgres_url(request)


async def set_reachable(url: str, reachable: bool) -> None:
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(admin_url())
    try:
        await admin.execute(
            f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(reachable).lower()}'
        )
        if not reachable:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def broker(url: str, access: Path) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    service = Service(
        Settings(store=url, watch=False, ack_timeout=1.0, tokens_file=str(standard_tokens(access)))
    )
    service.history.flush_interval = 0.02
    task = asyncio.create_task(service.run())
    try:
        while not service.ready:
            assert not task.done(), task
            await asyncio.sleep(0.02)
        transport = httpx.ASGITransport(app=create_app(service, run_background=False))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://podindex", headers=bearer(ADMIN_TOKEN)
        ) as client:
            yield service, client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def spec(i: int) -> dict[str, str]:
    return {
        "pod_name": f"p-{i}",
        "pod_namespace": "ns",
        "pod_ip": f"10.7.0.{i + 1}",
        "node_name": "n1",
    }


@pytest.mark.timeout(90)
async def test_an_outage_delays_history_but_loses_nothing(database: str, tmp_path: Path) -> None:
    async with broker(database, tmp_path) as (service, client):
        for i in range(5):
            assert (await client.post("/pod/spec", json=spec(i))).status_code == 200
        await set_reachable(database, False)
        try:
            started = time.monotonic()
            during = await client.post("/pod/spec", json=spec(5))
            assert during.status_code == 503 and during.json()["error"] == "store_unavailable"
            assert time.monotonic() - started < 5, "the push gave up after --ack-timeout"
            for i in range(6, 10):
                await client.post("/pod/spec", json=spec(i))
            # Memory answers throughout: lookups never wait on the database.
            lookup = await client.get("/pod", params={"ip": "10.7.0.7"})
            assert lookup.status_code == 200 and lookup.json()["name"] == "p-6"
            info = await client.get("/pod/info")
            assert info.status_code == 503
            assert service.history.stats.failures > 0
            metrics = (await client.get("/metrics")).text
            assert "podindex_history_failures_total" in metrics
        finally:
            await set_reachable(database, True)
        deadline = time.monotonic() + 40
        while True:  # the writer retries with backoff (at most 30 s apart)
            info = await client.get("/pod/info")
            if info.status_code == 200:
                break
            assert time.monotonic() < deadline, info.text
            await asyncio.sleep(0.5)
        names = sorted(row["pod_name"] for row in info.json())
        assert names == sorted(f"p-{i}" for i in range(10)), "the changes made during the outage"
    async with broker(database, tmp_path) as (_, client):
        restarted = await client.get("/pod", params={"ip": "10.7.0.10"})
        assert restarted.json()["name"] == "p-9", "and they survive a restart"


@pytest.mark.timeout(30)
async def test_an_unreachable_store_at_start_is_not_ready_and_never_shows_the_password(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    url = "postgresql://podindex:hunter2-secret@127.0.0.1:1/history"
    access = str(standard_tokens(tmp_path))
    service = Service(Settings(store=url, watch=False, tokens_file=access))
    task = asyncio.create_task(service.run())
    try:
        transport = httpx.ASGITransport(app=create_app(service, run_background=False))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://podindex", headers=bearer(ADMIN_TOKEN)
        ) as client:
            await asyncio.sleep(1.5)  # a first attempt and its logged failure
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["history"]["loaded"] is False
            assert "hunter2" not in ready.text and "***" in ready.text
            lookup = await client.get("/pod", params={"ip": "10.0.0.1"})
            assert lookup.status_code == 503, "fail closed, not a false 404"
            push = await client.post("/pod/spec", json=spec(1))
            assert push.status_code == 503 and "hunter2" not in push.text
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert "history store" in caplog.text and "unavailable" in caplog.text
    assert "hunter2" not in caplog.text
