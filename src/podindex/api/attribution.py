"""``POST /attribute``: a batch of flow records' (ip, timestamp) pairs, each answered with its pod.

Answered from the history writer's lease book (memory), never the database:
each pair is resolved by the same rule as ``GET /pod/ip/{ip}?at=``
(:class:`podindex.history.LeaseTimeline`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.addresses import normalise_ip
from podindex.api.auth import guarded
from podindex.api.bodies import decode_body
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


class Attribution(msgspec.Struct, gc=False):
    ip: str
    """As the pair gave it."""
    at: float
    holder: int | None
    """Index into ``holders``; null when no pod held the IP then."""
    state: State | None
    """Held at that instant, or released less than the grace period before."""


class AttributeResponse(msgspec.Struct, gc=False):
    """Each holder once, each result pointing at one.

    A holder is a pod's lease on an IP (``held_from``/``held_to`` in unix
    seconds, like the pairs' times): a batch of 100k flows names tens of
    thousands of pods, and repeating each pod in every result made the answer
    ~3x larger and its encoding the slowest part of the call.
    """

    holders: list[Lease]
    results: list[Attribution]


def attribute_all(
    pairs: list[Pair],
    wanted: list[tuple[str, float]],
    by_ip: Mapping[str, list[Lease]],
    grace: float,
) -> bytes:
    """The encoded response: each pair resolved on its IP's lease timeline.

    An IP held by one pod only (most of them) is answered with two
    comparisons; others build their timeline once, on first use.
    """
    numbers: dict[int, int] = {}
    holders: list[Lease] = []
    timelines: dict[str, LeaseTimeline] = {}
    results: list[Attribution] = []
    append = results.append
    get = by_ip.get
    for pair, (ip, at) in zip(pairs, wanted, strict=True):
        held_by = get(ip)
        lease: Lease | None = None
        held = False
        if held_by is not None:
            if len(held_by) == 1:
                only = held_by[0]
                end = only.held_to
                if only.held_from <= at and (end is None or at < end + grace):
                    lease, held = only, end is None or at < end
            else:
                timeline = timelines.get(ip)
                if timeline is None:
                    timeline = timelines[ip] = LeaseTimeline(held_by)
                found = timeline.at(at, grace)
                if found is not None:
                    lease, held = found
        if lease is None:
            append(Attribution(pair.ip, at, None, None))
            continue
        n = numbers.get(id(lease))
        if n is None:
            n = numbers[id(lease)] = len(holders)
            holders.append(lease)
        append(Attribution(pair.ip, at, n, "held" if held else "released"))
    return msgspec.json.encode(AttributeResponse(holders, results))


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
        service.history.take()  # every change so far is in the lease book: no database
        answer = attribute_all(body.pairs, wanted, service.history.leases.by_ip, grace)
        return Response(answer, media_type="application/json")

    return [Route("/attribute", guarded(attribute), methods=["POST"])]
