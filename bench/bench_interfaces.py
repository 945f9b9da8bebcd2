"""granian's ASGI against its RSGI interface, each answering the same fixed body.

podindex's ``/pod`` runs at ~83 % of a bare granian ASGI app (bench_http.py),
so the interface itself bounds it; this prices the alternative.

    .venv/bin/python bench/bench_interfaces.py [--runs 2] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, note, stop_process, table

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wrk(port: int, duration: int) -> tuple[float, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c64",
            f"-d{duration}s",
            "--latency",
            f"http://127.0.0.1:{port}/pod?ip=1.2.3.4",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_text = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_text is not None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_text.group(2)]
    return rps, float(p99_text.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    body = Path(tempfile.mkdtemp()) / "body.json"
    body.write_bytes(b'{"x":"' + b"a" * 1040 + b'"}')
    env = {**os.environ, "BARE_BODY_FILE": str(body), "PYTHONPATH": str(HERE)}
    granian = str(Path(sys.executable).with_name("granian"))
    results: dict[str, list[tuple[float, float]]] = {"asgi": [], "rsgi": []}
    for _ in range(args.runs):
        for interface, target in (("asgi", "_bare_asgi:app"), ("rsgi", "_bare_asgi:rsgi_app")):
            port = free_port()
            server = subprocess.Popen(
                [
                    granian,
                    "--interface",
                    interface,
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--no-ws",
                    target,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(2)
                results[interface].append(wrk(port, args.duration))
            finally:
                stop_process(server)
            note(
                f"{interface}: {results[interface][-1][0]:,.0f} req/s, p99 {results[interface][-1][1]:.2f} ms"
            )
    rows = [
        (name, median(r[0] for r in runs), median(r[1] for r in runs))
        for name, runs in results.items()
    ]
    print(f"bare granian, 1 worker, wrk -t2 -c64 -d{args.duration}s, median of {args.runs}")
    print(table(["interface", "req/s", "p99 ms"], rows))


if __name__ == "__main__":
    main()
