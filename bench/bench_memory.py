"""Memory per indexed pod: RSS of an Index of 100k realistic pods, divided by 100k.

Each run is a fresh interpreter (``--child``): load the pods' JSON bytes,
measure RSS, decode the pods with msgspec into ``podindex.model.Pod`` in pages
of 500, each trimmed with ``index.sharing.pod`` as the watcher does, and apply them
with ``Index.replace_pods`` (what the initial LIST does), drop
everything but the index, measure RSS again. The input bytes are part of the
baseline, so the difference is the decoded pods plus the index (its lookup
tables and the pre-encoded ``/pod`` answers). A second pass under tracemalloc
gives the Python-allocated bytes alone (no allocator slack).

    .venv/bin/python bench/bench_memory.py [--pods 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc

import msgspec

from _common import median, note, peak_rss_kb, pod_lines, rss_kb, run_python, table, write_results

TARGET_BYTES_PER_POD = 4096


def child(n: int, trace: bool) -> dict[str, float]:
    from podindex.index import Index
    from podindex.model import Pod

    lines = pod_lines(n)
    decoder = msgspec.json.Decoder(Pod)
    gc.collect()
    if trace:
        tracemalloc.start()
    before = rss_kb()
    t0 = time.perf_counter()
    index = Index()
    pods: list[Pod] = []
    for start in range(0, len(lines), 500):
        page = [decoder.decode(line) for line in lines[start : start + 500]]
        pods.extend(map(index.sharing.pod, page))
    decoded = time.perf_counter() - t0
    gc.collect()
    after_decode = rss_kb()
    traced_decode = tracemalloc.get_traced_memory()[0] if trace else 0
    t1 = time.perf_counter()
    index.replace_pods("default", pods, time.time())
    indexed = time.perf_counter() - t1
    del pods
    gc.collect()
    after = rss_kb()
    traced = tracemalloc.get_traced_memory()[0] if trace else 0
    assert len(index) == n and len(index.answers) == n, (len(index), len(index.answers))
    bodies = sum(len(r.body) for r in index.pods.values())
    return {
        "pods": n,
        "json_bytes_per_pod": sum(map(len, lines)) / n,
        "rss_bytes_per_pod": (after - before) * 1024 / n,
        "rss_decoded_only_bytes_per_pod": (after_decode - before) * 1024 / n,
        "traced_bytes_per_pod": traced / n,
        "traced_decoded_only_bytes_per_pod": traced_decode / n,
        "answer_body_bytes_per_pod": bodies / n,
        "decode_us_per_pod": decoded / n * 1e6,
        "replace_pods_us_per_pod": indexed / n * 1e6,
        "peak_rss_mb": peak_rss_kb() / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.pods, args.trace)))
        return

    note(f"building/loading {args.pods} pods (cached under bench/results/cache) ...")
    pod_lines(args.pods)
    runs = []
    for i in range(args.runs):
        runs.append(run_python("bench_memory.py", "--child", "--pods", str(args.pods)))
        note(f"run {i + 1}: {runs[-1]['rss_bytes_per_pod']:.0f} B/pod RSS")
    traced = run_python("bench_memory.py", "--child", "--trace", "--pods", str(args.pods))
    keys = [
        "rss_bytes_per_pod",
        "rss_decoded_only_bytes_per_pod",
        "answer_body_bytes_per_pod",
        "json_bytes_per_pod",
        "decode_us_per_pod",
        "replace_pods_us_per_pod",
        "peak_rss_mb",
    ]
    medians = {k: median(r[k] for r in runs) for k in keys}
    medians["traced_bytes_per_pod"] = traced["traced_bytes_per_pod"]
    medians["traced_decoded_only_bytes_per_pod"] = traced["traced_decoded_only_bytes_per_pod"]
    rows = [
        (k, medians[k])
        for k in [*keys, "traced_bytes_per_pod", "traced_decoded_only_bytes_per_pod"]
    ]
    print(f"memory per indexed pod, {args.pods} pods, median of {args.runs} runs")
    print(table(["metric", "value"], rows))
    verdict = "met" if medians["rss_bytes_per_pod"] <= TARGET_BYTES_PER_POD else "MISSED"
    print(f"target <= {TARGET_BYTES_PER_POD} B/pod RSS: {verdict}")
    path = write_results(
        "memory",
        {
            "command": " ".join(["bench/bench_memory.py", *sys.argv[1:]]),
            "pods": args.pods,
            "runs": runs,
            "traced_run": traced,
            "median": medians,
            "target_bytes_per_pod": TARGET_BYTES_PER_POD,
            "target_met": verdict == "met",
        },
    )
    note(f"wrote {path}")


if __name__ == "__main__":
    main()
