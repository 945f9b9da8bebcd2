"""Memory of a whole ``podindex serve`` (what a container's memory limit must hold).

bench_sync.py measures the index alone; a container also holds granian's
main process, the worker's web stack, the history writer and its lease book.
For each cluster size this starts the emulator (its own process, not counted)
and ``podindex serve`` against it with a SQLite history, waits for ``/ready``
and then for history to be written, and sums the RSS (and the peak, VmHWM)
of the serve process and its worker: the figure a cgroup sees.

    .venv/bin/python bench/bench_serve_rss.py [--pods 0 10000 50000] [--settle 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import PYTHON, ApiServer, peak_rss_kb, rss_kb, table, write_results


def children(pid: int) -> list[int]:
    """Every descendant: granian's worker, and the history writer process under it."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    direct = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [p for child in direct for p in (child, *children(child))]


def measure(pods: int, settle: float, workdir: Path) -> dict[str, Any]:
    api = ApiServer(pods, workdir, source="sim")
    api.start()
    port = 18000 + os.getpid() % 1000
    serve = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "podindex",
            "serve",
            "--server",
            api.url,
            "--token-file",
            str(api.token_file),
            "--listen",
            f"127.0.0.1:{port}",
            "--store",
            f"sqlite:///{workdir}/history-{pods}.db",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        started = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                    break
            except OSError:
                assert serve.poll() is None, "podindex serve exited"
                time.sleep(0.2)
        ready_s = time.monotonic() - started
        time.sleep(settle)  # history written, the lease book built
        pids = [serve.pid, *children(serve.pid)]
        return {
            "pods": pods,
            "ready_s": round(ready_s, 2),
            "processes": len(pids),
            "rss_mb": sum(rss_kb(p) for p in pids) / 1024,
            "peak_mb": sum(peak_rss_kb(p) for p in pids) / 1024,
        }
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)
        api.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, nargs="+", default=[0, 10000, 50000])
    parser.add_argument("--settle", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-rss-") as workdir:
        results = [measure(n, args.settle, Path(workdir)) for n in args.pods]
    idle = next((r["rss_mb"] for r in results if r["pods"] == 0), None)
    rows = []
    for r in results:
        per_pod = (
            f"{(r['rss_mb'] - idle) * 1024 * 1024 / r['pods']:.0f} B"
            if idle is not None and r["pods"]
            else "-"
        )
        rows.append([r["pods"], r["ready_s"], f"{r['rss_mb']:.0f}", f"{r['peak_mb']:.0f}", per_pod])
    print(table(["pods", "ready s", "RSS MB", "peak MB", "RSS/pod over idle"], rows))
    write_results("serve_rss", {"runs": results})


if __name__ == "__main__":
    main()
