"""The broker API (seeds/broker-pod-endpoints.txt): node agents push pods, pipelines read history.

Same paths and body fields as the original broker, with its known flaws fixed:

* the key is the namespace-qualified name, not the bare name, so two
  namespaces' ``web-0`` never overwrite each other;
* ``GET /pod/ip/{ip}`` answers the live holder, else the pod whose lease on
  the IP began last — never an arbitrary row after the IP was reused;
* ``mark_dead`` with ``pod_ip`` marks only a pod holding that IP, so a
  same-name restart's live pod is untouched; and a late push for a pod
  instance (same uid) already marked dead is ignored rather than reviving it.

Pushed pods go into the same index as watched ones (``source: push``). A push
is answered once it is committed to the history store (a kill -9 after the
answer loses nothing); reads are answered from the store after every change
made so far is committed, so a client reads its own writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Literal, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.addresses import normalise_ip
from podindex.answers import rfc3339
from podindex.api.auth import Role, guarded
from podindex.api.bodies import decode_body
from podindex.api.errors import ApiProblem
from podindex.history import agent_workload, holder_at, parse_instant
from podindex.index import PodRecord
from podindex.model import Pod, PodIP
from podindex.service import Service
from podindex.store.base import StoredPod, StoreError

log = logging.getLogger("podindex.broker")
T = TypeVar("T")

MAX_PUSH_BYTES = 4 * 1024 * 1024
NO_DATA = b'{"error":"No data found","message":"no pod matches"}'


_NULL = msgspec.Raw(b"null")


class PodSpecPush(msgspec.Struct, forbid_unknown_fields=False):
    pod_name: str
    pod_namespace: str = ""
    pod_ip: str = ""
    node_name: str = ""
    pod_obj: msgspec.Raw = msgspec.field(default_factory=lambda: _NULL)
    """Kept undecoded: it is stored as the agent sent it."""
    pod_identity: str = ""
    workload_selector_labels: dict[str, str] = {}
    time_stamp: str | float | None = None


class MarkDead(msgspec.Struct):
    pod_name: str
    pod_namespace: str = ""
    pod_ip: str = ""


class BrokerRow(msgspec.Struct, omit_defaults=True):
    """A pod as the broker's clients read it: the original's fields first, then podindex's."""

    pod_name: str
    pod_namespace: str
    pod_ip: str
    node_name: str
    pod_identity: str
    workload_selector_labels: dict[str, str]
    is_dead: bool
    time_stamp: str
    cluster: str
    uid: str
    pod_ips: list[str]
    phase: str
    source: str
    workload_kind: str
    workload_name: str
    labels: dict[str, str]
    first_seen: str
    last_seen: str
    deleted_at: str | None
    pod_obj: msgspec.Raw | None = None
    held_from: str | None = None
    """With ``?at=``: when the pod's lease on the IP began."""
    held_to: str | None = None
    state: Literal["held", "released"] | None = None
    """With ``?at=``: held at that instant, or released less than the grace period before."""


def broker_row(row: StoredPod, obj: bytes | None = None) -> BrokerRow:
    return BrokerRow(
        pod_name=row.name,
        pod_namespace=row.namespace,
        pod_ip=row.pod_ip,
        node_name=row.node,
        pod_identity=row.workload_identity,
        workload_selector_labels=row.selector_labels,
        is_dead=row.is_dead,
        time_stamp=row.time_stamp or rfc3339(row.last_seen),
        cluster=row.cluster,
        uid=row.uid,
        pod_ips=list(row.ips) or ([row.pod_ip] if row.pod_ip else []),
        phase=row.phase,
        source=row.source,
        workload_kind=row.workload_kind,
        workload_name=row.workload_name,
        labels=row.labels,
        first_seen=rfc3339(row.first_seen),
        last_seen=rfc3339(row.last_seen),
        deleted_at=rfc3339(row.deleted_at) if row.deleted_at is not None else None,
        pod_obj=msgspec.Raw(obj) if obj else None,
    )


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _name(value: str, field: str) -> str:
    name = value.strip()
    if not name:
        log.warning("broker: rejected a request with an empty %s", field)
        raise ApiProblem(400, f"invalid_{field}", f"{field} must not be empty or whitespace")
    return name


def _ip(value: str, field: str) -> str:
    ip = normalise_ip(value.strip())
    if ip is None:
        raise ApiProblem(400, f"invalid_{field}", f"{field}: {value[:64]!r} is not an IP address")
    return ip


def pod_object(push: PodSpecPush) -> bytes | None:
    """The agent's pod object as JSON bytes (some agents send it as a JSON string)."""
    raw = bytes(push.pod_obj)
    if raw in (b"", b"null"):
        return None
    if raw.startswith(b'"'):
        try:
            return msgspec.json.decode(raw, type=str).encode()
        except msgspec.DecodeError as exc:
            raise ApiProblem(400, "invalid_pod_obj", f"pod_obj: {exc}") from exc
    return raw


def pushed_pod(push: PodSpecPush, namespace: str, name: str, ip: str) -> Pod:
    """The pod an agent described: its ``pod_obj`` (optional) with the body's fields over it."""
    pod = Pod()
    raw = pod_object(push)
    if raw is not None:
        try:
            pod = msgspec.json.decode(raw, type=Pod)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ApiProblem(400, "invalid_pod_obj", f"pod_obj is not a pod object: {exc}") from exc
    meta, spec, status = pod.metadata, pod.spec, pod.status
    meta.name, meta.namespace = name, namespace
    # Pushes are last-writer-wins: the object's resourceVersion must not make
    # a newer push (same object, new IP) look stale.
    meta.resourceVersion = ""
    if push.node_name.strip():
        spec.nodeName = push.node_name.strip()
    if ip:
        held = [normalise_ip(p.ip) for p in status.podIPs or ()]
        if ip not in held:
            status.podIPs = (PodIP(ip),)
        status.podIP = ip
    status.phase = status.phase or "Running"
    return pod


def routes(service: Service) -> list[Route]:
    index = service.index
    history = service.history
    settings = service.settings

    def require_loaded() -> None:
        if not history.loaded:
            raise ApiProblem(503, "not_ready", "history is still loading from the store")

    async def spec(request: Request) -> Response:
        require_loaded()
        push = await decode_body(request, PodSpecPush, MAX_PUSH_BYTES)
        name = _name(push.pod_name, "pod_name")
        namespace = _name(push.pod_namespace, "pod_namespace")
        ip = _ip(push.pod_ip, "pod_ip") if push.pod_ip.strip() else ""
        pod = pushed_pod(push, namespace, name, ip)
        cluster = settings.cluster_id
        now = time.time()
        given_uid = pod.metadata.uid
        if given_uid and (cluster, given_uid) in index.pods:
            current = index.pods[cluster, given_uid]
            if current.source != "push":
                return _json(_status("ignored", current, "the pod is watched; its watch wins"))
        live = [
            r for r in index.named(name, namespace) if r.key[0] == cluster and r.source == "push"
        ]
        if given_uid:
            uid = given_uid
        elif live:
            uid = live[-1].key[1]
        else:
            uid = f"push-{uuid.uuid4()}"
        pod.metadata.uid = uid
        workload = None
        if push.pod_identity.strip():
            workload = agent_workload(push.pod_identity.strip(), push.workload_selector_labels)
        if not index.upsert_pod(cluster, pod, now, source="push", workload=workload):
            return _json(
                _status("ignored", None, "that pod instance was marked dead", cluster, uid)
            )
        for replaced in live:  # a restart under the same name: the old instance is over
            if replaced.key[1] != uid:
                index.delete_pod(cluster, replaced.pod, now)
        stamp = push.time_stamp
        history.attach(
            (cluster, uid),
            pod_object(push),
            "" if stamp is None else str(stamp),
        )
        await committed_by(service)
        return _json(_status("stored", index.pods.get((cluster, uid)), "", cluster, uid))

    async def mark_dead(request: Request) -> Response:
        require_loaded()
        body = await decode_body(request, MarkDead, MAX_PUSH_BYTES)
        name = _name(body.pod_name, "pod_name")
        namespace = body.pod_namespace.strip() or None
        candidates = [r for r in index.named(name, namespace) if r.source == "push"]
        if body.pod_ip.strip():
            ip = _ip(body.pod_ip, "pod_ip")
            candidates = [r for r in candidates if _holds(r, ip)]
        else:
            log.warning(
                "broker: mark_dead for %s/%s without pod_ip: matching by name only "
                "(a same-name restart's live pod would be marked too)",
                namespace or "*",
                name,
            )
        now = time.time()
        for record in candidates:
            index.delete_pod(record.key[0], record.pod, now)
        await committed_by(service)
        return _json(msgspec.json.encode({"marked": len(candidates)}))

    async def info(request: Request) -> Response:
        require_loaded()
        await committed_by(service)
        rows = await stored(service.history.store.rows())
        return _json(msgspec.json.encode([broker_row(r) for r in rows]))

    async def by_name(request: Request) -> Response:
        require_loaded()
        name = _name(request.path_params["name"], "name")
        namespace = request.query_params.get("namespace") or None
        await committed_by(service)
        row = await stored(service.history.store.by_name(name, namespace))
        if row is None:
            return _json(NO_DATA, 404)
        return await _with_object(service, row)

    async def by_ip(request: Request) -> Response:
        require_loaded()
        ip = _ip(request.path_params["ip"], "ip")
        raw_at = request.query_params.get("at")
        at = None if raw_at is None else parse_instant(raw_at)
        if raw_at is not None and at is None:
            raise ApiProblem(
                400, "invalid_at", f"at: {raw_at[:64]!r} is not RFC 3339 or unix seconds"
            )
        await committed_by(service)
        store = service.history.store
        if at is None:
            row = await stored(store.latest_by_ip(ip))
            if row is None:
                return _json(NO_DATA, 404)
            return await _with_object(service, row)
        history.take()
        found = holder_at(history.leases.by_ip.get(ip, ()), at, settings.grace_period)
        row = None if found is None else await stored(store.pod(found[0].cluster, found[0].uid))
        if found is None or row is None:  # (or pruned between the two reads)
            return _json(NO_DATA, 404)
        lease, held = found
        answer = await _row_with_object(service, row)
        answer.held_from = rfc3339(lease.held_from)
        answer.held_to = rfc3339(lease.held_to) if lease.held_to is not None else None
        answer.state = "held" if held else "released"
        return _json(msgspec.json.encode(answer))

    async def on_node(request: Request) -> Response:
        require_loaded()
        node = _name(request.path_params["node"], "node")
        await committed_by(service)
        rows = await stored(service.history.store.live_on_node(node))
        return _json(msgspec.json.encode([broker_row(r) for r in rows]))

    return [
        Route("/pod/spec", guarded(spec, Role.ADMIN), methods=["POST"]),
        Route("/pod/mark_dead", guarded(mark_dead, Role.ADMIN), methods=["POST"]),
        Route("/pod/info", guarded(info), methods=["GET"]),
        Route("/pod/name/{name}", guarded(by_name), methods=["GET"]),
        Route("/pod/ip/{ip}", guarded(by_ip), methods=["GET"]),
        Route("/pod/list/{node}", guarded(on_node), methods=["GET"]),
    ]


def _holds(record: PodRecord, ip: str) -> bool:
    status = record.pod.status
    return ip in record.ips or normalise_ip(status.podIP or "") == ip


def _status(
    outcome: str,
    record: PodRecord | None,
    reason: str,
    cluster: str = "",
    uid: str = "",
) -> bytes:
    answer: dict[str, str] = {"status": outcome}
    if record is not None:
        cluster, uid = record.key
        answer.update(namespace=record.namespace, name=record.name)
    answer.update(cluster=cluster, uid=uid)
    if reason:
        answer["reason"] = reason
    return msgspec.json.encode(answer)


async def committed_by(service: Service) -> None:
    """Wait until every change so far is in the store; 503 after ``ack_timeout`` (kept, not lost)."""
    timeout = service.settings.ack_timeout
    try:
        await asyncio.wait_for(service.history.commit(), timeout)
    except TimeoutError as exc:
        raise ApiProblem(
            503,
            "store_unavailable",
            f"the history store did not confirm within {timeout:g}s; "
            "changes are kept and written when it is back, retry to confirm",
        ) from exc


async def stored(query: Awaitable[T]) -> T:
    """A store read; 503 naming the store (never its credentials) when it fails."""
    try:
        return await query
    except StoreError as exc:
        raise ApiProblem(503, "store_unavailable", str(exc)) from exc


async def _row_with_object(service: Service, row: StoredPod) -> BrokerRow:
    obj = await stored(service.history.store.pod_object(row.cluster, row.uid))
    return broker_row(row, obj)


async def _with_object(service: Service, row: StoredPod) -> Response:
    return _json(msgspec.json.encode(await _row_with_object(service, row)))
