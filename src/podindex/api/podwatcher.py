"""The pod-watcher API: ``/pods``, ``/health``, ``/ready`` (``/pod`` is the fast path).

Paths and fields follow seeds/pod-watcher-readme.md so its clients keep working.
"""

from __future__ import annotations

import base64
import bisect
import time
from collections.abc import Mapping

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.api.auth import guarded
from podindex.api.errors import ApiProblem
from podindex.api.lookup import answer_ip
from podindex.index import PodRecord
from podindex.selectors import SelectorError, parse_selector
from podindex.service import Service

_ALLOWED_PODS_PARAMS = frozenset(
    {"namespace", "node", "labelSelector", "cluster", "limit", "continue"}
)
MAX_LIMIT = 10_000


Cursor = tuple[str, str, str, str]
"""(namespace, name, cluster, uid) of the last pod of the previous page: ``PodRecord.order``."""


def _page_params(params: Mapping[str, str]) -> tuple[int | None, Cursor | None]:
    """``limit`` and the decoded ``continue`` cursor, validated."""
    limit: int | None = None
    raw_limit = params.get("limit")
    if raw_limit:
        if (
            not (raw_limit.isascii() and raw_limit.isdigit())
            or not 1 <= int(raw_limit) <= MAX_LIMIT
        ):
            raise ApiProblem(
                400, "invalid_limit", f"limit must be an integer from 1 to {MAX_LIMIT}"
            )
        limit = int(raw_limit)
    cursor = None
    token = params.get("continue")
    if token:
        try:
            decoded = msgspec.json.decode(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (ValueError, msgspec.DecodeError) as exc:
            raise ApiProblem(
                400, "invalid_continue", "continue token is not one podindex issued"
            ) from exc
        if not (
            isinstance(decoded, list)
            and len(decoded) == 4
            and all(isinstance(v, str) for v in decoded)
        ):
            raise ApiProblem(400, "invalid_continue", "continue token is not one podindex issued")
        cursor = (decoded[0], decoded[1], decoded[2], decoded[3])
    return limit, cursor


def _continue_token(cursor: Cursor) -> str:
    raw = msgspec.json.encode(list(cursor))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


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
        limit, cursor = _page_params(params)
        records = service.index.select(
            cluster=params.get("cluster") or None,
            namespace=params.get("namespace") or None,
            node=params.get("node") or None,
            selector=None if selector.empty else selector,
        )
        total = len(records)
        if cursor is not None:
            start = bisect.bisect_right(records, cursor, key=PodRecord.order)
            records = records[start:]
        token = b"null"
        if limit is not None and len(records) > limit:
            records = records[:limit]
            last = records[-1]
            token = b'"%b"' % _continue_token(last.order()).encode()
        body = b'{"count":%d,"total":%d,"continue":%b,"items":[%b]}' % (
            len(records),
            total,
            token,
            b",".join(r.body for r in records),
        )
        return _json(body)

    async def health(request: Request) -> Response:
        return _json(b'{"status":"ok"}')

    async def ready(request: Request) -> Response:
        clusters = {
            cid: {"synced": sync.ready, "pods_listed": sync.pods.stats.lists > 0}
            for cid, sync in sorted(service.clusters.items())
        }
        history = {"store": service.history.store.url, "loaded": service.history.loaded}
        body = msgspec.json.encode(
            {
                "status": "ready" if service.ready else "not_ready",
                "clusters": clusters,
                "history": history,
            }
        )
        return _json(body, 200 if service.ready else 503)

    return [
        Route("/pod", guarded(pod), methods=["GET"]),
        Route("/pods", guarded(pods), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]
