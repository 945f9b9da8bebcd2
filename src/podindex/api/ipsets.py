"""``/api/v1/ipsets``: live pod IP sets for firewalls and policy engines.

Create, list, get, update, delete a set (admin to change, reader to read);
``…/{name}/members`` is the set now; ``…/{name}/watch`` streams its changes
as newline-delimited JSON (or server-sent events with ``Accept:
text/event-stream``):

- without ``since``: the members as ``ADD`` events carrying the set's
  revision, then each change as it happens;
- with ``since=R``: the changes after R, or, when they are no longer kept
  (or R is from before a restart), ``RESYNC`` and then the members;
- ``BOOKMARK`` with the current revision after 15 s without a change, so a
  client (and every proxy between) knows the stream is alive;
- ``DELETED`` when the set is deleted, and the stream ends.

Each stream has a bounded queue (``STREAM_QUEUE`` events): a consumer too
slow to keep up is counted as an overflow and sent ``RESYNC`` and the
members again, never an unbounded buffer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from podindex.api.auth import Role, require
from podindex.api.bodies import decode_body
from podindex.api.errors import ApiProblem
from podindex.api.integrations import Requirement
from podindex.ipsets import IpSet, IpSetSpec, SetEvent
from podindex.selectors import SelectorError, build_selector, parse_selector
from podindex.service import Service
from podindex.store.base import StoreError

log = logging.getLogger("podindex.ipsets")

PREFIX = "/api/v1/ipsets"
STREAM_QUEUE = 10_000
BOOKMARK_EVERY = 15.0
MAX_BODY = 64 * 1024
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?")


class SetBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    cluster: str | None = None
    namespace: str | None = None
    selector: str | None = None
    requirements: list[Requirement] | None = None
    grace_seconds: float | None = None


class StreamStats:
    """Counters for /metrics, per set name."""

    def __init__(self) -> None:
        self.watchers: dict[str, int] = {}
        self.overflows: dict[str, int] = {}
        self.resyncs: dict[str, int] = {}


def view(ipset: IpSet) -> dict[str, Any]:
    spec = ipset.spec
    return {
        "name": spec.name,
        "cluster": spec.cluster,
        "namespace": spec.namespace,
        "selector": spec.selector,
        "grace_seconds": spec.grace_seconds,
        "revision": ipset.revision,
        "members": len(ipset.members),
        "draining": len(ipset.draining),
    }


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


def routes(service: Service, stats: StreamStats) -> list[Route]:
    sets = service.ipsets
    changing = service.ipset_changes
    """One change at a time: each checks, saves, then applies, and must not interleave
    (with another request, or with the reconcile of what other replicas changed)."""

    async def reader(request: Request) -> None:
        await require(request, Role.READER)

    async def admin(request: Request) -> None:
        await require(request, Role.ADMIN)  # sets are cluster-wide: no namespace grant reaches

    def loaded() -> None:
        if not service.ipsets_loaded:
            raise ApiProblem(503, "not_ready", "the IP sets are not loaded from the store yet")

    async def saved(spec: IpSetSpec) -> None:
        """Stored first: a set the store did not take is not changed (503)."""
        try:
            await service.history.store.save_ipset(
                spec.name, msgspec.json.encode(spec).decode(), time.time()
            )
        except StoreError as exc:
            raise ApiProblem(
                503, "store_unavailable", f"the store did not save it: {exc}"
            ) from None

    def named(request: Request) -> IpSet:
        name = request.path_params["name"]
        ipset = sets.sets.get(name)
        if ipset is None:
            raise ApiProblem(404, "not_found", f"no IP set {name!r}")
        return ipset

    def spec_from(body: SetBody, base: IpSetSpec | None) -> IpSetSpec:
        name = body.name if body.name is not None else base.name if base else None
        if name is None or not _NAME.fullmatch(name):
            raise ApiProblem(400, "invalid_name", "name: a DNS label-like name is required")
        cluster = body.cluster if body.cluster is not None else base.cluster if base else None
        if cluster is None or cluster not in service.clusters:
            known = ", ".join(sorted(service.clusters)) or "none"
            raise ApiProblem(
                400, "invalid_cluster", f"cluster: {cluster!r} is not a cluster (known: {known})"
            )
        if body.selector is not None and body.requirements is not None:
            raise ApiProblem(400, "invalid_selector", "give selector or requirements, not both")
        selector = base.selector if base else ""
        try:
            if body.requirements is not None:
                selector = build_selector(
                    [(r.key, r.operator, r.values) for r in body.requirements]
                )
            elif body.selector is not None:
                parse_selector(body.selector)
                selector = body.selector
        except SelectorError as exc:
            raise ApiProblem(400, "invalid_selector", str(exc)) from None
        namespace = (
            body.namespace if body.namespace is not None else base.namespace if base else None
        )
        grace = body.grace_seconds
        if grace is None:
            grace = base.grace_seconds if base else 30.0
        if not 0 <= grace <= 86_400:
            raise ApiProblem(400, "invalid_grace_seconds", "grace_seconds: 0 to 86400")
        return IpSetSpec(name, cluster, selector, namespace or None, float(grace))

    async def create(request: Request) -> Response:
        await admin(request)
        loaded()
        body = await decode_body(request, SetBody, MAX_BODY)
        async with changing:
            spec = spec_from(body, None)
            if spec.name in sets.sets:
                raise ApiProblem(409, "name_taken", f"an IP set {spec.name!r} exists")
            await saved(spec)
            ipset = sets.put(spec, time.time())
        log.info("IP set %s created: %s", spec.name, spec)
        return _json(view(ipset), 201)

    async def listing(request: Request) -> Response:
        await reader(request)
        loaded()
        return _json({"items": [view(s) for _, s in sorted(sets.sets.items())]})

    async def get(request: Request) -> Response:
        await reader(request)
        return _json(view(named(request)))

    async def update(request: Request) -> Response:
        await admin(request)
        body = await decode_body(request, SetBody, MAX_BODY)
        async with changing:
            ipset = named(request)
            if body.name is not None and body.name != ipset.spec.name:
                raise ApiProblem(400, "invalid_name", "name: a set cannot be renamed")
            spec = spec_from(body, ipset.spec)
            await saved(spec)
            sets.put(spec, time.time())
        log.info("IP set %s updated: %s", spec.name, spec)
        return _json(view(ipset))

    async def delete(request: Request) -> Response:
        await admin(request)
        async with changing:
            ipset = named(request)
            try:
                await service.history.store.delete_ipset(ipset.spec.name)
            except StoreError as exc:
                raise ApiProblem(
                    503, "store_unavailable", f"the store did not delete it: {exc}"
                ) from None
            sets.delete(ipset.spec.name)
        log.info("IP set %s deleted", ipset.spec.name)
        return Response(status_code=204)

    async def members(request: Request) -> Response:
        await reader(request)
        revision, current = named(request).snapshot()
        return _json(
            {
                "name": request.path_params["name"],
                "revision": revision,
                "members": [msgspec.to_builtins(m) for m in current],
            }
        )

    async def watch(request: Request) -> Response:
        await reader(request)
        ipset = named(request)
        raw = request.query_params.get("since")
        since: int | None = None
        if raw is not None:
            if not raw.isdigit():
                raise ApiProblem(400, "invalid_since", "since: a revision (a whole number)")
            since = int(raw)
        sse = "text/event-stream" in request.headers.get("accept", "")
        return StreamingResponse(
            _stream(ipset, since, sse, stats, lambda: sets.sets.get(ipset.spec.name) is ipset),
            media_type="text/event-stream" if sse else "application/x-ndjson",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return [
        Route(PREFIX, create, methods=["POST"]),
        Route(PREFIX, listing, methods=["GET"]),
        Route(PREFIX + "/{name}", get, methods=["GET"]),
        Route(PREFIX + "/{name}", update, methods=["PUT", "PATCH"]),
        Route(PREFIX + "/{name}", delete, methods=["DELETE"]),
        Route(PREFIX + "/{name}/members", members, methods=["GET"]),
        Route(PREFIX + "/{name}/watch", watch, methods=["GET"]),
    ]


def _event(kind: str, ip: str | None, pod: Any, revision: int) -> dict[str, Any]:
    return {"type": kind, "ip": ip, "pod": msgspec.to_builtins(pod), "revision": revision}


async def _stream(
    ipset: IpSet,
    since: int | None,
    sse: bool,
    stats: StreamStats,
    alive: Callable[[], bool],
) -> AsyncIterator[bytes]:
    name = ipset.spec.name
    queue: asyncio.Queue[SetEvent] = asyncio.Queue(STREAM_QUEUE)
    overflowed = False
    deleted = False

    def listen(event: SetEvent) -> None:
        nonlocal overflowed, deleted
        if event.type == "DELETED":
            deleted = True  # beside the queue: an overflow must not swallow it
            if not queue.full():
                queue.put_nowait(event)  # wakes a stream waiting on an empty queue
            return
        if overflowed:
            return
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            overflowed = True

    def encode(message: dict[str, Any]) -> bytes:
        body = msgspec.json.encode(message)
        return b"data: " + body + b"\n\n" if sse else body + b"\n"

    def full_set(resync: bool) -> tuple[int, list[bytes]]:
        revision, members = ipset.snapshot()
        lines = [encode(_event("RESYNC", None, None, revision))] if resync else []
        lines += [encode(_event("ADD", m.ip, m.pod, revision)) for m in members]
        return revision, lines

    ipset.listeners.append(listen)
    stats.watchers[name] = stats.watchers.get(name, 0) + 1
    # Deleted between the request and this first step: it will never say so itself.
    deleted = deleted or not alive()
    try:
        replay = ipset.since(since) if since is not None else None
        if since is not None and replay is not None:
            sent = since
            for event in replay:
                yield encode(_event(event.type, event.ip, event.pod, event.revision))
                sent = event.revision
        else:
            if since is not None:
                stats.resyncs[name] = stats.resyncs.get(name, 0) + 1
            sent, lines = full_set(resync=since is not None)
            for line in lines:
                yield line
        while True:
            if deleted:
                yield encode({"type": "DELETED", "revision": ipset.revision})
                return
            try:
                event = await asyncio.wait_for(queue.get(), BOOKMARK_EVERY)
            except TimeoutError:
                yield encode({"type": "BOOKMARK", "revision": ipset.revision})
                continue
            if event.type == "DELETED" or deleted:
                yield encode({"type": "DELETED", "revision": ipset.revision})
                return
            if overflowed:
                stats.overflows[name] = stats.overflows.get(name, 0) + 1
                stats.resyncs[name] = stats.resyncs.get(name, 0) + 1
                while not queue.empty():
                    queue.get_nowait()
                overflowed = False
                sent, lines = full_set(resync=True)
                for line in lines:
                    yield line
                continue
            if event.revision <= sent:
                continue  # already in the replay or the full set
            yield encode(_event(event.type, event.ip, event.pod, event.revision))
            sent = event.revision
    finally:
        if listen in ipset.listeners:
            ipset.listeners.remove(listen)
        stats.watchers[name] -= 1


class IpSetsCollector(Collector):
    """Per set: members, draining, events emitted, streams, resyncs and overflows."""

    def __init__(self, service: Service, stats: StreamStats) -> None:
        self.service = service
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        members = GaugeMetricFamily("podindex_ipset_members", "IPs in the set", labels=["set"])
        draining = GaugeMetricFamily(
            "podindex_ipset_draining", "Members waiting out their grace period", labels=["set"]
        )
        emitted = CounterMetricFamily(
            "podindex_ipset_events", "ADD and REMOVE events emitted", labels=["set", "type"]
        )
        watchers = GaugeMetricFamily(
            "podindex_ipset_watchers", "Streams following the set", labels=["set"]
        )
        resyncs = CounterMetricFamily(
            "podindex_ipset_resyncs", "Streams sent the whole set again", labels=["set"]
        )
        overflows = CounterMetricFamily(
            "podindex_ipset_stream_overflows", "Streams that fell too far behind", labels=["set"]
        )
        for name, ipset in sorted(self.service.ipsets.sets.items()):
            members.add_metric([name], len(ipset.members))
            draining.add_metric([name], len(ipset.draining))
            for kind, count in ipset.emitted.items():
                emitted.add_metric([name, kind], count)
            watchers.add_metric([name], self.stats.watchers.get(name, 0))
            resyncs.add_metric([name], self.stats.resyncs.get(name, 0))
            overflows.add_metric([name], self.stats.overflows.get(name, 0))
        yield from (members, draining, emitted, watchers, resyncs, overflows)
