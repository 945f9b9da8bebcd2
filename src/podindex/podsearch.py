"""Pod search over the live pods (the index) and the pods of history (:class:`PastPods`).

A query (:mod:`podindex.query`) is answered in three steps:

1. Candidates: the index's tables narrow the live pods by namespace, node or
   label, whichever pair of the query allows it (a pair that would match a
   pod without the field cannot narrow); past pods narrow by namespace.
2. Every candidate is matched against the whole query, so narrowing only
   has to find a superset.
3. Matches are ordered totally: by the sort field, then uid (then cluster).
   Without a sort field, by creation time, then first-seen order: pods that
   appear while a client pages through sort after the pages it has read, so
   nothing is skipped or repeated. A pod that dies stays in place (it moves
   from the index to :class:`PastPods` with the same key).

Past pods are the ones the index dropped within the retention period, kept
as small documents (loaded from the store at start). Their container
instances, like the live pods', are in the store (:mod:`podindex.instances`).

Pure: no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from itertools import chain
from typing import Final

import msgspec

from podindex.containers import pod_id, workload_id
from podindex.index import Index, PodRecord
from podindex.model import PodKey, Workload
from podindex.query import FIELDS, Pair, Query, QueryError, field_name


class PastPod(msgspec.Struct, gc=False):
    """A pod the index no longer has, as search needs it."""

    key: PodKey
    namespace: str
    name: str
    node: str
    ips: tuple[str, ...]
    created: str
    labels: dict[str, str]
    workload_kind: str
    workload_name: str
    containers: tuple[str, ...]
    deleted_at: float
    seq: int


class PastPods:
    """Pods gone from the index, kept for search for the retention period."""

    def __init__(self) -> None:
        self.pods: dict[PodKey, PastPod] = {}
        self.by_namespace: dict[str, set[PodKey]] = {}
        self._labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}

    def observe(self, old: PodRecord | None, new: PodRecord | None, now: float) -> None:
        """An index observer: a pod leaving the index joins; one coming back leaves."""
        if new is not None:
            if new.key in self.pods:
                self._discard(new.key)
            return
        if old is None:
            return
        pod = old.pod
        workload = old.workload
        self._add(
            PastPod(
                key=old.key,
                namespace=pod.metadata.namespace,
                name=pod.metadata.name,
                node=pod.spec.nodeName,
                ips=old.ips or ips_of(pod.status.podIP),
                created=pod.metadata.creationTimestamp or "",
                labels=pod.metadata.labels,
                workload_kind=workload.kind,
                workload_name=workload.name,
                containers=container_names(old),
                deleted_at=now,
                seq=old.seq,
            )
        )

    def load(self, pods: Iterable[PastPod]) -> None:
        """Dead pods from the store (at start)."""
        for pod in pods:
            pod.labels = self._labels.setdefault(tuple(pod.labels.items()), pod.labels)
            self._add(pod)

    def prune(self, dead_before: float) -> list[PodKey]:
        """Forget pods dead since before ``dead_before``; returns their keys."""
        doomed = [k for k, p in self.pods.items() if p.deleted_at < dead_before]
        for key in doomed:
            self._discard(key)
        return doomed

    def __len__(self) -> int:
        return len(self.pods)

    def _add(self, pod: PastPod) -> None:
        if pod.key in self.pods:
            self._discard(pod.key)
        pod.containers = self._names.setdefault(pod.containers, pod.containers)
        self.pods[pod.key] = pod
        self.by_namespace.setdefault(pod.namespace, set()).add(pod.key)

    def _discard(self, key: PodKey) -> None:
        pod = self.pods.pop(key)
        keys = self.by_namespace.get(pod.namespace)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_namespace[pod.namespace]


def ips_of(ip: str) -> tuple[str, ...]:
    return (ip,) if ip else ()


def container_names(record: PodRecord) -> tuple[str, ...]:
    """A live pod's containers (init containers are not instances)."""
    return tuple(c.name for c in record.pod.spec.containers or ())


Entry = PodRecord | PastPod


@dataclass(frozen=True)
class Facts:
    """What search needs besides the pods: names of clusters, image digests."""

    cluster_name: Callable[[str], str]
    digests: Mapping[PodKey, tuple[str, ...]]


def _workload_of(entry: Entry) -> tuple[str, str]:
    if isinstance(entry, PastPod):
        return entry.workload_kind, entry.workload_name
    return entry.workload.kind, entry.workload.name


def deployment_id(entry: Entry) -> str | None:
    kind, name = _workload_of(entry)
    if not kind:
        return None
    cluster = entry.key[0]
    namespace = entry.namespace
    return workload_id(cluster, namespace, Workload(name, "owner", kind, name, {}))


def _one(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def _labels(entry: Entry) -> dict[str, str]:
    return entry.labels if isinstance(entry, PastPod) else entry.pod.metadata.labels


def _node(entry: Entry) -> str:
    return entry.node


def _created(entry: Entry) -> str:
    if isinstance(entry, PastPod):
        return entry.created
    return entry.pod.metadata.creationTimestamp or ""


def _ips(entry: Entry) -> tuple[str, ...]:
    if isinstance(entry, PastPod):
        return entry.ips
    return entry.ips or ips_of(entry.pod.status.podIP)


def _containers(entry: Entry) -> tuple[str, ...]:
    return entry.containers if isinstance(entry, PastPod) else container_names(entry)


Extract = Callable[[Entry, Facts], Sequence[str]]

EXTRACT: Final[dict[str, Extract]] = {
    "pod name": lambda e, f: (e.name,),
    "pod id": lambda e, f: (pod_id(e.key[1]),),
    "pod uid": lambda e, f: (e.key[1],),
    "namespace": lambda e, f: (e.namespace,),
    "cluster": lambda e, f: (f.cluster_name(e.key[0]),),
    "cluster id": lambda e, f: (e.key[0],),
    "deployment": lambda e, f: _one(_workload_of(e)[1]),
    "deployment id": lambda e, f: _one(deployment_id(e)),
    "pod label": lambda e, f: tuple(f"{k}={v}" for k, v in _labels(e).items()),
    "container name": lambda e, f: _containers(e),
    "container image digest": lambda e, f: f.digests.get(e.key, ()),
    "node": lambda e, f: _one(_node(e)),
    "pod ip": lambda e, f: _ips(e),
    "created": lambda e, f: _one(_created(e)),
    "deleted": lambda e, f: ("true",) if isinstance(e, PastPod) else ("false",),
}
assert EXTRACT.keys() == FIELDS.keys()


def sort_field(label: str | None) -> str | None:
    """The canonical field of ``pagination.sortOption.field``; QueryError names a bad one."""
    if label is None or not label.strip():
        return None
    try:
        return field_name(label)
    except QueryError:
        known = ", ".join(sorted(k.title() for k in FIELDS))
        raise QueryError(f"unknown sort field {label.strip()!r}; known: {known}") from None


SortKey = tuple[object, ...]


def sort_key(entry: Entry, field: str | None, facts: Facts) -> SortKey:
    """Total: the field's value(s), then uid and cluster; without a field, creation
    then first-seen order (see the module docstring)."""
    if field is None:
        return (_created(entry), entry.seq, entry.key[1], entry.key[0])
    values = EXTRACT[field](entry, facts)
    return (",".join(values), entry.key[1], entry.key[0])


@dataclass(frozen=True)
class Search:
    index: Index
    past: PastPods
    facts: Facts

    def matches(
        self, query: Query, now: float, namespaces: Set[str] | None = None
    ) -> Iterable[Entry]:
        """Every pod ``query`` matches (in no order); only in ``namespaces`` if given."""
        facts = self.facts

        def accept(entry: Entry) -> bool:
            if namespaces is not None and entry.namespace not in namespaces:
                return False
            return query.matches(lambda field: EXTRACT[field](entry, facts), now)

        live, past = _deleted_scope(query, now)
        found: list[Iterable[Entry]] = []
        if live:
            found.append(filter(accept, self._live_candidates(query, now, namespaces)))
        if past:
            found.append(filter(accept, self._past_candidates(query, now, namespaces)))
        return chain.from_iterable(found)

    def page(
        self,
        query: Query,
        now: float,
        *,
        field: str | None,
        reversed_: bool,
        offset: int,
        limit: int,
        namespaces: Set[str] | None = None,
    ) -> list[Entry]:
        """One page of the matches, in the total order (or its reverse)."""
        facts = self.facts
        entries = self.matches(query, now, namespaces)

        def key(entry: Entry) -> SortKey:
            return sort_key(entry, field, facts)

        pick = heapq.nlargest if reversed_ else heapq.nsmallest
        return pick(offset + limit, entries, key=key)[offset:]

    def ordered(self, query: Query, now: float, namespaces: Set[str] | None = None) -> list[Entry]:
        """Every match in the default order (for export)."""
        facts = self.facts
        return sorted(self.matches(query, now, namespaces), key=lambda e: sort_key(e, None, facts))

    def _live_candidates(
        self, query: Query, now: float, namespaces: Set[str] | None
    ) -> Iterable[PodRecord]:
        index = self.index
        sets: list[Set[PodKey]] = []
        if namespaces is not None:
            sets.append(_union(index.by_namespace.get(ns, frozenset()) for ns in namespaces))
        for pair in query.pairs:
            if _matches_nothing(pair, now):
                continue  # a pod without the field matches: no table can narrow it
            if pair.field == "namespace":
                sets.append(_narrowed(pair, index.by_namespace, now))
            elif pair.field == "node":
                sets.append(_narrowed(pair, index.by_node, now))
        if not sets:
            for pair in query.pairs:
                if pair.field == "pod label" and not _matches_nothing(pair, now):
                    sets.append(_narrowed_labels(pair, index.by_label, now))
        if not sets:
            return index.pods.values()
        smallest = min(sets, key=len)
        pods = index.pods
        return [pods[k] for k in smallest if all(k in s for s in sets if s is not smallest)]

    def _past_candidates(
        self, query: Query, now: float, namespaces: Set[str] | None
    ) -> Iterable[PastPod]:
        past = self.past
        sets: list[Set[PodKey]] = []
        if namespaces is not None:
            sets.append(_union(past.by_namespace.get(ns, frozenset()) for ns in namespaces))
        for pair in query.pairs:
            if pair.field == "namespace" and not _matches_nothing(pair, now):
                sets.append(_narrowed(pair, past.by_namespace, now))
        if not sets:
            return list(past.pods.values())
        smallest = min(sets, key=len)
        return [past.pods[k] for k in smallest if all(k in s for s in sets if s is not smallest)]


def _matches_nothing(pair: Pair, now: float) -> bool:
    """Whether ``pair`` matches a pod that has no value for its field."""
    return pair.matches(lambda field: (), now)


def _narrowed(pair: Pair, table: Mapping[str, Set[PodKey]], now: float) -> Set[PodKey]:
    """Keys of the pods whose (single) value of the pair's field matches it."""
    return _union(keys for value, keys in table.items() if pair.matches(_always((value,)), now))


def _narrowed_labels(
    pair: Pair, table: Mapping[tuple[str, str], Set[PodKey]], now: float
) -> Set[PodKey]:
    """A superset of the pods a label pair matches: those with a label it matches
    alone (exact for a pair without negation; a negated one is rechecked)."""
    return _union(
        keys for (k, v), keys in table.items() if pair.matches(_always((f"{k}={v}",)), now)
    )


def _always(values: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """A document with ``values`` for whatever field is asked."""
    return lambda field: values


def _union(sets: Iterable[Set[PodKey]]) -> Set[PodKey]:
    found: set[PodKey] = set()
    for keys in sets:
        found |= keys
    return found


def _deleted_scope(query: Query, now: float) -> tuple[bool, bool]:
    """Whether live pods, and pods of history, can match (a ``Deleted`` pair says)."""
    live = past = True
    for pair in query.pairs:
        if pair.field == "deleted":
            live = live and pair.matches(lambda f: ("false",), now)
            past = past and pair.matches(lambda f: ("true",), now)
    return live, past
