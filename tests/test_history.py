"""Write-behind from the index to the store: batching, outages, overflow, restart.

Runs on both backends. An outage is a real store whose writes are made to
fail (:class:`Outage`): everything else about it is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
import pytest

from podindex.history import (
    ROWS_A_TURN,
    TAKE_INTERVAL,
    HistoryWriter,
    LeaseBook,
    holder_at,
    parse_instant,
)
from podindex.index import Index
from podindex.model import Pod
from podindex.store.base import Lease, PodWrite, Store, StoredPod, StoreError, StoreRejected
from tests.test_store import leases_on

C = "c1"


def pod(
    n: int, *, ip: str | None = None, rv: int = 1, phase: str = "Running", node: str = "n1"
) -> Pod:
    address = ip or f"10.0.{n // 250}.{n % 250 + 1}"
    return msgspec.convert(
        {
            "metadata": {
                "name": f"p-{n}",
                "namespace": "ns",
                "uid": f"uid-{n}",
                "resourceVersion": str(rv),
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "labels": {"app": "p"},
            },
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i:1"}]},
            "status": {
                "phase": phase,
                "podIP": address,
                "podIPs": [{"ip": address}],
                "startTime": "2024-05-01T10:00:01Z",
            },
        },
        Pod,
    )


class Outage:
    """A real store whose writes fail while ``down``: the database is unreachable."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False
        self.url = store.url
        self.writes = 0

    async def write(self, batch: Sequence[PodWrite]) -> None:
        if self.down:
            raise StoreError("connection refused (test outage)")
        self.writes += 1
        await self.store.write(batch)

    async def mark_dead_except(
        self, cluster: str, source: str, keep: Collection[str], at: float
    ) -> int:
        if self.down:
            raise StoreError("connection refused (test outage)")
        return await self.store.mark_dead_except(cluster, source, keep, at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class Picky(Outage):
    """A real store that refuses any batch holding the pod ``uid-poison`` (bad data)."""

    async def write(self, batch: Sequence[PodWrite]) -> None:
        if any(w.key[1] == "uid-poison" for w in batch):
            raise StoreRejected("invalid byte sequence (test)")
        await super().write(batch)


async def live_uids(store: Store) -> set[str]:
    return {r.uid for r in await store.rows() if not r.is_dead}


async def test_changes_to_one_pod_coalesce_into_one_row_write(store: Store) -> None:
    outage = Outage(store)
    index = Index()
    writer = HistoryWriter(outage, index)  # type: ignore[arg-type]
    for rv in range(1, 6):
        index.upsert_pod(C, pod(1, rv=rv, node=f"n{rv}"), 1000.0 + rv)
    assert len(index.changes or []) == 5
    await writer.flush()
    assert outage.writes == 1 and writer.stats.written == 1
    (row,) = await store.rows()
    assert (row.node, row.last_seen, row.resource_version) == ("n5", 1005.0, "5")
    await writer.flush()
    assert outage.writes == 1, "nothing pending, nothing written"


async def test_a_large_flush_lets_the_event_loop_run_while_it_builds_rows(store: Store) -> None:
    """Lookups share the event loop: building 1,000 rows must not hold it throughout."""
    index = Index()
    writer = HistoryWriter(store, index)
    for n in range(1000):
        index.upsert_pod(C, pod(n), 1000.0)
    events: list[str] = []
    write_of = writer._write_of

    def recorded(*args: Any) -> PodWrite:
        events.append("row")
        return write_of(*args)

    writer._write_of = recorded  # type: ignore[method-assign]

    async def ticker() -> None:
        while True:
            events.append("tick")
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await writer.flush()
    ticking.cancel()
    rows = [i for i, e in enumerate(events) if e == "row"]
    ticks = [i for i, e in enumerate(events) if e == "tick" and rows[0] < i < rows[-1]]
    assert len(rows) == 1000
    assert len(ticks) >= 1000 // ROWS_A_TURN - 1 > 0, "the loop ran between turns of rows"
    assert len(await live_uids(store)) == 1000


async def test_changes_are_taken_while_a_slow_flush_is_under_way(store: Store) -> None:
    """Behind a slow store, changes still move to pending (and the lease book) in
    small steps, not all at once when the next flush starts."""
    gate = asyncio.Event()

    class Slow(Outage):
        async def write(self, batch: Sequence[PodWrite]) -> None:
            await gate.wait()
            await super().write(batch)

    index = Index()
    writer = HistoryWriter(Slow(store), index, flush_interval=0.01)  # type: ignore[arg-type]
    running = asyncio.create_task(writer.run())
    try:
        index.upsert_pod(C, pod(1), 1000.0)
        await asyncio.sleep(0.1)  # its flush now waits on the store
        assert not writer.pending
        index.upsert_pod(C, pod(2), 1001.0)
        await asyncio.sleep(TAKE_INTERVAL * 4)
        assert index.changes == []
        assert (C, "uid-2") in writer.pending
        assert [lease.uid for lease in writer.leases.by_ip["10.0.0.3"]] == ["uid-2"]
        gate.set()
        await asyncio.wait_for(writer.commit(), 10)
        assert await live_uids(store) == {"uid-1", "uid-2"}
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_an_outage_keeps_changes_pending_and_writes_them_when_the_store_is_back(
    store: Store,
) -> None:
    outage = Outage(store)
    index = Index()
    writer = HistoryWriter(outage, index)  # type: ignore[arg-type]
    outage.down = True
    for n in range(20):
        index.upsert_pod(C, pod(n), 1000.0)
    index.delete_pod(C, pod(3), 1001.0)
    for _ in range(3):
        with pytest.raises(StoreError):
            await writer.flush()
    assert len(writer.pending) == 20 and writer.stats.dropped == 0
    outage.down = False
    await writer.flush()
    assert writer.pending == {}
    rows = {r.uid: r for r in await store.rows()}
    assert len(rows) == 20 and rows["uid-3"].is_dead and rows["uid-3"].deleted_at == 1001.0
    leases = await leases_on(store, [pod(3).status.podIP])
    assert [(lease.held_from, lease.held_to) for lease in leases] == [(1000.0, 1001.0)]


async def test_past_the_bound_changes_are_dropped_then_the_index_state_is_written(
    store: Store,
) -> None:
    outage = Outage(store)
    index = Index()
    writer = HistoryWriter(outage, index, max_pending=5)  # type: ignore[arg-type]
    for n in range(10):
        index.upsert_pod(C, pod(n), 1000.0)
    await writer.flush()
    outage.down = True
    for n in range(10, 30):
        index.upsert_pod(C, pod(n), 2000.0)
    for n in (0, 1, 12):
        index.delete_pod(C, pod(n), 2001.0)
    with pytest.raises(StoreError):
        await writer.flush()
    assert writer.stats.dropped > 0, "the bound was passed"
    assert len(writer.pending) <= 5
    outage.down = False
    await writer.flush()
    expected = {f"uid-{n}" for n in range(30)} - {"uid-0", "uid-1", "uid-12"}
    assert await live_uids(store) == expected
    rows = {r.uid: r for r in await store.rows()}
    assert {rows[u].is_dead for u in ("uid-0", "uid-1")} == {True}
    assert writer.stats.resyncs == 1


async def test_a_pod_the_store_refuses_is_dropped_alone_not_retried_forever(
    store: Store,
) -> None:
    picky = Picky(store)
    index = Index()
    writer = HistoryWriter(picky, index)  # type: ignore[arg-type]
    poison = pod(99)
    poison.metadata.uid = "uid-poison"
    for n in range(10):
        index.upsert_pod(C, pod(n), 1000.0)
    index.upsert_pod(C, poison, 1000.0)
    await writer.flush()
    assert await live_uids(store) == {f"uid-{n}" for n in range(10)}
    assert writer.stats.rejected == 1 and writer.pending == {}
    index.upsert_pod(C, pod(1, rv=5, node="n9"), 1001.0)
    await writer.flush()
    assert {r.uid: r.node for r in await store.rows()}["uid-1"] == "n9", "history goes on"


async def test_commit_returns_once_the_change_is_in_the_store(store: Store) -> None:
    import asyncio

    outage = Outage(store)
    index = Index()
    writer = HistoryWriter(outage, index, flush_interval=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(writer.run())
    try:
        outage.down = True
        index.upsert_pod(C, pod(1), 1000.0)
        waiting = asyncio.create_task(writer.commit())
        await asyncio.sleep(0.3)
        assert not waiting.done(), "a commit never returns while the store is down"
        outage.down = False
        await asyncio.wait_for(waiting, 40)
        assert await live_uids(store) == {"uid-1"}
    finally:
        task.cancel()


async def test_restart_loads_history_and_the_first_list_reconciles_it(store: Store) -> None:
    index = Index()
    writer = HistoryWriter(store, index)
    for n in range(5):
        index.upsert_pod(C, pod(n, rv=10 + n), 1000.0)
    await writer.flush()

    restarted = Index()
    loaded = await HistoryWriter(store, restarted).load({C})
    assert loaded == 5 and len(restarted) == 5
    holder = restarted.holder(C, pod(2).status.podIP)
    assert holder is not None and holder.name == "p-2" and holder.resource_version == "12"
    assert restarted.changes == [], "loading writes nothing back"
    # Pods 3 and 4 vanished while podindex was down; the first list says so.
    writer2 = HistoryWriter(store, restarted)
    restarted.replace_pods(C, [pod(n, rv=10 + n) for n in range(3)], 5000.0, "99")
    await writer2.flush()
    assert writer2.stats.written == 2, "unchanged pods are not rewritten"
    assert await live_uids(store) == {"uid-0", "uid-1", "uid-2"}
    gone = {r.uid: r.deleted_at for r in await store.rows() if r.is_dead}
    assert gone == {"uid-3": 5000.0, "uid-4": 5000.0}


async def test_watched_pods_of_clusters_no_longer_configured_are_not_loaded(store: Store) -> None:
    index = Index()
    writer = HistoryWriter(store, index)
    index.upsert_pod("old-cluster", pod(1), 1000.0)
    index.upsert_pod(C, pod(2), 1000.0, source="push")
    await writer.flush()
    restarted = Index()
    assert await HistoryWriter(store, restarted).load({C}) == 1
    assert [r.key for r in restarted] == [(C, "uid-2")]


def lease(start: float, end: float | None, uid: str, ip: str = "10.0.0.1") -> Lease:
    return Lease(C, ip, uid, start, end, "ns", uid, "n1", "", "", "")


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (50.0, None),
        (100.0, ("a", True)),
        (199.0, ("a", True)),
        (200.0, ("a", False)),  # released, within 30 s of grace
        (229.0, ("a", False)),
        (231.0, None),
        (300.0, ("b", True)),
        # c's end was missed (still open); d took the IP after it: d, never c.
        (450.0, ("d", True)),
    ],
)
def test_holder_at_has_one_answer(at: float, expected: tuple[str, bool] | None) -> None:
    leases = [
        lease(100.0, 200.0, "a"),
        lease(300.0, 350.0, "b"),
        lease(360.0, None, "c"),
        lease(400.0, None, "d"),
    ]
    found = holder_at(leases, at, 30.0)
    assert (found and (found[0].uid, found[1])) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1700000000, 1700000000.0),
        ("1700000000.5", 1700000000.5),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T22:13:20.250+00:00", 1700000000.25),
        ("soon", None),
        ("nan", None),
        (True, None),
    ],
)
def test_instants_are_rfc3339_or_unix_seconds(value: Any, expected: float | None) -> None:
    assert parse_instant(value) == expected


def test_stored_row_fields_are_the_columns() -> None:
    from podindex.store.base import POD_COLUMNS

    assert POD_COLUMNS[:4] == ("cluster", "uid", "namespace", "name")
    assert "is_dead" in POD_COLUMNS and len(POD_COLUMNS) == len(StoredPod.__struct_fields__)


def test_a_writes_row_values_are_its_stored_rows() -> None:
    """The writer builds the bound values in one pass: they are ``row_values`` of the row."""
    from podindex.history import row_values_of
    from podindex.store.base import JsonTexts, row_from, row_values

    index = Index()
    index.changes = []
    index.upsert_pod(C, pod(1, node="n7"), 1000.0)
    (change,) = index.changes
    for dead in (False, True):
        values = row_values_of(change.record, 1500.0, dead, "agent-time", JsonTexts())
        row = row_from(values)
        assert row_values(row) == values
        assert (row.cluster, row.uid, row.namespace, row.name, row.node) == (
            C,
            "uid-1",
            "ns",
            "p-1",
            "n7",
        )
        assert row.ips == (() if dead else ("10.0.0.2",)) and row.pod_ip == "10.0.0.2"
        assert (row.labels, row.phase, row.started_at) == (
            {"app": "p"},
            "Running",
            "2024-05-01T10:00:01Z",
        )
        assert (row.first_seen, row.last_seen, row.is_dead) == (1500.0, 1500.0, dead)
        assert row.deleted_at == (1500.0 if dead else None) and row.time_stamp == "agent-time"


async def test_the_lease_book_follows_the_index_and_matches_the_store(store: Store) -> None:
    index = Index()
    writer = HistoryWriter(store, index)
    ip = pod(1).status.podIP
    index.upsert_pod(C, pod(1), 1000.0)
    index.delete_pod(C, pod(1), 1100.0)
    successor = pod(2, ip=ip)
    index.upsert_pod(C, successor, 1200.0)
    writer.take()
    in_memory = sorted((x.uid, x.held_from, x.held_to) for x in writer.leases.by_ip[ip])
    assert in_memory == [("uid-1", 1000.0, 1100.0), ("uid-2", 1200.0, None)]
    await writer.flush()
    stored = sorted((x.uid, x.held_from, x.held_to) for x in await leases_on(store, [ip]))
    assert stored == in_memory
    reloaded = HistoryWriter(store, Index(), clock=lambda: 1300.0)
    await reloaded.load({C})
    assert sorted((x.uid, x.held_from, x.held_to) for x in reloaded.leases.by_ip[ip]) == stored
    assert reloaded.leases.prune(1150.0) == 1
    assert [x.uid for x in reloaded.leases.by_ip[ip]] == ["uid-2"]


def test_the_lease_book_prunes_in_steps_between_which_it_can_change() -> None:
    book = LeaseBook()
    book.load(
        lease(100.0, 200.0 if n % 2 else None, f"u{n}", ip=f"10.1.{n // 250}.{n % 250}")
        for n in range(5000)
    )
    steps = book.pruning(300.0, step=1000)
    assert next(steps) == 500  # the first 1,000 IPs: half their leases ended
    book.load([lease(250.0, 260.0, "late", ip="10.9.9.9")])  # between two steps
    assert sum(steps) == 2000  # the rest; the one added meanwhile waits for the next prune
    assert sum(map(len, book.by_ip.values())) == 2500 + 1
    assert book.prune(300.0) == 1
    assert all(x.held_to is None for leases in book.by_ip.values() for x in leases)
