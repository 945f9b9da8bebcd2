"""Write-behind from the index to the history store, and history's load at start.

The index appends a :class:`~podindex.index.Change` for every change to a
pod's kept state; :class:`HistoryWriter` takes them in batches off the hot
path (lookups never wait on the database), coalesces them per pod (the
newest state wins; "it acquired/released an IP" flags accumulate) and writes
each batch in one transaction.

When the store fails, changes stay pending and are retried with backoff;
pending is bounded (``max_pending`` pods). Past the bound they are dropped,
counted and logged, and once the store answers again the index's whole state
is written and rows the index no longer has are marked dead, so nothing is
missing — only the exact times of changes made during the outage are lost
(they carry the time of the resync).

A pushed pod is acknowledged only once it is committed: :meth:`commit`.

Every lease is also kept in memory (:class:`LeaseBook`, loaded at start), so
"who held this IP at T" (:class:`LeaseTimeline`) never waits on the database.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import msgspec

from podindex.identity import controller_of
from podindex.index import AGENT, Change, Index, PodRecord
from podindex.model import Pod, PodIP, PodKey, Workload
from podindex.store.base import (
    JsonTexts,
    Lease,
    PodWrite,
    Store,
    StoredPod,
    StoreError,
    StoreRejected,
)

log = logging.getLogger("podindex.history")
_K = TypeVar("_K")

ROWS_A_TURN = 200
"""Rows built before the writer lets the event loop run (~5 ms of it): a chunk of
5,000 built at once held lookups up for ~100 ms."""
TAKE_INTERVAL = 0.05
"""How often the index's changes move to pending while a flush is under way."""

_encode_pod = msgspec.json.Encoder().encode
_encode_ips = msgspec.json.Encoder().encode
_decode_pod = msgspec.json.Decoder(Pod).decode


def epoch(rfc3339: str | None) -> float | None:
    """Unix seconds of a Kubernetes timestamp (``2024-05-01T10:00:00Z``), None if absent or bad."""
    if not rfc3339:
        return None
    try:
        parsed = datetime.fromisoformat(rfc3339)
    except ValueError:
        return None
    if parsed.tzinfo is None:  # Kubernetes always says Z; a bare time is taken as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_instant(value: str | float | int) -> float | None:
    """Unix seconds from a number, a numeric string, or RFC 3339 text; None if none of those."""
    if type(value) is float:  # flow records: nearly always
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parsed = epoch(text) if "T" in text or " " in text else None
            if parsed is None:
                return None
            seconds = parsed
    return seconds if math.isfinite(seconds) else None


def row_values_of(
    record: PodRecord, at: float, dead: bool, time_stamp: str, texts: JsonTexts
) -> tuple[object, ...]:
    """The store's row for a pod as the index keeps it: :func:`~podindex.store.base.row_values`
    of its :class:`~podindex.store.base.StoredPod`, built in one pass (maps' JSON from ``texts``)."""
    pod = record.pod
    meta = pod.metadata
    status = pod.status
    spec = pod.spec
    owner = controller_of(meta)
    workload = record.workload
    held = record.ips
    return (
        record.key[0],
        record.key[1],
        meta.namespace,
        meta.name,
        spec.nodeName,
        "[]" if dead or not held else _encode_ips(held).decode(),
        status.podIP or (held[0] if held else ""),
        status.phase,
        spec.hostNetwork,
        texts(meta.labels),
        texts(meta.annotations),
        workload.identity,
        workload.identity_source,
        workload.kind,
        workload.name,
        texts(workload.selector_labels),
        owner.kind if owner is not None else "",
        owner.name if owner is not None else "",
        meta.creationTimestamp or "",
        status.startTime or "",
        at,
        at,
        at if dead else None,
        dead,
        record.source,
        record.resource_version,
        time_stamp,
    )


def pod_from_row(row: StoredPod, obj: bytes | None) -> Pod:
    """The pod to put back in the index at start: its stored object, with the row's facts.

    The row wins where the two differ: it follows every change, while a
    watched pod's object is written when first seen (and a pushed pod's IP
    and node are what the agent said, not what its optional object said).
    """
    pod = _decode_pod(obj) if obj else Pod()
    meta = pod.metadata
    meta.uid, meta.name, meta.namespace = row.uid, row.name, row.namespace
    meta.resourceVersion = row.resource_version
    meta.labels = row.labels
    meta.annotations = row.annotations
    pod.spec.nodeName = row.node
    pod.spec.hostNetwork = row.host_network
    pod.status.phase = row.phase
    pod.status.podIP = row.pod_ip
    pod.status.podIPs = tuple(PodIP(ip) for ip in row.ips) or None
    pod.status.startTime = row.started_at or None
    return pod


class LeaseTimeline:
    """The leases on one IP, ordered by start, to answer "who held it at T" many times."""

    __slots__ = ("_leases", "_starts")

    def __init__(self, leases: Iterable[Lease]) -> None:
        self._leases = sorted(leases, key=lambda lease: lease.held_from)
        self._starts = [lease.held_from for lease in self._leases]

    def at(self, instant: float, grace: float) -> tuple[Lease, bool] | None:
        """The lease in force at ``instant``, and whether it was still held then.

        Held: of the leases covering ``instant``, the one that began last (a
        holder whose end podindex missed never outranks the pod that took the
        IP after it). Else, within ``grace`` seconds after a lease ended, the
        one that ended last (connections drain after a pod is gone), not held.
        """
        leases = self._leases
        begun = bisect.bisect_right(self._starts, instant)
        for i in range(begun - 1, -1, -1):  # the latest start first
            lease = leases[i]
            if lease.held_to is None or instant < lease.held_to:
                return lease, True
        draining: Lease | None = None
        for i in range(begun):
            lease = leases[i]
            ended = lease.held_to
            if (
                ended is not None
                and ended <= instant < ended + grace
                and (draining is None or ended > (draining.held_to or 0.0))
            ):
                draining = lease
        return None if draining is None else (draining, False)


def holder_at(leases: Iterable[Lease], at: float, grace: float) -> tuple[Lease, bool] | None:
    """:meth:`LeaseTimeline.at` for a single question."""
    return LeaseTimeline(leases).at(at, grace)


def lease_start(change: Change, at: float) -> float:
    """When the leases a change opens began: when the pod was seen taking its IPs, or,
    for a pod seen for the first time (a first list, a restart), when it started —
    it has held its IPs since then, as far as anyone can tell."""
    start = change.acquired_at or at
    if change.first:
        started = epoch(change.record.pod.status.startTime)
        if started is not None and started < start:
            start = started
    return start


class LeaseBook:
    """Every IP lease of the retention period, in memory, kept as the index decides.

    Attribution reads it, so "who held this IP at T" never waits on the
    database; the store holds the same leases durably (coalesced per write
    batch, so a pod that took and gave up an IP between two writes is here
    and not there until a restart). Loaded from the store at start.
    """

    def __init__(self) -> None:
        self.by_ip: dict[str, list[Lease]] = {}
        self._of_pod: dict[PodKey, list[Lease]] = {}

    def load(self, leases: Iterable[Lease]) -> None:
        for lease in sorted(leases, key=lambda lease: lease.held_from):
            self._add(lease)

    def apply(self, change: Change) -> None:
        """The leases a change opens, closes or whose pod facts it changes."""
        record = change.record
        mine = self._of_pod.get(record.key)
        if mine is not None:
            workload = record.workload
            keep = () if change.dead else record.ips
            for lease in mine:
                if lease.held_to is None:
                    lease.node = record.node
                    lease.workload_identity = workload.identity
                    lease.workload_kind = workload.kind
                    lease.workload_name = workload.name
                    if (change.released or change.dead) and lease.ip not in keep:
                        lease.held_to = change.at
        if change.acquired and not change.dead:
            start = change.acquired_at or lease_start(change, change.at)
            for ip in record.ips:
                held = next((lease for lease in mine or () if lease.ip == ip), None)
                if held is None:
                    self._add(_lease(record, ip, start))
                elif held.held_to is not None:  # taken back (the store reopens it too)
                    held.held_to = None

    def prune(self, ended_before: float) -> int:
        """Forget leases that ended before ``ended_before``; returns how many."""
        return sum(self.pruning(ended_before))

    def pruning(self, ended_before: float, step: int = 2000) -> Iterator[int]:
        """:meth:`prune`, ``step`` IPs (then pods) at a time, yielding how many leases
        each step forgot: the caller lets lookups run between steps (all 100k
        IPs at once held the event loop ~260 ms)."""
        yield from _pruning(self.by_ip, ended_before, step)
        for _ in _pruning(self._of_pod, ended_before, step):
            yield 0  # the same leases, counted by IP

    def _add(self, lease: Lease) -> None:
        self.by_ip.setdefault(lease.ip, []).append(lease)
        self._of_pod.setdefault((lease.cluster, lease.uid), []).append(lease)


def _pruning(table: dict[_K, list[Lease]], ended_before: float, step: int) -> Iterator[int]:
    keys = list(table)
    for start in range(0, len(keys), step):
        yield _keep_recent(table, ended_before, keys[start : start + step])


def _keep_recent(table: dict[_K, list[Lease]], ended_before: float, keys: Iterable[_K]) -> int:
    """Drop from ``table``, under ``keys``, the leases that ended before ``ended_before``
    (and emptied keys); returns how many."""
    dropped = 0
    for key in keys:
        leases = table.get(key)
        if leases is None or not any(
            x.held_to is not None and x.held_to < ended_before for x in leases
        ):
            continue
        kept = [x for x in leases if x.held_to is None or x.held_to >= ended_before]
        dropped += len(leases) - len(kept)
        if kept:
            table[key] = kept
        else:
            del table[key]
    return dropped


def _lease(record: PodRecord, ip: str, start: float) -> Lease:
    workload = record.workload
    return Lease(
        record.key[0],
        ip,
        record.key[1],
        start,
        None,
        record.namespace,
        record.name,
        record.node,
        workload.identity,
        workload.kind,
        workload.name,
    )


def agent_workload(identity: str, selector_labels: dict[str, str]) -> Workload:
    return Workload(identity, AGENT, "", "", selector_labels)


@dataclass
class HistoryStats:
    written: int = 0
    batches: int = 0
    failures: int = 0
    dropped: int = 0
    resyncs: int = 0
    rejected: int = 0
    pruned: int = 0
    last_success: float = 0.0


class HistoryWriter:
    """Drains the index's changes into the store; see the module docstring."""

    def __init__(
        self,
        store: Store,
        index: Index,
        *,
        batch_size: int | None = None,
        flush_interval: float = 0.2,
        max_pending: int = 200_000,
        retention: float = 7 * 86400.0,
        prune_interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.index = index
        self.batch_size = batch_size or store.write_chunk
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.retention = retention
        self.prune_interval = prune_interval
        self.clock = clock
        self.stats = HistoryStats()
        self.leases = LeaseBook()
        self.loaded = False
        self.pending: dict[PodKey, Change] = {}
        self._objects: dict[PodKey, tuple[bytes, str]] = {}
        """Objects and timestamps pushed by agents, to write with the pod's next change."""
        self._used: dict[PodKey, tuple[bytes, str]] = {}
        """Of those, the ones in the batch being written."""
        self._taken = 0
        """Batches taken from pending so far (each flush takes one)."""
        self._committed = 0
        """Batches taken and committed: a waiter for batch n waits for this to reach n."""
        self._committed_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._resync: set[tuple[str, str]] = set()
        """(cluster, source) pairs whose changes were dropped: write the index's state."""
        self._failing_since: float | None = None
        self._last_failure_log = 0.0
        index.changes = []

    # --- start --------------------------------------------------------------

    async def load(self, clusters: Collection[str] | None = None) -> int:
        """Put the live pods the store remembers back in the index; returns how many.

        Pods of ``clusters`` seen by the watcher come back until that
        cluster's first list reconciles them (the ones that vanished while
        podindex was down are then marked dead); pushed pods come back for
        good. Watched pods of other clusters stay in the store untouched.
        """
        changes, self.index.changes = self.index.changes, None
        try:
            self.leases.load(await self.store.all_leases(self.clock() - self.retention))
            rows = await self.store.load_live()
            now = self.clock()
            loaded = 0
            for row, obj in rows:
                if row.source == "watch" and clusters is not None and row.cluster not in clusters:
                    continue
                workload = None
                if row.identity_source == AGENT:
                    workload = agent_workload(row.workload_identity, row.selector_labels)
                pod = pod_from_row(row, obj)
                self.index.upsert_pod(row.cluster, pod, now, source=row.source, workload=workload)
                loaded += 1
        finally:
            self.index.changes = changes
        self.loaded = True
        log.info("history: %d live pods loaded from %s", loaded, self.store.url)
        return loaded

    # --- pushes -------------------------------------------------------------

    def attach(self, key: PodKey, obj: bytes | None, time_stamp: str) -> None:
        """Keep an agent's object and timestamp for the pod's next write."""
        self._objects[key] = (obj or b"", time_stamp)

    async def commit(self) -> None:
        """Return once every change made so far is in the store (waits through outages)."""
        target = self._taken + 1  # the next flush to start takes every change made so far
        self._wake.set()
        while self._committed < target:
            self._committed_event.clear()
            await self._committed_event.wait()

    # --- the loop -----------------------------------------------------------

    async def run(self) -> None:
        """Write batches until cancelled; prune old history every ``prune_interval``."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write_loop(), name="history writer")
            group.create_task(self._take_loop(), name="history changes")
            group.create_task(self._prune_loop(), name="history retention")

    async def _take_loop(self) -> None:
        """Take the index's changes every 50 ms, not only as a flush starts: behind
        a slow store, a flush would find seconds of changes to take at once,
        all while holding the event loop."""
        while True:
            await asyncio.sleep(TAKE_INTERVAL)
            self.take()

    async def _write_loop(self) -> None:
        backoff = 0.0
        while True:
            if backoff:  # not cut short by commits: a down store is not hammered
                await asyncio.sleep(backoff)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except StoreError:
                backoff = min(max(backoff * 2, 0.5), 30.0)
            except Exception:  # a bug must not stop history for good
                backoff = min(max(backoff * 2, 0.5), 30.0)
                log.exception("history: writing failed unexpectedly")
            else:
                backoff = 0.0

    async def flush(self) -> None:
        """Write what is pending (raises :class:`StoreError`; pending is kept for the retry)."""
        self.take()
        self._taken += 1
        taken = self._taken
        batch: dict[PodKey, Change] = {}
        now = self.clock()
        try:
            if self._resync:
                await self._write_state()
            batch, self.pending = self.pending, {}
            try:
                written = await self._write(list(batch.values()), now)
            except StoreRejected:
                written = await self._write_one_by_one(list(batch.values()), now)
        except Exception as exc:
            if self._failing_since is None:
                self._failing_since = now
            self._restore(batch)
            self._failed(exc)
            raise
        except BaseException:  # cancelled: keep the batch for whoever flushes next
            self._restore(batch)
            raise
        if written:
            self.stats.written += written
            self.stats.batches += 1
        self._succeeded(now)
        self._settle(taken)

    async def _write(self, changes: list[Change], now: float) -> int:
        """Write in chunks of ``batch_size``, one transaction each; returns how many.

        Up to two chunks are with the store while the next one's rows are
        built, so building, the store's preparation (encoding, compression)
        and its transaction overlap. Chunks of one flush hold distinct pods,
        so their order does not matter.
        """
        self._used = {}
        texts = JsonTexts()  # the index shares equal maps among pods: each encoded once
        in_flight: deque[asyncio.Future[None]] = deque()
        try:
            for start in range(0, len(changes), self.batch_size):
                chunk: list[PodWrite] = []
                for at in range(start, min(start + self.batch_size, len(changes)), ROWS_A_TURN):
                    if at:
                        await asyncio.sleep(0)
                    chunk += [self._write_of(c, now, texts) for c in changes[at : at + ROWS_A_TURN]]
                if len(in_flight) == 2:
                    await in_flight.popleft()
                in_flight.append(asyncio.ensure_future(self.store.write(chunk)))
            while in_flight:
                await in_flight.popleft()
        except BaseException:
            for writing in in_flight:
                writing.cancel()
            raise
        used, self._used = self._used, {}
        objects = self._objects
        for key, attached in used.items():  # written: forget them, unless a newer one came
            if objects.get(key) is attached:
                del objects[key]
        return len(changes)

    async def _write_one_by_one(self, changes: list[Change], now: float) -> int:
        """The store refused a batch's data: write each pod alone, and drop only the refused."""
        written = 0
        for change in changes:
            try:
                written += await self._write([change], now)
            except StoreRejected as exc:
                self.stats.rejected += 1
                cluster, uid = change.record.key
                log.error(
                    "history: the store refused pod %s/%s (cluster %s, uid %s): not written: %s",
                    change.record.namespace,
                    change.record.name,
                    cluster,
                    uid,
                    exc,
                )
        return written

    # --- internals ----------------------------------------------------------

    def take(self) -> None:
        """Move the index's new changes into pending (coalesced per pod) and the lease book.

        No I/O: readers of the lease book call it to see every change so far.
        """
        changes = self.index.changes
        if not changes:
            return
        self.index.changes = []
        pending = self.pending
        book = self.leases
        for change in changes:
            if change.acquired:  # resolved once: the book and the write use it
                change.acquired_at = lease_start(change, change.at)
            book.apply(change)
            key = change.record.key
            earlier = pending.get(key)
            if earlier is not None:
                change = _merged(earlier, change)
            pending[key] = change
        if len(pending) > self.max_pending and self._failing_since is not None:
            self._drop()

    def _restore(self, batch: dict[PodKey, Change]) -> None:
        """Put a failed batch back under what was added since (newer changes win)."""
        newer = self.pending
        self.pending = batch
        for key, change in newer.items():
            earlier = batch.get(key)
            batch[key] = change if earlier is None else _merged(earlier, change)
        if len(self.pending) > self.max_pending and self._failing_since is not None:
            self._drop()

    def _drop(self) -> None:
        dropped = len(self.pending)
        self._resync.update((c.record.key[0], c.record.source) for c in self.pending.values())
        self.pending = {}
        self.stats.dropped += dropped
        log.error(
            "history: store unreachable and %d pod changes pending (more than %d): dropped; "
            "the index's state will be written when the store is back",
            dropped,
            self.max_pending,
        )

    async def _write_state(self) -> None:
        """After a drop: write every pod the index has, and mark the rest dead."""
        now = self.clock()
        scopes = set(self._resync)
        records = [r for r in self.index if (r.key[0], r.source) in scopes]
        # As if first seen: objects of pods whose first write was dropped are written too.
        resync = [Change(r, now, False, True, True, True) for r in records]
        written = await self._write(resync, now)
        self.stats.written += written
        for cluster, source in scopes:
            keep = [r.key[1] for r in records if r.key[0] == cluster and r.source == source]
            await self.store.mark_dead_except(cluster, source, keep, now)
        self._resync -= scopes
        self.stats.resyncs += 1
        log.warning("history: resynced %d pods of %s from the index", written, sorted(scopes))

    def _write_of(self, change: Change, now: float, texts: JsonTexts) -> PodWrite:
        record = change.record
        at = change.at or now
        obj, time_stamp = b"", ""
        if self._objects:
            attached = self._objects.get(record.key)
            if attached is not None:
                self._used[record.key] = attached
                obj, time_stamp = attached
        acquired = change.acquired
        return PodWrite(
            row_values_of(record, at, change.dead, time_stamp, texts),
            # The object when first seen and when gone (what detail views of
            # history show); between the two the row's columns follow every
            # change, and the live pod is in memory. Writing it on every change
            # cost a third of each update (measured 28 of 115 µs a row).
            obj or (_encode_pod(record.pod) if change.first or change.dead else None),
            acquired,
            change.released or change.dead,
            (change.acquired_at or lease_start(change, at)) if acquired else at,
            record.ips if acquired else (),
        )

    def _settle(self, taken: int) -> None:
        if taken > self._committed:
            self._committed = taken
            self._committed_event.set()

    def _failed(self, exc: BaseException) -> None:
        now = self.clock()
        self.stats.failures += 1
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_failure_log >= 30.0:
            self._last_failure_log = now
            log.error(
                "history: cannot write to %s (%s); %d pod changes pending, retrying",
                self.store.url,
                exc,
                len(self.pending),
            )

    def _succeeded(self, now: float) -> None:
        self.stats.last_success = now
        if self._failing_since is not None:
            log.warning(
                "history: %s is back after %.0fs; pending changes written",
                self.store.url,
                now - self._failing_since,
            )
            self._failing_since = None
            self._last_failure_log = 0.0

    async def _prune_loop(self) -> None:
        while True:
            cutoff = self.clock() - self.retention
            for _ in self.leases.pruning(cutoff):
                await asyncio.sleep(0)
            try:
                pruned = await self.store.prune(cutoff)
            except StoreError as exc:
                log.warning("history: pruning failed (%s); retrying later", exc)
            else:
                self.stats.pruned += pruned
                if pruned:
                    log.info("history: pruned %d pods dead for over %.0fs", pruned, self.retention)
            await asyncio.sleep(self.prune_interval)


def _merged(earlier: Change, later: Change) -> Change:
    return Change(
        later.record,
        later.at,
        later.dead,
        later.acquired or earlier.acquired,
        later.released or earlier.released,
        earlier.first or later.first,
        # A lease opens when the IP was first taken, not at the last change since.
        (earlier.acquired_at or earlier.at) if earlier.acquired else later.acquired_at,
    )
