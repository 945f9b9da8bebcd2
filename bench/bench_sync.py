"""Initial sync: LIST 100k pods over loopback HTTP into the Index, until ``synced``.

The Kubernetes API runs in its own process (``podindex sim --churn-rate 0``
when the emulator is available, else bench/_staticapi.py serving the same
realistic pods), so its memory and CPU are not counted. Each run is a fresh
interpreter (``--child``) that starts a ``ClusterSync`` (ReplicaSet and Job
metadata watchers, then pods, as ``podindex serve`` does) and times it from
start to the pods watcher's ``synced``; it reports the peak RSS of the process
and the RSS growth per pod.

    .venv/bin/python bench/bench_sync.py [--pods 100000] [--runs 3] [--page-size 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    ApiServer,
    median,
    note,
    peak_rss_kb,
    rss_kb,
    run_python,
    table,
    write_results,
)

TARGET_SECONDS = 10.0


async def child(url: str, token_file: str, n: int, page_size: int) -> dict[str, Any]:
    from podindex.cluster import ClusterSync, WatchOptions
    from podindex.index import Index
    from podindex.kube.client import KubeClient
    from podindex.kube.config import explicit_access

    gc.collect()
    before = rss_kb()
    index = Index()
    client = KubeClient(explicit_access(url, token_file=token_file))
    sync = ClusterSync(
        "default", client, index, WatchOptions(page_size=page_size, stall_timeout=90)
    )
    t0 = time.perf_counter()
    task = asyncio.create_task(sync.run())
    await sync.replicasets.synced.wait()
    await sync.jobs.synced.wait()
    owners_s = time.perf_counter() - t0
    await sync.pods.synced.wait()
    elapsed = time.perf_counter() - t0
    peak = peak_rss_kb()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()
    gc.collect()
    after = rss_kb()
    if len(index) < n:
        raise RuntimeError(f"synced with {len(index)} pods, expected {n}")
    return {
        "pods": len(index),
        "sync_s": elapsed,
        "owners_s": owners_s,
        "pods_per_s": len(index) / elapsed,
        "peak_rss_mb": peak / 1024,
        "rss_before_mb": before / 1024,
        "rss_after_mb": after / 1024,
        "rss_bytes_per_pod": (after - before) * 1024 / len(index),
        "peak_bytes_per_pod": (peak - before) * 1024 / len(index),
    }


def _top(stats: pstats.Stats, n: int = 18) -> list[str]:
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:n]  # type: ignore[attr-defined]
    out = []
    for func, (_cc, nc, tt, ct, _callers) in rows:
        name = f"{func[0].rsplit('/', 1)[-1]}:{func[1]}({func[2]})"[:60]
        out.append(f"{name:60s} calls={nc:>8} tottime={tt:6.3f}s cum={ct:6.3f}s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--source", choices=["auto", "sim", "static"], default="auto")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra run")
    parser.add_argument("--child", nargs=2, metavar=("URL", "TOKEN_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, token_file = args.child
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
        result = asyncio.run(child(url, token_file, args.pods, args.page_size))
        if args.profile:
            profiler.disable()
            result["profile_top"] = _top(pstats.Stats(profiler))
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="podindex-bench-sync-"))
    api = ApiServer(args.pods, work, args.source)
    note(f"starting the Kubernetes API ({api.source}) with {args.pods} pods ...")
    t0 = time.monotonic()
    api.start()
    api_start_s = time.monotonic() - t0
    note(f"  up at {api.url} after {api_start_s:.1f}s")
    child_args = (
        "bench_sync.py",
        "--child",
        api.url,
        str(api.token_file),
        "--pods",
        str(args.pods),
        "--page-size",
        str(args.page_size),
    )
    runs = []
    try:
        for i in range(args.runs):
            runs.append(run_python(*child_args))
            r = runs[-1]
            note(
                f"run {i + 1}: synced {r['pods']} pods in {r['sync_s']:.2f}s, peak {r['peak_rss_mb']:.0f} MB"
            )
        profile_top: list[str] = []
        if args.profile:
            profiled = run_python(*child_args, "--profile")
            profile_top = profiled["profile_top"]
    finally:
        api.stop()
    keys = [
        "sync_s",
        "owners_s",
        "pods_per_s",
        "peak_rss_mb",
        "rss_after_mb",
        "rss_bytes_per_pod",
        "peak_bytes_per_pod",
    ]
    med = {k: median(r[k] for r in runs) for k in keys}
    print(
        f"initial sync of {args.pods} pods over loopback HTTP ({api.source} API), "
        f"page size {args.page_size}, median of {args.runs} runs"
    )
    print(table(["metric", "value"], [(k, med[k]) for k in keys]))
    verdict = "met" if med["sync_s"] <= TARGET_SECONDS else "MISSED"
    print(f"target <= {TARGET_SECONDS:g} s: {verdict}")
    if profile_top:
        print("cProfile of one sync (inflated by the profiler), top by own time:")
        print("\n".join(profile_top))
    path = write_results(
        "sync",
        {
            "command": " ".join(["bench/bench_sync.py", *sys.argv[1:]]),
            "api_source": api.source,
            "pods": args.pods,
            "page_size": args.page_size,
            "api_start_s": api_start_s,
            "runs": runs,
            "median": med,
            "target_s": TARGET_SECONDS,
            "target_met": verdict == "met",
            "profile_top": profile_top,
        },
    )
    note(f"wrote {path}")


if __name__ == "__main__":
    main()
