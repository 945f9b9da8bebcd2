"""The pod-watcher API: ``/pods``, ``/health``, ``/ready`` (``/pod`` is the fast path).

Paths and fields follow seeds/pod-watcher-readme.md so its clients keep working.
"""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.api.errors import ApiProblem
from podindex.api.lookup import answer_ip
from podindex.selectors import SelectorError, parse_selector
from podindex.service import Service

_ALLOWED_PODS_PARAMS = frozenset({"namespace", "node", "labelSelector", "cluster"})


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def routes(service: Service) -> list[Route]:
    async def pod(request: Request) -> Response:
        # Reached only for methods the fast path does not take (e.g. a test client);
        # same answer, same code.
        status, body = answer_ip(service, request.query_params.get("ip"), time.time())
        return _json(body, status)

    async def pods(request: Request) -> Response:
        params = request.query_params
        unknown = sorted(set(params) - _ALLOWED_PODS_PARAMS)
        if unknown:
            raise ApiProblem(
                400,
                "unknown_parameter",
                f"unknown query parameter(s): {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(_ALLOWED_PODS_PARAMS))}",
            )
        if not service.ready:
            raise ApiProblem(503, "not_ready", "initial sync has not finished")
        try:
            selector = parse_selector(params.get("labelSelector"))
        except SelectorError as exc:
            raise ApiProblem(400, "invalid_label_selector", f"labelSelector: {exc}") from exc
        records = service.index.select(
            cluster=params.get("cluster") or None,
            namespace=params.get("namespace") or None,
            node=params.get("node") or None,
            selector=None if selector.empty else selector,
        )
        body = b'{"count":%d,"items":[%b]}' % (len(records), b",".join(r.body for r in records))
        return _json(body)

    async def health(request: Request) -> Response:
        return _json(b'{"status":"ok"}')

    async def ready(request: Request) -> Response:
        clusters = {
            cid: {"synced": sync.ready, "pods_listed": sync.pods.stats.lists > 0}
            for cid, sync in sorted(service.clusters.items())
        }
        body = msgspec.json.encode(
            {"status": "ready" if service.ready else "not_ready", "clusters": clusters}
        )
        return _json(body, 200 if service.ready else 503)

    return [
        Route("/pod", pod, methods=["GET"]),
        Route("/pods", pods, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]
