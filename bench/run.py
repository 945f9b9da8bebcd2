"""Run every benchmark, one after the other (they must not overlap on a 2-core box).

    .venv/bin/python bench/run.py [memory ingest sync http]

Each benchmark prints its table and writes ``bench/results/<name>-latest.json``
(git-ignored). See BENCHMARKS.md for the figures and how to read them.
"""

from __future__ import annotations

import subprocess
import sys

from _common import PYTHON, ROOT

BENCHMARKS = {
    "memory": ["bench_memory.py", "--pods", "100000", "--runs", "3"],
    "ingest": ["bench_ingest.py", "--pods", "100000", "--events", "100000", "--runs", "5"],
    "sync": ["bench_sync.py", "--pods", "100000", "--runs", "3"],
    "http": ["bench_http.py", "--pods", "100000", "--runs", "3", "--duration", "10"],
    "interfaces": ["bench_interfaces.py", "--runs", "2", "--duration", "5"],
    "history": ["bench_history.py", "--pods", "100000", "--runs", "3"],
    "dashboard": ["bench_dashboard.py", "--pods", "100000", "--requests", "200", "--runs", "3"],
    "logs": ["bench_logs.py", "--lines", "200000", "--runs", "3"],
    "ipsets": ["bench_ipsets.py", "--pods", "100000", "--sets", "1000", "--runs", "3"],
    "authz": ["bench_authz.py", "--pods", "100000", "--runs", "3", "--duration", "10"],
    "serve_rss": ["bench_serve_rss.py", "--pods", "0", "10000", "50000"],
}


def main() -> int:
    names = sys.argv[1:] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        script, *args = BENCHMARKS[name]
        print(f"\n=== {name}: {script} {' '.join(args)}", flush=True)
        code = subprocess.call([PYTHON, str(ROOT / "bench" / script), *args])
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
