"""The dashboard's view of the index: pods newest first, by kubectl STATUS, searchable.

The index keeps this up to date as pods change, so a list request over 100k
pods never sorts or converts them all:

- per cluster, the pods in newest-first order (a sorted list of keys:
  creation time inverted, namespace, name, uid), so a page of an unfiltered
  or broadly filtered list is a walk from the start;
- per (cluster, STATUS), the set of pods showing that status;
- per pod, one search text (name, namespace, node, IPs; all lower case by
  Kubernetes' naming rules and IP canonical forms), scanned with ``in``.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from itertools import chain
from typing import NamedTuple

from sortedcontainers import SortedList

from podindex.model import Pod
from podindex.sharing import KeptPod
from podindex.status import display_status

PodKey = tuple[str, str]
SortKey = tuple[str, str, str, str]

# RFC 3339 UTC timestamps order as text; mapping each digit d to 9-d reverses
# that order without parsing a time (newest first in ascending order).
_INVERT = str.maketrans("0123456789", "9876543210")
_SORT_THRESHOLD = 4


def display_of(pod: Pod) -> str:
    if isinstance(pod, KeptPod) and pod.display is not None:
        return pod.display.status
    return display_status(pod).status


class Entry(NamedTuple):
    pod: Pod
    """The pod as last seen here (by identity: an unchanged pod costs one lookup)."""
    sort_key: SortKey
    status: str
    text: str


class Listing:
    def __init__(self) -> None:
        self._clusters: dict[str, dict[str, Entry]] = {}
        """Per cluster, the entry of each pod by uid."""
        self._order: dict[str, SortedList] = {}
        self._by_status: dict[tuple[str, str], dict[str, str]] = {}
        """Search text by uid, by (cluster, STATUS): a status-and-search query scans one dict."""

    def put(self, key: PodKey, pod: Pod, ips: tuple[str, ...]) -> None:
        """Record ``pod`` (new or changed)."""
        cluster, uid = key
        entries = self._clusters.get(cluster)
        if entries is None:
            entries = self._clusters[cluster] = {}
            self._order[cluster] = SortedList()
        entry = entries.get(uid)
        if entry is not None and entry.pod is pod:
            return
        meta = pod.metadata
        sort_key: SortKey = (
            (meta.creationTimestamp or "").translate(_INVERT),
            meta.namespace,
            meta.name,
            uid,
        )
        status = display_of(pod)
        text = "\n".join((meta.name, meta.namespace, pod.spec.nodeName, *ips, pod.status.podIP))
        if entry is None:
            self._order[cluster].add(sort_key)
        else:
            if entry.sort_key != sort_key:
                self._order[cluster].remove(entry.sort_key)
                self._order[cluster].add(sort_key)
            else:
                sort_key = entry.sort_key
            if entry.text == text:
                text = entry.text
            if entry.status != status:
                self._discard_status(cluster, entry.status, uid)
        self._by_status.setdefault((cluster, status), {})[uid] = text
        entries[uid] = Entry(pod, sort_key, status, text)

    def remove(self, key: PodKey) -> None:
        cluster, uid = key
        entries = self._clusters.get(cluster)
        entry = entries.pop(uid, None) if entries is not None else None
        if entry is None:
            return
        self._order[cluster].remove(entry.sort_key)
        self._discard_status(cluster, entry.status, uid)
        if not entries:
            del self._clusters[cluster]
            del self._order[cluster]

    def _discard_status(self, cluster: str, status: str, uid: str) -> None:
        members = self._by_status.get((cluster, status))
        if members is not None:
            members.pop(uid, None)
            if not members:
                del self._by_status[(cluster, status)]

    def statuses(self, cluster: str) -> dict[str, int]:
        """How many pods of ``cluster`` show each STATUS."""
        return {s: len(uids) for (c, s), uids in self._by_status.items() if c == cluster}

    def query(
        self,
        cluster: str,
        *,
        within: Collection[PodKey] | None = None,
        status: str | None = None,
        search: str = "",
        namespaces: Collection[str] | None = None,
        start: int = 0,
        stop: int = 20,
    ) -> tuple[int, list[PodKey]]:
        """(how many pods match, the keys of matches ``start:stop`` newest first).

        ``within``: keys of this cluster that the index's own tables selected
        (namespace, node, labels), or None for every pod of the cluster.
        ``namespaces``: only pods of these (a caller's grant). ``search`` must
        be lower case.
        """
        entries = self._clusters.get(cluster)
        if not entries:
            return 0, []
        order = self._order[cluster]
        with_status = self._by_status.get((cluster, status), {}) if status is not None else None
        if within is None and not search and namespaces is None:
            if with_status is None:
                return len(order), [(cluster, s[3]) for s in order.islice(start, stop)]
            return len(with_status), self._walk(cluster, order, with_status, start, stop)

        # (uid, search text) of the candidates, from the narrowest source at hand.
        pool: Iterable[tuple[str, str]]
        if within is not None:
            pool = [(k[1], entries[k[1]].text) for k in within if k[1] in entries]
            if with_status is not None:
                pool = [(u, t) for u, t in pool if u in with_status]
        elif with_status is not None:
            pool = with_status.items()
        else:
            pool = chain.from_iterable(
                texts.items() for (c, _), texts in self._by_status.items() if c == cluster
            )
        uids = [u for u, t in pool if search in t] if search else [u for u, _ in pool]
        if namespaces is not None:
            allowed = set(namespaces)
            uids = [u for u in uids if entries[u].sort_key[1] in allowed]
        total = len(uids)
        if total <= _SORT_THRESHOLD * stop:
            ranked = sorted(entries[u].sort_key for u in uids)[start:stop]
            return total, [(cluster, s[3]) for s in ranked]
        return total, self._walk(cluster, order, set(uids), start, stop)

    @staticmethod
    def _walk(
        cluster: str, order: SortedList, wanted: Collection[str], start: int, stop: int
    ) -> list[PodKey]:
        """Matches ``start:stop`` in order: a walk from the newest (matches are many)."""
        page: list[PodKey] = []
        seen = 0
        for s in order:
            if s[3] in wanted:
                if seen >= start:
                    page.append((cluster, s[3]))
                    if len(page) == stop - start:
                        break
                seen += 1
        return page

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._clusters.values())
