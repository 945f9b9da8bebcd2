"""One WebSocket log stream end to end: emulator → podindex → client, lines per second.

The emulator (in this process) holds a pod; a real ``podindex serve``
process follows its container's log for one WebSocket client (in this
process, aiohttp), which subscribes, then the emulator emits ``--lines``
lines as fast as it can. Lines per second from the first line received to
the last, median of ``--runs``; the emulator's own rate alone (no podindex)
is reported beside it as the ceiling of this setup.

    .venv/bin/python bench/bench_logs.py [--lines 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from _common import PYTHON, free_port, median, note, table, wait_ready, write_results

TARGET_LINES_PER_S = 50_000
TOKEN = "bench-logs"
READER = "bench-reader"


async def follow(url: str, headers: dict[str, str], lines: int, emit: Any, *, batch: bool) -> float:
    """Subscribe, start the emitter, count lines: lines per second once they flow."""
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.ws_connect(url, max_msg_size=0) as ws,
    ):
        await ws.send_json(
            {
                "type": "subscribe",
                "container": "app",
                "follow": True,
                "tailLines": 0,
                "batch": batch,
            }
        )
        await asyncio.sleep(0.3)  # the follow is open before the first line
        emitting = asyncio.create_task(emit())
        seen = 0
        first = 0.0
        while seen < lines:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"stream ended after {seen} lines: {message}")
            if seen == 0:
                first = time.perf_counter()
            if batch:
                seen += message.data.count('"timestamp"')
            elif '"log"' in message.data:
                seen += 1
        elapsed = time.perf_counter() - first
        await emitting
    return lines / elapsed


async def direct(sim_url: str, lines: int, emit: Any) -> float:
    """The emulator alone: the same follow read straight from its log endpoint."""
    url = f"{sim_url}/api/v1/namespaces/bench/pods/talker/log"
    params = {"container": "app", "follow": "true", "tailLines": "0", "timestamps": "true"}
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
        session.get(url, params=params) as response,
    ):
        await asyncio.sleep(0.3)
        emitting = asyncio.create_task(emit())
        seen = 0
        first = 0.0
        async for chunk in response.content.iter_any():
            if seen == 0:
                first = time.perf_counter()
            seen += chunk.count(b"\n")
            if seen >= lines:
                break
        elapsed = time.perf_counter() - first
        await emitting
    return lines / elapsed


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from podindex.api.auth import token_digest
    from podindex.sim import FakeCluster

    work = Path(tempfile.mkdtemp(prefix="podindex-bench-logs-"))
    (work / "token").write_text(TOKEN)
    access = work / "access.yaml"
    access.write_text(
        f"tokens:\n  - {{name: bench, role: reader, sha256: {token_digest(READER)}}}\n"
    )
    results: dict[str, list[float]] = {
        "podindex, a message per line": [],
        "podindex, batched": [],
        "emulator alone": [],
    }
    async with FakeCluster(token=TOKEN, log_tick=None, log_max_lines=args.lines + 10) as sim:
        sim.create_pod("bench", "talker", node="node-1", ip="10.9.0.1")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODINDEX_")}
        env.update(
            PODINDEX_SERVER=sim.url,
            PODINDEX_TOKEN_FILE=str(work / "token"),
            PODINDEX_TOKENS_FILE=str(access),
            PODINDEX_STORE=f"sqlite:///{work}/h.db",
            PODINDEX_LOG_LEVEL="warning",
        )
        server = subprocess.Popen(
            [PYTHON, "-m", "podindex", "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            cwd=work,
            start_new_session=True,
        )
        try:
            await wait_ready(f"http://127.0.0.1:{port}")
            url = f"ws://127.0.0.1:{port}/ws/clusters/default/namespaces/bench/pods/talker/logs"
            for run in range(args.runs):

                async def emit() -> None:
                    await sim.pump_log_lines("bench", "talker", "app", args.lines, batch=2000)

                reader = {"Authorization": f"Bearer {READER}"}
                single = await follow(url, reader, args.lines, emit, batch=False)
                results["podindex, a message per line"].append(single)
                batched = await follow(url, reader, args.lines, emit, batch=True)
                results["podindex, batched"].append(batched)
                alone = await direct(sim.url, args.lines, emit)
                results["emulator alone"].append(alone)
                note(
                    f"run {run + 1}: per line {single:,.0f} lines/s, batched {batched:,.0f}, "
                    f"emulator alone {alone:,.0f}"
                )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
    return {k: median(v) for k, v in results.items()} | {"runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    names = ("podindex, a message per line", "podindex, batched", "emulator alone")
    print(table(["path", "lines/s (median)"], [[n, f"{results[n]:,.0f}"] for n in names]))
    for name in names[:2]:
        verdict = "met" if results[name] >= TARGET_LINES_PER_S else "missed"
        print(f"target >= {TARGET_LINES_PER_S:,} lines/s ({name}): {verdict}")
    write_results("logs", {"lines": args.lines, **results})


if __name__ == "__main__":
    main()
