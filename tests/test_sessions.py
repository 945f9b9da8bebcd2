"""WebSocket admission for pod sessions, over real sockets: origin, token, role.

A real ``podindex serve`` (a broker: it watches nothing, an agent pushes
the pod), and aiohttp as the WebSocket client.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from podindex.api.sessions import PROTOCOL, TOKEN_PROTOCOL
from tests.auth import ADMIN_TOKEN, READER_TOKEN, bearer, standard_tokens
from tests.test_e2e_serve import start_podindex, stop, wait_ready

LOGS = "/ws/clusters/default/namespaces/team-a/pods/web-1/logs"
EXEC = "/ws/clusters/default/namespaces/team-a/pods/web-1/exec"


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    env = {
        "PODINDEX_WATCH": "false",
        "PODINDEX_STORE": f"sqlite:///{tmp_path}/h.db",
        "PODINDEX_TOKENS_FILE": str(standard_tokens(tmp_path)),
        "PODINDEX_LOOKUP_ACCESS": "reader",
        "PODINDEX_ALLOWED_ORIGINS": "https://dash.example.com",
    }
    process, url = start_podindex("serve", env=env)
    try:
        await wait_ready(url, process)
        async with httpx.AsyncClient(base_url=url, headers=bearer(ADMIN_TOKEN)) as client:
            body = {"pod_name": "web-1", "pod_namespace": "team-a", "pod_ip": "10.3.0.1"}
            assert (await client.post("/pod/spec", json=body)).status_code == 200
        yield url.replace("http://", "ws://")
    finally:
        output = stop(process)
    for token in (ADMIN_TOKEN, READER_TOKEN, "forged"):
        assert token not in output


def token_protocol(token: str) -> str:
    return TOKEN_PROTOCOL + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "headers", "protocols"),
    [
        (LOGS, {}, ()),
        (LOGS, bearer("forged"), ()),
        (LOGS, {**bearer(READER_TOKEN), "Origin": "https://evil.example"}, ()),
        (LOGS, {}, (PROTOCOL, token_protocol("forged"))),
        (EXEC, bearer(READER_TOKEN), ()),  # a shell needs admin
        (LOGS + "?token=" + READER_TOKEN, {}, ()),  # never a token in the query string
    ],
)
async def test_refused_before_the_upgrade(
    base: str, path: str, headers: dict[str, str], protocols: tuple[str, ...]
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(base + path, headers=headers, protocols=protocols)
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("headers", "protocols", "selected"),
    [
        (bearer(READER_TOKEN), (), None),
        (
            {"Origin": "https://dash.example.com"},
            (PROTOCOL, token_protocol(READER_TOKEN)),
            PROTOCOL,
        ),
        (bearer(ADMIN_TOKEN), (PROTOCOL,), PROTOCOL),
    ],
)
async def test_admitted_by_header_or_subprotocol_token(
    base: str, headers: dict[str, str], protocols: tuple[str, ...], selected: str | None
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(base + LOGS, headers=headers, protocols=protocols) as ws,
    ):
        assert ws.protocol == selected
        # Admitted: past the upgrade, the session finds no cluster to ask (a broker watches
        # none) and says so in a message, then closes with 4000 + the status.
        error: dict[str, Any] = await ws.receive_json()
        assert error == {"type": "error", "code": 404, "message": "no cluster 'default'"}
        closing = await ws.receive()
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4404


def test_a_resume_point_is_an_exact_time_and_the_lines_seen_at_it() -> None:
    from podindex.api.sessions import _instant, _seen

    at = _instant("2026-11-30T13:51:27.000000123Z")
    assert at == _instant("2026-11-30T14:51:27.000000123+01:00"), "offsets are normalised"
    stamp = "2026-11-30T13:51:27.000000123Z"
    assert _seen("2026-11-30T13:51:27.000000122Z", 0, (at, 0)) is True
    assert _seen(stamp, 0, (at, 0)) is True
    assert _seen(stamp, 1, (at, 0)) is False, "a second line of the same time was not seen"
    assert _seen(stamp, 5, (at, None)) is True, "without sinceSeq: the whole instant"
    assert _seen("2026-11-30T13:51:27.000000124Z", 0, (at, None)) is False


async def test_input_for_a_session_kubernetes_is_closing_goes_nowhere_quietly() -> None:
    """The command ended and Kubernetes' side is closing while the client types: the
    input is dropped (the output side reports the end), not a crash of the session."""
    from podindex.api import sessions

    messages = [
        {"type": "websocket.receive", "text": '{"type": "input", "data": "ls /\\n"}'},
        {"type": "websocket.receive", "text": '{"type": "input", "data": "more"}'},
        {"type": "websocket.disconnect"},
    ]

    class Client:
        async def receive(self) -> dict[str, str]:
            return messages.pop(0)

    class Closing:
        async def stdin(self, data: bytes) -> None:
            raise ConnectionResetError("Cannot write to closing transport")

    sent: list[object] = []

    async def send(message: object) -> None:
        sent.append(message)

    await sessions._forward_input(Client(), Closing(), send)  # type: ignore[arg-type]
    assert messages == [], "the client's messages were read until it went"
    assert sent == [], "nothing is answered for input that could not be delivered"
