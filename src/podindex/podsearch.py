"""Pod search over the live pods (the index) and the pods of history (:class:`PastPods`).

A query (:mod:`podindex.query`) is answered in three steps:

1. Candidates: the index's tables narrow the live pods by namespace, node and
   label (a label pair only when every term names the key it needs: a
   negated one also matches pods without the label); past pods narrow by
   namespace. Each of these is exact: each value in a table is tried alone.
2. Every candidate is matched against the pairs narrowing did not settle.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from itertools import chain, islice
from typing import Final, TypeVar, cast

import msgspec
from sortedcontainers import SortedList

from podindex.containers import owner_id, pod_id
from podindex.index import Index, PodRecord
from podindex.model import PodKey
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
        self._order = SortedList()
        """Every pod's :func:`_past_order`: the default order, so a page is a walk."""

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

    def in_order(self, *, newest_first: bool = False) -> Iterator[tuple[object, PodKey]]:
        """(sort key, key) of every pod in the default order (or its reverse)."""
        for order in reversed(self._order) if newest_first else self._order:
            yield order, (order[3], order[2])  # _past_order ends (uid, cluster)

    def _add(self, pod: PastPod) -> None:
        if pod.key in self.pods:
            self._discard(pod.key)
        pod.containers = self._names.setdefault(pod.containers, pod.containers)
        self.pods[pod.key] = pod
        self.by_namespace.setdefault(pod.namespace, set()).add(pod.key)
        self._order.add(_past_order(pod))

    def _discard(self, key: PodKey) -> None:
        pod = self.pods.pop(key)
        self._order.remove(_past_order(pod))
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
_E = TypeVar("_E")


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
    return owner_id(entry.key[0], entry.namespace, kind, name)


def _one(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def _labels(entry: Entry) -> dict[str, str]:
    return entry.labels if isinstance(entry, PastPod) else entry.pod.metadata.labels


def created_of(entry: Entry) -> str:
    """Its creation time as Kubernetes wrote it ("" if unknown)."""
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
    "node": lambda e, f: _one(e.node),
    "pod ip": lambda e, f: _ips(e),
    "created": lambda e, f: _one(created_of(e)),
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


SortKey = tuple[str | int, ...]


def _pick(n: int, entries: Iterable[_E], key: Callable[[_E], SortKey], largest: bool) -> list[_E]:
    if largest:
        return heapq.nlargest(n, entries, key=key)
    return heapq.nsmallest(n, entries, key=key)


def _live_order(record: PodRecord) -> SortKey:
    return (record.pod.metadata.creationTimestamp or "", record.seq, record.key[1], record.key[0])


def _past_order(pod: PastPod) -> SortKey:
    return (pod.created, pod.seq, pod.key[1], pod.key[0])


def sort_key_default(entry: Entry) -> SortKey:
    return _past_order(entry) if isinstance(entry, PastPod) else _live_order(entry)


def sort_key(entry: Entry, field: str | None, facts: Facts) -> SortKey:
    """Total: the field's value(s), then uid and cluster; without a field, creation
    then first-seen order (see the module docstring)."""
    if field is None:
        return sort_key_default(entry)
    values = EXTRACT[field](entry, facts)
    return (",".join(values), entry.key[1], entry.key[0])


@dataclass(frozen=True)
class Search:
    index: Index
    past: PastPods
    facts: Facts

    def _matching(
        self, query: Query, now: float, namespaces: Set[str] | None
    ) -> tuple[Iterable[PodRecord], Iterable[PastPod]]:
        """The live pods and the past pods ``query`` matches, apart (each has its own
        cheapest sort key)."""
        live, past = _deleted_scope(query, now)
        records: Iterable[PodRecord] = ()
        gone: Iterable[PastPod] = ()
        if live:
            keys, rest = self._live_candidates(query, now, namespaces)
            pods = self.index.pods
            candidates = pods.values() if keys is None else [pods[k] for k in keys]
            records = cast(Iterable[PodRecord], self._checked(candidates, rest, now))
        if past:
            keys, rest = self._past_candidates(query, now, namespaces)
            pods_of = self.past.pods
            old = pods_of.values() if keys is None else [pods_of[k] for k in keys]
            gone = cast(Iterable[PastPod], self._checked(old, rest, now))
        return records, gone

    def _checked(
        self, entries: Iterable[Entry], pairs: Sequence[Pair], now: float
    ) -> Iterable[Entry]:
        """``entries`` that match every pair of ``pairs`` (those narrowing did not settle)."""
        accept = self._acceptor(pairs, now)
        return entries if accept is None else filter(accept, entries)

    def _acceptor(self, pairs: Sequence[Pair], now: float) -> Callable[[Entry], bool] | None:
        """Whether an entry matches every pair of ``pairs``; None when there are none."""
        if not pairs:
            return None
        facts = self.facts
        by_labels = Query(tuple(p for p in pairs if p.field == "pod label"))
        rest = Query(tuple(p for p in pairs if p.field != "pod label"))
        label_verdict = _label_verdicts(by_labels, now)

        def accept(entry: Entry) -> bool:
            return (not by_labels.pairs or label_verdict(_labels(entry))) and rest.matches(
                lambda field: EXTRACT[field](entry, facts), now
            )

        return accept

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
        wanted = offset + limit
        found: Iterable[Entry]
        if field is None:
            with_live, with_past = _deleted_scope(query, now)
            first_live = (
                self._first_live(query, now, namespaces, wanted, reversed_) if with_live else []
            )
            first_past = (
                self._first_past(query, now, namespaces, wanted, reversed_) if with_past else []
            )
            found = heapq.merge(first_live, first_past, key=sort_key_default, reverse=reversed_)
        else:
            facts = self.facts

            def key(entry: Entry) -> SortKey:
                return sort_key(entry, field, facts)

            live, past = self._matching(query, now, namespaces)
            everything: Iterable[Entry] = chain(live, past)
            found = _pick(wanted, everything, key, reversed_)
        return list(islice(found, offset, wanted))

    def _first_live(
        self, query: Query, now: float, namespaces: Set[str] | None, n: int, newest_first: bool
    ) -> list[PodRecord]:
        """The first ``n`` live matches in the default order (see :meth:`_first`)."""
        keys, rest = self._live_candidates(query, now, namespaces)
        index = self.index

        def walk() -> Iterable[tuple[object, PodKey]]:
            # Pods of one creation second come in any order: the n-th match's is taken whole.
            return index.listing.creation_order(newest_first=newest_first)

        return self._first(n, index.pods, keys, rest, now, _live_order, walk, newest_first)

    def _first_past(
        self, query: Query, now: float, namespaces: Set[str] | None, n: int, newest_first: bool
    ) -> list[PastPod]:
        """The first ``n`` past matches in the default order (see :meth:`_first`)."""
        keys, rest = self._past_candidates(query, now, namespaces)
        past = self.past

        def walk() -> Iterable[tuple[object, PodKey]]:
            return past.in_order(newest_first=newest_first)

        return self._first(n, past.pods, keys, rest, now, _past_order, walk, newest_first)

    def _first(
        self,
        n: int,
        pods: Mapping[PodKey, _E],
        keys: Set[PodKey] | None,
        rest: Sequence[Pair],
        now: float,
        order: Callable[[_E], SortKey],
        walk: Callable[[], Iterable[tuple[object, PodKey]]],
        newest_first: bool,
    ) -> list[_E]:
        """The first ``n`` of ``pods`` (``keys`` of them, None: all) matching ``rest``.

        Ranking every candidate costs their number; walking the pods in order
        until ``n`` match meets a candidate about every ``len(pods) /
        len(candidates)`` pods. The cheaper one is taken, so the first page
        of every pod (or of most of them) is a short walk, not a sort of
        100k. ``walk`` yields (group, key) in order; pods within a group are
        in no particular order, so the n-th match's group is taken whole and
        ranked by ``order``.
        """
        if n <= 0:
            return []
        size = len(pods) if keys is None else len(keys)
        if size * size <= n * len(pods):
            candidates = cast(
                Iterable[Entry], pods.values() if keys is None else [pods[k] for k in keys]
            )
            matches = cast(Iterable[_E], self._checked(candidates, rest, now))
            return _pick(n, matches, order, newest_first)
        accept = self._acceptor(rest, now)
        found: list[_E] = []
        last: object = None  # the n-th match's group
        for group, key in walk():
            if len(found) >= n and group != last:
                break
            entry = pods.get(key) if keys is None or key in keys else None
            if entry is None or (accept is not None and not accept(cast(Entry, entry))):
                continue
            found.append(entry)
            if len(found) == n:
                last = group
        return _pick(n, found, order, newest_first)

    def ordered(self, query: Query, now: float, namespaces: Set[str] | None = None) -> list[Entry]:
        """Every match in the default order (for export)."""
        live, past = self._matching(query, now, namespaces)
        records: list[PodRecord] = sorted(live, key=_live_order)
        gone: list[PastPod] = sorted(past, key=_past_order)
        both: tuple[Iterable[Entry], ...] = (records, gone)
        return list(heapq.merge(*both, key=sort_key_default))

    def _live_candidates(
        self, query: Query, now: float, namespaces: Set[str] | None
    ) -> tuple[Set[PodKey] | None, list[Pair]]:
        """The keys of a superset of the live pods ``query`` matches (None: every
        pod), and the pairs still to check.

        Namespace and node pairs narrow exactly (each value is tried alone);
        so do label pairs whose every term names the key it needs.
        """
        index = self.index
        sets: list[Set[PodKey]] = []
        rest: list[Pair] = []
        if namespaces is not None:
            sets.append(_union(index.by_namespace.get(ns, frozenset()) for ns in namespaces))
        for pair in query.pairs:
            if pair.field == "namespace":
                sets.append(_narrowed(pair, index.by_namespace, now))
            elif pair.field == "node":  # a pod on no node is filed under ""
                sets.append(_narrowed(pair, index.by_node, now))
            elif pair.field == "pod label" and all(t.label_key for t in pair.terms):
                sets.append(_narrowed_labels(pair, index, now))
            elif pair.field != "deleted":
                rest.append(pair)
        if not sets:
            return None, rest
        return _keys_in_all(sets), rest

    def _past_candidates(
        self, query: Query, now: float, namespaces: Set[str] | None
    ) -> tuple[Set[PodKey] | None, list[Pair]]:
        """As :meth:`_live_candidates`, for the pods of history (namespaces narrow them)."""
        past = self.past
        sets: list[Set[PodKey]] = []
        rest: list[Pair] = []
        if namespaces is not None:
            sets.append(_union(past.by_namespace.get(ns, frozenset()) for ns in namespaces))
        for pair in query.pairs:
            if pair.field == "namespace":
                sets.append(_narrowed(pair, past.by_namespace, now))
            elif pair.field != "deleted":
                rest.append(pair)
        if not sets:
            return None, rest
        return _keys_in_all(sets), rest


def _label_verdicts(query: Query, now: float) -> Callable[[dict[str, str]], bool]:
    """Whether a pod's labels match ``query`` (``Pod Label`` pairs), each answer
    remembered: search asks it of thousands of pods with few distinct labels.

    When every term names the key it needs, only those keys' values decide,
    and the answer is kept per those values (pods of one Deployment share
    them). Otherwise it is kept per label map: a ReplicaSet's pods share
    one, held beside the answer so that its id cannot be reused meanwhile.
    """
    keys = sorted({t.label_key or "" for p in query.pairs for t in p.terms})
    if "" not in keys:
        by_values: dict[tuple[str | None, ...], bool] = {}

        def keyed(labels: dict[str, str]) -> bool:
            values = tuple(labels.get(k) for k in keys)
            verdict = by_values.get(values)
            if verdict is None:
                pairs = tuple(
                    f"{k}={v}" for k, v in zip(keys, values, strict=True) if v is not None
                )
                verdict = by_values[values] = query.matches(lambda field: pairs, now)
            return verdict

        return keyed
    by_map: dict[int, tuple[dict[str, str], bool]] = {}

    def per_map(labels: dict[str, str]) -> bool:
        known = by_map.get(id(labels))
        if known is not None and known[0] is labels:
            return known[1]
        pairs = tuple(f"{k}={v}" for k, v in labels.items())
        verdict = query.matches(lambda field: pairs, now)
        by_map[id(labels)] = (labels, verdict)
        return verdict

    return per_map


def _keys_in_all(sets: list[Set[PodKey]]) -> Set[PodKey]:
    """The keys in every set (walking the smallest)."""
    if len(sets) == 1:
        return sets[0]
    smallest = min(sets, key=len)
    return {k for k in smallest if all(k in s for s in sets if s is not smallest)}


def _narrowed(pair: Pair, table: Mapping[str, Set[PodKey]], now: float) -> Set[PodKey]:
    """Keys of the pods whose (single) value of the pair's field matches it."""
    return _union(keys for value, keys in table.items() if pair.matches(_always((value,)), now))


def _narrowed_labels(pair: Pair, index: Index, now: float) -> Set[PodKey]:
    """The pods with a label the pair matches alone; every term names its key (none is
    negated), so that is exactly the pods it matches."""
    found: set[PodKey] = set()
    for key in {t.label_key for t in pair.terms if t.label_key}:
        for value in index.label_values.get(key, ()):
            if pair.matches(_always((f"{key}={value}",)), now):
                found |= index.by_label[(key, value)]
    return found


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
