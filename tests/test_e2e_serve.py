"""``podindex serve`` and ``podindex demo`` as real processes, over real HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podindex.sim import POD, FakeCluster, populate

TOKEN = "serve-e2e-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_ready(
    base: str,
    process: subprocess.Popen[bytes],
    timeout: float = 30.0,
    verify: ssl.SSLContext | bool = True,
) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, verify=verify) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "podindex exited early"
            try:
                if (await client.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("podindex never became ready")


def start_podindex(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``podindex ARGS --listen 127.0.0.1:<free port>`` as a process; its base URL.

    The environment starts clean of ``PODINDEX_*`` so only ``env`` configures it.
    """
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PODINDEX_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "podindex", *args, "--listen", f"127.0.0.1:{port}"],
        env={**clean, **env},
        cwd=tempfile.mkdtemp(prefix="podindex-e2e-"),  # its default history file goes there
        start_new_session=True,  # its own process group: granian's worker is a child
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM, wait, and return everything the process printed."""
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output.decode(errors="replace") if output else ""


@pytest.fixture
async def sim() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(token=TOKEN, bookmark_interval=0.5, grace_scale=0.01)
    populate(cluster, 500, seed=21)
    await cluster.start()
    yield cluster
    await cluster.stop()


@pytest.mark.timeout(90)
async def test_serve_answers_lookups_from_a_watched_cluster(
    sim: FakeCluster, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    process, base = start_podindex(
        "serve",
        "--server",
        sim.url,
        "--token-file",
        str(token_file),
        "--cluster-id",
        "e2e",
        "--log-level",
        "warning",
        env={"PODINDEX_GRACE_PERIOD": "5"},  # the env spelling of --grace-period
    )
    try:
        await wait_ready(base, process)
        pod = sim.list_objects(POD)[0]
        ip = pod["status"]["podIP"]
        async with httpx.AsyncClient(base_url=base) as client:
            found = await client.get("/pod", params={"ip": ip})
            assert found.status_code == 200
            body = found.json()
            assert body["uid"] == pod["metadata"]["uid"] and body["cluster"] == "e2e"
            assert (await client.get("/pod?ip=300.1.1.1")).status_code == 400
            assert (await client.get("/pod?ip=192.0.2.1")).status_code == 404
            listing = (await client.get("/pods")).json()
            assert listing["count"] == 500

            sim.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], grace_seconds=0)
            for _ in range(100):
                gone = (await client.get("/pod", params={"ip": ip})).json()
                if gone.get("state") == "terminated":
                    break
                await asyncio.sleep(0.05)
            assert gone["state"] == "terminated" and gone["uid"] == pod["metadata"]["uid"]
            metrics = (await client.get("/metrics")).text
            assert 'podindex_cluster_synced{cluster="e2e"} 1.0' in metrics
    finally:
        output = stop(process)
    assert TOKEN not in output  # credentials never reach the logs


@pytest.mark.timeout(90)
async def test_demo_runs_the_emulator_and_the_service(tmp_path: Path) -> None:
    process, base = start_podindex(
        "demo",
        "--pods",
        "300",
        "--churn-rate",
        "50",
        "--log-level",
        "warning",
        env={"KUBECONFIG": str(tmp_path / "none")},
    )
    try:
        await wait_ready(base, process, timeout=60)
        async with httpx.AsyncClient(base_url=base) as client:
            listing = (await client.get("/pods")).json()
            assert listing["count"] >= 300
            ip = next(p["pod_ip"] for p in listing["items"] if p["pod_ip"])
            assert (await client.get("/pod", params={"ip": ip})).status_code in (200, 404)
        lookup = subprocess.run(
            [sys.executable, "-m", "podindex", "lookup", ip, "--server", base],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert lookup.returncode in (0, 1)
        assert lookup.stdout.strip() or lookup.stderr.strip()
    finally:
        stop(process)
    assert process.returncode is not None
