"""The export of 100k emulated pods through a real ``podindex serve``: every pod arrives,
and the serving process's memory does not grow with the count, nor with a slow reader.

The server's RSS is sampled while it streams: the peak growth over its RSS before the
export is compared between a ~2k-pod export (one namespace) and the whole 100k.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from podindex.sim import FakeCluster, populate
from tests.test_e2e_serve import TOKEN, start_podindex, stop, wait_ready

PODS = 100_000
GROWTH_LIMIT_MB = 50.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def serving_pid(parent: int) -> int:
    """granian answers from a worker process, a child of the one started."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return int(children[0]) if children else parent


class Peak:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_mb(pid)
        self.peak = self.before

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        async def sample() -> None:
            while True:
                self.peak = max(self.peak, rss_mb(self.pid))
                await asyncio.sleep(0.02)

        task = asyncio.create_task(sample())
        try:
            yield
        finally:
            task.cancel()
            self.peak = max(self.peak, rss_mb(self.pid))

    @property
    def growth(self) -> float:
        return self.peak - self.before


async def export(
    session: aiohttp.ClientSession, base: str, query: str, pid: int, pause: float = 0.0
) -> tuple[int, Peak]:
    peak = Peak(pid)
    count = 0
    async with (
        peak.sampling(),
        session.get(f"{base}/v1/export/pods", params={"query": query}) as response,
    ):
        assert response.status == 200, await response.text()
        async for line in response.content:
            assert line.startswith(b'{"result":{"pod":'), line[:200]
            count += 1
            if pause and count == 1000:  # a slow reader: the server must wait, not buffer
                await asyncio.sleep(pause)
    return count, peak


async def instances_written(session: aiohttp.ClientSession, base: str) -> None:
    """Until the first list's container instances are in the store (their write is
    the service's, not the export's, memory)."""
    for _ in range(1200):
        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
        if "podindex_instances_pending 0.0" in text:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("container instances never written")


@pytest.mark.timeout(300)
async def test_exporting_100k_pods_keeps_the_servers_memory_flat(tmp_path: Path) -> None:
    sim = FakeCluster(token=TOKEN, bookmark_interval=1.0)
    populate(sim, PODS, seed=8)
    await sim.start()
    (tmp_path / "token").write_text(TOKEN)
    process, base = start_podindex(
        "serve",
        env={
            "PODINDEX_SERVER": sim.url,
            "PODINDEX_TOKEN_FILE": str(tmp_path / "token"),
            "PODINDEX_STORE": f"sqlite:///{tmp_path}/h.db",
            "PODINDEX_LOG_LEVEL": "warning",
        },
    )
    try:
        await wait_ready(base, process, timeout=240)
        pid = serving_pid(process.pid)
        timeout = aiohttp.ClientTimeout(total=240)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await instances_written(session, base)
            async with session.get(f"{base}/v1/pods", params={"pagination.limit": "1"}) as r:
                namespace = (await r.json())["pods"][0]["namespace"]
            # The first export reads every instance into SQLite's page cache (up to its
            # 64 MB cache_size) once; measure past that.
            first, warming = await export(session, base, "", pid)
            assert first == PODS
            one, small = await export(session, base, f'Namespace:"{namespace}"', pid)
            assert 0 < one < PODS // 10
            everything, large = await export(session, base, "", pid)
            assert everything == PODS
            slow_count, slow = await export(session, base, "", pid, pause=2.0)
            assert slow_count == PODS
        for peak in (warming, large, slow):
            assert peak.growth <= GROWTH_LIMIT_MB + 64, (peak.before, peak.peak)
        for peak in (large, slow):
            assert peak.growth <= GROWTH_LIMIT_MB, (peak.before, peak.peak)
        # The whole export may hold its list of matches (a few MB), never the pods' JSON.
        assert large.growth - small.growth <= 30.0, (small.growth, large.growth)
    finally:
        print(stop(process)[-2000:])
        await sim.stop()
