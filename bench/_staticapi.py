"""A minimal, static Kubernetes API for the benchmarks when ``podindex sim`` is not usable.

Serves the benchmark's realistic pods (bench/_common.PodFactory) as a chunked
LIST (``limit``/``continue``) at one resourceVersion, empty metadata lists of
ReplicaSets and Jobs, and watches that only send a BOOKMARK every few seconds
until their ``timeoutSeconds``. No churn. Runs in its own process:

    .venv/bin/python bench/_staticapi.py --pods 100000 --port 0 --ready-file F
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web

from _common import pod_lines

RV = b"5000000"


def make_app(items: list[bytes]) -> web.Application:
    async def pods(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") in ("1", "true"):
            return await watch(request, b"Pod", b"v1")
        limit = int(request.query.get("limit", "0") or 0) or len(items)
        start = int(request.query.get("continue", "0") or 0)
        chunk = items[start : start + limit]
        end = start + len(chunk)
        meta = b'{"resourceVersion":"%s"' % RV
        if end < len(items):
            meta += b',"continue":"%d","remainingItemCount":%d' % (end, len(items) - end)
        meta += b"}"
        body = b"".join(
            [
                b'{"kind":"PodList","apiVersion":"v1","metadata":',
                meta,
                b',"items":[',
                b",".join(chunk),
                b"]}",
            ]
        )
        return web.Response(body=body, content_type="application/json")

    async def metadata_list(request: web.Request) -> web.StreamResponse:
        kind = b"ReplicaSet" if "replicasets" in request.path else b"Job"
        group = b"apps/v1" if kind == b"ReplicaSet" else b"batch/v1"
        if request.query.get("watch") in ("1", "true"):
            return await watch(request, kind, group)
        body = (
            b'{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1",'
            b'"metadata":{"resourceVersion":"%s"},"items":[]}' % RV
        )
        return web.Response(body=body, content_type="application/json")

    async def watch(request: web.Request, kind: bytes, api_version: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        bookmark = (
            b'{"type":"BOOKMARK","object":{"kind":"%s","apiVersion":"%s",'
            b'"metadata":{"resourceVersion":"%s"}}}\n' % (kind, api_version, RV)
        )
        timeout = float(request.query.get("timeoutSeconds", "300"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await response.write(bookmark)
            await asyncio.sleep(min(5.0, max(0.0, deadline - loop.time())))
        return response

    app = web.Application()
    app.router.add_get("/api/v1/pods", pods)
    app.router.add_get("/apis/apps/v1/replicasets", metadata_list)
    app.router.add_get("/apis/batch/v1/jobs", metadata_list)
    return app


async def serve(n: int, host: str, port: int, ready_file: str | None) -> None:
    items = pod_lines(n)
    runner = web.AppRunner(make_app(items), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://{host}:{bound}"
    if ready_file:
        await asyncio.to_thread(Path(ready_file).write_text, url + "\n")
    print(url, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", default=None)
    args = parser.parse_args()
    asyncio.run(serve(args.pods, args.host, args.port, args.ready_file))


if __name__ == "__main__":
    main()
