"""``POST /attribute``: a batch of flow records' (ip, timestamp) pairs, each answered with its pod.

One store round trip for the whole batch: every lease on the batch's
distinct IPs is read at once, then each pair is resolved in memory by the
same rule as ``GET /pod/ip/{ip}?at=`` (:func:`podindex.history.holder_at`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.addresses import normalise_ip
from podindex.answers import rfc3339
from podindex.api.bodies import decode_body
from podindex.api.broker import committed_by, stored
from podindex.api.errors import ApiProblem
from podindex.history import LeaseTimeline, parse_instant
from podindex.service import Service
from podindex.store.base import Lease

MAX_PAIRS = 1_000_000
MAX_BODY_BYTES = 128 * 1024 * 1024


State = Literal["held", "released"]


class Pair(msgspec.Struct, gc=False):
    ip: str
    at: str | float


class AttributeRequest(msgspec.Struct, gc=False):
    pairs: list[Pair]


class Holder(msgspec.Struct, gc=False):
    """A pod's lease on an IP: who a result's flow belongs to."""

    cluster: str
    namespace: str
    name: str
    uid: str
    node: str
    workload_identity: str
    workload_kind: str
    workload_name: str
    ip: str
    held_from: str
    held_to: str | None


class Attribution(msgspec.Struct, gc=False):
    ip: str
    """As the pair gave it."""
    at: float
    holder: int | None
    """Index into ``holders``; null when no pod held the IP then."""
    state: State | None
    """Held at that instant, or released less than the grace period before."""


class AttributeResponse(msgspec.Struct, gc=False):
    """Each holder once, each result pointing at one: a batch of 100k flows names a
    few thousand pods, and repeating each pod in every result made the answer
    ~7x larger and its encoding the slowest part of the call."""

    holders: list[Holder]
    results: list[Attribution]


def _holder(lease: Lease) -> Holder:
    return Holder(
        cluster=lease.cluster,
        namespace=lease.namespace,
        name=lease.name,
        uid=lease.uid,
        node=lease.node,
        workload_identity=lease.workload_identity,
        workload_kind=lease.workload_kind,
        workload_name=lease.workload_name,
        ip=lease.ip,
        held_from=rfc3339(lease.held_from),
        held_to=rfc3339(lease.held_to) if lease.held_to is not None else None,
    )


def attribute_all(
    pairs: list[Pair], wanted: list[tuple[str, float]], leases: list[Lease], grace: float
) -> bytes:
    """The encoded response: each pair resolved on its IP's lease timeline.

    Pairs are grouped by IP so each timeline is looked up once; an IP held by
    one pod only (most of them) is answered with two comparisons a pair.
    """
    by_ip: dict[str, list[Lease]] = defaultdict(list)
    for lease in leases:
        by_ip[lease.ip].append(lease)
    positions: dict[str, list[int]] = defaultdict(list)
    for position, (ip, _) in enumerate(wanted):
        positions[ip].append(position)
    numbers: dict[int, int] = {}
    holders: list[Holder] = []

    def number(lease: Lease) -> int:
        found = numbers.get(id(lease))
        if found is None:
            found = numbers[id(lease)] = len(holders)
            holders.append(_holder(lease))
        return found

    results: list[Attribution | None] = [None] * len(pairs)
    for ip, at_positions in positions.items():
        held_by = by_ip.get(ip)
        if held_by is None:
            for i in at_positions:
                results[i] = Attribution(pairs[i].ip, wanted[i][1], None, None)
        elif len(held_by) == 1:
            lease = held_by[0]
            start, end = lease.held_from, lease.held_to
            drained = math.inf if end is None else end + grace
            n = number(lease)
            for i in at_positions:
                at = wanted[i][1]
                if at < start or at >= drained:
                    results[i] = Attribution(pairs[i].ip, at, None, None)
                else:
                    state: State = "held" if end is None or at < end else "released"
                    results[i] = Attribution(pairs[i].ip, at, n, state)
        else:
            timeline = LeaseTimeline(held_by)
            for i in at_positions:
                at = wanted[i][1]
                found = timeline.at(at, grace)
                if found is None:
                    results[i] = Attribution(pairs[i].ip, at, None, None)
                else:
                    state = "held" if found[1] else "released"
                    results[i] = Attribution(pairs[i].ip, at, number(found[0]), state)
    return msgspec.json.encode(AttributeResponse(holders, results))  # type: ignore[arg-type]


def routes(service: Service) -> list[Route]:
    grace = service.settings.grace_period

    async def attribute(request: Request) -> Response:
        if not service.history.loaded:
            raise ApiProblem(503, "not_ready", "history is still loading from the store")
        body = await decode_body(request, AttributeRequest, MAX_BODY_BYTES)
        if len(body.pairs) > MAX_PAIRS:
            raise ApiProblem(413, "too_many_pairs", f"at most {MAX_PAIRS} pairs per call")
        wanted: list[tuple[str, float]] = []
        for position, pair in enumerate(body.pairs):
            ip = normalise_ip(pair.ip)
            if ip is None:
                raise ApiProblem(
                    400,
                    "invalid_pair",
                    f"pairs[{position}].ip: {pair.ip[:64]!r} is not an IP address",
                )
            at = parse_instant(pair.at)
            if at is None:
                raise ApiProblem(
                    400,
                    "invalid_pair",
                    f"pairs[{position}].at: {str(pair.at)[:64]!r} is not RFC 3339 or unix seconds",
                )
            wanted.append((ip, at))
        await committed_by(service)
        leases = await stored(service.history.store.leases({ip for ip, _ in wanted}))
        return Response(
            attribute_all(body.pairs, wanted, leases, grace), media_type="application/json"
        )

    return [Route("/attribute", attribute, methods=["POST"])]
