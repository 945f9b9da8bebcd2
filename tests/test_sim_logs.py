"""pods/{name}/log on the emulator, over real sockets: options, errors, previous, follow, rate."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from podindex.sim import FakeCluster
from podindex.sim.logs import format_timestamp, parse_rfc3339

TOKEN = "t0ken"
LOG = "/api/v1/namespaces/team-a/pods/{}/log"
STAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    sim = FakeCluster(token=TOKEN, log_tick=None, grace_scale=0.001)
    sim.create_node("node-1")
    sim.create_pod("team-a", "web-1", node="node-1")
    sim.create_pod("team-a", "multi", node="node-1", containers=["app", "sidecar"])
    sim.create_pod("team-a", "pending", node="node-1", phase="Pending")
    sim.create_pod("team-a", "unscheduled")
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        yield session


async def get(
    http: aiohttp.ClientSession, cluster: FakeCluster, pod: str, **query: Any
) -> tuple[int, dict[str, str], bytes]:
    params = {k: str(v) for k, v in query.items()}
    async with http.get(cluster.url + LOG.format(pod), params=params) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_plain_log_with_headers(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    assert cluster.write_log("team-a", "web-1", None, "hello\nworld\n") == 2
    cluster.write_log("team-a", "web-1", "app", b"third")
    status, headers, body = await get(http, cluster, "web-1")
    assert status == 200
    assert headers["Content-Type"] == "text/plain"
    assert headers["Cache-Control"] == "no-cache, private"
    assert "Audit-Id" in headers
    assert body == b"hello\nworld\nthird\n"


async def test_timestamps_are_rfc3339_nano_fixed(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    before = time.time_ns()
    cluster.write_log("team-a", "web-1", None, "a\nb")
    _, _, body = await get(http, cluster, "web-1", timestamps="true")
    lines = body.splitlines()
    assert [STAMP.sub(b"", line) for line in lines] == [b"a", b"b"]
    assert all(STAMP.match(line) for line in lines)
    stamps = [parse_rfc3339(line.split(b" ", 1)[0].decode()) for line in lines]
    assert before <= stamps[0] < stamps[1]
    assert format_timestamp(1_700_000_000_000_000_123) == "2023-11-14T22:13:20.000000123Z"


async def test_tail_since_and_limit(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    cluster.emit_log_lines("team-a", "web-1", None, 10)
    _, _, body = await get(http, cluster, "web-1", tailLines=3)
    assert body == b"line 7\nline 8\nline 9\n"
    _, _, body = await get(http, cluster, "web-1", tailLines=0)
    assert body == b""
    _, _, body = await get(http, cluster, "web-1", limitBytes=10)
    assert body == b"line 0\nlin"
    _, _, stamped = await get(http, cluster, "web-1", timestamps=1)
    sixth = stamped.splitlines()[6].split(b" ", 1)[0].decode()
    _, _, body = await get(http, cluster, "web-1", sinceTime=sixth)
    # sinceTime reaches the kubelet in whole seconds: the whole second comes back.
    assert body.splitlines() == [f"line {n}".encode() for n in range(10)]
    _, _, body = await get(http, cluster, "web-1", sinceTime="2099-01-01T00:00:00Z")
    assert body == b""
    _, _, body = await get(http, cluster, "web-1", sinceSeconds=60)
    assert len(body.splitlines()) == 10


async def test_option_errors(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    status, headers, body = await get(http, cluster, "web-1", tailLines=-1)
    assert status == 422 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'PodLogOptions "web-1" is invalid: tailLines: Invalid value: -1: '
        "must be greater than or equal to 0",
        "reason": "Invalid",
        "details": {
            "name": "web-1",
            "kind": "PodLogOptions",
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: -1: must be greater than or equal to 0",
                    "field": "tailLines",
                }
            ],
        },
        "code": 422,
    }
    status, _, body = await get(http, cluster, "web-1", sinceSeconds=0)
    assert status == 422 and json.loads(body)["details"]["causes"][0]["field"] == "sinceSeconds"
    status, _, body = await get(http, cluster, "web-1", limitBytes=0)
    assert status == 422
    status, _, body = await get(
        http, cluster, "web-1", sinceSeconds=5, sinceTime="2026-01-01T00:00:00Z"
    )
    assert status == 422 and "at most one of `sinceTime` or `sinceSeconds`" in body.decode()
    status, _, body = await get(http, cluster, "web-1", follow="maybe")
    assert status == 400


def failure(body: bytes, code: int, reason: str) -> str:
    status = json.loads(body)
    assert status["kind"] == "Status" and status["status"] == "Failure"
    assert (status["code"], status["reason"]) == (code, reason)
    return str(status["message"])


async def test_container_errors(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    status, _, body = await get(http, cluster, "multi")
    assert status == 400
    assert (
        failure(body, 400, "BadRequest")
        == "a container name must be specified for pod multi, choose one of: [app sidecar]"
    )
    status, _, body = await get(http, cluster, "multi", container="nope")
    assert failure(body, 400, "BadRequest") == "container nope is not valid for pod multi"
    status, _, body = await get(http, cluster, "multi", container="sidecar")
    assert status == 200
    status, _, body = await get(http, cluster, "pending")
    assert (
        failure(body, 400, "BadRequest")
        == 'container "app" in pod "pending" is waiting to start: ContainerCreating'
    )
    status, _, body = await get(http, cluster, "missing")
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "missing" not found',
        "reason": "NotFound",
        "details": {"name": "missing", "kind": "pods"},
        "code": 404,
    }
    # No node, no kubelet: the API server answers an empty 200.
    status, headers, body = await get(http, cluster, "unscheduled")
    assert (status, body, headers["Content-Type"]) == (200, b"", "text/plain")


async def test_waiting_reasons_as_the_kubelet_words_them(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    def waiting(reason: str) -> None:
        def apply(obj: dict[str, Any]) -> None:
            cs = obj["status"]["containerStatuses"][0]
            cs["state"] = {"waiting": {"reason": reason}}
            cs["lastState"] = {}

        cluster.update_pod("team-a", "web-1", apply)

    waiting("ImagePullBackOff")
    _, _, body = await get(http, cluster, "web-1")
    assert failure(body, 400, "BadRequest") == (
        'container "app" in pod "web-1" is waiting to start: trying and failing to pull image'
    )
    waiting("ErrImagePull")
    _, _, body = await get(http, cluster, "web-1")
    assert failure(body, 400, "BadRequest").endswith("is waiting to start: image can't be pulled")


async def test_previous_instance(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    _, _, body = await get(http, cluster, "web-1", previous="true")
    assert failure(body, 400, "BadRequest") == (
        'previous terminated container "app" in pod "web-1" not found'
    )
    cluster.write_log("team-a", "web-1", None, "first life")
    old_id = cluster.current_container_id("team-a", "web-1")
    pod = cluster.restart_container("team-a", "web-1", exit_code=137)
    cs = pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 1 and cs["containerID"] != old_id
    assert cs["lastState"]["terminated"]["containerID"] == old_id
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    cluster.write_log("team-a", "web-1", None, "second life")
    _, _, body = await get(http, cluster, "web-1", previous="true")
    assert body == b"first life\n"
    _, _, body = await get(http, cluster, "web-1")
    assert body == b"second life\n"


async def test_crashloop_serves_the_last_terminated_instance(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    cluster.write_log("team-a", "web-1", None, "panic: boom")
    cluster.crash_container("team-a", "web-1")
    pod = cluster.get_pod("team-a", "web-1")
    assert pod is not None
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == (
        "CrashLoopBackOff"
    )
    _, _, body = await get(http, cluster, "web-1")
    assert body == b"panic: boom\n"


async def read_until(resp: aiohttp.ClientResponse, want: bytes) -> bytes:
    got = b""
    while want not in got:
        chunk = await asyncio.wait_for(resp.content.readany(), 5)
        assert chunk, f"stream ended before {want!r}: {got!r}"
        got += chunk
    return got


async def test_follow_streams_and_ends_with_the_container(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    cluster.write_log("team-a", "web-1", None, "old")
    url = cluster.url + LOG.format("web-1")
    async with http.get(url, params={"follow": "true", "tailLines": "1"}) as resp:
        assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
        assert await read_until(resp, b"old\n") == b"old\n"
        cluster.write_log("team-a", "web-1", None, "new")
        assert await read_until(resp, b"new\n") == b"new\n"
        cluster.set_pod_phase("team-a", "web-1", "Succeeded")
        rest = await asyncio.wait_for(resp.content.read(), 5)
        assert rest == b""
    # A terminated container's log is still there, and follow ends at once.
    async with http.get(url, params={"follow": "true"}) as resp:
        assert await asyncio.wait_for(resp.read(), 5) == b"old\nnew\n"


async def test_follow_ends_on_restart_and_delete(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    url = cluster.url + LOG.format("web-1")
    async with http.get(url, params={"follow": "true"}) as resp:
        cluster.write_log("team-a", "web-1", None, "x")
        await read_until(resp, b"x\n")
        cluster.restart_container("team-a", "web-1")
        assert await asyncio.wait_for(resp.content.read(), 5) == b""
    async with http.get(url, params={"follow": "true"}) as resp:
        cluster.write_log("team-a", "web-1", None, "y")
        await read_until(resp, b"y\n")
        assert cluster.active_log_follows == 1
        deleted = cluster.delete_pod("team-a", "web-1")  # graceful: Terminating first
        assert "deletionTimestamp" in deleted["metadata"]
        assert await asyncio.wait_for(resp.content.read(), 5) == b""
    assert cluster.active_log_follows == 0
    status, _, _ = await get(http, cluster, "web-1")
    assert status == 404


async def test_follow_with_limit_bytes_stops(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    url = cluster.url + LOG.format("web-1")
    async with http.get(url, params={"follow": "true", "limitBytes": "8"}) as resp:
        cluster.write_log("team-a", "web-1", None, "12345\n67890")
        assert await asyncio.wait_for(resp.read(), 5) == b"12345\n67"


async def test_heartbeat_lines_are_generated_per_tick() -> None:
    async with FakeCluster(log_tick=0.05) as sim:
        sim.create_node("node-1")
        sim.create_pod("team-a", "web-1", node="node-1")
        async with aiohttp.ClientSession() as http:
            url = sim.url + LOG.format("web-1")
            async with http.get(url, params={"follow": "1", "timestamps": "1"}) as resp:
                got = await read_until(resp, b"heartbeat 3\n")
            lines = got.splitlines()
            assert lines[0].endswith(b"[app] web-1 heartbeat 0")
            assert all(STAMP.match(line) for line in lines)
            # Lazily generated from the instance's start: tail picks the newest ones.
            status, body = 0, b""
            async with http.get(url, params={"tailLines": "2"}) as resp:
                status, body = resp.status, await resp.read()
            assert status == 200 and len(body.splitlines()) == 2


async def test_one_follow_stream_carries_a_high_line_rate(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    total = 100_000
    url = cluster.url + LOG.format("web-1")
    async with http.get(url, params={"follow": "true"}) as resp:
        started = time.perf_counter()
        pump = asyncio.create_task(
            cluster.pump_log_lines("team-a", "web-1", None, total, batch=5000)
        )
        received = 0
        last = b""
        buffer = b""
        while received < total:
            chunk = await asyncio.wait_for(resp.content.readany(), 10)
            assert chunk
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            received += len(lines)
            if lines:
                last = lines[-1]
        elapsed = time.perf_counter() - started
        await pump
    assert last == f"line {total - 1}".encode()
    rate = total / elapsed
    print(f"log follow: {rate:,.0f} lines/s")
    assert rate > 20_000  # the target is 50k/s end to end; leave room for a loaded machine


async def test_restart_after_a_crash_loop_keeps_the_crashed_instance_as_previous(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    cluster.write_log("team-a", "web-1", None, "crashing")
    crashed = cluster.current_container_id("team-a", "web-1")
    cluster.crash_container("team-a", "web-1", exit_code=2)
    pod = cluster.restart_container("team-a", "web-1")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 2 and "running" in cs["state"]
    assert cs["lastState"]["terminated"]["containerID"] == crashed
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    _, _, body = await get(http, cluster, "web-1", previous="true")
    assert body == b"crashing\n"
    _, _, body = await get(http, cluster, "web-1")
    assert body == b""
