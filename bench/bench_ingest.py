"""Watch-event ingestion: decode (``WatchDriver.feed``) + apply (``PodSink.apply``) per second.

An Index holding 100k realistic pods receives 100k pre-built watch-event
lines, shaped like the API server's (``{"type":..,"object":{"kind":"Pod",..}}``,
managedFields and all): 70 % MODIFIED (a container restart bumps the status),
15 % DELETED, 15 % ADDED (new pods, half of them reusing a freed IP). Each run
starts from a fresh index; the loop is timed as a whole, then decode alone
and apply alone (on pre-decoded events) so the split is visible.

    .venv/bin/python bench/bench_ingest.py [--pods 100000] [--events 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import sys
import time
from collections.abc import Iterator

import msgspec

from _common import PodFactory, cached_lines, median, note, pod_lines, table, write_results

TARGET_EVENTS_PER_S = 50_000


def build_events(n_pods: int, n_events: int, seed: int = 7) -> Iterator[bytes]:
    factory = PodFactory()
    rng = random.Random(seed)
    live = list(range(n_pods))
    ips = {i: factory.ip(i) for i in live}
    restarts: dict[int, int] = {}
    freed: list[str] = []
    next_new = n_pods
    rv = 1000 + n_pods
    for _ in range(n_events):
        rv += 1
        r = rng.random()
        if r < 0.15 and live:
            k = rng.randrange(len(live))
            i = live[k]
            live[k] = live[-1]
            live.pop()
            freed.append(ips[i])
            yield factory.event_line("DELETED", i, rv, ip=ips[i], restarts=restarts.get(i, 0))
        elif r < 0.30:
            i = next_new
            next_new += 1
            ip = freed.pop(rng.randrange(len(freed))) if freed and rng.random() < 0.5 else None
            ips[i] = ip or factory.ip(i)
            live.append(i)
            yield factory.event_line("ADDED", i, rv, ip=ips[i])
        else:
            i = live[rng.randrange(len(live))]
            restarts[i] = restarts.get(i, 0) + 1
            yield factory.event_line("MODIFIED", i, rv, ip=ips[i], restarts=restarts[i])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one combined pass")
    parser.add_argument(
        "--gc",
        choices=["on", "freeze", "off"],
        default="on",
        help="garbage collector during the timed loops: as in production (on), "
        "gc.freeze() after building the index (freeze), or gc.disable() (off)",
    )
    parser.add_argument(
        "--listing",
        action="store_true",
        help="build the index's listing first, as the dashboard's or a search's first use does",
    )
    args = parser.parse_args()

    from podindex.cluster import PodSink
    from podindex.index import Index
    from podindex.kube.watcher import WatchDriver
    from podindex.model import Pod

    note(f"building/loading {args.pods} pods and {args.events} events (cached) ...")
    decoder = msgspec.json.Decoder(Pod)
    pods = [decoder.decode(line) for line in pod_lines(args.pods)]
    lines = cached_lines(
        f"events-{args.pods}-{args.events}", lambda: build_events(args.pods, args.events)
    )
    n = len(lines)
    line_bytes = sum(map(len, lines)) / n

    def fresh() -> tuple[Index, PodSink]:
        gc.unfreeze()
        gc.enable()
        index = Index()
        index.replace_pods("default", pods, time.time())
        if args.listing:
            assert len(index.listing) == len(index)
        gc.collect()
        if args.gc == "freeze":
            gc.freeze()
        elif args.gc == "off":
            gc.disable()
        return index, PodSink(index, "default", time.time)

    def combined(sink: PodSink) -> float:
        driver: WatchDriver[Pod] = WatchDriver(Pod, "1")
        feed, apply = driver.feed, sink.apply
        t = time.perf_counter()
        for line in lines:
            event = feed(line)
            if event is not None:
                apply(event[0], event[1])
        return time.perf_counter() - t

    rows = []
    results = []
    for run in range(args.runs):
        index, sink = fresh()
        elapsed = combined(sink)
        live = len(index)
        del index, sink
        gc.unfreeze()
        gc.enable()
        gc.collect()
        # decode alone (into a list, as in a LIST page), GC as configured
        if args.gc == "off":
            gc.disable()
        driver: WatchDriver[Pod] = WatchDriver(Pod, "1")
        t = time.perf_counter()
        events = [driver.feed(line) for line in lines]
        decode_s = time.perf_counter() - t
        # apply alone, into a fresh index
        index, sink = fresh()
        t = time.perf_counter()
        for event in events:
            if event is not None:
                sink.apply(event[0], event[1])
        apply_s = time.perf_counter() - t
        del index, sink, events
        r = {
            "events": n,
            "combined_s": elapsed,
            "events_per_s": n / elapsed,
            "decode_us_per_event": decode_s / n * 1e6,
            "apply_us_per_event": apply_s / n * 1e6,
            "pods_after": live,
        }
        results.append(r)
        note(f"run {run + 1}: {r['events_per_s']:,.0f} events/s")
    med = {k: median(r[k] for r in results) for k in results[0]}
    rows = [
        ("events per second (decode + apply)", med["events_per_s"]),
        ("µs per event, decode + apply", 1e6 / med["events_per_s"]),
        ("µs per event, decode only (feed)", med["decode_us_per_event"]),
        ("µs per event, apply only (PodSink.apply)", med["apply_us_per_event"]),
        ("event line bytes (mean)", line_bytes),
        ("pods in index after", med["pods_after"]),
    ]
    print(
        f"watch-event ingestion, {args.pods} pods, {n} events, gc {args.gc}, "
        f"listing {'built' if args.listing else 'not built'}, median of {args.runs} runs"
    )
    print(table(["metric", "value"], rows))
    verdict = "met" if med["events_per_s"] >= TARGET_EVENTS_PER_S else "MISSED"
    print(f"target >= {TARGET_EVENTS_PER_S:,} events/s: {verdict}")

    profile_top: list[str] = []
    if args.profile:
        _index, sink = fresh()
        profiler = cProfile.Profile()
        profiler.enable()
        combined(sink)
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime")
        width = 60
        for func, (_cc, nc, tt, ct, _callers) in sorted(
            stats.stats.items(),  # type: ignore[attr-defined]
            key=lambda kv: -kv[1][2],
        )[:15]:
            name = f"{func[0].rsplit('/', 1)[-1]}:{func[1]}({func[2]})"[:width]
            profile_top.append(f"{name:{width}s} calls={nc:>8} tottime={tt:6.3f}s cum={ct:6.3f}s")
        print("cProfile, top by own time:")
        print("\n".join(profile_top))

    path = write_results(
        "ingest" if args.gc == "on" else f"ingest-gc-{args.gc}",
        {
            "command": " ".join(["bench/bench_ingest.py", *sys.argv[1:]]),
            "pods": args.pods,
            "events": n,
            "gc": args.gc,
            "mix": {"MODIFIED": 0.70, "DELETED": 0.15, "ADDED": 0.15},
            "runs": results,
            "median": med,
            "event_line_bytes": line_bytes,
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "target_met": verdict == "met",
            "profile_top": profile_top,
        },
    )
    note(f"wrote {path}")


if __name__ == "__main__":
    main()
