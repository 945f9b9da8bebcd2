"""pods/{name}/exec on the emulator over real WebSockets, checked frame by frame."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from podindex.sim import FakeCluster

TOKEN = "t0ken"
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
EXEC = "/api/v1/namespaces/team-a/pods/{}/exec"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SUCCESS = {"metadata": {}, "status": "Success"}


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    sim = FakeCluster(token=TOKEN, log_tick=None, grace_scale=0.01)
    sim.create_node("node-1")
    sim.create_pod("team-a", "web-1", node="node-1", ip="10.244.1.11")
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
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


def query(command: list[str], **flags: Any) -> list[tuple[str, str]]:
    params = [("command", c) for c in command]
    params += [(k, str(v).lower()) for k, v in flags.items()]
    return params


async def connect(
    http: aiohttp.ClientSession,
    cluster: FakeCluster,
    command: list[str],
    *,
    pod: str = "web-1",
    protocols: tuple[str, ...] = (V5,),
    **flags: Any,
) -> aiohttp.ClientWebSocketResponse:
    flags = {"stdout": True, "stderr": True, **flags}
    return await http.ws_connect(
        cluster.url + EXEC.format(pod), params=query(command, **flags), protocols=protocols
    )


CLOSE_CODES: dict[int, int] = {}


async def frames(ws: aiohttp.ClientWebSocketResponse) -> list[tuple[int, bytes]]:
    """Every binary frame until the server closes, as (channel, payload).

    The close frame's code is kept in CLOSE_CODES[id(ws)] (aiohttp's own close_code
    can read 1006 after its auto-close reply races the server's TCP close).
    """
    out: list[tuple[int, bytes]] = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type == aiohttp.WSMsgType.BINARY:
            out.append((msg.data[0], msg.data[1:]))
        else:
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            CLOSE_CODES[id(ws)] = int(msg.data)
            return out


def status_of(received: list[tuple[int, bytes]]) -> dict[str, Any]:
    channel, payload = received[-1]
    assert channel == 3
    status: dict[str, Any] = json.loads(payload)
    return status


def channel_text(received: list[tuple[int, bytes]], channel: int) -> bytes:
    return b"".join(p for c, p in received if c == channel)


async def test_direct_command_frames(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, cluster, ["echo", "hi", "there"])
    assert ws.protocol == V5
    received = await frames(ws)
    assert received == [
        (1, b""),  # the empty frame that tells the client the streams are up
        (1, b"hi there\n"),
        (3, b'{"metadata":{},"status":"Success"}'),
    ]
    assert CLOSE_CODES[id(ws)] == 1000  # a normal close right after the status
    session = cluster.exec_sessions[-1]
    assert (session.command, session.container, session.exit_code) == (
        ["echo", "hi", "there"],
        "app",
        0,
    )
    assert session.ended and session.protocol == V5


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        (V5, "command terminated with non-zero exit code: command terminated with exit code 3"),
        (
            V4,
            "command terminated with non-zero exit code: error executing command "
            "[sh -c echo oops; exit 3], exit code 3",
        ),
    ],
)
async def test_exit_code_status(
    protocol: str, message: str, cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, cluster, ["sh", "-c", "echo oops; exit 3"], protocols=(protocol,))
    assert ws.protocol == protocol
    received = await frames(ws)
    assert status_of(received) == {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    assert cluster.exec_sessions[-1].exit_code == 3


async def test_interactive_shell_without_tty(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    cluster.container_files["/data/greeting"] = b"hello from a file\n"
    ws = await connect(http, cluster, ["/bin/sh"], stdin=True)
    for line in (
        b"echo hello\n",
        b"pwd; cd /app && ls\n",
        b"cat /etc/hostname /data/greeting\n",
        b"nosuch arg\n",
        b"echo $?\n",
        b"exit 7\n",
    ):
        await ws.send_bytes(b"\x00" + line)
    received = await frames(ws)
    assert channel_text(received, 1) == (b"hello\n/\nREADME\nweb-1\nhello from a file\n127\n")
    assert channel_text(received, 2) == b"sh: nosuch: not found\n"
    assert status_of(received)["details"]["causes"][0]["message"] == "7"
    assert bytes(cluster.exec_sessions[-1].received).endswith(b"exit 7\n")


async def test_v5_stdin_close_ends_the_shell(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, cluster, ["sh"], stdin=True)
    await ws.send_bytes(b"\x00echo one\n")
    await ws.send_bytes(b"\xff\x00")  # v5: close the stdin stream
    received = await frames(ws)
    assert channel_text(received, 1) == b"one\n"
    assert status_of(received) == SUCCESS
    assert cluster.exec_sessions[-1].stdin_closed


async def test_tty_echo_prompt_and_resize(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, cluster, ["/bin/sh"], stdin=True, tty=True)
    assert await asyncio.wait_for(ws.receive_bytes(), 5) == b"\x01"
    assert await asyncio.wait_for(ws.receive_bytes(), 5) == b"\x01/ # "
    await ws.send_bytes(b'\x04{"Width":120,"Height":40}\n')
    await ws.send_bytes(b"\x00stty size\r")
    echoed = b""
    while not echoed.endswith(b"/ # "):  # typed characters come back one by one
        echoed += (await asyncio.wait_for(ws.receive_bytes(), 5))[1:]
    assert echoed == b"stty size\r\n40 120\r\n/ # "
    await ws.send_bytes(b'\x04{"Width":100,"Height":30}\n')
    await ws.send_bytes(b"\x00ls /nope\r")
    await ws.send_bytes(b"\x00\x04")  # ^D on an empty line
    received = await frames(ws)
    text = channel_text(received, 1)
    assert text == b"ls /nope\r\nls: /nope: No such file or directory\r\n/ # exit\r\n"
    assert channel_text(received, 2) == b""  # a terminal has one output stream
    assert status_of(received)["details"]["causes"][0]["message"] == "1"
    assert cluster.exec_sessions[-1].sizes == [(120, 40), (100, 30)]


async def test_request_errors(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    async def fails(pod: str, params: list[tuple[str, str]], **headers: str) -> tuple[int, Any]:
        hdrs = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
            "Sec-WebSocket-Protocol": V5,
            **headers,
        }
        async with http.get(cluster.url + EXEC.format(pod), params=params, headers=hdrs) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw.startswith(b"{") else raw)

    ls = query(["ls"], stdout=True)
    status, body = await fails("multi", ls)
    assert (status, body["message"]) == (
        400,
        "a container name must be specified for pod multi, choose one of: [app sidecar]",
    )
    status, body = await fails("multi", [*ls, ("container", "nope")])
    assert (status, body["message"]) == (400, "container nope is not valid for pod multi")
    status, body = await fails("missing", ls)
    assert (status, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'pods "missing" not found',
    )
    status, body = await fails("unscheduled", ls)
    assert body["message"] == "pod unscheduled does not have a host assigned"
    status, body = await fails("web-1", ls, Upgrade="", Connection="")
    assert (status, body["message"]) == (400, "Upgrade request required")
    status, body = await fails("web-1", ls, **{"Sec-WebSocket-Protocol": "channel.k8s.io"})
    assert (status, body) == (403, b"")
    status, body = await fails("web-1", query(["ls"]))
    assert (status, body["message"]) == (
        400,
        "you must specify at least 1 of stdin, stdout, stderr",
    )
    status, body = await fails("web-1", ls, Authorization="Bearer wrong")
    assert (status, body["reason"]) == (401, "Unauthorized")


async def test_bearer_token_in_a_subprotocol(cluster: FakeCluster) -> None:
    entry = "base64url.bearer.authorization.k8s.io." + (
        base64.urlsafe_b64encode(TOKEN.encode()).decode().rstrip("=")
    )
    async with aiohttp.ClientSession() as anonymous:
        ws = await anonymous.ws_connect(
            cluster.url + EXEC.format("web-1"),
            params=query(["hostname"], stdout=True),
            protocols=(entry, V5),
        )
        assert ws.protocol == V5
        assert channel_text(await frames(ws), 1) == b"web-1\n"


async def test_container_not_running(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, cluster, ["ls"], pod="pending")
    received = await frames(ws)
    cause = 'unable to upgrade connection: container not found ("app")'
    assert received[0] == (1, b"")
    assert status_of(received) == {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await connect(http, cluster, ["ls"], pod="pending", protocols=(V4,))
    assert raised.value.status == 500


async def test_unknown_binary(cluster: FakeCluster, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, cluster, ["/bin/bash"])
    status = status_of(await frames(ws))
    assert status["reason"] == "InternalError" and status["code"] == 500
    assert status["message"].startswith(
        "Internal error occurred: Internal error occurred: error executing command in container"
    )
    assert status["message"].endswith(
        'exec: "/bin/bash": stat /bin/bash: no such file or directory: unknown'
    )
    ws = await connect(http, cluster, ["nosuch"], protocols=(V4,))
    status = status_of(await frames(ws))
    assert status["message"].startswith("Internal error occurred: error executing command")
    assert 'exec: "nosuch": executable file not found in $PATH: unknown' in status["message"]


async def test_deleting_the_pod_kills_the_session(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, cluster, ["sleep", "30"])
    assert await asyncio.wait_for(ws.receive_bytes(), 5) == b"\x01"
    cluster.delete_pod("team-a", "web-1")
    received = await frames(ws)
    assert status_of(received)["details"]["causes"][0]["message"] == "137"
    assert cluster.exec_sessions[-1].exit_code == 137


async def test_client_going_away_ends_the_session(
    cluster: FakeCluster, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, cluster, ["sh"], stdin=True)
    await ws.receive_bytes()
    await ws.close()
    for _ in range(50):
        if cluster.exec_sessions[-1].ended:
            break
        await asyncio.sleep(0.02)
    assert cluster.exec_sessions[-1].ended
    assert cluster.exec_sessions[-1].exit_code is None
