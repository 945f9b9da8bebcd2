"""``/authz`` beside ``GET /pod?ip=``: the forward-auth hot path against the lookup hot path.

Starts a Kubernetes API (the emulator when available, else the static bench
API) with ``--pods`` pods, then ``podindex serve`` (granian, one worker)
trusting 127.0.0.1 as a proxy, waits for the initial sync and takes
``--ips`` (pod IP, namespace) pairs from ``GET /pods``. wrk then asks, in
interleaved rounds on the same server process:

* ``GET /pod?ip=<ip>`` — the lookup fast path (as in bench_http.py);
* ``GET /authz`` as a proxy would: ``X-Forwarded-For: <ip>``,
  ``X-Forwarded-Uri: /fission-function/<its namespace>/fn`` (an allow: the
  caller's own namespace, so every answer is a 200 with the X-Pod-* headers),
  with the trusted-proxy check, the chain walk, the Fission preset and the
  policy on every request.

wrk runs ``-t2 -c64 -d10s --latency`` and shares the 2 cores with the server,
so only the ratio between the two within a session means much.

    .venv/bin/python bench/bench_authz.py [--pods 100000] [--runs 3] [--duration 10]
    .venv/bin/python bench/bench_authz.py --in-process [--pods 100000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import PYTHON, ApiServer, median, note, table, write_results
from bench_http import ensure_tools, free_port, get, run_wrk, stop

LUA = """
local ips, namespaces = {}, {}
for line in io.lines("%(pairs)s") do
  local ip, ns = line:match("^(%%S+) (%%S+)$")
  ips[#ips + 1] = ip
  namespaces[#namespaces + 1] = ns
end
local n = #ips
local i = 0
local thread_no = 0

setup = function(thread)
  thread:set("offset", thread_no * 7919)
  thread_no = thread_no + 1
end

init = function(args)
  i = offset or 0
end

request = function()
  i = i + 1
  local k = (i %% n) + 1
  %(request)s
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

POD_REQUEST = 'return wrk.format("GET", "/pod?ip=" .. ips[k])'
AUTHZ_REQUEST = (
    'return wrk.format("GET", "/authz", {["X-Forwarded-For"] = ips[k], '
    '["X-Forwarded-Uri"] = "/fission-function/" .. namespaces[k] .. "/fn", '
    '["X-Forwarded-Method"] = "POST"})'
)


def wait_ready(base: str, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(f"podindex serve exited with {service.returncode}")
        try:
            if get(f"{base}/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("podindex serve did not become ready")


def pod_pairs(base: str, limit: int) -> list[tuple[str, str]]:
    status, body = get(f"{base}/pods?limit={limit}", timeout=120)
    if status != 200:
        raise RuntimeError(f"GET /pods answered {status}: {body[:200]!r}")
    pairs = [
        (item["pod_ip"], item["namespace"])
        for item in json.loads(body)["items"]
        if item.get("pod_ip") and item.get("state") == "live"
    ]
    if not pairs:
        raise RuntimeError("no pod IPs in GET /pods")
    return pairs


def in_process(pods: int, repeat: int = 15, number: int = 20_000) -> dict[str, float]:
    """Microseconds per answer with no server: ``Authz.answer`` against ``answer_ip``.

    The index holds ``pods`` synthetic pods in 50 namespaces; each side asks for
    one caller (best of ``repeat`` rounds, so other tenants' load counts least).
    """
    import timeit

    from podindex.api.authz import Authz
    from podindex.api.lookup import answer_ip, ip_parameter
    from podindex.model import ObjectMeta, Pod, PodIP, PodSpec, PodStatus
    from podindex.service import Service
    from podindex.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="podindex-bench-authz-"))
    service = Service(Settings(store=f"sqlite:///{work}/h.db", trusted_proxies="127.0.0.1/32"))
    items = []
    for i in range(pods):
        ip = f"10.{244 + i // 65536}.{i // 256 % 256}.{i % 256}"
        meta = ObjectMeta(
            name=f"pod-{i}",
            namespace=f"ns-{i % 50}",
            uid=f"uid-{i}",
            resourceVersion="1",
            creationTimestamp="2026-11-30T00:00:00Z",
            labels={"app": f"app-{i % 500}"},
        )
        status = PodStatus(phase="Running", podIP=ip, podIPs=(PodIP(ip),))
        items.append(Pod(metadata=meta, spec=PodSpec(nodeName="node-1"), status=status))
    service.index.replace_pods("default", items, time.time())
    service.history.loaded = True
    service.settings = Settings(store=service.settings.store, watch=False)  # ready: no cluster
    authz = Authz(service, Settings(trusted_proxies="127.0.0.1/32"))
    ip = items[pods // 2].status.podIP
    namespace = items[pods // 2].metadata.namespace
    headers = [
        (b"host", b"functions.example.com"),
        (b"user-agent", b"Go-http-client/1.1"),
        (b"x-forwarded-for", ip.encode()),
        (b"x-forwarded-host", b"functions.example.com"),
        (b"x-forwarded-method", b"POST"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-uri", f"/fission-function/{namespace}/fn".encode()),
    ]
    client = ("127.0.0.1", 50000)
    assert authz.answer(headers, client)[0] == 200
    query = f"ip={ip}".encode()
    assert answer_ip(service, ip_parameter(query))[0] == 200
    shutil.rmtree(work, ignore_errors=True)

    def best(fn: Any) -> float:
        return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6

    return {
        "authz_us": best(lambda: authz.answer(headers, client)),
        "pod_us": best(lambda: answer_ip(service, ip_parameter(query))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--ips", type=int, default=10_000, help="distinct callers wrk cycles")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--source", choices=["auto", "sim", "static"], default="auto")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="only time the answers in this process (no server, no wrk)",
    )
    args = parser.parse_args()
    if args.in_process:
        figures = in_process(args.pods)
        print(
            f"in process, {args.pods} pods: /authz answer {figures['authz_us']:.2f} us, "
            f"/pod?ip= answer {figures['pod_us']:.2f} us (best of 15 rounds)"
        )
        return
    ensure_tools()

    work = Path(tempfile.mkdtemp(prefix="podindex-bench-authz-"))
    api = ApiServer(args.pods, work, args.source)
    service: subprocess.Popen[bytes] | None = None
    try:
        note(f"starting the Kubernetes API ({api.source}) with {args.pods} pods ...")
        api.start()
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
                "--store",
                f"sqlite:///{work}/history.db",
                "--trusted-proxies",
                "127.0.0.1/32",
            ],
            stdout=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, service)
        pairs = pod_pairs(base, args.ips)
        (work / "pairs.txt").write_text("".join(f"{ip} {ns}\n" for ip, ns in pairs))
        scripts = {}
        for name, request in (("pod", POD_REQUEST), ("authz", AUTHZ_REQUEST)):
            script = work / f"{name}.lua"
            script.write_text(LUA % {"pairs": work / "pairs.txt", "request": request})
            scripts[name] = script
        ip, namespace = pairs[0]
        probe = urllib.request.Request(
            f"{base}/authz",
            headers={
                "X-Forwarded-For": ip,
                "X-Forwarded-Uri": f"/fission-function/{namespace}/fn",
            },
        )
        with urllib.request.urlopen(probe, timeout=5) as response:
            assert response.status == 200 and response.headers["X-Pod-Namespace"] == namespace
        warm = argparse.Namespace(**{**vars(args), "duration": 2})
        for script in scripts.values():
            run_wrk(port, script, warm, service.pid)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in scripts}
        for run in range(args.runs):
            for name, script in scripts.items():
                r = run_wrk(port, script, args, service.pid)
                results[name].append(r)
                note(
                    f"run {run + 1} {name:6s} {r['rps']:>9,.0f} req/s  p50 {r['p50_ms']:.2f} ms"
                    f"  p99 {r['p99_ms']:.2f} ms  non-2xx/errors {r['non_2xx_or_errors']}"
                )
        metrics = get(f"{base}/metrics")[1].decode()
    finally:
        stop(service)
        api.stop()

    keys = ("rps", "p50_ms", "p99_ms", "req_per_server_cpu_s")
    med = {name: {k: median(r[k] for r in rs) for k in keys} for name, rs in results.items()}
    ratios = [a["rps"] / b["rps"] for a, b in zip(results["authz"], results["pod"], strict=True)]
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {len(pairs)} callers, "
        f"{args.pods} pods indexed, median of {args.runs} interleaved runs"
    )
    rows = [
        (name, m["rps"], m["p50_ms"], m["p99_ms"], m["req_per_server_cpu_s"])
        for name, m in med.items()
    ]
    print(table(["endpoint", "req/s", "p50 ms", "p99 ms", "req/CPU-s"], rows))
    print(f"/authz / /pod?ip=: {median(ratios):.3f} (per-pair {[round(r, 3) for r in ratios]})")
    allowed = [
        line for line in metrics.splitlines() if line.startswith("podindex_authz_decisions_total")
    ]
    print("\n".join(line for line in allowed if not line.endswith(" 0.0")))
    path = write_results(
        "authz",
        {
            "command": " ".join(["bench/bench_authz.py", *sys.argv[1:]]),
            "api_source": api.source,
            "pods": args.pods,
            "callers": len(pairs),
            "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration}s --latency",
            "runs": results,
            "median": med,
            "ratio_authz_vs_pod": median(ratios),
            "pair_ratios": ratios,
            "decisions": allowed,
        },
    )
    note(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
