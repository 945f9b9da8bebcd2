"""Load the real kube-apiserver recordings in ../shared/k8s-recordings and serve them again.

``ReplayServer`` is an aiohttp server on a real socket whose answers are the
recorded bytes (status, Content-Type, body; watch streams line by line). A
test scripts which recording answers which request, then checks what the
client asked (the recorded requests are the reference) and what it did.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


def _recordings() -> Path:
    """``$PODINDEX_RECORDINGS``; else ``shared/k8s-recordings`` beside the checkout, or
    beside the repository it was cloned from (a CI clone may live anywhere)."""
    if "PODINDEX_RECORDINGS" in os.environ:
        return Path(os.environ["PODINDEX_RECORDINGS"])
    root = Path(__file__).resolve().parents[1]
    beside = root.parent / "shared" / "k8s-recordings"
    if beside.is_dir():
        return beside
    try:
        origin = subprocess.run(
            ["git", "-C", str(root), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        origin = ""
    if origin and "://" not in origin:
        cloned_from = Path(origin).expanduser().resolve().parent / "shared" / "k8s-recordings"
        if cloned_from.is_dir():
            return cloned_from
    return beside


RECORDINGS = _recordings()


def recording(name: str) -> dict[str, Any]:
    matches = sorted(RECORDINGS.glob(f"{name}*.json"))
    if not matches:
        raise FileNotFoundError(f"no recording {name!r} in {RECORDINGS}")
    data: dict[str, Any] = json.loads(matches[0].read_text())
    return data


def body_bytes(rec: dict[str, Any]) -> bytes:
    body = rec["response"]["body"]
    assert isinstance(body, str), "a watch recording has no single body"
    return body.encode()


def watch_lines(rec: dict[str, Any]) -> list[bytes]:
    return [e["line"].encode() for e in rec["response"]["body"] if "line" in e]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def respond(rec: dict[str, Any]) -> web.Response:
    """The recorded response of a non-watch exchange."""
    response = rec["response"]
    return web.Response(
        status=response["status"],
        body=body_bytes(rec),
        content_type="application/json",
    )


async def stream(
    request: web.Request, lines: list[bytes], *, gap: float = 0.0, hold: float = 0.0
) -> web.StreamResponse:
    """A watch response: each line flushed on its own, then EOF (after ``hold`` s)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for line in lines:
        await response.write(line + b"\n")
        if gap:
            await asyncio.sleep(gap)
    if hold:
        await asyncio.sleep(hold)
    await response.write_eof()
    return response


@dataclass
class ReplayServer:
    """Answers each request with the next handler scripted for its path."""

    script: dict[str, list[Handler]] = field(default_factory=dict)
    requests: list[web.Request] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    def on(self, path: str, *handlers: Handler) -> None:
        self.script.setdefault(path, []).extend(handlers)

    def seen(self, path: str) -> list[dict[str, str]]:
        """Query parameters of every request to ``path``, in order."""
        return [dict(r.query) for r in self.requests if r.path == path]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        queue = self.script.get(request.path)
        if not queue:
            # Nothing more scripted: hold the connection like an idle watch.
            await asyncio.sleep(3600)
            raise web.HTTPServiceUnavailable()
        handler = queue.pop(0)
        return await handler(request)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
