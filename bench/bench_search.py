"""Pod search and export: ``GET /v1/pods`` latency and ``GET /v1/export/pods`` throughput.

query: an Index takes ``--pods`` realistic pods (50 namespaces, 400
deployments each, 2 containers a pod), their container instances written
to a SQLite store; ``Namespace:x+Pod Label:app.kubernetes.io/name=y`` and
other queries are asked ``--requests`` times in one process through
Starlette (routing, auth check, search, the page's instances read from the
store, the JSON), sequentially: p50 and p99, median over ``--runs``.
``--past N`` adds N more pods, spread among them in creation order, and
deletes them before the queries: pods of history, which search includes.

export: a real ``podindex serve`` process watches a ``podindex sim`` of
``--pods`` pods; one local client (aiohttp) reads the export of all of them,
then of one namespace (~1/50 of them), over a socket. Pods per second, and
the serving process's RSS sampled every 20 ms: peak growth over its RSS
before each export.

    .venv/bin/python bench/bench_search.py [--pods 100000] [--past 0] [--requests 200] [--runs 3]
        [--only query|export]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import msgspec

from _common import (
    PYTHON,
    PodFactory,
    free_port,
    median,
    note,
    rss_kb,
    table,
    wait_for_file,
    wait_ready,
    write_results,
)
from bench_http import start_nginx, stop, which_tool

TARGET_P99_MS = 20.0
TARGET_EXPORT_PODS_PER_S = 50_000
TARGET_EXPORT_RSS_MB = 50.0

QUERIES: list[tuple[str, str]] = [
    (
        "Namespace + Pod Label (the target)",
        "Namespace:team-007+Pod Label:app.kubernetes.io/name=svc-012",
    ),
    ("Namespace prefix", "Namespace:team-00"),
    ("Pod Label only", "Pod Label:app.kubernetes.io/name=svc-012"),
    ("Pod Name regex", "Pod Name:r/^svc-01[0-9]-"),
    ("everything, page 1", ""),
    ("deleted pods, page 1", "Deleted:true"),
]


# --- query latency ---------------------------------------------------------------


async def build(n: int, past: int = 0) -> tuple[Any, Any]:
    from podindex.api.app import create_app
    from podindex.model import Pod
    from podindex.service import Service
    from podindex.settings import Settings

    workdir = tempfile.mkdtemp(prefix="podindex-bench-search-")
    service = Service(Settings(store=f"sqlite:///{workdir}/h.db", watch=False))
    await service.history.store.open()
    factory = PodFactory()
    now = time.time()
    total = n + past
    step = total // past if past else 0  # the pods to delete, spread in creation order
    doomed: list[Pod] = []
    for i in range(total):
        pod = factory.pod(i, 1000 + i)
        pod["metadata"]["creationTimestamp"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - (total - i) * 3)
        )
        kept = msgspec.convert(pod, Pod)
        service.index.upsert_pod("default", kept, now)
        if step and i % step == 0 and len(doomed) < past:
            doomed.append(kept)
    for pod in doomed:
        service.index.delete_pod("default", pod, now)
    note(f"{len(service.index)} live pods, {len(service.past)} past")
    started = time.perf_counter()
    queued = sum(len(h.by_id) for h in service.instances.pending.values())
    await service.instances.flush()
    note(f"{queued} instances written in {time.perf_counter() - started:.1f}s")
    service.past_loaded = True
    return service, create_app(service, run_background=False)


async def measure(app: Any, query: str, requests: int) -> tuple[float, float, int]:
    transport = httpx.ASGITransport(app=app)
    params = {"query": query, "pagination.limit": "100"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await client.get("/v1/pods", params=params)  # warm
        latencies = []
        found = 0
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.get("/v1/pods", params=params)
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
            found = len(response.json()["pods"])
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, found


async def queries(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    service, app = await build(args.pods, args.past)
    note(f"index of {args.pods} pods built in {time.perf_counter() - started:.1f}s")
    results: dict[str, Any] = {}
    for label, query in QUERIES:
        runs = [await measure(app, query, args.requests) for _ in range(args.runs)]
        results[label] = {
            "query": query,
            "p50_ms": median(r[0] for r in runs),
            "p99_ms": median(r[1] for r in runs),
            "page": runs[0][2],
        }
        note(f"{label}: {results[label]}")
    await service.history.store.close()
    return results


# --- export throughput and memory ----------------------------------------------


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kb(self.pid))
            await asyncio.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.peak = rss_kb(self.pid)
        self._task = asyncio.ensure_future(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def export_once(
    base: str, query: str, pid: int, keep: Path | None = None, url: str = ""
) -> dict[str, float]:
    """One export read to the end; ``keep``: a file for its body; ``url``: read that
    instead (the same bytes from nginx: what this client can read at most)."""
    before = rss_kb(pid)
    kept = keep.open("wb") if keep is not None else None
    async with aiohttp.ClientSession() as session:
        with RssSampler(pid) as sampler:
            started = time.perf_counter()
            count = 0
            async with session.get(
                url or base + "/v1/export/pods", params={"query": query}, timeout=None
            ) as response:
                assert response.status == 200, await response.text()
                async for line in response.content:
                    if line.startswith(b'{"result"'):
                        count += 1
                    else:
                        raise AssertionError(line[:200])
                    if kept is not None:
                        kept.write(line)
            seconds = time.perf_counter() - started
    if kept is not None:
        kept.close()
    return {
        "pods": count,
        "seconds": seconds,
        "pods_per_s": count / seconds,
        "rss_growth_mb": (sampler.peak - before) / 1024,
    }


async def export(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="podindex-bench-export-"))
    (work / "token").write_text("bench-export")
    ready = work / "sim-url"
    sim = subprocess.Popen(
        [
            *(PYTHON, "-m", "podindex", "sim", "--port", "0", "--pods", str(args.pods)),
            *("--churn-rate", "0", "--token-file", str(work / "token")),
            *("--ready-file", str(ready)),
        ],
        start_new_session=True,
    )
    server: subprocess.Popen[bytes] | None = None
    try:
        sim_url = wait_for_file(ready, sim, 600)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODINDEX_")}
        env.update(
            PODINDEX_SERVER=sim_url,
            PODINDEX_TOKEN_FILE=str(work / "token"),
            PODINDEX_STORE=f"sqlite:///{work}/h.db",
            PODINDEX_LOG_LEVEL="warning",
        )
        server = subprocess.Popen(
            [PYTHON, "-m", "podindex", "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            cwd=work,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        await wait_ready(base, 900)
        note(f"serve ready with {args.pods} pods in {time.perf_counter() - started:.0f}s")
        await asyncio.sleep(3)  # the instances' first write
        pid = _worker_pid(server.pid)
        results: dict[str, Any] = {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/v1/pods", params={"pagination.limit": "1"}) as response,
        ):
            namespace = (await response.json())["pods"][0]["namespace"]
        body = work / "body.json"
        for label, query in (("all pods", ""), ("one namespace", f'Namespace:"{namespace}"')):
            runs = [
                await export_once(base, query, pid, keep=body if not query and not n else None)
                for n in range(args.runs)
            ]
            results[label] = {
                "pods": runs[0]["pods"],
                "pods_per_s": median(r["pods_per_s"] for r in runs),
                "rss_growth_mb": median(r["rss_growth_mb"] for r in runs),
                "first_rss_growth_mb": runs[0]["rss_growth_mb"],
                "runs": runs,
            }
            note(f"export {label}: {results[label]}")
        if which_tool("nginx"):  # the same bytes from nginx: this client's ceiling, this hour
            os.chmod(work, 0o755)  # nginx's workers run as nobody
            os.chmod(body, 0o644)
            nginx, nginx_port = start_nginx(work, "1")
            try:
                url = f"http://127.0.0.1:{nginx_port}/pod"
                runs = [await export_once(base, "", pid, url=url) for _ in range(args.runs)]
            finally:
                stop(nginx)
            results["nginx, the same body"] = {
                "pods": runs[0]["pods"],
                "pods_per_s": median(r["pods_per_s"] for r in runs),
                "rss_growth_mb": 0.0,
                "first_rss_growth_mb": 0.0,
                "runs": runs,
            }
            note(f"nginx: {results['nginx, the same body']}")
        return results
    finally:
        for proc in (server, sim):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


def _worker_pid(parent: int) -> int:
    """granian serves from a worker process: the one whose memory the export uses."""
    found = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return int(found[0]) if found else parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--past", type=int, default=0, help="pods deleted before the queries")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("query", "export"))
    args = parser.parse_args()
    results: dict[str, Any] = {"pods": args.pods}
    if args.only in (None, "query"):
        found = asyncio.run(queries(args))
        results["query"] = found
        rows = [
            [label, r["page"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
            for label, r in found.items()
        ]
        print(table(["query (page of 100)", "pods", "p50 ms", "p99 ms"], rows))
        target = found[QUERIES[0][0]]["p99_ms"]
        verdict = "met" if target <= TARGET_P99_MS else "missed"
        print(f"target p99 <= {TARGET_P99_MS} ms: {verdict} ({target:.2f} ms)")
    if args.only in (None, "export"):
        exported = asyncio.run(export(args))
        results["export"] = exported
        rows = [
            [
                label,
                r["pods"],
                f"{r['pods_per_s']:,.0f}",
                f"{r['rss_growth_mb']:.1f}",
                f"{r['first_rss_growth_mb']:.1f}",
            ]
            for label, r in exported.items()
        ]
        headers = ["export", "pods", "pods/s", "peak RSS growth MB", "first run's"]
        print(table(headers, rows))
        full = exported["all pods"]
        rate_ok = full["pods_per_s"] >= TARGET_EXPORT_PODS_PER_S
        rss_ok = full["rss_growth_mb"] <= TARGET_EXPORT_RSS_MB
        print(
            f"target >= {TARGET_EXPORT_PODS_PER_S:,} pods/s: {'met' if rate_ok else 'missed'}; "
            f"peak RSS growth <= {TARGET_EXPORT_RSS_MB} MB: {'met' if rss_ok else 'missed'}"
        )
        ceiling = exported.get("nginx, the same body")
        if ceiling:
            ratio = full["pods_per_s"] / ceiling["pods_per_s"]
            print(f"podindex / nginx serving the same body to the same client: {ratio:.2f}")
    write_results("search", results)


if __name__ == "__main__":
    main()
