"""The pod search and export API (``GET /v1/pods``, ``GET /v1/export/pods``).

Paths, parameters and objects are the PodService's of a security platform
(``StoragePod``, ``StorageContainerInstance``), so clients written for it
work here; see README "Pod search and export". Where that implementation
goes wrong, this one does not: a bad query, sort field or limit is a 400
naming it (never a silent match-all or a 500), ``aggregateBy`` is refused
as unsupported, sorting is total, and deleted pods stay searchable for the
retention period.

Errors are grpc-gateway's: ``{"error", "code", "message", "details"}`` with
the HTTP status of the gRPC code; a failure after an export's first line
ends the stream with one ``{"error": {…}}`` line instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from podindex.api.auth import Role, require
from podindex.api.errors import ApiProblem
from podindex.containers import ContainerInstance, pod_id
from podindex.instances import Documents, InstanceTracker
from podindex.podsearch import Entry, created_of, deployment_id, sort_field
from podindex.query import Query, QueryError, parse
from podindex.service import Service
from podindex.store.base import EXPORT_FALLBACK, StoreError

log = logging.getLogger("podindex.api.podservice")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
EXPORT_CHUNK = 1000
"""Pods per store read and per write to the client while exporting."""

# gRPC status codes, and the HTTP status grpc-gateway answers each with.
INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, PERMISSION_DENIED = 3, 4, 5, 7
INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 13, 14, 16
HTTP_OF = {
    INVALID_ARGUMENT: 400,
    DEADLINE_EXCEEDED: 504,
    NOT_FOUND: 404,
    PERMISSION_DENIED: 403,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    UNAUTHENTICATED: 401,
}
_CODE_OF = {status: code for code, status in HTTP_OF.items()}
_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InstanceList(msgspec.Struct):
    instances: Sequence[ContainerInstance]


class StoragePod(msgspec.Struct, omit_defaults=False):
    """Every field always present, null where empty, as the original's gateway emits.

    The instances come as JSON the store made (see
    :meth:`~podindex.instances.InstanceTracker.documents`); :class:`StoragePodSchema`
    says what they hold."""

    id: str
    name: str
    deploymentId: str | None
    namespace: str
    clusterId: str
    liveInstances: msgspec.Raw
    terminatedInstances: msgspec.Raw
    started: str | None


class StoragePodSchema(msgspec.Struct):
    """:class:`StoragePod` with its instances' types, for the OpenAPI document."""

    id: str
    name: str
    deploymentId: str | None
    namespace: str
    clusterId: str
    liveInstances: list[ContainerInstance]
    terminatedInstances: list[InstanceList]
    started: str | None


class PodsResponse(msgspec.Struct):
    pods: list[StoragePod]


class PodsResponseSchema(msgspec.Struct):
    pods: list[StoragePodSchema]


class ExportResult(msgspec.Struct):
    pod: StoragePod


class ExportLine(msgspec.Struct):
    result: ExportResult


class ExportResultSchema(msgspec.Struct):
    pod: StoragePodSchema


class ExportLineSchema(msgspec.Struct):
    result: ExportResultSchema


_encode = msgspec.json.Encoder().encode


_EMPTY = msgspec.Raw(b"[]")


def storage_pod(entry: Entry, instances: Documents | None) -> StoragePod:
    live, terminated = (
        (msgspec.Raw(instances[0]), msgspec.Raw(instances[1]))
        if instances is not None
        else (_EMPTY, _EMPTY)
    )
    return StoragePod(  # positional: cheaper, and a page builds a thousand
        pod_id(entry.key[1]),
        entry.name,
        deployment_id(entry),
        entry.namespace,
        entry.key[0],
        live,
        terminated,
        created_of(entry) or None,
    )


def _id_text(value: str | None) -> str:
    """An id's JSON text (a UUID needs no escaping)."""
    return "null" if value is None else f'"{value}"'


def export_line(entry: Entry, instances: Documents | None) -> bytes:
    return _encode(ExportLine(ExportResult(storage_pod(entry, instances))))


async def export_chunk(tracker: InstanceTracker, chunk: Sequence[Entry]) -> bytes:
    """The export's lines of ``chunk``, in its order.

    The database writes each pod's line from its instances and facts, given its
    deployment id (which can change), one text a cluster: a Python object a pod
    would cost more than the rest of the export. Pods it cannot write (instances
    not yet written or none; facts from before they were kept) are written here.
    """
    queued = tracker.queued([e.key for e in chunk])
    clusters: dict[str, list[int]] = {}
    for position, entry in enumerate(chunk):
        if entry.key not in queued:
            clusters.setdefault(entry.key[0], []).append(position)
    texts = {
        cluster: await tracker.store.export_lines(
            cluster,
            [chunk[p].key[1] for p in positions],
            [_id_text(deployment_id(chunk[p])) for p in positions],
        )
        for cluster, positions in clusters.items()
    }
    if not queued and len(texts) == 1:
        (text,) = texts.values()
        if EXPORT_FALLBACK not in text:  # nearly always: the database's text is the body
            return text + b"\n"
    lines: list[bytes | None] = [None] * len(chunk)
    for cluster, positions in clusters.items():
        parts = texts[cluster].split(b"\n")
        if len(parts) != len(positions):
            raise StoreError(f"export: {len(parts)} lines read for {len(positions)} pods")
        for position, part in zip(positions, parts, strict=True):
            lines[position] = part
    merged = await tracker.merged_documents(queued) if queued else {}
    out: list[bytes] = []
    for entry, line in zip(chunk, lines, strict=True):
        if line is None:
            out.append(export_line(entry, merged.get(entry.key)))
        elif line.startswith(EXPORT_FALLBACK):
            documents = line.split(EXPORT_FALLBACK)  # b"", or b"", live, terminated
            out.append(
                export_line(entry, (documents[1], documents[2]) if len(documents) == 3 else None)
            )
        else:
            out.append(line)
    return b"".join(line + b"\n" for line in out)


def rpc_error_body(code: int, message: str) -> dict[str, object]:
    return {"error": message, "code": code, "message": message, "details": []}


def stream_error_line(code: int, message: str) -> bytes:
    status = HTTP_OF.get(code, 500)
    error = {
        "code": code,
        "grpcCode": code,
        "httpCode": status,
        "httpStatus": _STATUS_TEXT.get(status, ""),
        "message": message,
        "details": [],
    }
    return _encode({"error": error}) + b"\n"


def _rpc_response(code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encode(rpc_error_body(code, message)),
        status_code=HTTP_OF.get(code, 500),
        media_type="application/json",
        headers=headers,
    )


Handler = Callable[[Request], Awaitable[Response]]


def rpc(handler: Handler) -> Handler:
    """Every failure answered as grpc-gateway answers it."""

    async def call(request: Request) -> Response:
        try:
            return await handler(request)
        except RpcError as exc:
            return _rpc_response(exc.code, exc.message)
        except ApiProblem as exc:  # authentication and roles
            return _rpc_response(_CODE_OF.get(exc.status, INTERNAL), exc.message, exc.headers)
        except StoreError as exc:
            log.warning("pod search: history store unavailable: %s", exc)
            return _rpc_response(UNAVAILABLE, "the history store is unavailable; retry")

    return call


def _int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise RpcError(INVALID_ARGUMENT, f"{name}: expected an integer, got {raw!r}") from None


def _bool(params: dict[str, str], name: str) -> bool:
    raw = (params.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise RpcError(INVALID_ARGUMENT, f"{name}: expected true or false, got {raw!r}")
    return raw in ("true", "1")


def _query(params: dict[str, str]) -> Query:
    try:
        return parse(params.get("query"))
    except QueryError as exc:
        raise RpcError(INVALID_ARGUMENT, f"query: {exc}") from None


def routes(service: Service) -> list[Route]:
    lookup_role = Role.NONE if service.settings.lookup_access == "open" else Role.READER
    search = service.search

    async def scope(request: Request) -> frozenset[str] | None:
        principal = await require(request, lookup_role, any_namespace=True)
        if not service.past_loaded:
            raise RpcError(UNAVAILABLE, "history is not loaded yet; retry")
        return principal.namespaces_for(lookup_role)

    async def pods(request: Request) -> Response:
        params = dict(request.query_params)
        namespaces = await scope(request)
        query = _query(params)
        limit = _int(params, "pagination.limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            raise RpcError(
                INVALID_ARGUMENT,
                f"pagination.limit must be between 1 and {MAX_LIMIT}, got {limit}",
            )
        offset = _int(params, "pagination.offset", 0)
        if offset < 0:
            raise RpcError(INVALID_ARGUMENT, f"pagination.offset must be >= 0, got {offset}")
        try:
            field = sort_field(params.get("pagination.sortOption.field"))
        except QueryError as exc:
            raise RpcError(INVALID_ARGUMENT, f"pagination.sortOption.field: {exc}") from None
        reversed_ = _bool(params, "pagination.sortOption.reversed")
        aggregate = params.get("pagination.sortOption.aggregateBy.aggrFunc", "UNSET")
        if aggregate.upper() != "UNSET" or _bool(
            params, "pagination.sortOption.aggregateBy.distinct"
        ):
            raise RpcError(
                INVALID_ARGUMENT, "pagination.sortOption.aggregateBy is not supported by pod search"
            )
        found = search.page(
            query,
            time.time(),
            field=field,
            reversed_=reversed_,
            offset=offset,
            limit=limit,
            namespaces=namespaces,
        )
        instances = await service.instances.documents([e.key for e in found])
        body = PodsResponse(list(map(storage_pod, found, instances)))
        return Response(_encode(body), media_type="application/json")

    async def export(request: Request) -> Response:
        params = dict(request.query_params)
        namespaces = await scope(request)
        query = _query(params)
        timeout = _int(params, "timeout", 0)
        if timeout < 0:
            raise RpcError(INVALID_ARGUMENT, f"timeout must be >= 0 seconds, got {timeout}")
        started = time.monotonic()
        deadline = started + timeout if timeout else None
        entries = search.ordered(query, time.time(), namespaces)
        # A failure reading the first chunk is still a unary error.
        first = await export_chunk(service.instances, entries[:EXPORT_CHUNK])
        if deadline is not None and time.monotonic() > deadline:
            raise RpcError(DEADLINE_EXCEEDED, f"export did not start within {timeout}s")
        return StreamingResponse(
            _lines(entries, first, deadline, timeout), media_type="application/json"
        )

    async def _lines(
        entries: list[Entry], first: bytes, deadline: float | None, seconds: int
    ) -> AsyncIterator[bytes]:
        # Two chunks are read ahead while one is sent: the next one's lines are made
        # by the database (its own thread or process) while this process asks for
        # the one after, so the two work in parallel. Two chunks: memory stays flat.
        starts = iter(range(EXPORT_CHUNK, len(entries), EXPORT_CHUNK))
        reading: deque[asyncio.Future[bytes]] = deque()

        def read_next() -> None:
            start = next(starts, None)
            if start is not None:
                chunk = entries[start : start + EXPORT_CHUNK]
                reading.append(asyncio.ensure_future(export_chunk(service.instances, chunk)))

        read_next()
        read_next()
        body = first
        try:
            while True:
                if body:
                    yield body
                if not reading:
                    return
                if deadline is not None and time.monotonic() > deadline:
                    yield stream_error_line(
                        DEADLINE_EXCEEDED, f"deadline exceeded: export ran past {seconds}s"
                    )
                    return
                body = await reading.popleft()
                read_next()
        except StoreError as exc:
            log.warning("pod export: history store failed mid-stream: %s", exc)
            yield stream_error_line(UNAVAILABLE, "the history store became unavailable")
        finally:
            for future in reading:
                if future.done() and not future.cancelled():
                    future.exception()  # read: a failure after the one reported is no news
                future.cancel()

    return [
        Route("/v1/pods", rpc(pods), methods=["GET"]),
        Route("/v1/export/pods", rpc(export), methods=["GET"]),
    ]
