"""The dashboard Pod API (``seeds/dashboard-pod-api.md``): ``/api/clusters/{cluster}/…``.

Every answer is the document's envelope, ``{"code", "message", "data"}``,
with ``code`` equal to the HTTP status, errors included.

- The list is answered from the index: its tables (namespace, node, labels)
  and its listing (:mod:`podindex.listing`: newest-first order, pods by
  kubectl STATUS, search text); only the page is converted to JSON. Newest
  first (creation time), ties broken by namespace, name and uid so pages
  are stable.
- The detail is read from the cluster's API server: it must be current and
  complete (conditions, container states, volumes, resources), which the
  index does not keep for every pod; the index answers 404 without asking.
- Delete goes to the API server with the uid the index knows as a
  precondition, so a same-name successor is never deleted by mistake; each
  attempt is written to the audit log.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from podindex.api.auth import Principal, Role, require
from podindex.api.errors import ApiProblem
from podindex.cluster import ClusterSync
from podindex.index import PodRecord
from podindex.kube import pods
from podindex.kube.errors import ApiError, KubeError
from podindex.model import Pod
from podindex.selectors import SelectorError, parse_selector
from podindex.service import Service
from podindex.sharing import display_of
from podindex.status import display_status

log = logging.getLogger("podindex.dashboard")
audit = logging.getLogger("podindex.audit")

MAX_LOG_BYTES = 10 * 1024 * 1024
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 500
MAX_MERGED = 10_000
"""Across clusters (``/api/pods``), how deep pages go: each cluster's first page * pageSize."""
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")

Endpoint = Callable[[Request], Awaitable[Response]]


def envelope(data: Any, message: str = "success", code: int = 200) -> Response:
    body = msgspec.json.encode({"code": code, "message": message, "data": data})
    return Response(body, status_code=code, media_type="application/json")


def enveloped(endpoint: Endpoint) -> Endpoint:
    """Errors in the document's envelope too (auth's 401/403 included)."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiProblem as problem:
            response = envelope(None, problem.message, problem.status)
            response.headers.update(problem.headers or {})
            return response

    return wrapped


def list_item(record: PodRecord) -> dict[str, Any]:
    """A list item as the document has it (plus cluster, uid, ready and ips)."""
    pod, display = record.pod, display_of(record.pod)
    states = {name: (ready, count) for name, ready, count in display.containers}
    return {
        "name": pod.metadata.name,
        "namespace": pod.metadata.namespace,
        "uid": pod.metadata.uid,
        "cluster": record.cluster,
        "status": display.status,
        "phase": pod.status.phase,
        "ready": display.ready,
        "nodeName": pod.spec.nodeName,
        "podIP": pod.status.podIP,
        "podIPs": [p.ip for p in pod.status.podIPs or ()],
        "hostIP": pod.status.hostIP,
        "restarts": display.restarts,
        "lastRestartAt": display.last_restart,
        "containers": [
            {
                "name": c.name,
                "image": c.image,
                "ready": states.get(c.name, (False, 0))[0],
                "restartCount": states.get(c.name, (False, 0))[1],
            }
            for c in pod.spec.containers or ()
        ],
        "createdAt": pod.metadata.creationTimestamp,
        "identity": record.workload.identity,
        "workload": (
            {"kind": record.workload.kind, "name": record.workload.name}
            if record.workload.kind
            else None
        ),
    }


def int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiProblem(
            400, "invalid_parameter", f"{name}: expected an integer, got {raw[:32]!r}"
        ) from None
    if not low <= value <= high:
        raise ApiProblem(
            400, "invalid_parameter", f"{name}: must be between {low} and {high}, got {value}"
        )
    return value


def bool_param(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ApiProblem(400, "invalid_parameter", f"{name}: expected true or false, got {raw[:32]!r}")


def routes(service: Service) -> list[Route]:
    lookup_role = Role.NONE if service.settings.lookup_access == "open" else Role.READER

    def cluster_of(request: Request) -> ClusterSync:
        cluster_id = request.path_params["cluster"]
        sync = service.clusters.get(cluster_id)
        if sync is None:
            known = ", ".join(sorted(service.clusters)) or "none"
            raise ApiProblem(404, "unknown_cluster", f"no cluster {cluster_id!r} (known: {known})")
        return sync

    async def reader(request: Request, namespace: str | None) -> Principal:
        return await require(request, lookup_role, namespace, any_namespace=namespace is None)

    async def pod_list(request: Request) -> Response:
        return await listed(request, lambda: [cluster_of(request)], every=False)

    async def every_pod_list(request: Request) -> Response:
        return await listed(
            request, lambda: [service.clusters[c] for c in sorted(service.clusters)], every=True
        )

    async def listed(
        request: Request, clusters: Callable[[], list[ClusterSync]], *, every: bool
    ) -> Response:
        """A page of the pods of ``clusters()`` (asked once the caller is known), newest
        first. ``every``: the list of every cluster, whose unsynced ones are named, not
        waited for; across clusters, each one's first ``page * pageSize`` are merged (so a
        page deep in several clusters is refused)."""
        params = request.query_params
        namespace = params.get("namespace") or None
        principal = await reader(request, namespace)
        syncs = clusters()
        page = int_param(request.query_params, "page", 1, 1, 1_000_000)
        page_size = int_param(request.query_params, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        start, stop = (page - 1) * page_size, page * page_size
        try:
            selector = parse_selector(params.get("labelSelector"))
        except SelectorError as exc:
            raise ApiProblem(400, "invalid_parameter", f"labelSelector: {exc}") from exc
        ready = [sync for sync in syncs if sync.ready]
        if not every and not ready:
            raise ApiProblem(503, "not_ready", f"cluster {syncs[0].cluster_id} is not synced yet")
        if len(ready) > 1 and stop > MAX_MERGED:
            raise ApiProblem(
                400,
                "invalid_parameter",
                f"page: across clusters, at most the first {MAX_MERGED} pods are paged "
                "(narrow the list, or choose a cluster)",
            )
        node = params.get("nodeName") or None
        total = 0
        keys: list[tuple[str, str]] = []
        for sync in ready:
            within = None
            if namespace is not None or node is not None or not selector.empty:
                within = [
                    (r.key[1], r.pod)
                    for r in service.index.matching(
                        cluster=sync.cluster_id,
                        namespace=namespace,
                        node=node,
                        selector=None if selector.empty else selector,
                    )
                ]
            found, page_keys = service.index.listing.query(
                sync.cluster_id,
                within=within,
                status=params.get("status") or None,
                search=(params.get("search") or "").strip().lower(),
                namespaces=principal.namespaces_for(lookup_role),
                start=start if len(ready) == 1 else 0,
                stop=stop,
            )
            total += found
            keys += page_keys
        records = [service.index.pods[k] for k in keys]
        if len(ready) > 1:
            records.sort(key=_newest_first, reverse=True)
            records = records[start:stop]
        data: dict[str, Any] = {
            "items": [list_item(r) for r in records],
            "total": total,
            "page": page,
            "pageSize": page_size,
        }
        if every:
            data["unsynced"] = [sync.cluster_id for sync in syncs if not sync.ready]
        return envelope(data)

    def known_pod(sync: ClusterSync, namespace: str, name: str) -> PodRecord:
        record = service.index.by_name(sync.cluster_id, namespace, name)
        if record is None:
            raise ApiProblem(
                404, "not_found", f"pod {namespace}/{name} not found in cluster {sync.cluster_id}"
            )
        return record

    async def pod_detail(request: Request) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        await reader(request, namespace)
        sync = cluster_of(request)
        record = known_pod(sync, namespace, name)
        try:
            obj = msgspec.json.decode(await sync.client.get(pods.pod_path(namespace, name)))
        except KubeError as exc:
            raise from_kube(exc, sync, f"reading pod {namespace}/{name}") from None
        metadata = obj.get("metadata") or {}
        # The object is the cluster's now (a same-name successor, maybe): its columns are
        # computed from it, and the index's workload shown only for the same instance.
        display = display_status(msgspec.convert(obj, Pod, strict=False))
        same = metadata.get("uid") == record.key[1]
        return envelope(
            {
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "cluster": sync.cluster_id,
                "labels": metadata.get("labels") or {},
                "annotations": metadata.get("annotations") or {},
                "ownerReferences": metadata.get("ownerReferences") or [],
                "status": obj.get("status") or {},
                "spec": obj.get("spec") or {},
                "displayStatus": display.status,
                "ready": display.ready,
                "restarts": display.restarts,
                "workload": msgspec.to_builtins(record.workload) if same else None,
                "deletionTimestamp": metadata.get("deletionTimestamp"),
                "createdAt": metadata.get("creationTimestamp"),
            }
        )

    async def pod_delete(request: Request) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        principal = await require(request, Role.ADMIN, namespace)
        sync = cluster_of(request)
        force = bool_param(request.query_params, "force")
        grace: int | None = None
        if "gracePeriod" in request.query_params:
            grace = int_param(request.query_params, "gracePeriod", 0, 0, 31_536_000)
        if force:
            grace = 0
        record = known_pod(sync, namespace, name)
        options: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": record.key[1]},
        }
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        what = {
            "action": "delete",
            "cluster": sync.cluster_id,
            "namespace": namespace,
            "name": name,
            "uid": record.key[1],
            "gracePeriodSeconds": grace,
            "by": principal.name,
            "via": principal.via,
        }
        try:
            await sync.client.delete(pods.pod_path(namespace, name), msgspec.json.encode(options))
        except KubeError as exc:
            problem = from_kube(exc, sync, f"deleting pod {namespace}/{name}")
            _audit(what, problem.status)
            raise problem from None
        _audit(what, 200)
        return envelope(None, "Pod deleted successfully")

    async def pod_events(request: Request) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        await reader(request, namespace)
        sync = cluster_of(request)
        record = known_pod(sync, namespace, name)
        try:
            events = await pods.pod_events(sync.client, namespace, name, record.key[1])
        except KubeError as exc:
            raise from_kube(exc, sync, f"listing events of pod {namespace}/{name}") from None
        return envelope(msgspec.to_builtins(events))

    async def pod_logs(request: Request) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        await reader(request, namespace)
        sync = cluster_of(request)
        record = known_pod(sync, namespace, name)
        params = log_params(request.query_params, record)
        stack = contextlib.AsyncExitStack()
        try:
            chunks = await stack.enter_async_context(
                pods.log_stream(sync.client, namespace, name, params, read_timeout=60.0)
            )
        except KubeError as exc:
            await stack.aclose()
            raise from_kube(exc, sync, f"reading logs of pod {namespace}/{name}") from None
        limit = int(params["limitBytes"])
        return StreamingResponse(
            _enveloped_logs(chunks, stack, limit, f"{sync.cluster_id}/{namespace}/{name}"),
            media_type="application/json",
        )

    base = "/api/clusters/{cluster}"
    one = base + "/namespaces/{namespace}/pods/{name}"
    return [
        Route("/api/pods", enveloped(every_pod_list), methods=["GET"]),
        Route(base + "/pods", enveloped(pod_list), methods=["GET"]),
        Route(one, enveloped(pod_detail), methods=["GET"]),
        Route(one, enveloped(pod_delete), methods=["DELETE"]),
        Route(one + "/events", enveloped(pod_events), methods=["GET"]),
        Route(one + "/logs", enveloped(pod_logs), methods=["GET"]),
    ]


def _newest_first(record: PodRecord) -> tuple[str, str, str, str, str]:
    """The listing's order (creation time, namespace, name, uid), then the cluster."""
    meta = record.pod.metadata
    return (meta.creationTimestamp or "", meta.namespace, meta.name, record.key[1], record.cluster)


def log_params(query: Mapping[str, str], record: PodRecord) -> dict[str, str]:
    """The log query for Kubernetes, checked here first: a multi-container pod needs
    ``container`` (400 listing them, in Kubernetes' words), a known one."""
    spec = record.pod.spec
    names = [c.name for c in spec.containers or ()]
    every = names + [c.name for c in spec.initContainers or ()]
    container = query.get("container") or None
    if container is None:
        if len(names) != 1:
            raise ApiProblem(
                400,
                "container_required",
                f"a container name must be specified for pod {record.name}, "
                f"choose one of: [{' '.join(every)}]",
            )
        container = names[0]
    elif container not in every:
        raise ApiProblem(
            400,
            "unknown_container",
            f"container {container} is not valid for pod {record.name}; "
            f"choose one of: [{' '.join(every)}]",
        )
    params = {"container": container}
    if bool_param(query, "previous"):
        params["previous"] = "true"
    if bool_param(query, "timestamps"):
        params["timestamps"] = "true"
    if "sinceSeconds" in query:
        params["sinceSeconds"] = str(int_param(query, "sinceSeconds", 1, 1, 10 * 365 * 86400))
    if "tailLines" in query:
        params["tailLines"] = str(int_param(query, "tailLines", 0, 0, 10_000_000))
    params["limitBytes"] = str(int_param(query, "limitBytes", MAX_LOG_BYTES, 1, MAX_LOG_BYTES))
    return params


async def _enveloped_logs(
    chunks: AsyncIterator[bytes], stack: contextlib.AsyncExitStack, limit: int, what: str
) -> AsyncIterator[bytes]:
    """``{"code":200,…,"data":{"logs":"…","truncated":…}}`` written as the log arrives:
    each chunk decoded (a UTF-8 character may span two) and escaped on its own."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    received = 0
    error: str | None = None
    try:
        yield b'{"code":200,"message":"success","data":{"logs":"'
        try:
            async for chunk in chunks:
                received += len(chunk)
                text = decoder.decode(chunk)
                if text:
                    yield msgspec.json.encode(text)[1:-1]
        except KubeError as exc:
            log.warning("log stream of %s broke: %s", what, exc)
            error = "the log stream from the cluster broke; the logs above are incomplete"
        tail = decoder.decode(b"", final=True)
        if tail:
            yield msgspec.json.encode(tail)[1:-1]
        truncated = error is not None or received >= limit
        yield b'","truncated":%b,"error":%b}}' % (
            b"true" if truncated else b"false",
            msgspec.json.encode(error),
        )
    finally:
        await stack.aclose()


def _audit(what: dict[str, Any], result: int) -> None:
    audit.info(
        "%s pod %s/%s (uid %s) in cluster %s by %s: %d",
        what["action"],
        what["namespace"],
        what["name"],
        what["uid"],
        what["cluster"],
        what["by"],
        result,
        extra={"audit": {**what, "result": result}},
    )


def from_kube(exc: KubeError, sync: ClusterSync, doing: str) -> ApiProblem:
    """Kubernetes' answer, mapped faithfully: its status code and message, in our envelope."""
    if isinstance(exc, ApiError) and 400 <= exc.code < 500:
        message = exc.status.message or exc.status.reason
        if exc.code == 403:
            message = f"cluster {sync.cluster_id}'s credentials may not do this: {message}"
        return ApiProblem(exc.code, exc.status.reason.lower() or "kubernetes_error", message)
    log.warning("cluster %s: %s failed: %s", sync.cluster_id, doing, exc)
    return ApiProblem(502, "cluster_unavailable", f"cluster {sync.cluster_id}: {doing} failed")
