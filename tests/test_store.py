"""The store contract, on both backends (a SQLite file and a real PostgreSQL database)."""

from __future__ import annotations

import math
import random
import sqlite3

import asyncpg
import msgspec
import pytest

from podindex.store import sqlite
from podindex.store.base import (
    EXPORT_FALLBACK,
    POD_COLUMNS,
    JsonTexts,
    Lease,
    ObjectCodec,
    PodFacts,
    PodWrite,
    Store,
    StoreConfigError,
    StoredInstance,
    StoredPod,
    StoreError,
    open_store,
    redact,
    row_values,
)
from podindex.store.sqlite import MIGRATIONS, database_path


def row(
    uid: str,
    *,
    name: str = "web-0",
    namespace: str = "team-a",
    ips: tuple[str, ...] = ("10.0.0.1",),
    at: float = 1000.0,
    dead: bool = False,
    node: str = "node-1",
    cluster: str = "c1",
    source: str = "watch",
) -> StoredPod:
    return StoredPod(
        cluster=cluster,
        uid=uid,
        namespace=namespace,
        name=name,
        node=node,
        ips=() if dead else ips,
        pod_ip=ips[0] if ips else "",
        phase="Running",
        host_network=False,
        labels={"app": name.split("-")[0]},
        annotations={"note": "ü"},
        workload_identity=name.split("-")[0],
        identity_source="label:app.kubernetes.io/name",
        workload_kind="StatefulSet",
        workload_name=name.split("-")[0],
        selector_labels={"app": name.split("-")[0]},
        owner_kind="StatefulSet",
        owner_name=name.split("-")[0],
        created_at="2024-05-01T10:00:00Z",
        started_at="2024-05-01T10:00:01Z",
        first_seen=at,
        last_seen=at,
        deleted_at=at if dead else None,
        is_dead=dead,
        source=source,
        resource_version="42",
        time_stamp="",
    )


def write(
    r: StoredPod,
    *,
    acquired: bool = True,
    released: bool = False,
    obj: bytes | None = b"x",
) -> PodWrite:
    return PodWrite.of(
        r,
        pod_obj=obj,
        acquired=acquired,
        released=released or r.is_dead,
        lease_from=r.last_seen,
        lease_ips=r.ips if acquired else (),
    )


async def leases_on(store: Store, ips: list[str]) -> list[Lease]:
    """The stored leases on ``ips``, read the way history loads them at start."""
    wanted = set(ips)
    return [lease for lease in await store.all_leases(-math.inf) if lease.ip in wanted]


async def test_schema_is_at_the_newest_version(store: Store) -> None:
    from podindex.store import postgres

    newest = len(sqlite.MIGRATIONS)
    assert len(postgres.MIGRATIONS) == newest
    assert await store.schema_version() == newest


async def test_rows_round_trip_every_field(store: Store) -> None:
    written = row("u1")
    await store.write([write(written, obj=b"\x00\xffobject")])
    (read,) = await store.rows()
    assert msgspec.structs.asdict(read) == msgspec.structs.asdict(written)
    assert await store.pod_object("c1", "u1") == b"\x00\xffobject"
    assert await store.pod_object("c1", "nope") is None


async def test_rows_sharing_label_maps_keep_each_its_own(store: Store) -> None:
    """A batch encodes a shared map once; equal and different maps stay apart."""
    shared = {"app": "web", "tier": "front"}
    rows = [row(f"u{i}") for i in range(4)]
    rows[0].labels = rows[1].labels = rows[2].selector_labels = shared
    rows[3].labels = {"app": "other"}
    await store.write([write(r, obj=None) for r in rows])
    read = {r.uid: r for r in await store.rows()}
    assert [read[f"u{i}"].labels for i in range(4)] == [
        shared,
        shared,
        rows[2].labels,
        {"app": "other"},
    ]
    assert read["u2"].selector_labels == shared
    assert row_values(rows[0], JsonTexts()) == row_values(rows[0])


async def test_a_rewritten_pod_ends_as_the_upsert_would_leave_it(store: Store) -> None:
    """A pod written again that moved, died in the store or was never written ends
    as its upsert would leave it, like the new pods beside it."""
    await store.write([write(row("moved", at=1000.0)), write(row("same", at=1000.0))])
    await store.write([write(row("dead", at=1000.0))])
    await store.mark_dead_except("c1", "watch", ["moved", "same"], 1500.0)
    later = [
        row("moved", at=2000.0, node="node-9"),
        row("same", at=2000.0),
        row("dead", at=2000.0),
        row("never", at=2000.0),
        row("new", at=2000.0),
    ]
    for r in later:
        r.labels = {"app": "relabelled"}
    await store.write([write(r, acquired=False, obj=None) for r in later])
    read = {r.uid: r for r in await store.rows()}
    assert read["moved"].node == "node-9"
    assert not read["dead"].is_dead and read["dead"].deleted_at is None
    assert sorted(read) == ["dead", "moved", "never", "new", "same"]
    for uid in read:
        assert read[uid].labels == {"app": "relabelled"}
        assert read[uid].last_seen == 2000.0
        assert read[uid].first_seen == (2000.0 if uid in ("never", "new") else 1000.0)
    # And a live pod alone, where it was stored: its row follows.
    again = row("same", at=3000.0)
    again.phase = "Succeeded"
    await store.write([write(again, acquired=False, obj=None)])
    same = await store.pod("c1", "same")
    assert same is not None
    assert (same.phase, same.last_seen, same.first_seen) == ("Succeeded", 3000.0, 1000.0)


async def test_upsert_replaces_the_row_but_keeps_the_first_sighting(store: Store) -> None:
    await store.write([write(row("u1", at=1000.0))])
    await store.write([write(row("u1", at=2000.0, node="node-9"), obj=None)])
    (read,) = await store.rows()
    assert (read.first_seen, read.last_seen, read.node) == (1000.0, 2000.0, "node-9")
    assert await store.pod_object("c1", "u1") == b"x", "a write without an object keeps the old one"


async def test_rows_are_ordered_by_namespace_then_name(store: Store) -> None:
    await store.write(
        [
            write(row("u1", name="b", namespace="ns2", ips=("10.0.0.1",))),
            write(row("u2", name="a", namespace="ns2", ips=("10.0.0.2",))),
            write(row("u3", name="z", namespace="ns1", ips=("10.0.0.3",))),
        ]
    )
    assert [(r.namespace, r.name) for r in await store.rows()] == [
        ("ns1", "z"),
        ("ns2", "a"),
        ("ns2", "b"),
    ]


async def test_by_name_prefers_the_live_row_then_the_last_to_die(store: Store) -> None:
    await store.write(
        [
            write(row("old", at=1000.0, dead=True)),
            write(row("older", at=500.0, dead=True)),
        ]
    )
    found = await store.by_name("web-0", "team-a")
    assert found is not None and found.uid == "old"
    await store.write([write(row("new", at=900.0))])
    found = await store.by_name("web-0", None)
    assert found is not None and found.uid == "new"
    assert await store.by_name("web-0", "other-namespace") is None


async def test_by_name_keeps_namespaces_apart(store: Store) -> None:
    await store.write(
        [
            write(row("a", namespace="team-a", ips=("10.0.0.1",))),
            write(row("b", namespace="team-b", ips=("10.0.0.2",))),
        ]
    )
    a = await store.by_name("web-0", "team-a")
    b = await store.by_name("web-0", "team-b")
    assert (a and a.uid, b and b.uid) == ("a", "b")


async def test_leases_open_and_close_with_the_ips_a_pod_holds(store: Store) -> None:
    await store.write([write(row("u1", at=1000.0, ips=("10.0.0.1", "fd00::1")))])
    await store.write(
        [write(row("u1", at=1500.0, ips=("fd00::1",)), acquired=False, released=True)]
    )
    await store.write([write(row("u1", at=2000.0, dead=True), acquired=False)])
    leases = await leases_on(store, ["10.0.0.1", "fd00::1", "10.9.9.9"])
    spans = sorted((lease.ip, lease.held_from, lease.held_to) for lease in leases)
    assert spans == [("10.0.0.1", 1000.0, 1500.0), ("fd00::1", 1000.0, 2000.0)]
    recent = await store.all_leases(1500.0)  # what a start with that retention cutoff loads
    assert [(lease.ip, lease.held_to) for lease in recent] == [("fd00::1", 2000.0)]
    assert {(lease.namespace, lease.name, lease.workload_identity) for lease in leases} == {
        ("team-a", "web-0", "web")
    }
    found = await store.pod("c1", "u1")
    assert found is not None and found.is_dead
    assert await store.pod("c1", "nope") is None


async def test_a_lease_reopens_when_the_pod_takes_its_ip_back(store: Store) -> None:
    await store.write([write(row("u1", at=1000.0))])
    await store.write([write(row("u1", at=1500.0, dead=True), acquired=False)])
    await store.write([write(row("u1", at=1600.0))])
    leases = await leases_on(store, ["10.0.0.1"])
    assert [(lease.held_from, lease.held_to) for lease in leases] == [(1000.0, None)]


async def test_latest_by_ip_is_the_holder_then_the_last_lease_never_an_arbitrary_row(
    store: Store,
) -> None:
    # Three pods held 10.0.0.1 in turn; the row order in the table is not the lease order.
    await store.write([write(row("second", name="b-0", at=2000.0))])
    await store.write([write(row("second", name="b-0", at=2500.0, dead=True), acquired=False)])
    await store.write([write(row("first", name="a-0", at=1000.0))])
    await store.write([write(row("first", name="a-0", at=1500.0, dead=True), acquired=False)])
    latest = await store.latest_by_ip("10.0.0.1")
    assert latest is not None and latest.uid == "second"
    await store.write([write(row("third", name="c-0", at=3000.0))])
    latest = await store.latest_by_ip("10.0.0.1")
    assert latest is not None and latest.uid == "third"
    assert await store.latest_by_ip("10.0.0.2") is None


async def test_load_live_returns_live_rows_with_objects_oldest_first(store: Store) -> None:
    await store.write(
        [
            write(row("late", name="b-0", at=2000.0, ips=("10.0.0.2",)), obj=b"late"),
            write(row("early", name="a-0", at=1000.0), obj=b"early"),
            write(row("gone", name="c-0", at=1500.0, dead=True, ips=("10.0.0.3",))),
        ]
    )
    loaded = await store.load_live()
    assert [(r.uid, obj) for r, obj in loaded] == [("early", b"early"), ("late", b"late")]


async def test_mark_dead_except_marks_only_that_cluster_and_source(store: Store) -> None:
    await store.write(
        [
            write(row("keep", name="a-0", ips=("10.0.0.1",))),
            write(row("vanished", name="b-0", ips=("10.0.0.2",))),
            write(row("pushed", name="c-0", ips=("10.0.0.3",), source="push")),
            write(row("elsewhere", name="d-0", ips=("10.0.0.4",), cluster="c2")),
        ]
    )
    assert await store.mark_dead_except("c1", "watch", ["keep"], 5000.0) == 1
    dead = {r.uid: (r.is_dead, r.deleted_at) for r in await store.rows()}
    assert dead == {
        "keep": (False, None),
        "vanished": (True, 5000.0),
        "pushed": (False, None),
        "elsewhere": (False, None),
    }
    leases = await leases_on(store, ["10.0.0.2"])
    assert [lease.held_to for lease in leases] == [5000.0]


async def test_prune_deletes_only_pods_dead_before_the_cutoff(store: Store) -> None:
    await store.write(
        [
            write(row("old", name="a-0", at=1000.0, dead=True, ips=("10.0.0.1",))),
            write(row("recent", name="b-0", at=9000.0, dead=True, ips=("10.0.0.2",))),
            write(row("live", name="c-0", at=500.0, ips=("10.0.0.3",))),
        ]
    )
    assert await store.prune(5000.0) == 1
    assert sorted(r.uid for r in await store.rows()) == ["live", "recent"]
    assert await store.pod_object("c1", "old") is None
    leases = await leases_on(store, ["10.0.0.1"])
    assert leases == []


async def test_a_big_batch_is_one_transaction(store: Store) -> None:
    batch = [
        write(row(f"u{i}", name=f"p-{i}", ips=(f"10.1.{i // 250}.{i % 250}",))) for i in range(5000)
    ]
    await store.write(batch)
    assert len(await store.rows()) == 5000
    leases = await leases_on(store, [f"10.1.{i // 250}.{i % 250}" for i in range(0, 5000, 7)])
    assert len(leases) == len({lease.uid for lease in leases}) == len(range(0, 5000, 7))


async def test_batches_of_any_size_write_every_row_object_and_lease(store: Store) -> None:
    """1 234 pods: statements of 100, 10 and 1 rows (SQLite) all run, as the last of each."""

    def ip(i: int) -> str:
        return f"10.2.{i // 250}.{i % 250}"

    await store.write(
        [write(row(f"u{i}", ips=(ip(i),)), obj=f"object {i}".encode()) for i in range(1234)]
    )
    dying = [row(f"u{i}", ips=(ip(i),), at=2000.0, dead=True) for i in range(0, 1234, 3)]
    await store.write([write(r, acquired=False, obj=b"gone") for r in dying])
    rows = {r.uid: r for r in await store.rows()}
    assert len(rows) == 1234
    assert sum(r.is_dead for r in rows.values()) == len(dying) == 412
    assert await store.pod_object("c1", "u1232") == b"object 1232"
    assert await store.pod_object("c1", "u1230") == b"gone"
    leases = {lease.uid: lease for lease in await leases_on(store, [ip(i) for i in range(1234)])}
    assert len(leases) == 1234
    assert {uid for uid, lease in leases.items() if lease.held_to == 2000.0} == {
        r.uid for r in dying
    }
    assert all(lease.held_to is None for uid, lease in leases.items() if int(uid[1:]) % 3)


async def test_a_pod_twice_in_one_batch_is_written_in_order(store: Store) -> None:
    first = row("u1", ips=("10.0.0.1",), at=1000.0)
    second = row("u1", ips=("10.0.0.2",), at=2000.0, node="node-2")
    await store.write([write(first, obj=b"first"), write(second, released=True, obj=b"second")])
    (read,) = await store.rows()
    assert (read.node, read.ips, read.first_seen, read.last_seen) == (
        "node-2",
        ("10.0.0.2",),
        1000.0,
        2000.0,
    )
    assert await store.pod_object("c1", "u1") == b"second"
    leases = {lease.ip: lease for lease in await leases_on(store, ["10.0.0.1", "10.0.0.2"])}
    assert (leases["10.0.0.1"].held_from, leases["10.0.0.1"].held_to) == (1000.0, 2000.0)
    assert (leases["10.0.0.2"].held_from, leases["10.0.0.2"].held_to) == (2000.0, None)


def test_objects_compressed_together_are_those_compressed_alone() -> None:
    codec = ObjectCodec()
    raws = [f'{{"pod": {i}, "pad": "{"x" * i}"}}'.encode() for i in range(50)]
    together = codec.compress_all(raws)
    assert together == [codec.compress(raw) for raw in raws]
    assert [codec.decompress(blob) for blob in together] == raws
    assert codec.compress_all([]) == []
    assert codec.decompress(codec.compress_all([b"", b"x"])[0]) == b""


def test_unknown_store_urls_are_refused_without_echoing_passwords() -> None:
    with pytest.raises(StoreConfigError, match="unsupported") as caught:
        open_store("mysql://user:hunter2@db/podindex")
    assert "hunter2" not in str(caught.value)
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(StoreConfigError):
        open_store("sqlite://relative-without-third-slash.db")


async def test_live_on_node_lists_only_live_pods_of_that_node_in_order(store: Store) -> None:
    await store.write(
        [
            write(row("b", name="b-0", ips=("10.0.0.1",))),
            write(row("a", name="a-0", ips=("10.0.0.2",))),
            write(row("dead", name="c-0", ips=("10.0.0.3",), dead=True)),
            write(row("other", name="d-0", ips=("10.0.0.4",), node="node-2")),
        ]
    )
    assert [r.uid for r in await store.live_on_node("node-1")] == ["a", "b"]
    assert await store.live_on_node("node-9") == []


async def insert_at_version_1(url: str, r: StoredPod, obj: bytes) -> None:
    """A row as podindex with schema 1 wrote it: the object inline in ``pods``."""
    columns = ", ".join((*POD_COLUMNS, "pod_obj"))
    values = (*row_values(r), ObjectCodec().compress(obj))
    if url.startswith("sqlite"):
        conn = sqlite3.connect(database_path(url))
        with conn:
            marks = ", ".join("?" * len(values))
            conn.execute(f"INSERT INTO pods ({columns}) VALUES ({marks})", values)
        conn.close()
        return
    pg = await asyncpg.connect(url)
    try:
        marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        await pg.execute(f"INSERT INTO pods ({columns}) VALUES ({marks})", *values)
    finally:
        await pg.close()


async def test_a_version_1_database_upgrades_in_place(store_url: str) -> None:
    old = open_store(store_url)
    await old.open(target_version=1)
    assert await old.schema_version() == 1
    await old.close()
    written = row("u-old", at=1234.5)
    await insert_at_version_1(store_url, written, b"inline object")

    upgraded = open_store(store_url)
    await upgraded.open()
    try:
        assert await upgraded.schema_version() == len(MIGRATIONS)
        (read,) = await upgraded.rows()
        assert msgspec.structs.asdict(read) == msgspec.structs.asdict(written)
        assert await upgraded.pod_object("c1", "u-old") == b"inline object"
        # And it takes new writes.
        await upgraded.write([write(row("u-new", name="b-0", ips=("10.0.0.2",)), obj=b"new")])
        assert await upgraded.pod_object("c1", "u-new") == b"new"
    finally:
        await upgraded.close()


async def test_a_database_newer_than_podindex_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    await store.close()
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(database_path(store_url))
        with conn:
            conn.execute("INSERT INTO podindex_schema (version) VALUES (99)")
        conn.close()
    else:
        pg = await asyncpg.connect(store_url)
        await pg.execute("INSERT INTO podindex_schema (version) VALUES (99)")
        await pg.close()
    newer = open_store(store_url)
    with pytest.raises(StoreError, match="newer"):
        await newer.open()
    await newer.close()


async def test_a_nul_in_pushed_text_does_not_fail_the_batch(store: Store) -> None:
    odd = row("u-nul", name="nul-0", ips=("10.0.0.9",))
    odd.annotations = {"note": "a\x00b"}
    odd.time_stamp = "x\x00"
    await store.write([write(odd), write(row("u-ok", name="ok-0", ips=("10.0.0.8",)))])
    rows = {r.uid: r for r in await store.rows()}
    assert set(rows) == {"u-nul", "u-ok"}
    assert rows["u-nul"].annotations["note"] in ("a\x00b", "a\ufffdb")


async def test_ip_sets_are_saved_replaced_and_deleted(store: Store) -> None:
    assert await store.ipsets() == []
    await store.save_ipset("web", '{"name":"web","cluster":"c1","selector":"app=web"}', 1.0)
    await store.save_ipset("db", '{"name":"db","cluster":"c1"}', 1.0)
    await store.save_ipset("web", '{"name":"web","cluster":"c1","selector":"app=api"}', 2.0)
    assert await store.ipsets() == [
        ("db", '{"name":"db","cluster":"c1"}'),
        ("web", '{"name":"web","cluster":"c1","selector":"app=api"}'),
    ]
    assert await store.delete_ipset("db") is True
    assert await store.delete_ipset("db") is False
    assert [name for name, _ in await store.ipsets()] == ["web"]


def instance(
    uid: str,
    cid: str,
    *,
    name: str = "app",
    finished: str | None = None,
    at: float = 1.0,
    cluster: str = "c1",
) -> StoredInstance:
    return StoredInstance(
        cluster=cluster,
        uid=uid,
        pod_id=f"id-of-{uid}",
        container_id=cid,
        runtime="CONTAINERD_CONTAINER_RUNTIME",
        container_name=name,
        node="node-1",
        ips=("10.0.0.1", "fd00::1"),
        started="2026-11-30T10:00:00Z",
        image_digest="sha256:" + "ab" * 32,
        finished=finished,
        exit_code=None if finished is None else 1,
        reason=None if finished is None else "Error",
        observed_at=at,
    )


async def test_instances_round_trip_and_a_finished_one_is_final(store: Store) -> None:
    await store.write_instances([instance("p1", "a"), instance("p2", "b")], [], 10)
    assert {i.container_id for i in await store.instances([("c1", "p1")])} == {"a"}
    done = instance("p1", "a", finished="2026-11-30T10:05:00Z")
    await store.write_instances([done], [], 10)
    # A stale status (running again) cannot undo the end, nor move when it was first seen.
    await store.write_instances([instance("p1", "a", at=99.0)], [], 10)
    [kept] = await store.instances([("c1", "p1")])
    assert kept == done
    both = await store.instances([("c1", "p1"), ("c1", "p2"), ("c1", "nope")])
    assert sorted(i.container_id for i in both) == ["a", "b"]
    assert await store.instances([]) == []


async def test_a_gone_pod_finishes_its_running_instances_and_keeps_the_last_n(
    store: Store,
) -> None:
    finished = [
        instance("p1", f"old-{n}", finished=f"2026-11-30T10:0{n}:00Z", at=float(n))
        for n in range(5)
    ]
    await store.write_instances([*finished, instance("p1", "now", at=9.0)], [], 3)
    ids = sorted(i.container_id for i in await store.instances([("c1", "p1")]))
    assert ids == ["now", "old-2", "old-3", "old-4"], "the running one and the last three"
    await store.write_instances([], [("c1", "p1", "2026-11-30T11:00:00Z")], 3)
    kept = {i.container_id: i for i in await store.instances([("c1", "p1")])}
    assert kept["now"].finished == "2026-11-30T11:00:00Z" and kept["now"].exit_code is None
    assert sorted(kept) == ["now", "old-3", "old-4"], "ended, it counts among the last three"
    docs = await store.instance_documents([("c1", "p1"), ("c1", "none")])
    assert docs[1] is None, "a pod without instances has no document"
    assert docs[0] is not None
    live, terminated = (msgspec.json.decode(text) for text in docs[0])
    assert live == []
    [bucket] = terminated
    first = bucket["instances"][0]
    assert first == {
        "instanceId": {
            "containerRuntime": "CONTAINERD_CONTAINER_RUNTIME",
            "id": "old-3",
            "node": "node-1",
        },
        "containingPodId": "id-of-p1",
        "containerName": "app",
        "containerIps": ["10.0.0.1", "fd00::1"],
        "started": "2026-11-30T10:00:00Z",
        "imageDigest": "sha256:" + "ab" * 32,
        "finished": "2026-11-30T10:03:00Z",
        "exitCode": 1,
        "terminationReason": "Error",
    }
    assert [i["instanceId"]["id"] for i in bucket["instances"]] == ["old-3", "old-4", "now"]
    facets = await store.instance_facets()
    assert {(c, u, n, d) for c, u, n, d in facets} == {("c1", "p1", "app", "sha256:" + "ab" * 32)}


async def test_prune_takes_a_pods_instances_with_it(store: Store) -> None:
    await store.write([write(row("old", at=1000.0, dead=True)), write(row("live", name="b-0"))])
    await store.write_instances([instance("old", "x"), instance("live", "y")], [], 10)
    assert [r.uid for r in await store.dead_pods(0.0)] == ["old"]
    assert await store.dead_pods(1001.0) == [], "died before the cutoff"
    assert await store.prune(5000.0) == 1
    assert [i.uid for i in await store.instances([("c1", "old"), ("c1", "live")])] == ["live"]
    assert [r.uid for r in await store.dead_pods(0.0)] == []


async def test_each_pods_document_has_its_running_and_a_bucket_per_container(
    store: Store,
) -> None:
    await store.write_instances(
        [
            instance("p1", "app-1", finished="2026-11-30T10:01:00Z", at=1.0),
            instance("p1", "app-2", at=2.0),
            instance("p1", "side-1", name="sidecar", finished="2026-11-30T10:00:00Z", at=1.0),
            instance("p1", "side-2", name="sidecar", finished="2026-11-30T10:00:00Z", at=3.0),
            instance("p1", "side-3", name="sidecar", at=4.0),
            instance("p2", "other", at=1.0),
        ],
        [],
        10,
    )
    docs = await store.instance_documents([("c1", "p1"), ("c1", "p2")])
    assert docs[0] is not None
    live, terminated = (msgspec.json.decode(text) for text in docs[0])
    assert [i["instanceId"]["id"] for i in live] == ["app-2", "side-3"]
    assert [[i["instanceId"]["id"] for i in b["instances"]] for b in terminated] == [
        ["app-1"],
        ["side-1", "side-2"],  # the same second: the order they were seen in
    ]
    # Every write rebuilds the touched pods' documents: p2 ends, p1 is left as it was.
    await store.write_instances([], [("c1", "p2", "2026-11-30T12:00:00Z")], 10)
    [p2] = await store.instance_documents([("c1", "p2")])
    assert p2 is not None
    live2, terminated2 = (msgspec.json.decode(t) for t in p2)
    assert live2 == [] and terminated2[0]["instances"][0]["finished"] == "2026-11-30T12:00:00Z"
    assert await store.instance_documents([("c1", "p1")]) == docs[:1]


async def test_documents_come_in_the_order_asked_across_clusters(store: Store) -> None:
    uids = [f"p{n:03}" for n in range(300)]
    await store.write_instances(
        [instance(uid, f"{uid}-c", at=1.0) for uid in uids[::2]]
        + [instance(uid, f"{uid}-x", at=1.0, cluster="c2") for uid in uids[:10]],
        [],
        10,
    )
    shuffled = random.Random(7).sample(uids, len(uids))
    asked = [("c1", uid) for uid in shuffled] + [("c2", "p005"), ("c9", "p000"), ("c1", "p000")]
    docs = await store.instance_documents(asked)
    assert len(docs) == len(asked)
    for (cluster, uid), doc in zip(asked, docs, strict=True):
        if cluster == "c9" or (cluster == "c1" and int(uid[1:]) % 2):
            assert doc is None, (cluster, uid)
            continue
        assert doc is not None, (cluster, uid)
        [running] = msgspec.json.decode(doc[0])
        assert running["instanceId"]["id"] == f"{uid}-{'x' if cluster == 'c2' else 'c'}"
    assert await store.instance_documents([]) == []


async def test_export_lines_are_written_by_the_database_in_the_order_asked(
    store: Store,
) -> None:
    odd = 'we"ird\\name \u00fc\u2603'
    await store.write_instances(
        [instance("p1", "a"), instance("p2", "b"), instance("old", "c")],
        [],
        10,
        [
            PodFacts("c1", "p1", "id-1", "web-0", "team-a", "2026-11-30T10:00:00Z"),
            PodFacts("c1", "p2", "id-2", odd, "team-b", None),
            PodFacts("c9", "p1", "id-x", "elsewhere", "x", None),  # no such row: nothing
        ],
    )
    text = await store.export_lines(
        "c1", ["p2", "none", "p1", "old"], ['"dep-2"', "null", "null", '"dep-old"']
    )
    p2, missing, p1, old = text.split(b"\n")
    assert msgspec.json.decode(p2) == {
        "result": {
            "pod": {
                "id": "id-2",
                "name": odd,
                "deploymentId": "dep-2",
                "namespace": "team-b",
                "clusterId": "c1",
                "liveInstances": msgspec.json.decode(
                    (await store.instance_documents([("c1", "p2")]))[0][0]  # type: ignore[index]
                ),
                "terminatedInstances": [],
                "started": None,
            }
        }
    }
    pod1 = msgspec.json.decode(p1)["result"]["pod"]
    assert (pod1["name"], pod1["deploymentId"], pod1["started"]) == (
        "web-0",
        None,
        "2026-11-30T10:00:00Z",
    )
    assert missing == EXPORT_FALLBACK, "no documents: the caller writes the line"
    # Written without facts (an older podindex): its documents, for the caller.
    marker, live, terminated = old.split(EXPORT_FALLBACK)
    assert marker == b"" and msgspec.json.decode(live)[0]["instanceId"]["id"] == "c"
    assert msgspec.json.decode(terminated) == []
    # Facts are kept when a later write (a pod gone) brings none.
    await store.write_instances([], [("c1", "p1", "2026-11-30T11:00:00Z")], 10)
    after = msgspec.json.decode(await store.export_lines("c1", ["p1"], ['"d"']))["result"]["pod"]
    assert after["name"] == "web-0" and after["terminatedInstances"][0]["instances"]
