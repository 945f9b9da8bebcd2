"""History: write-behind throughput on SQLite and PostgreSQL, and ``POST /attribute`` latency.

Write-behind. An Index takes 100k realistic pods (ADDED: each a new row, an
IP lease opened, its object compressed), then churn from the ingest
benchmark's event mix in which each event changes what history keeps (a pod
deleted, a new pod taking a freed IP, a pod relabelled). The writer's flush
(conversion to rows, compression, the store's transactions) is timed alone:
changes written per second of writer time, median of ``--runs`` runs, each on
a new database; and the CPU the writer spent a change (this process and the
store's writer process, not PostgreSQL's): on a busy machine the wall time
says more about the neighbours than about the code.

Under load (``--offered RATE``). The service's own write loop
(``HistoryWriter.run``) while this process applies churn to the index at RATE
changes/s: rows written per second, how far history lags (bounded per flush:
a change applied between the starts of flushes k-1 and k is committed by the
end of flush k) and how long it takes to catch up after the last change.

Attribution. A real ``podindex serve --watch false`` process over a store
holding 100k pods and their leases (a fifth of the IPs reused, so lookups
need the time), asked over HTTP to attribute 100k (ip, timestamp) pairs in
one call; wall time of the call, median of ``--runs`` calls.

    .venv/bin/python bench/bench_history.py [--pods 100000] [--runs 3] [--backend both] [--writer inline|process]
    .venv/bin/python bench/bench_history.py --only offered --offered 5000 [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from _common import PYTHON, ROOT, median, note, pod_lines, table, write_results

TARGET_CHANGES_PER_S = 20_000
TARGET_ATTRIBUTE_S = 1.0
ADMIN_URL = os.environ.get(
    "PODINDEX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def new_store_url(backend: str, workdir: Path, tag: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir}/{tag}.db"
    import asyncpg

    name = f"podindex_bench_{os.getpid()}_{tag}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def drop_store(url: str) -> None:
    if not url.startswith("postgres"):
        return
    import asyncpg

    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


def churn(pods: list[Any], n: int, seed: int = 5) -> list[tuple[str, Any]]:
    """``n`` changes history keeps: deletes, new pods taking freed IPs, relabels."""
    rng = random.Random(seed)
    live = list(range(len(pods)))
    freed: list[str] = []
    out: list[tuple[str, Any]] = []
    next_new = len(pods)
    template = pods[0]
    for step in range(n):
        r = rng.random()
        if r < 0.3 and live:
            i = live.pop(rng.randrange(len(live)))
            freed.append(pods[i].status.podIP)
            out.append(("DELETED", pods[i]))
        elif r < 0.6 and freed:
            new = msgspec.json.decode(msgspec.json.encode(template), type=type(template))
            new.metadata.uid = f"new-{next_new}"
            new.metadata.name = f"new-{next_new}"
            new.metadata.resourceVersion = str(10_000_000 + step)
            ip = freed.pop(rng.randrange(len(freed)))
            new.status.podIP = ip
            new.status.podIPs = ((type(template.status.podIPs[0]))(ip),)
            pods.append(new)
            live.append(len(pods) - 1)
            next_new += 1
            out.append(("ADDED", new))
        elif live:
            i = live[rng.randrange(len(live))]
            pod = msgspec.json.decode(msgspec.json.encode(pods[i]), type=type(template))
            pod.metadata.labels = {**pod.metadata.labels, "rollout": str(step)}
            pod.metadata.resourceVersion = str(10_000_000 + step)
            pods[i] = pod
            out.append(("MODIFIED", pod))
    return out


def writer_cpu(store: Any) -> float:
    """CPU seconds of this process (all its threads) and of the store's writer process.

    PostgreSQL's own backends are not counted.
    """
    seconds = time.process_time()
    pid = getattr(store, "writer_pid", None)
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def apply(index: Any, kind: str, pod: Any, at: float) -> None:
    """One change of :func:`churn` into the index, as the watcher would apply it."""
    if kind == "DELETED":
        index.delete_pod("default", pod, at)
    else:
        index.upsert_pod("default", pod, at)


@contextlib.asynccontextmanager
async def synced(
    backend: str,
    pods_raw: list[bytes],
    workdir: Path,
    tag: str,
    writer_process: bool = False,
    writer_type: Any = None,
) -> AsyncIterator[tuple[list[Any], Any, Any, Any]]:
    """A new store, and an index holding the pods as after a first sync, their
    changes pending for the writer: (pods, store, index, writer). The heap is
    frozen as the service does once synced (podindex.heap)."""
    from podindex import heap
    from podindex.history import HistoryWriter
    from podindex.index import Index
    from podindex.model import Pod
    from podindex.store.base import open_store

    decoder = msgspec.json.Decoder(Pod)
    pods = [decoder.decode(line) for line in pods_raw]
    url = await new_store_url(backend, workdir, tag)
    store = open_store(url, writer_process=writer_process)
    await store.open()
    try:
        index = Index()
        writer = (writer_type or HistoryWriter)(store, index)  # records the index's changes
        now = time.time()
        for pod in pods:
            index.upsert_pod("default", pod, now)
        heap.freeze()
        yield pods, store, index, writer
    finally:
        await store.close()
        await drop_store(url)


async def write_behind_run(
    backend: str, pods_raw: list[bytes], workdir: Path, run: int, writer_process: bool = False
) -> dict[str, float]:
    async with synced(backend, pods_raw, workdir, f"w{run}", writer_process) as synced_:
        pods, store, index, writer = synced_
        n_initial = len(index.changes or [])
        t, cpu = time.perf_counter(), writer_cpu(store)
        await writer.flush()
        initial_s = time.perf_counter() - t
        initial_cpu = writer_cpu(store) - cpu
        changes = churn(pods, len(pods) // 2)
        flush_s = churn_cpu = 0.0
        n_churn = 0
        for start in range(0, len(changes), 5000):
            now = time.time()
            for kind, pod in changes[start : start + 5000]:
                apply(index, kind, pod, now)
            n_churn += len(index.changes or [])
            t, cpu = time.perf_counter(), writer_cpu(store)
            await writer.flush()
            flush_s += time.perf_counter() - t
            churn_cpu += writer_cpu(store) - cpu
        return {
            "initial_changes": n_initial,
            "initial_per_s": n_initial / initial_s,
            "initial_cpu_us": initial_cpu / n_initial * 1e6,
            "churn_changes": n_churn,
            "churn_per_s": n_churn / flush_s,
            "churn_cpu_us": churn_cpu / n_churn * 1e6,
        }


async def offered_run(
    backend: str, pods_raw: list[bytes], workdir: Path, rate: int, seconds: float
) -> dict[str, float]:
    """The service's own write loop (``HistoryWriter.run``) while this process applies
    churn to the index at ``rate`` changes/s for ``seconds``: does history keep up?

    Above what it can write, the writer coalesces (one row a pod a flush), so
    the question is how far history lags and how many rows reach the store,
    not whether changes pile up. A change applied between two flushes' starts
    is committed by the end of the second: ``end[k] - start[k-1]`` bounds the
    lag of every change flush ``k`` wrote.
    """
    from podindex import heap
    from podindex.history import HistoryWriter

    spans: list[tuple[float, float, int]] = []  # each flush: start, end, rows written

    class TimedWriter(HistoryWriter):
        async def flush(self) -> None:
            start, before = time.monotonic(), self.stats.written
            await super().flush()
            spans.append((start, time.monotonic(), self.stats.written - before))

    stalls: list[float] = []  # how late a 1 ms sleep woke: the loop was held that long

    async def watch_loop() -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - start - 0.001)

    async with synced(backend, pods_raw, workdir, "offered", writer_type=TimedWriter) as synced_:
        pods, _, index, writer = synced_
        await writer.flush()  # the first sync's pods, before the clock starts
        changes = churn(pods, int(rate * seconds))
        # The service's heap upkeep (its first freeze also takes the changes, which
        # stand for watch events: a moment's life in the service, 100k+ pods made
        # up front here, whose walks by full collections held the loop ~400 ms).
        freezing = asyncio.create_task(heap.keep_frozen(lambda: True, lambda: len(index)))
        await asyncio.sleep(0)
        spans.clear()
        looping = asyncio.create_task(writer.run())
        watching = asyncio.create_task(watch_loop())
        applied = 0
        began = time.monotonic()
        tick = max(1, rate // 100)  # at most 10 ms of offered changes between two yields,
        while applied < len(changes):  # as the watcher applies events as they come
            due = min(len(changes), int(rate * (time.monotonic() - began)), applied + tick)
            now = time.time()
            for kind, pod in changes[applied:due]:
                apply(index, kind, pod, now)
            applied = due
            await asyncio.sleep(0 if due < rate * (time.monotonic() - began) else 0.01)
        produced = time.monotonic() - began
        await writer.commit()
        drained = time.monotonic() - began
        looping.cancel()
        watching.cancel()
        freezing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await looping
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        stalls.sort()
        lags = [end - spans[k - 1][0] for k, (_, end, n) in enumerate(spans) if k and n]
        return {
            "offered_per_s": len(changes) / produced,
            "rows_written": sum(n for _, _, n in spans),
            "rows_per_s": sum(n for _, _, n in spans) / drained,
            "changes": len(changes),
            "lag_max_s": max(lags),
            "lag_median_s": median(lags),
            "drain_after_s": drained - produced,
            "loop_stall_p99_ms": stalls[int(len(stalls) * 0.99)] * 1000,
            "loop_stall_max_ms": stalls[-1] * 1000,
        }


async def populate_for_attribution(
    url: str, pods_raw: list[bytes]
) -> tuple[list[str], float, float]:
    """100k pods with leases over an hour of history; returns the IPs and the time span."""
    from podindex.history import HistoryWriter
    from podindex.index import Index
    from podindex.model import Pod
    from podindex.store.base import open_store

    decoder = msgspec.json.Decoder(Pod)
    pods = [decoder.decode(line) for line in pods_raw]
    store = open_store(url)
    await store.open()
    index = Index()
    writer = HistoryWriter(store, index)
    start = time.time() - 3600
    for pod in pods:
        index.upsert_pod("default", pod, start)
    await writer.flush()
    changes = churn(pods, len(pods) // 2, seed=9)
    step = 3000.0 / len(changes)
    for n, (kind, pod) in enumerate(changes):
        at = start + 60 + n * step
        apply(index, kind, pod, at)
        if n % 5000 == 0:
            await writer.flush()
    await writer.flush()
    await store.close()
    ips = sorted({p.status.podIP for p in pods})
    return ips, start, time.time()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def attribute_runs(
    url: str, ips: list[str], span: tuple[float, float], runs: int, pairs: int
) -> dict[str, Any]:
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODINDEX_")}
    env.update(PODINDEX_STORE=url, PODINDEX_WATCH="false", PODINDEX_LOG_LEVEL="warning")
    server = subprocess.Popen(
        [PYTHON, "-m", "podindex", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        cwd=tempfile.gettempdir(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rng = random.Random(3)
    flows = [{"ip": rng.choice(ips), "at": round(rng.uniform(*span), 3)} for _ in range(pairs)]
    body = msgspec.json.encode({"pairs": flows})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if (await client.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server not ready")
                await asyncio.sleep(0.2)
            times = []
            attributed = 0
            for _ in range(runs):
                t = time.perf_counter()
                response = await client.post(
                    "/attribute", content=body, headers={"content-type": "application/json"}
                )
                times.append(time.perf_counter() - t)
                response.raise_for_status()
                results = response.json()["results"]
                attributed = sum(1 for r in results if r["holder"] is not None)
            return {
                "seconds": times,
                "median_s": median(times),
                "pairs": pairs,
                "distinct_ips": len({f["ip"] for f in flows}),
                "attributed": attributed,
                "request_bytes": len(body),
            }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


async def main_async(args: argparse.Namespace) -> int:
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    note(f"building/loading {args.pods} pods (cached) ...")
    pods_raw = pod_lines(args.pods)
    workdir = Path(tempfile.mkdtemp(prefix="podindex-bench-history-"))
    results: dict[str, Any] = {}
    rows = []
    verdicts: list[str] = []
    for backend in backends:
        result: dict[str, Any] = {}
        if args.only in (None, "writes"):
            runs = []
            for run in range(args.runs):
                r = await write_behind_run(
                    backend, pods_raw, workdir, run, args.writer == "process"
                )
                note(
                    f"{backend} run {run + 1}: initial {r['initial_per_s']:,.0f}/s, "
                    f"churn {r['churn_per_s']:,.0f}/s; writer CPU a change: initial "
                    f"{r['initial_cpu_us']:.0f} µs, churn {r['churn_cpu_us']:.0f} µs"
                )
                runs.append(r)
            med = {k: median(r[k] for r in runs) for k in runs[0]}
            result.update(write_behind_runs=runs, write_behind_median=med)
            rows += [
                (f"{backend}: initial write, changes/s", med["initial_per_s"]),
                (f"{backend}: churn, changes/s", med["churn_per_s"]),
                (f"{backend}: initial, writer CPU µs a change", med["initial_cpu_us"]),
                (f"{backend}: churn, writer CPU µs a change", med["churn_cpu_us"]),
            ]
            met = min(med["initial_per_s"], med["churn_per_s"]) >= TARGET_CHANGES_PER_S
            verdicts.append(
                f"{backend}: write-behind >= {TARGET_CHANGES_PER_S:,}/s: "
                + ("met" if met else "MISSED")
            )
        if args.offered:
            offered = await offered_run(backend, pods_raw, workdir, args.offered, args.seconds)
            note(
                f"{backend} at {offered['offered_per_s']:,.0f} changes/s offered: "
                f"{offered['rows_per_s']:,.0f} rows/s written, lag max {offered['lag_max_s']:.2f}s "
                f"(median {offered['lag_median_s']:.2f}s), drained {offered['drain_after_s']:.2f}s after; "
                f"event loop held p99 {offered['loop_stall_p99_ms']:.1f} ms, "
                f"max {offered['loop_stall_max_ms']:.1f} ms"
            )
            result["offered"] = offered
            rows += [
                (f"{backend}: offered changes/s (achieved)", offered["offered_per_s"]),
                (f"{backend}: rows written/s", offered["rows_per_s"]),
                (
                    f"{backend}: rows written / changes",
                    offered["rows_written"] / offered["changes"],
                ),
                (f"{backend}: history lag, max s", offered["lag_max_s"]),
                (f"{backend}: history lag, median s", offered["lag_median_s"]),
                (f"{backend}: event loop held, p99 ms", offered["loop_stall_p99_ms"]),
                (f"{backend}: event loop held, max ms", offered["loop_stall_max_ms"]),
                (f"{backend}: drained after the last change, s", offered["drain_after_s"]),
            ]
        if args.only not in ("writes", "offered"):
            url = await new_store_url(backend, workdir, "attr")
            try:
                ips, start, end = await populate_for_attribution(url, pods_raw)
                attribution = await attribute_runs(url, ips, (start, end), args.runs, args.pairs)
            finally:
                await drop_store(url)
            note(f"{backend} attribute: {attribution['median_s']:.3f}s for {args.pairs} pairs")
            result["attribute"] = attribution
            rows += [
                (f"{backend}: POST /attribute {args.pairs:,} pairs, s", attribution["median_s"]),
                (f"{backend}: distinct IPs in the pairs", attribution["distinct_ips"]),
                (f"{backend}: pairs attributed to a pod", attribution["attributed"]),
            ]
            met = attribution["median_s"] <= TARGET_ATTRIBUTE_S
            verdicts.append(
                f"{backend}: /attribute <= {TARGET_ATTRIBUTE_S:g}s: " + ("met" if met else "MISSED")
            )
        results[backend] = result
    print(f"history, {args.pods} pods, median of {args.runs} runs")
    print(table(["metric", "value"], rows))
    print("\n".join(verdicts))
    write_results(
        "history",
        {
            "command": " ".join(["bench/bench_history.py", *sys.argv[1:]]),
            "pods": args.pods,
            "results": results,
        },
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--writer",
        choices=["inline", "process"],
        default="inline",
        help="the store's writes in this process (the service's default) or a child process",
    )
    parser.add_argument(
        "--only",
        choices=["writes", "attribute", "offered"],
        default=None,
        help="run one part only (offered: only the --offered run)",
    )
    parser.add_argument(
        "--offered",
        type=int,
        default=0,
        help="also run the write loop under this many changes/s applied to the index",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the --offered run")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
