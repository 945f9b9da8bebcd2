"""Dashboard list latency: ``GET /api/clusters/{id}/pods`` over 100k pods, filtered and paged.

An Index takes ``--pods`` realistic pods (2 % crash-looping, 1 % pending
with ContainerCreating); the dashboard app is asked each query ``--requests``
times in one process through Starlette (routing, auth check, filtering,
ordering, the page's JSON), sequentially: per-request latency, p50 and p99,
median over ``--runs`` runs. No socket: the target is the list's own cost,
which a socket adds the same fixed amount to as for any other route.

    .venv/bin/python bench/bench_dashboard.py [--pods 100000] [--requests 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import httpx
import msgspec

from _common import PodFactory, median, note, table, write_results

TARGET_P99_MS = 20.0

QUERIES: list[tuple[str, dict[str, str]]] = [
    ("status + search (the target)", {"status": "Running", "search": "svc-01"}),
    ("status only: CrashLoopBackOff", {"status": "CrashLoopBackOff"}),
    ("search an IP prefix", {"search": "10.65.3."}),
    ("namespace + status", {"namespace": "team-008", "status": "Running"}),
    ("no filter, page 1", {}),
    ("no filter, page 50", {"page": "50"}),
]


def crashloop(pod: dict[str, Any]) -> None:
    for cs in pod["status"]["containerStatuses"]:
        cs["ready"] = False
        cs["restartCount"] = 7
        cs["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}


def creating(pod: dict[str, Any]) -> None:
    pod["status"]["phase"] = "Pending"
    for cs in pod["status"]["containerStatuses"]:
        cs["ready"] = False
        cs["state"] = {"waiting": {"reason": "ContainerCreating"}}


async def build(n: int) -> tuple[Any, Any]:
    from podindex.api.app import create_app
    from podindex.cluster import ClusterSync
    from podindex.kube.client import KubeClient
    from podindex.kube.config import explicit_access
    from podindex.model import Pod
    from podindex.service import Service
    from podindex.settings import Settings

    workdir = tempfile.mkdtemp(prefix="podindex-bench-dash-")
    service = Service(Settings(store=f"sqlite:///{workdir}/h.db", watch=False))
    factory = PodFactory()
    now = time.time()
    for i in range(n):
        pod = factory.pod(i, 1000 + i)
        pod["metadata"]["creationTimestamp"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - (n - i) * 3)
        )
        if i % 50 == 7:
            crashloop(pod)
        elif i % 100 == 11:
            creating(pod)
        service.index.upsert_pod("default", msgspec.convert(pod, Pod), now)
    # A cluster entry the routes can name; nothing is ever fetched from it.
    sync = ClusterSync(
        "default", KubeClient(explicit_access("https://127.0.0.1:1", token="x")), service.index
    )
    sync.pods.synced.set()
    service.clusters["default"] = sync
    return service, create_app(service, run_background=False)


async def measure(app: Any, params: dict[str, str], requests: int) -> tuple[float, float, int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await client.get("/api/clusters/default/pods", params=params)  # warm
        latencies = []
        total = 0
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.get("/api/clusters/default/pods", params=params)
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
            total = response.json()["data"]["total"]
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, total


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    service, app = await build(args.pods)
    note(f"index of {args.pods} pods built in {time.perf_counter() - started:.1f}s")
    results: dict[str, Any] = {}
    for label, params in QUERIES:
        runs = [await measure(app, params, args.requests) for _ in range(args.runs)]
        results[label] = {
            "params": params,
            "p50_ms": median(r[0] for r in runs),
            "p99_ms": median(r[1] for r in runs),
            "total": runs[0][2],
        }
        note(f"{label}: {results[label]}")
    await service.history.store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    rows = [
        [label, r["total"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
        for label, r in results.items()
    ]
    print(table(["query", "matches", "p50 ms", "p99 ms"], rows))
    target = results[QUERIES[0][0]]["p99_ms"]
    verdict = "met" if target <= TARGET_P99_MS else "missed"
    print(f"target p99 <= {TARGET_P99_MS} ms for status + search: {verdict} ({target:.2f} ms)")
    write_results("dashboard", {"pods": args.pods, "results": results})


if __name__ == "__main__":
    main()
