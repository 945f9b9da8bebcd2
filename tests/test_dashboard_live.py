"""The dashboard's live sessions end to end: a real ``podindex serve`` against the emulator,
a WebSocket client on a real socket. Logs follow and resume; a shell runs and exits."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from podindex.sim import FakeCluster
from tests.auth import ADMIN_TOKEN, READER_TOKEN, bearer, standard_tokens
from tests.test_e2e_serve import TOKEN, start_podindex, stop, wait_ready

WS = "/ws/clusters/default/namespaces/team-a/pods/{name}/{kind}"


@dataclass
class Live:
    sim: FakeCluster
    http: str
    ws: str
    process: subprocess.Popen[bytes]
    output: str | None = None

    def stop(self) -> str:
        """Stop podindex (once) and return what it printed."""
        if self.output is None:
            self.output = stop(self.process)
        return self.output


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with FakeCluster(token=TOKEN, bookmark_interval=0.5, log_tick=None) as sim:
        sim.create_pod("team-a", "web-1", node="node-1", ip="10.4.0.1")
        sim.create_pod("team-a", "two", node="node-1", ip="10.4.0.2", containers=["app", "proxy"])
        token_file = tmp_path / "kube-token"
        token_file.write_text(TOKEN)
        env = {
            "PODINDEX_SERVER": sim.url,
            "PODINDEX_TOKEN_FILE": str(token_file),
            "PODINDEX_TOKENS_FILE": str(standard_tokens(tmp_path)),
            "PODINDEX_STORE": f"sqlite:///{tmp_path}/h.db",
            "PODINDEX_LOG_LEVEL": "info",
        }
        process, url = start_podindex("serve", env=env)
        running = Live(sim, url, url.replace("http://", "ws://"), process)
        try:
            await wait_ready(url, process)
            yield running
        finally:
            output = running.stop()
        assert "Traceback" not in output, output
        for token in (ADMIN_TOKEN, READER_TOKEN, TOKEN):
            assert token not in output


async def next_logs(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        message = await asyncio.wait_for(ws.receive_json(), 10)
        if message["type"] != "heartbeat":
            got.append(message)
    return got


async def test_a_followed_log_resumes_after_a_reconnect_without_gaps_or_repeats(
    live: Live,
) -> None:
    live.sim.write_log("team-a", "web-1", "app", "one\ntwo\nthree\n")
    url = live.ws + WS.format(name="web-1", kind="logs")
    async with aiohttp.ClientSession(headers=bearer(READER_TOKEN)) as session:
        async with session.ws_connect(url) as ws:
            await ws.send_json({"type": "subscribe", "container": "app", "follow": True})
            first = await next_logs(ws, 3)
            assert [m["data"] for m in first] == ["one", "two", "three"]
            assert all(m["type"] == "log" and m["timestamp"].endswith("Z") for m in first)
            live.sim.write_log("team-a", "web-1", "app", "four\n")
            (four,) = await next_logs(ws, 1)
            assert four["data"] == "four"
        # Written while the client was away, some within the same second as "four".
        live.sim.write_log("team-a", "web-1", "app", "five\nsix\n")
        async with session.ws_connect(url) as ws:
            await ws.send_json(
                {
                    "type": "subscribe",
                    "container": "app",
                    "follow": True,
                    "sinceTime": four["timestamp"],
                    "timestamps": True,
                }
            )
            resumed = await next_logs(ws, 2)
            assert [m["data"].split(" ", 1)[1] for m in resumed] == ["five", "six"]
            assert resumed[0]["data"].startswith(resumed[0]["timestamp"] + " ")
            # The pod goes: the follow ends with an end message.
            live.sim.delete_pod("team-a", "web-1", 0)
            (end,) = await next_logs(ws, 1)
            assert end == {"type": "end"}


async def test_a_log_subscription_without_a_container_names_them(live: Live) -> None:
    url = live.ws + WS.format(name="two", kind="logs")
    async with (
        aiohttp.ClientSession(headers=bearer(READER_TOKEN)) as session,
        session.ws_connect(url) as ws,
    ):
        await ws.send_json({"type": "subscribe", "follow": True})
        error = await ws.receive_json()
        assert error["type"] == "error" and error["code"] == 400
        assert "choose one of: [app proxy]" in error["message"]


async def test_a_shell_runs_resizes_and_reports_its_exit_code(live: Live) -> None:
    url = live.ws + WS.format(name="web-1", kind="exec") + "?container=app&tty=false"
    async with (
        aiohttp.ClientSession(headers=bearer(ADMIN_TOKEN)) as session,
        session.ws_connect(url) as ws,
    ):
        await ws.send_json({"type": "resize", "cols": 120, "rows": 40})
        await ws.send_json({"type": "input", "data": "echo hello\n"})
        output = ""
        while "hello" not in output:
            message = await asyncio.wait_for(ws.receive_json(), 10)
            assert message["type"] == "output", message
            output += message["data"]
        await ws.send_json({"type": "input", "data": "nosuch\n"})
        await ws.send_json({"type": "input", "data": "exit 3\n"})
        messages = []
        while not messages or messages[-1]["type"] != "exit":
            messages.append(await asyncio.wait_for(ws.receive_json(), 10))
        assert messages[-1]["code"] == 3
        assert any(
            m.get("stream") == "stderr" and "nosuch: not found" in m["data"] for m in messages
        )
        closing = await ws.receive()
        assert closing.type == aiohttp.WSMsgType.CLOSE
    session_seen = live.sim.exec_sessions[-1]
    assert session_seen.command == ["/bin/sh"] and (120, 40) in session_seen.sizes


async def test_rest_logs_and_events_from_the_emulator(live: Live) -> None:
    live.sim.write_log("team-a", "two", "proxy", "ready\n")
    live.sim.record_event("team-a", "two", "Warning", "BackOff", "Back-off restarting", count=4)
    base = "/api/clusters/default/namespaces/team-a/pods/two"
    async with httpx.AsyncClient(base_url=live.http, headers=bearer(READER_TOKEN)) as client:
        logs = (await client.get(base + "/logs", params={"container": "proxy"})).json()
        assert logs["data"]["logs"] == "ready\n"
        events = (await client.get(base + "/events")).json()["data"]
        assert any(e["reason"] == "BackOff" and e["count"] == 4 for e in events)


async def test_every_shell_session_is_audited(live: Live) -> None:
    url = live.ws + WS.format(name="web-1", kind="exec") + "?container=app&command=true"
    async with (
        aiohttp.ClientSession(headers=bearer(ADMIN_TOKEN)) as session,
        session.ws_connect(url) as ws,
    ):
        while (await asyncio.wait_for(ws.receive_json(), 10))["type"] != "exit":
            pass
    await asyncio.sleep(0.3)
    # The process's log: JSON lines on stderr; the audit lines carry who, what and how it ended.
    stdout = live.stop()
    audits = [json.loads(line) for line in stdout.splitlines() if '"podindex.audit"' in line]
    events = [a["audit"]["event"] for a in audits]
    assert events == ["start", "end"]
    assert audits[0]["audit"]["by"].endswith("admin") and audits[1]["audit"]["exitCode"] == 0
    assert ADMIN_TOKEN not in stdout


async def test_a_batched_subscription_gets_each_chunks_lines_in_one_message(live: Live) -> None:
    url = live.ws + WS.format(name="web-1", kind="logs")
    async with (
        aiohttp.ClientSession(headers=bearer(READER_TOKEN)) as session,
        session.ws_connect(url) as ws,
    ):
        await ws.send_json({"type": "subscribe", "container": "app", "batch": True})
        await asyncio.sleep(0.2)
        live.sim.emit_log_lines("team-a", "web-1", "app", 500)
        lines: list[dict[str, Any]] = []
        while len(lines) < 500:
            message = await asyncio.wait_for(ws.receive_json(), 10)
            if message["type"] == "logs":
                assert 0 < len(message["lines"]) <= 1000
                lines += message["lines"]
        assert [line["data"] for line in lines] == [f"line {n}" for n in range(500)]


async def test_every_rest_route_and_its_status_codes_over_a_real_socket(live: Live) -> None:
    base = "/api/clusters/default"
    one = base + "/namespaces/team-a/pods/web-1"
    cases: list[tuple[str, str, dict[str, str], dict[str, str], int]] = [
        ("GET", base + "/pods", {}, bearer(READER_TOKEN), 200),
        ("GET", base + "/pods", {"pageSize": "0"}, bearer(READER_TOKEN), 400),
        ("GET", "/api/clusters/nowhere/pods", {}, bearer(READER_TOKEN), 404),
        ("GET", one, {}, bearer(READER_TOKEN), 200),
        ("GET", base + "/namespaces/team-a/pods/nope", {}, bearer(READER_TOKEN), 404),
        ("GET", one + "/events", {}, bearer(READER_TOKEN), 200),
        ("GET", one + "/logs", {}, bearer(READER_TOKEN), 200),
        ("GET", base + "/namespaces/team-a/pods/two/logs", {}, bearer(READER_TOKEN), 400),
        ("DELETE", one, {}, {}, 401),
        ("DELETE", one, {}, bearer(READER_TOKEN), 403),
        ("DELETE", one, {"gracePeriod": "x"}, bearer(ADMIN_TOKEN), 400),
        ("DELETE", one, {"gracePeriod": "0"}, bearer(ADMIN_TOKEN), 200),
    ]
    async with httpx.AsyncClient(base_url=live.http) as client:
        for method, path, params, headers, status in cases:
            response = await client.request(method, path, params=params, headers=headers)
            body = response.json()
            assert (response.status_code, body["code"]) == (status, status), (method, path)
            assert set(body) == {"code", "message", "data"}
    assert live.sim.get_pod("team-a", "web-1") is None


async def test_a_client_that_leaves_ends_the_shell_and_the_audit_says_so(live: Live) -> None:
    url = live.ws + WS.format(name="web-1", kind="exec") + "?container=app&tty=false"
    async with (
        aiohttp.ClientSession(headers=bearer(ADMIN_TOKEN)) as session,
        session.ws_connect(url) as ws,
    ):
        await ws.send_str("not json")  # a bad frame is answered and skipped
        error = await asyncio.wait_for(ws.receive_json(), 10)
        assert error["type"] == "error" and error["code"] == 400
        await ws.send_json({"type": "input", "data": "echo still here\n"})
        output = ""
        while "still here" not in output:
            message = await asyncio.wait_for(ws.receive_json(), 10)
            output += message.get("data", "")
    # The client left an idle shell: podindex closes the session with Kubernetes.
    for _ in range(100):
        if live.sim.exec_sessions and live.sim.exec_sessions[-1].ended:
            break
        await asyncio.sleep(0.05)
    assert live.sim.exec_sessions[-1].ended, "the kubelet's session was left open"
    await asyncio.sleep(0.2)
    ends = [
        json.loads(line)["audit"]
        for line in live.stop().splitlines()
        if '"podindex.audit"' in line and '"end"' in line
    ]
    assert ends and ends[-1]["endedBy"] == "client" and ends[-1]["exitCode"] is None
