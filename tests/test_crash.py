"""kill -9 during a burst of pushes: after a restart, nothing acknowledged is missing.

The service runs as a real process (``podindex serve --watch false``, a
broker) over real HTTP, on both history backends. Agents push pods and mark
some dead as fast as they can; the process is killed with SIGKILL in the
middle; a new process on the same store must have every push and every
mark it answered 200 to, in its history and in its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth import ADMIN_TOKEN, bearer, standard_tokens
from tests.test_e2e_serve import start_podindex, stop, wait_ready

AGENTS = 8


async def burst(base: str, acked: dict[str, dict[str, Any]], dead: set[str]) -> None:
    """Push pods (and mark every fifth dead) until the server goes away."""

    async def agent(n: int, client: httpx.AsyncClient) -> None:
        i = 0
        while True:
            name = f"p-{n}-{i}"
            ip = f"10.{n}.{i // 250}.{i % 250 + 1}"
            body = {"pod_name": name, "pod_namespace": "ns", "pod_ip": ip, "node_name": f"n{n}"}
            try:
                response = await client.post("/pod/spec", json=body)
                if response.status_code == 200:
                    acked[name] = body
                if i % 5 == 4:
                    mark = {"pod_name": name, "pod_namespace": "ns", "pod_ip": ip}
                    response = await client.post("/pod/mark_dead", json=mark)
                    if response.status_code == 200 and response.json()["marked"] == 1:
                        dead.add(name)
            except httpx.TransportError:
                return  # killed
            i += 1

    async with httpx.AsyncClient(base_url=base, timeout=10, headers=bearer(ADMIN_TOKEN)) as client:
        await asyncio.gather(*(agent(n, client) for n in range(AGENTS)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("writer_process", ["false", "true"])
async def test_nothing_acknowledged_is_lost_to_a_kill_9(
    store_url: str, tmp_path: Path, writer_process: str
) -> None:
    env = {
        "PODINDEX_STORE": store_url,
        "PODINDEX_WATCH": "false",
        "PODINDEX_TOKENS_FILE": str(standard_tokens(tmp_path)),
        "PODINDEX_STORE_WRITER_PROCESS": writer_process,
    }
    process, base = start_podindex("serve", env=env)
    acked: dict[str, dict[str, Any]] = {}
    dead: set[str] = set()
    try:
        await wait_ready(base, process)
        pushing = asyncio.create_task(burst(base, acked, dead))
        while len(acked) < 400:
            await asyncio.sleep(0.05)
            assert not pushing.done(), "the agents stopped before the kill"
        # The whole process group, as a container runtime kills it: granian's
        # main process and its worker both die at once.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        await asyncio.wait_for(pushing, 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()

    restarted, base = start_podindex("serve", env=env)
    try:
        await wait_ready(base, restarted)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            rows = {r["pod_name"]: r for r in (await client.get("/pod/info")).json()}
            missing = sorted(set(acked) - set(rows))
            assert not missing, f"{len(missing)} acknowledged pushes lost, e.g. {missing[:5]}"
            for name, body in acked.items():
                assert rows[name]["pod_ip"] == body["pod_ip"]
            revived = sorted(n for n in dead if not rows[n]["is_dead"])
            assert not revived, f"acknowledged marks lost: {revived[:5]}"
            # Memory too: live pushed pods answer lookups again after the restart.
            live = [b for n, b in acked.items() if n not in dead and not rows[n]["is_dead"]]
            for body in live[:: max(1, len(live) // 50)]:
                answer = (await client.get("/pod", params={"ip": body["pod_ip"]})).json()
                assert answer["name"] == body["pod_name"], answer
    finally:
        output = stop(restarted)
        assert "Traceback" not in output, output
