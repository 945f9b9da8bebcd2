"""``GET /api/ips/{ip}/leases``: who held an IP when — the lease history of one address.

Answered from the history writer's lease book (memory, the retention
period), like ``/attribute`` and ``GET /pod/ip/{ip}?at=``: every lease of the
IP in every cluster, newest first. A lease is ``cluster, ip, uid,
held_from, held_to`` (unix seconds; ``held_to`` null while held) and what
attribution says of the pod: ``namespace, name, node, workload_identity,
workload_kind, workload_name``.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.addresses import normalise_ip
from podindex.api.auth import guarded
from podindex.api.dashboard import int_param
from podindex.api.errors import ApiProblem
from podindex.service import Service

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def routes(service: Service) -> list[Route]:
    async def leases(request: Request) -> Response:
        raw = request.path_params["ip"]
        ip = normalise_ip(raw.strip())
        if ip is None:
            raise ApiProblem(400, "invalid_ip", f"ip: {raw[:64]!r} is not an IP address")
        unknown = sorted(set(request.query_params) - {"cluster", "limit"})
        if unknown:
            raise ApiProblem(
                400,
                "unknown_parameter",
                f"unknown query parameter(s): {', '.join(unknown)}; allowed: cluster, limit",
            )
        limit = int_param(request.query_params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        cluster = request.query_params.get("cluster") or None
        history = service.history
        if not history.loaded:
            raise ApiProblem(503, "not_ready", "history is still loading from the store")
        history.take()  # every change so far is in the book
        found = [
            lease
            for lease in history.leases.by_ip.get(ip, ())
            if cluster is None or lease.cluster == cluster
        ]
        found.sort(key=lambda lease: (lease.held_from, lease.cluster, lease.uid), reverse=True)
        body = {"ip": ip, "total": len(found), "leases": found[:limit]}
        return Response(msgspec.json.encode(body), media_type="application/json")

    return [Route("/api/ips/{ip}/leases", guarded(leases), methods=["GET"])]
