"""Shared helpers for the benchmarks: machine facts, RSS, results files, realistic pods.

Pods are built from the real kube-apiserver recording of a pod
(``../shared/k8s-recordings/02-list-pods-all-namespaces-limit2.json``),
widened to what a production pod carries: 8 labels, 2 containers (spec and
status), an owner reference to a ReplicaSet, and managedFields for all of it.
Each pod is about 6 KB of JSON, like the real thing.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
RECORDING = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "k8s-recordings"
    / "02-list-pods-all-namespaces-limit2.json"
)


# --- machine and process facts ----------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mb": mem_kb // 1024,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "msgspec": msgspec.__version__,
        "loadavg_at_write": _loadavg(),
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def _status_kb(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size now, in KiB."""
    return _status_kb("VmRSS", pid)


def peak_rss_kb(pid: int | str = "self") -> int:
    """High-water mark of the resident set, in KiB."""
    return _status_kb("VmHWM", pid)


# --- results ----------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>-<stamp>.json`` and ``<name>-latest.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    payload = {"benchmark": name, "when": stamp, "machine": machine(), **data}
    text = json.dumps(payload, indent=2, sort_keys=False)
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def run_python(script: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``bench/<script>`` in a fresh interpreter; it prints one JSON object last."""
    out = subprocess.run(
        [PYTHON, str(ROOT / "bench" / script), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- realistic pods -----------------------------------------------------------

_LABEL_KEYS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "pod-template-hash",
    "team",
)


def _template() -> dict[str, Any]:
    recording = json.loads(RECORDING.read_text())
    pod: dict[str, Any] = json.loads(recording["response"]["body"])["items"][0]
    return pod


class PodFactory:
    """Realistic pods of ``n_namespaces`` x deployments, on ``n_nodes`` nodes.

    ``pod(i)`` is pod number ``i`` (a stable name, uid and IP for each i);
    ``rv`` and ``restarts`` vary what a MODIFIED event would change.
    """

    def __init__(self, n_namespaces: int = 50, n_nodes: int = 200, seed: int = 1) -> None:
        self.template = _template()
        self.template_bytes = msgspec.json.encode(self.template)
        self.n_namespaces = n_namespaces
        self.n_nodes = n_nodes
        self.rng = random.Random(seed)

    @staticmethod
    def ip(i: int) -> str:
        """A unique pod IP in 10.64.0.0/10 for each i (host part 1..254)."""
        block, host = divmod(i, 254)
        return f"10.{64 + (block >> 8)}.{block & 0xFF}.{host + 1}"

    @staticmethod
    def uid(i: int) -> str:
        return f"{i:08x}-5f3c-4b6b-9dc7-{(i * 2654435761) & 0xFFFFFFFFFFFF:012x}"

    def pod(self, i: int, rv: int, *, restarts: int = 0, ip: str | None = None) -> dict[str, Any]:
        p: dict[str, Any] = msgspec.json.decode(self.template_bytes)
        # 20k ReplicaSets (400 deployments in each of 50 namespaces), ~5 pods each.
        rs = i % 20_000
        ns = f"team-{rs % self.n_namespaces:03d}"
        deployment = f"svc-{(rs // self.n_namespaces) % 400:03d}"
        rs_hash = f"{(rs * 7919) % 0xFFFFF:05x}7d9c"
        name = f"{deployment}-{rs_hash}-{i:06x}"
        node = f"node-{i % self.n_nodes:04d}"
        host_ip = f"10.0.{(i % self.n_nodes) >> 8}.{(i % self.n_nodes) & 0xFF or 1}"
        pod_ip = ip or self.ip(i)
        uid = self.uid(i)
        labels = {
            "app.kubernetes.io/name": deployment,
            "app.kubernetes.io/instance": f"{deployment}-prod",
            "app.kubernetes.io/component": "backend",
            "app.kubernetes.io/part-of": f"product-{i % 13}",
            "app.kubernetes.io/version": "1.24.3",
            "app.kubernetes.io/managed-by": "Helm",
            "pod-template-hash": rs_hash,
            "team": ns,
        }
        meta = p["metadata"]
        meta.update(
            name=name,
            generateName=f"{deployment}-{rs_hash}-",
            namespace=ns,
            uid=uid,
            resourceVersion=str(rv),
            labels=labels,
            ownerReferences=[
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{deployment}-{rs_hash}",
                    "uid": self.uid(10_000_000 + rs),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        )
        spec_mf = meta["managedFields"][0]["fieldsV1"]
        spec_mf["f:metadata"] = {
            "f:generateName": {},
            "f:labels": {".": {}, **{f"f:{k}": {} for k in _LABEL_KEYS}},
            "f:ownerReferences": {".": {}, f'k:{{"uid":"{self.uid(10_000_000 + rs)}"}}': {}},
        }
        containers = spec_mf["f:spec"]["f:containers"]
        (entry,) = containers.values()
        spec_mf["f:spec"]["f:containers"] = {
            'k:{"name":"app"}': entry,
            'k:{"name":"sidecar"}': dict(entry),
        }
        status_mf = meta["managedFields"][1]["fieldsV1"]["f:status"]
        status_mf["f:podIPs"] = {".": {}, f'k:{{"ip":"{pod_ip}"}}': {".": {}, "f:ip": {}}}
        spec = p["spec"]
        spec["nodeName"] = node
        app = spec["containers"][0]
        app["image"] = f"registry.example/{deployment}:1.24.3"
        sidecar = json.loads(json.dumps(app))
        sidecar["name"] = "sidecar"
        sidecar["image"] = "registry.example/envoy:1.31.2"
        spec["containers"] = [app, sidecar]
        status = p["status"]
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
        statuses = status.get("containerStatuses") or []
        if statuses:
            first = statuses[0]
            first["image"] = app["image"]
            first["restartCount"] = restarts
            second = json.loads(json.dumps(first))
            second["name"] = "sidecar"
            second["image"] = sidecar["image"]
            second["containerID"] = "containerd://" + f"{i:016x}" * 4
            status["containerStatuses"] = [first, second]
        return p

    def pod_bytes(self, i: int, rv: int, **kw: Any) -> bytes:
        return msgspec.json.encode(self.pod(i, rv, **kw))

    def event_line(self, kind: str, i: int, rv: int, **kw: Any) -> bytes:
        pod = self.pod(i, rv, **kw)
        obj = {"kind": "Pod", "apiVersion": "v1", **pod}
        return msgspec.json.encode({"type": kind, "object": obj})


CACHE = RESULTS / "cache"


def cached_lines(name: str, build: Any) -> list[bytes]:
    """Newline-separated JSON lines built once by ``build()`` and kept under bench/results/cache."""
    path = CACHE / f"{name}.jsonl"
    if path.exists():
        return path.read_bytes().split(b"\n")
    lines: list[bytes] = list(build())
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(lines))
    tmp.replace(path)
    return lines


def pod_lines(n: int) -> list[bytes]:
    """``n`` realistic pods (list-item form), one JSON document each; cached.

    The factory (which reads the recording) is made only when the cache is missing.
    """

    def build() -> Any:
        factory = PodFactory()
        return (factory.pod_bytes(i, 1000 + i) for i in range(n))

    return cached_lines(f"pods-{n}", build)


# --- processes ------------------------------------------------------------------


def sim_available() -> bool:
    """``podindex sim`` can run (the emulator's entry point exists)."""
    import importlib.util

    try:
        return importlib.util.find_spec("podindex.sim.run") is not None
    except ImportError:
        return False


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} not written within {timeout}s")


class ApiServer:
    """The Kubernetes API the service syncs from, in its own process.

    ``podindex sim --churn-rate 0`` when the emulator is available (and
    ``source`` is not forced), else the benchmarks' static API
    (bench/_staticapi.py) serving the same realistic pods.
    """

    def __init__(self, pods: int, workdir: Path, source: str = "auto") -> None:
        self.pods = pods
        self.workdir = workdir
        if source == "auto":
            source = "sim" if sim_available() else "static"
        self.source = source
        self.token_file = workdir / "token"
        self.token_file.write_text(os.urandom(16).hex())
        self.token_file.chmod(0o600)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 600) -> str:
        ready = self.workdir / f"api-url-{os.getpid()}-{time.monotonic_ns()}"
        if self.source == "sim":
            cmd = [
                PYTHON,
                "-m",
                "podindex",
                "sim",
                "--port",
                "0",
                "--pods",
                str(self.pods),
                "--churn-rate",
                "0",
                "--token-file",
                str(self.token_file),
                "--ready-file",
                str(ready),
            ]
        else:
            cmd = [
                PYTHON,
                str(ROOT / "bench" / "_staticapi.py"),
                "--pods",
                str(self.pods),
                "--ready-file",
                str(ready),
            ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        self.url = wait_for_file(ready, self.proc, timeout)
        return self.url

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_ready(base: str, timeout: float = 60.0) -> None:
    """Until ``base``/ready answers 200 (a podindex serve started by a benchmark)."""
    import asyncio

    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(base + "/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"podindex at {base} did not become ready in {timeout:.0f}s")
