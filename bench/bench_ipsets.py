"""IP sets at scale: 1,000 sets over 100k pods; how fast one pod event reaches every stream.

An Index takes ``--pods`` realistic pods (400 Deployments in each of 50
namespaces); ``--sets`` sets are registered, each a Deployment's pods by
``app.kubernetes.io/name`` (some with a namespace), every one followed by a
listener that stands for a stream (it puts the event on a bounded queue, as
``/watch`` does). Then ``--events`` pod events, each moving a pod to a new
IP (a REMOVE-to-be and an ADD in the sets that hold it): the time from the
event entering the index until every affected set has emitted and queued its
events (the index calls the sets synchronously), p50 and p99, median of
``--runs``. RSS per set (registered and populated) and per stream.

    .venv/bin/python bench/bench_ipsets.py [--pods 100000] [--sets 1000] [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import time
from typing import Any

import msgspec

from _common import PodFactory, median, note, rss_kb, table, write_results

TARGET_P99_MS = 5.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from podindex.index import Index
    from podindex.ipsets import IpSets, IpSetSpec, SetEvent
    from podindex.model import Pod

    factory = PodFactory()
    index = Index(grace_seconds=0.0)
    now = time.time()
    pods = [factory.pod(i, 1000 + i) for i in range(args.pods)]
    for pod in pods:
        index.upsert_pod("default", msgspec.convert(pod, Pod), now)
    note(f"{len(index)} pods indexed")

    gc.collect()
    before = rss_kb()
    sets = IpSets(index, revision_base=0)
    index.observers.append(sets.observe)
    for n in range(args.sets):
        deployment = f"svc-{n % 400:03d}"
        namespace = f"team-{n % 50:03d}" if n % 2 else None
        sets.put(
            IpSetSpec(
                f"set-{n}",
                "default",
                f"app.kubernetes.io/name={deployment}",
                namespace,
                grace_seconds=30.0,
            ),
            now,
        )
    gc.collect()
    per_set = (rss_kb() - before) * 1024 / args.sets
    members = sum(len(s.members) for s in sets.sets.values())
    note(f"{args.sets} sets, {members} memberships, {per_set:,.0f} B per set")

    before = rss_kb()
    queues: list[asyncio.Queue[SetEvent]] = []
    for ipset in sets.sets.values():
        queue: asyncio.Queue[SetEvent] = asyncio.Queue(10_000)
        queues.append(queue)
        ipset.listeners.append(queue.put_nowait)
    gc.collect()
    per_stream = (rss_kb() - before) * 1024 / len(queues)

    rng = random.Random(7)
    latencies: list[float] = []
    rv = 10_000_000
    for _ in range(args.events):
        i = rng.randrange(args.pods)
        rv += 1
        moved = factory.pod(i, rv, ip=f"10.200.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        pod = msgspec.convert(moved, Pod)
        started = time.perf_counter()
        index.upsert_pod("default", pod, now)
        latencies.append((time.perf_counter() - started) * 1000)
        for queue in queues:  # what the streams would take
            while not queue.empty():
                queue.get_nowait()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "bytes_per_set": per_set,
        "bytes_per_stream": per_stream,
        "memberships": members,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--sets", type=int, default=1000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [run(args) for _ in range(args.runs)]
    result = {k: median(r[k] for r in runs) for k in runs[0]}
    print(
        table(
            ["metric", f"median of {args.runs}"],
            [
                ["one pod event to every affected stream, p50 ms", f"{result['p50_ms']:.3f}"],
                ["… p99 ms", f"{result['p99_ms']:.3f}"],
                ["RSS per set (with its members)", f"{result['bytes_per_set']:,.0f} B"],
                ["RSS per stream (its queue)", f"{result['bytes_per_stream']:,.0f} B"],
                ["memberships", f"{result['memberships']:,.0f}"],
            ],
        )
    )
    verdict = "met" if result["p99_ms"] <= TARGET_P99_MS else "missed"
    print(f"target p99 <= {TARGET_P99_MS} ms: {verdict}")
    write_results("ipsets", {"args": vars(args), "result": result, "runs": runs})


if __name__ == "__main__":
    main()
