"""The dashboard's view of the index: pods newest first, by kubectl STATUS, searchable.

Kept up to date by the index as pods change, so a list request over 100k
pods never sorts or converts them all:

- per cluster, every pod's row in creation order (a sorted list), walked
  from the end for newest first; rows created in the same second follow
  (namespace, name, uid), backwards, so pages are stable;
- per (cluster, STATUS), the rows of the pods showing that status, by uid;
- in each row, one search text (name, namespace, node, IPs: all lower case
  by Kubernetes' naming rules and IP canonical forms), scanned with ``in``.

A row is ``(creationTimestamp, namespace, name, uid, text)``: the strings
but ``text`` are the pod's own. The index builds the listing on its first
use, so a service nobody lists pods from pays nothing for it (about 270
bytes a pod once it is built).

Pure: no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator

from sortedcontainers import SortedList

from podindex.model import Pod
from podindex.sharing import display_of

PodKey = tuple[str, str]
Row = tuple[str, str, str, str, str]
"""(creationTimestamp, namespace, name, uid, search text)."""
_TEXT = 4
_SORT_THRESHOLD = 4


def _created(entry: tuple[str, PodKey]) -> str:
    return entry[0]


def _keyed(cluster: str, rows: Iterable[Row]) -> Iterator[tuple[str, PodKey]]:
    for row in rows:
        yield row[0], (cluster, row[3])


def status_of(pod: Pod) -> str:
    return display_of(pod).status


def _row(uid: str, pod: Pod, ips: tuple[str, ...]) -> Row:
    meta = pod.metadata
    text = "\n".join((meta.name, meta.namespace, pod.spec.nodeName, *ips, pod.status.podIP))
    return (meta.creationTimestamp or "", meta.namespace, meta.name, uid, text)


class Listing:
    def __init__(self) -> None:
        self._order: dict[str, SortedList] = {}
        self._by_status: dict[tuple[str, str], dict[str, Row]] = {}
        """Rows by uid, by (cluster, STATUS): a status-and-search query scans one dict."""

    def put(self, key: PodKey, pod: Pod, ips: tuple[str, ...], old: Pod | None = None) -> None:
        """Record ``pod`` (with the IPs it holds); ``old``: the pod put last under ``key``."""
        cluster, uid = key
        row = _row(uid, pod, ips)
        if old is not None:
            old_status = status_of(old)
            members = self._by_status.get((cluster, old_status))
            kept = members.get(uid) if members is not None else None
            if members is not None and kept == row:
                # Most changes are of status only: the row keeps its place in the
                # order (a remove and an add cost ~10 µs an event), its status moves.
                status = status_of(pod)
                if status != old_status:
                    del members[uid]
                    if not members:
                        del self._by_status[(cluster, old_status)]
                    self._by_status.setdefault((cluster, status), {})[uid] = kept
                return
            self.remove(key, old)
        order = self._order.get(cluster)
        if order is None:
            order = self._order[cluster] = SortedList()
        order.add(row)
        self._by_status.setdefault((cluster, status_of(pod)), {})[uid] = row

    def remove(self, key: PodKey, pod: Pod) -> None:
        """Forget the pod put last under ``key`` as ``pod``."""
        cluster, uid = key
        members = self._by_status.get((cluster, status_of(pod)))
        row = members.pop(uid, None) if members is not None else None
        if row is None:
            return
        if not members:
            del self._by_status[(cluster, status_of(pod))]
        order = self._order[cluster]
        order.remove(row)
        if not order:
            del self._order[cluster]

    def statuses(self, cluster: str) -> dict[str, int]:
        """How many pods of ``cluster`` show each STATUS."""
        return {s: len(rows) for (c, s), rows in self._by_status.items() if c == cluster}

    def query(
        self,
        cluster: str,
        *,
        within: Iterable[tuple[str, Pod]] | None = None,
        status: str | None = None,
        search: str = "",
        namespaces: Collection[str] | None = None,
        start: int = 0,
        stop: int = 20,
    ) -> tuple[int, list[PodKey]]:
        """(how many pods match, the keys of matches ``start:stop``, newest first).

        ``within``: (uid, pod) of the pods of this cluster that the index's own
        tables selected (namespace, node, labels), or None for every pod.
        ``namespaces``: only pods of these (a caller's grant). ``search`` must
        be lower case.
        """
        order = self._order.get(cluster)
        if order is None:
            return 0, []
        by_status = self._by_status
        with_status = by_status.get((cluster, status), {}) if status is not None else None
        if within is None and not search and namespaces is None:
            if with_status is None:
                size = len(order)
                newest = order.islice(max(0, size - stop), max(0, size - start), reverse=True)
                return size, [(cluster, row[3]) for row in newest]
            return len(with_status), self._walk(cluster, order, with_status, start, stop)

        # Rows of the candidates, from the narrowest source at hand.
        rows: Iterable[Row]
        if within is not None:
            rows = [
                row
                for uid, pod in within
                if (row := by_status.get((cluster, status_of(pod)), {}).get(uid)) is not None
                and (with_status is None or uid in with_status)
            ]
        elif with_status is not None:
            rows = with_status.values()
        else:
            rows = self._rows(cluster)
        if search:
            rows = [row for row in rows if search in row[_TEXT]]
        if namespaces is not None:
            allowed = set(namespaces)
            rows = [row for row in rows if row[1] in allowed]
        matched = rows if isinstance(rows, list) else list(rows)
        total = len(matched)
        if total <= _SORT_THRESHOLD * stop:
            matched.sort(reverse=True)
            return total, [(cluster, row[3]) for row in matched[start:stop]]
        wanted = {row[3] for row in matched}
        return total, self._walk(cluster, order, wanted, start, stop)

    def creation_order(self, *, newest_first: bool = False) -> Iterator[tuple[str, PodKey]]:
        """(creationTimestamp, key) of every pod of every cluster, oldest first (or
        newest): a walk that stops at the page it needs never sorts the rest.
        Pods created in the same second come in no particular order."""
        walks = [_keyed(c, reversed(o) if newest_first else o) for c, o in self._order.items()]
        if len(walks) == 1:
            return walks[0]
        return heapq.merge(*walks, key=_created, reverse=newest_first)

    def _rows(self, cluster: str) -> Iterator[Row]:
        for (c, _), rows in self._by_status.items():
            if c == cluster:
                yield from rows.values()

    @staticmethod
    def _walk(
        cluster: str, order: SortedList, wanted: Collection[str], start: int, stop: int
    ) -> list[PodKey]:
        """Matches ``start:stop``, newest first: a walk from the end (matches are many)."""
        page: list[PodKey] = []
        seen = 0
        for row in reversed(order):
            if row[3] in wanted:
                if seen >= start:
                    page.append((cluster, row[3]))
                    if len(page) == stop - start:
                        break
                seen += 1
        return page

    def __len__(self) -> int:
        return sum(len(order) for order in self._order.values())
