"""``GET /pod?ip=`` throughput and latency with wrk, beside nginx answering the same bytes.

Starts a Kubernetes API (``podindex sim`` when available, else the static
bench API) with ``--pods`` realistic pods, then ``podindex serve`` (granian,
one worker) against it, waits for the initial sync, takes a real ``/pod``
answer and has nginx (one worker, and ``auto`` workers) serve exactly those
bytes, and a bare granian ASGI app (bench/_bare_asgi.py) serves them too
(granian's own ceiling, to separate podindex's cost from the server's). wrk runs ``-t2 -c64 -d10s --latency`` with a Lua script that cycles
through ``--ips`` known pod IPs (nginx ignores the query string, so both
sides see the same requests). Runs alternate podindex / nginx; the report
gives medians and the per-pair ratio. Nothing is pinned: wrk's two threads
share the 2 cores with the server under test.

    .venv/bin/python bench/bench_http.py [--pods 100000] [--runs 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _common import (
    PYTHON,
    ApiServer,
    PodFactory,
    cpu_seconds,
    median,
    note,
    table,
    write_results,
)

TARGET_RATIO = 0.25
TARGET_P99_MS = 5.0

LUA = """
local ips = {}
for line in io.lines("%(ips)s") do ips[#ips + 1] = line end
local n = #ips
local i = 0
local thread_no = 0
local threads = {}

setup = function(thread)
  thread:set("offset", thread_no * 7919)
  thread_no = thread_no + 1
  table.insert(threads, thread)
end

init = function(args)
  i = offset or 0
end

request = function()
  i = i + 1
  return wrk.format("GET", "/pod?ip=" .. ips[(i %% n) + 1])
end

done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"bytes\\":%%d,"
    .. "\\"status_errors\\":%%d,\\"connect_errors\\":%%d,\\"read_errors\\":%%d,"
    .. "\\"timeouts\\":%%d,\\"p50_us\\":%%d,\\"p90_us\\":%%d,\\"p99_us\\":%%d,"
    .. "\\"p999_us\\":%%d,\\"max_us\\":%%d,\\"mean_us\\":%%f}\\n",
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""

NGINX_CONF = """
worker_processes %(workers)s;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %(dir)s/tmp;
  proxy_temp_path %(dir)s/tmp;
  fastcgi_temp_path %(dir)s/tmp;
  uwsgi_temp_path %(dir)s/tmp;
  scgi_temp_path %(dir)s/tmp;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server_tokens off;
  open_file_cache max=10;
  server {
    listen 127.0.0.1:%(port)d;
    location = /pod {
      default_type application/json;
      alias %(dir)s/body.json;
    }
  }
}
"""


def ensure_tools() -> None:
    """nginx and wrk, from apt when missing (benchmarks run on demand, never in CI)."""
    missing = [tool for tool in ("nginx", "wrk") if not which_tool(tool)]
    if not missing:
        return
    note(f"installing {' '.join(missing)} with apt-get ...")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", *missing],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def which_tool(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for p in pids:
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError):
            total += cpu_seconds(p)
    return total


def run_wrk(port: int, script: Path, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    cmd = [
        which_tool("wrk") or "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    cpu0 = tree_cpu(server_pid)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    cpu = tree_cpu(server_pid) - cpu0
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    r: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["p99_ms"] = r["p99_us"] / 1000
    r["p50_ms"] = r["p50_us"] / 1000
    r["server_cpu_s"] = cpu
    r["req_per_server_cpu_s"] = r["requests"] / cpu if cpu else 0.0
    r["non_2xx_or_errors"] = (
        r["status_errors"] + r["connect_errors"] + r["read_errors"] + r["timeouts"]
    )
    return r


def start_nginx(work: Path, workers: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = work / f"nginx-{workers}.conf"
    (work / "tmp").mkdir(exist_ok=True)
    conf.write_text(NGINX_CONF % {"workers": workers, "dir": work, "port": port})
    proc = subprocess.Popen([which_tool("nginx") or "nginx", "-c", str(conf), "-p", str(work)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if get(f"http://127.0.0.1:{port}/pod?ip=x")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError("nginx did not start; see " + str(work / "error.log"))


def stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_bare_granian(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """granian, one worker, serving bench/_bare_asgi.py: the same body with no podindex code."""
    port = free_port()
    granian = str(Path(PYTHON).parent / "granian")
    proc = subprocess.Popen(
        [
            granian,
            "--interface",
            "asgi",
            "--workers",
            "1",
            "--no-ws",
            "--no-access-log",
            "--log-level",
            "warning",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--working-dir",
            str(Path(__file__).resolve().parent),
            "_bare_asgi:app",
        ],
        env={**os.environ, "BARE_BODY_FILE": str(work / "body.json")},
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if get(f"http://127.0.0.1:{port}/pod?ip=x")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError("the bare granian app did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--ips", type=int, default=10_000, help="distinct IPs wrk cycles through")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--source", choices=["auto", "sim", "static"], default="auto")
    parser.add_argument("--no-nginx-auto", action="store_true", help="skip nginx with auto workers")
    parser.add_argument(
        "--no-bare", action="store_true", help="skip the bare granian app with the same body"
    )
    args = parser.parse_args()
    ensure_tools()

    work = Path(tempfile.mkdtemp(prefix="podindex-bench-http-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user
    api = ApiServer(args.pods, work, args.source)
    service: subprocess.Popen[bytes] | None = None
    nginx_procs: list[subprocess.Popen[bytes]] = []
    try:
        note(f"starting the Kubernetes API ({api.source}) with {args.pods} pods ...")
        t0 = time.monotonic()
        api.start()
        note(f"  up at {api.url} after {time.monotonic() - t0:.1f}s")
        port = free_port()
        service = subprocess.Popen(
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
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        ips = _known_ips(base, args, service, api.source)
        sync_s = time.monotonic() - t0
        note(f"  podindex serve synced {args.pods} pods in {sync_s:.1f}s")
        status, body = get(f"{base}/pod?ip={ips[0]}")
        assert status == 200, (status, body[:200])
        (work / "body.json").write_bytes(body)
        (work / "ips.txt").write_text("\n".join(ips) + "\n")
        script = work / "pods.lua"
        script.write_text(LUA % {"ips": work / "ips.txt"})

        nginx1, nginx1_port = start_nginx(work, "1")
        nginx_procs.append(nginx1)
        targets: list[tuple[str, int, int]] = [
            ("podindex", port, service.pid),
            ("nginx-1w", nginx1_port, nginx1.pid),
        ]
        if not args.no_nginx_auto:
            (work / "auto").mkdir(mode=0o755)
            (work / "auto" / "body.json").write_bytes(body)
            nginx_auto, nginx_auto_port = start_nginx(work / "auto", "auto")
            nginx_procs.append(nginx_auto)
            targets.append(("nginx-auto", nginx_auto_port, nginx_auto.pid))

        if not args.no_bare:
            bare, bare_port = start_bare_granian(work)
            nginx_procs.append(bare)
            targets.append(("granian-bare", bare_port, bare.pid))

        # A short warm-up of each side (connections, caches, first-request paths).
        warm = argparse.Namespace(**{**vars(args), "duration": 2})
        for _, p, pid in targets:
            run_wrk(p, script, warm, pid)

        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
        for run in range(args.runs):
            for name, p, pid in targets:
                r = run_wrk(p, script, args, pid)
                results[name].append(r)
                note(
                    f"run {run + 1} {name:10s} {r['rps']:>9,.0f} req/s  p50 {r['p50_ms']:.2f} ms"
                    f"  p99 {r['p99_ms']:.2f} ms  errors {r['non_2xx_or_errors']}"
                    f"  server CPU {r['server_cpu_s']:.1f}s"
                )
    finally:
        for proc in nginx_procs:
            stop(proc)
        stop(service)
        api.stop()

    med = {
        name: {
            k: median(r[k] for r in rs)
            for k in ("rps", "p50_ms", "p99_ms", "server_cpu_s", "req_per_server_cpu_s")
        }
        for name, rs in results.items()
    }
    pair_ratios = [
        a["rps"] / b["rps"] for a, b in zip(results["podindex"], results["nginx-1w"], strict=True)
    ]
    ratio = median(pair_ratios)
    ratio_auto = (
        median(
            a["rps"] / b["rps"]
            for a, b in zip(results["podindex"], results["nginx-auto"], strict=True)
        )
        if "nginx-auto" in results
        else None
    )
    ratio_bare = (
        median(
            a["rps"] / b["rps"]
            for a, b in zip(results["podindex"], results["granian-bare"], strict=True)
        )
        if "granian-bare" in results
        else None
    )
    rows = [
        (
            name,
            m["rps"],
            m["p50_ms"],
            m["p99_ms"],
            m["server_cpu_s"] / args.duration,
            m["req_per_server_cpu_s"],
        )
        for name, m in med.items()
    ]
    print(
        f"GET /pod?ip= with wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{len(ips)} IPs cycled, {args.pods} pods indexed, body {len(body)} B, "
        f"median of {args.runs} interleaved runs"
    )
    print(table(["server", "req/s", "p50 ms", "p99 ms", "server cores", "req/CPU-s"], rows))
    print(f"podindex / nginx (1 worker): {ratio:.3f}  (per-pair ratios {pair_ratios})")
    if ratio_auto is not None:
        print(f"podindex / nginx (auto workers): {ratio_auto:.3f}")
    if ratio_bare is not None:
        print(f"podindex / bare granian app (same body): {ratio_bare:.3f}")
    p99 = med["podindex"]["p99_ms"]
    met_ratio = ratio >= TARGET_RATIO
    met_p99 = p99 <= TARGET_P99_MS
    print(
        f"target ratio >= {TARGET_RATIO}: {'met' if met_ratio else 'MISSED'}; "
        f"p99 <= {TARGET_P99_MS} ms: {'met' if met_p99 else 'MISSED'}"
    )
    path = write_results(
        "http",
        {
            "command": " ".join(["bench/bench_http.py", *sys.argv[1:]]),
            "api_source": api.source,
            "pods": args.pods,
            "ips_cycled": len(ips),
            "body_bytes": len(body),
            "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration}s --latency",
            "service_sync_s": sync_s,
            "runs": results,
            "median": med,
            "ratio_vs_nginx_1_worker": ratio,
            "pair_ratios_vs_nginx_1_worker": pair_ratios,
            "ratio_vs_nginx_auto": ratio_auto,
            "ratio_vs_granian_bare": ratio_bare,
            "targets": {"ratio": TARGET_RATIO, "p99_ms": TARGET_P99_MS},
            "target_met": {"ratio": met_ratio, "p99": met_p99},
        },
    )
    note(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


def _known_ips(
    base: str, args: argparse.Namespace, service: subprocess.Popen[bytes], source: str
) -> list[str]:
    """Wait until the service answers, then the IPs to cycle through.

    The static API's pods have the bench factory's IPs; with the emulator the
    IPs come from the service's ``GET /pods``.
    """
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(f"podindex serve exited with {service.returncode}")
        try:
            status, _ = get(f"{base}/ready")
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise TimeoutError("podindex serve did not become ready")
    if source == "static":
        factory = PodFactory()
        return [factory.ip(i) for i in range(min(args.ips, args.pods))]
    status, body = get(f"{base}/pods", timeout=120)
    if status != 200:
        raise RuntimeError(f"GET /pods answered {status}: {body[:200]!r}")
    return _ips_from_pods(json.loads(body), args.ips)


def _ips_from_pods(answer: Any, limit: int) -> list[str]:
    items = answer.get("items", answer.get("pods", [])) if isinstance(answer, dict) else answer
    ips: list[str] = []
    for item in items:
        ip = item.get("pod_ip") or (item.get("status") or {}).get("podIP")
        if ip:
            ips.append(ip)
        if len(ips) >= limit:
            break
    if not ips:
        raise RuntimeError("no pod IPs found in GET /pods")
    return ips


if __name__ == "__main__":
    main()
