"""Pod search's pages against the whole ordered match list.

``Search.page`` takes the first page of a large match set by walking the
pods in creation order instead of ranking them all; whichever way it goes,
a page must be exactly that slice of the total order ``Search.ordered``
gives (the export's order). Pods here share creation seconds, so the walk's
ties are exercised, in two clusters, with past pods beside the live ones.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from podindex.index import Index
from podindex.listing import Listing
from podindex.model import Pod
from podindex.podsearch import Entry, Facts, PastPod, PastPods, Search
from podindex.query import parse

NOW = 10_000.0
Doc = tuple[str, str, dict[str, str], bool]
"""(namespace, name, labels, deleted): what the queries below read."""

QUERIES: dict[str, Callable[[Doc], bool]] = {
    "": lambda d: True,
    "Namespace:ns-1": lambda d: d[0] == "ns-1",
    "Namespace:ns-": lambda d: True,
    "Pod Label:app=a": lambda d: d[2].get("app") == "a",
    "Pod Name:r/-1[0-9]$": lambda d: re.search(r"-1[0-9]$", d[1]) is not None,
    "Namespace:ns-2+Pod Label:app=b": lambda d: d[0] == "ns-2" and d[2].get("app") == "b",
    # Negated: no table narrows it, live or past.
    "Pod Label:!app=a": lambda d: d[2].get("app") != "a",
    "Pod Label:app=b+Pod Name:r/[0-9]*5$": lambda d: d[2].get("app") == "b" and d[1][-1] == "5",
    "Pod Name:r/^nothing$": lambda d: False,
    "Deleted:true": lambda d: d[3],
    "Deleted:false": lambda d: not d[3],
}


def _pod(n: int, rng: random.Random) -> Pod:
    second = rng.randrange(12)  # many pods a second: the walk's ties
    created = f"2026-11-30T10:00:{second:02d}Z" if n % 17 else None
    meta: dict[str, Any] = {
        "uid": f"uid-{n:04d}",
        "name": f"pod-{n}",
        "namespace": f"ns-{n % 4}",
        "resourceVersion": str(100 + n),
        "labels": {"app": "ab"[n % 2]},
    }
    if created is not None:
        meta["creationTimestamp"] = created
    status = {"phase": "Running", "podIP": f"10.0.{n // 250}.{n % 250}"}
    return msgspec.convert({"metadata": meta, "spec": {}, "status": status}, Pod)


def _past(n: int, cluster: str) -> PastPod:
    return PastPod(
        key=(cluster, f"gone-{n}"),
        namespace=f"ns-{n % 4}",
        name=f"pod-gone-{n}",
        node="",
        ips=(),
        created=f"2026-11-30T10:00:{n % 12:02d}Z",
        labels={"app": "ab"[n % 2]},
        workload_kind="",
        workload_name="",
        containers=(),
        deleted_at=NOW - 60,
        seq=10_000 + n,
    )


@pytest.fixture
def search() -> Search:
    rng = random.Random(7)
    index = Index()
    for n in range(400):
        index.upsert_pod("c1" if n % 3 else "c2", _pod(n, rng), NOW)
    past = PastPods()
    past.load([_past(n, "c1") for n in range(30)])
    index.observers.append(past.observe)  # pods deleted from here on join the past
    return Search(index, past, Facts(cluster_name=str, digests={}))


def _keys(entries: list[Entry]) -> list[tuple[str, str]]:
    return [e.key for e in entries]


def _check_every_page(search: Search) -> None:
    for text in QUERIES:
        query = parse(text)
        everything = _keys(search.ordered(query, NOW))
        for reversed_ in (False, True):
            expected = everything[::-1] if reversed_ else everything
            for offset, limit in ((0, 1), (0, 3), (0, 10), (7, 10), (0, 50), (40, 100)):
                page = search.page(
                    query, NOW, field=None, reversed_=reversed_, offset=offset, limit=limit
                )
                assert _keys(page) == expected[offset : offset + limit], (text, reversed_, offset)


def test_every_page_is_a_slice_of_the_total_order(
    search: Search, monkeypatch: pytest.MonkeyPatch
) -> None:
    walks = {"live": 0, "past": 0}
    creation_order, in_order = Listing.creation_order, PastPods.in_order

    def live_walk(self: Listing, *, newest_first: bool = False) -> Any:
        walks["live"] += 1
        return creation_order(self, newest_first=newest_first)

    def past_walk(self: PastPods, *, newest_first: bool = False) -> Any:
        walks["past"] += 1
        return in_order(self, newest_first=newest_first)

    monkeypatch.setattr(Listing, "creation_order", live_walk)
    monkeypatch.setattr(PastPods, "in_order", past_walk)
    _check_every_page(search)
    assert walks["live"] and walks["past"], f"pages taken by walking the order: {walks}"


def test_pages_stay_exact_as_pods_come_and_go(search: Search) -> None:
    _check_every_page(search)  # the listing is built now, and follows the index
    rng = random.Random(11)
    index = search.index
    for record in list(index)[::5]:
        index.delete_pod(record.key[0], record.pod, NOW + 1)
    for n in range(400, 480):
        index.upsert_pod("c2", _pod(n, rng), NOW + 2)
    assert len(search.past) == 30 + 80
    _check_every_page(search)
    search.past.prune(NOW)  # the 30 loaded ones died before NOW
    assert len(search.past) == 80
    _check_every_page(search)


def test_each_query_matches_the_pods_it_names(search: Search) -> None:
    """Independent of the order: the match sets, from the pods' own fields."""
    docs: dict[tuple[str, str], Doc] = {
        r.key: (r.namespace, r.name, r.pod.metadata.labels, False) for r in search.index
    }
    docs.update((p.key, (p.namespace, p.name, p.labels, True)) for p in search.past.pods.values())
    for text, wanted in QUERIES.items():
        expected = {key for key, doc in docs.items() if wanted(doc)}
        assert set(_keys(search.ordered(parse(text), NOW))) == expected, text
        first = search.page(parse(text), NOW, field=None, reversed_=False, offset=0, limit=3)
        assert set(_keys(first)) <= expected, text


def test_a_grant_of_namespaces_limits_the_walk(search: Search) -> None:
    page = search.page(
        parse(""), NOW, field=None, reversed_=False, offset=0, limit=5, namespaces={"ns-3"}
    )
    expected = [k for k in _keys(search.ordered(parse("Namespace:ns-3"), NOW))][:5]
    assert _keys(page) == expected
    assert len(page) == 5
