"""The SQLite history backend: one file, no set-up; the default.

The standard ``sqlite3`` module on one dedicated thread: every call is one
job on that thread, so the event loop never blocks on the file and the
connection is never shared between threads. WAL with ``synchronous=NORMAL``:
a committed batch survives the process being killed (not necessarily the
machine losing power, which ``synchronous=FULL`` would add at a cost per
commit).

Checkpoints (copying the WAL back into the database file) run on a second
connection and thread, not inside the writer's commits: SQLite's automatic
checkpoint made commits of batches of updates 9x slower (measured 36 µs a
row against 4). A passive checkpoint never blocks the writer; if the WAL
still grows past ``WAL_LIMIT_PAGES`` the writer waits for a full one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from podindex.store.base import (
    CLUSTER,
    INSTANCE_COLUMNS,
    INTEGRATION_COLUMNS,
    IPS,
    LAST_SEEN,
    LEASE_COLUMNS,
    POD_COLUMNS,
    UID,
    UPDATED_COLUMNS,
    Lease,
    ObjectCodec,
    PodFacts,
    PodWrite,
    StoreConfigError,
    StoredInstance,
    StoredIntegration,
    StoredPod,
    StoreError,
    StoreRejected,
    export_line_sql,
    fact_values,
    instance_batch,
    instance_document_sql,
    instance_from,
    instance_order,
    joined_documents,
    pod_documents,
    row_from,
    trim_instances_sql,
    uids_by_cluster,
    upsert_instance_sql,
)

_T = TypeVar("_T")

_Round = tuple[
    list[tuple[object, ...]],
    list[tuple[object, object, bytes]],
    list[tuple[object, object, str, float]],
    list[tuple[object, object, object, object]],
    list[tuple[object, object, object]],
]
"""Rows of one round's statements: pods to upsert, objects, leases opened, leases
closed but those on some IPs, and every open lease closed (of pods left holding none)."""
_Prepared = list[_Round]
"""A batch's rounds, in order: a pod written twice in one batch is in two rounds."""

CHECKPOINT_INTERVAL = 1.0
WAL_LIMIT_PAGES = 65536  # 256 MB of 4 KB pages

MIGRATIONS: tuple[str, ...] = (
    # 1: pods with their object inline, and IP leases.
    """
    CREATE TABLE pods (
        cluster TEXT NOT NULL, uid TEXT NOT NULL,
        namespace TEXT NOT NULL, name TEXT NOT NULL, node TEXT NOT NULL,
        ips TEXT NOT NULL, pod_ip TEXT NOT NULL, phase TEXT NOT NULL,
        host_network INTEGER NOT NULL,
        labels TEXT NOT NULL, annotations TEXT NOT NULL,
        workload_identity TEXT NOT NULL, identity_source TEXT NOT NULL,
        workload_kind TEXT NOT NULL, workload_name TEXT NOT NULL,
        selector_labels TEXT NOT NULL,
        owner_kind TEXT NOT NULL, owner_name TEXT NOT NULL,
        created_at TEXT NOT NULL, started_at TEXT NOT NULL,
        first_seen REAL NOT NULL, last_seen REAL NOT NULL,
        deleted_at REAL, is_dead INTEGER NOT NULL,
        source TEXT NOT NULL, resource_version TEXT NOT NULL, time_stamp TEXT NOT NULL,
        pod_obj BLOB,
        PRIMARY KEY (cluster, uid)
    );
    CREATE INDEX pods_by_name ON pods (name, namespace);
    CREATE INDEX pods_live_by_node ON pods (node) WHERE is_dead = 0;
    CREATE INDEX pods_dead_since ON pods (deleted_at) WHERE is_dead = 1;
    CREATE TABLE leases (
        cluster TEXT NOT NULL, uid TEXT NOT NULL, ip TEXT NOT NULL,
        held_from REAL NOT NULL, held_to REAL,
        PRIMARY KEY (cluster, uid, ip)
    );
    CREATE INDEX leases_by_ip ON leases (ip, held_from);
    """,
    # 2: objects move to their own table, so that listing and loading rows
    # never reads the (large) objects beside them.
    """
    CREATE TABLE pod_objects (
        cluster TEXT NOT NULL, uid TEXT NOT NULL, obj BLOB NOT NULL,
        PRIMARY KEY (cluster, uid)
    );
    INSERT INTO pod_objects (cluster, uid, obj)
        SELECT cluster, uid, pod_obj FROM pods WHERE pod_obj IS NOT NULL;
    ALTER TABLE pods DROP COLUMN pod_obj;
    """,
    # 3: registered clusters (integrations); the token column holds ciphertext only.
    """
    CREATE TABLE integrations (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        endpoint TEXT NOT NULL, ca_cert TEXT NOT NULL, token BLOB NOT NULL,
        namespace TEXT NOT NULL, label_selector TEXT NOT NULL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, context TEXT NOT NULL,
        last_error TEXT NOT NULL, last_error_phase TEXT NOT NULL, last_sync REAL
    );
    """,
    # 4: IP sets; the spec is the API's JSON (the store reads none of it).
    """
    CREATE TABLE ipsets (name TEXT PRIMARY KEY, spec TEXT NOT NULL, updated_at REAL NOT NULL);
    """,
    # 5: PostgreSQL's JSON columns
    # become text; SQLite's always were.
    "",
    # 6: container instances (one row per container id), for pod search and export.
    """
    CREATE TABLE container_instances (
        cluster TEXT NOT NULL, uid TEXT NOT NULL, pod_id TEXT NOT NULL,
        container_id TEXT NOT NULL, runtime TEXT NOT NULL, container_name TEXT NOT NULL, node TEXT NOT NULL,
        ips TEXT NOT NULL, started TEXT, image_digest TEXT, finished TEXT,
        exit_code INTEGER, reason TEXT, observed_at REAL NOT NULL,
        PRIMARY KEY (cluster, uid, container_id)
    );
    CREATE TABLE pod_instances (
        cluster TEXT NOT NULL, uid TEXT NOT NULL, live TEXT NOT NULL, terminated TEXT NOT NULL,
        PRIMARY KEY (cluster, uid)
    );
    """,
    # 7: what a pod's export line needs (see PostgreSQL's 7).
    """
    ALTER TABLE pod_instances ADD COLUMN pod_id TEXT;
    ALTER TABLE pod_instances ADD COLUMN name_json TEXT;
    ALTER TABLE pod_instances ADD COLUMN namespace_json TEXT;
    ALTER TABLE pod_instances ADD COLUMN cluster_json TEXT;
    ALTER TABLE pod_instances ADD COLUMN created_json TEXT;
    """,
)

_COLUMNS = ", ".join(POD_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM pods"
_WIDTH = len(POD_COLUMNS)
_PIECES = (100, 10, 1)
"""Rows a statement carries (100 pods' rows are 2 700 parameters; SQLite allows 32 766).
Pieces of 1 000 measured the same within the noise (churn and initial write)."""


def _values(n: int, width: int, last: str = "") -> str:
    """``n`` rows of ``width`` parameters (each followed by ``last``), for a VALUES list."""
    row = "(" + ", ".join("?" * width) + last + ")"
    return ", ".join([row] * n)


_ON_CONFLICT = (
    " ON CONFLICT (cluster, uid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in UPDATED_COLUMNS)
    # Several replicas may write one pod: the earliest sighting stands.
    + ", first_seen = min(pods.first_seen, excluded.first_seen)"
)


@cache
def _upsert_pods(n: int) -> str:
    """Every row goes through the upsert. An UPDATE of known live pods first spared
    their index entries one row at a time (10 against 6 µs a row), but as a
    statement over many rows (``UPDATE … FROM (VALUES …)``) it cost more than it
    spared: 27 µs a change against 2 for the upsert alone."""
    return f"INSERT INTO pods ({_COLUMNS}) VALUES {_values(n, _WIDTH)}{_ON_CONFLICT}"


@cache
def _upsert_objects(n: int) -> str:
    return (
        f"INSERT INTO pod_objects (cluster, uid, obj) VALUES {_values(n, 3)} "
        "ON CONFLICT (cluster, uid) DO UPDATE SET obj = excluded.obj"
    )


@cache
def _open_leases(n: int) -> str:
    # A pod taking back an IP it gave up (a selector-scoped watch re-adding it)
    # holds it again: the lease reopens rather than staying closed.
    return (
        "INSERT INTO leases (cluster, uid, ip, held_from, held_to) "
        f"VALUES {_values(n, 4, ', NULL')} ON CONFLICT (cluster, uid, ip) "
        "DO UPDATE SET held_to = NULL WHERE leases.held_to IS NOT NULL"
    )


_CLOSE = (
    "UPDATE leases SET held_to = v.column1 FROM (VALUES {rows}) AS v "
    "WHERE leases.cluster = v.column2 AND leases.uid = v.column3 AND leases.held_to IS NULL"
)


@cache
def _close_leases(n: int) -> str:
    """(at, cluster, uid, IPs kept as JSON) rows: close each pod's other open leases."""
    return (
        _CLOSE.format(rows=_values(n, 4))
        + " AND leases.ip NOT IN (SELECT value FROM json_each(v.column4))"
    )


@cache
def _close_all_leases(n: int) -> str:
    """(at, cluster, uid) rows of pods left holding no IP (every death): no JSON to read."""
    return _CLOSE.format(rows=_values(n, 3))


def _execute_rows(
    conn: sqlite3.Connection, statement: Callable[[int], str], rows: Sequence[Sequence[object]]
) -> None:
    """``statement(n)`` over ``rows``, up to 100 rows a statement.

    Each statement is one step: SQLite gives the GIL up for a step, and this
    thread must win it back from the event loop's after each one. With a step
    a row (``executemany``) a busy event loop held every row up: with the index
    taking 5 000 changes/s, history lagged a median of 21-23 s, against 8-12 s
    this way (``bench_history.py --offered``).
    Pieces of 100, 10 and 1 rows keep the statements few and cached.
    """
    start = 0
    for size in _PIECES:
        while len(rows) - start >= size:
            piece = rows[start : start + size]
            conn.execute(statement(size), list(chain.from_iterable(piece)))
            start += size


def database_path(url: str) -> str:
    """``sqlite:///rel/file.db`` → ``rel/file.db``, ``sqlite:////abs/file.db`` → ``/abs/file.db``."""
    prefix = "sqlite:///"
    if url in ("sqlite://", "sqlite:///:memory:"):
        return ":memory:"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreConfigError(
            f"store: expected sqlite:///relative/file.db or sqlite:////absolute/file.db, got {url!r}"
        )
    return url[len(prefix) :].split("?", 1)[0]


class SQLiteStore:
    write_chunk = 5000
    """One transaction a flush: each commit writes every page the chunk dirtied,
    and smaller chunks dirty many of the same pages again (with statements of
    many rows, 1 250 a chunk: commits 29 against 9 µs a change, churn 7.9k
    against 9.1k changes/s)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = database_path(url)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podindex-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._checkpoints = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podindex-wal")
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing: asyncio.Future[int] | None = None
        self._last_checkpoint = 0.0
        self._codec = ObjectCodec()
        self._preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podindex-prepare")
        self._preparer_codec = ObjectCodec()
        """Used on the store's thread only."""

    async def _run(self, job: Callable[[sqlite3.Connection], _T]) -> _T:
        def call() -> _T:
            if self._conn is None:
                raise StoreError(f"store {self.url} is not open")
            try:
                return job(self._conn)
            except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
                raise StoreRejected(f"sqlite {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite {self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self, target_version: int | None = None) -> None:
        """Connect and migrate (to ``target_version``, else the newest: for tests of upgrades)."""

        def connect() -> None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=10000")
                # A batch touches every index of thousands of rows: 64 MB of page
                # cache keeps them from spilling mid-transaction (measured 24 →
                # 15 µs a row).
                conn.execute("PRAGMA cache_size=-65536")
                conn.execute("PRAGMA wal_autocheckpoint=0")  # see the module docstring
                _migrate(conn, target_version or len(MIGRATIONS))
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite {self.path}: {exc}") from exc
            self._conn = conn

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, connect)
        if self.path != ":memory:":
            self._checkpointer = await loop.run_in_executor(
                self._checkpoints,
                lambda: sqlite3.connect(self.path, isolation_level=None, check_same_thread=False),
            )

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._checkpointing is not None:
            with contextlib.suppress(StoreError):
                await self._checkpointing

        def close() -> None:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):  # leave a short WAL behind
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None

        await loop.run_in_executor(self._executor, close)
        if self._checkpointer is not None:
            await loop.run_in_executor(self._checkpoints, self._checkpointer.close)
            self._checkpointer = None
        self._executor.shutdown(wait=False)
        self._checkpoints.shutdown(wait=False)
        self._preparer.shutdown(wait=False)

    async def _checkpoint_if_due(self) -> None:
        """Start a passive checkpoint each second; wait for a full one if the WAL is too long."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        running = self._checkpointing
        if running is not None and running.done():
            self._checkpointing = None
            try:
                wal_pages = running.result()
            except StoreError:
                wal_pages = 0
            if wal_pages > WAL_LIMIT_PAGES:  # checkpoints fall behind: the writer waits
                await self._run(lambda conn: conn.execute("PRAGMA wal_checkpoint(RESTART)"))
        now = time.monotonic()
        if self._checkpointing is None and now - self._last_checkpoint >= CHECKPOINT_INTERVAL:
            self._last_checkpoint = now

            def checkpoint() -> int:
                try:
                    _, wal_pages, copied = checkpointer.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    ).fetchone()
                except sqlite3.Error as exc:
                    raise StoreError(f"sqlite {self.path}: checkpoint: {exc}") from exc
                return int(wal_pages) - int(copied)  # not yet in the database file

            loop = asyncio.get_running_loop()
            self._checkpointing = loop.run_in_executor(self._checkpoints, checkpoint)

    async def schema_version(self) -> int:
        return await self._run(_version)

    async def write(self, batch: Sequence[PodWrite]) -> None:
        await self.write_prepared(await self.prepare(batch))

    async def prepare(self, batch: Sequence[PodWrite]) -> _Prepared:
        # Rows are encoded and objects compressed on a thread of their own, so
        # that one batch's preparation overlaps the previous one's transaction.
        return await asyncio.get_running_loop().run_in_executor(
            self._preparer, self._prepare, batch
        )

    async def write_prepared(self, prepared: Sequence[Any]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                for rows, objects, opened, closed, closed_all in prepared:
                    _execute_rows(conn, _upsert_pods, rows)
                    _execute_rows(conn, _upsert_objects, objects)
                    _execute_rows(conn, _open_leases, opened)
                    _execute_rows(conn, _close_leases, closed)
                    _execute_rows(conn, _close_all_leases, closed_all)

        await self._run(write)
        await self._checkpoint_if_due()

    def _prepare(self, batch: Sequence[PodWrite]) -> _Prepared:
        """The batch's rows, in rounds of distinct pods: each statement updates a
        pod once, and a pod written twice is written in order."""
        seen: dict[tuple[object, object], int] = {}
        rounds: list[list[PodWrite]] = [[]]
        for w in batch:
            key = (w.values[CLUSTER], w.values[UID])
            n = seen.get(key, 0)
            seen[key] = n + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(w)
        return [self._round(writes) for writes in rounds]

    def _round(self, batch: Sequence[PodWrite]) -> _Round:
        rows: list[tuple[object, ...]] = []
        opened: list[tuple[object, object, str, float]] = []
        closed: list[tuple[object, object, object, object]] = []
        closed_all: list[tuple[object, object, object]] = []
        raws: list[bytes] = []
        objects_of: list[tuple[object, object]] = []
        for w in batch:
            values = w.values
            cluster, uid = values[CLUSTER], values[UID]
            rows.append(values)
            if w.pod_obj is not None:
                raws.append(w.pod_obj)
                objects_of.append((cluster, uid))
            if w.acquired:
                opened.extend((cluster, uid, ip, w.lease_from) for ip in w.lease_ips)
            if w.released:
                if values[IPS] == "[]":  # it holds none: every open lease closes
                    closed_all.append((values[LAST_SEEN], cluster, uid))
                else:
                    closed.append((values[LAST_SEEN], cluster, uid, values[IPS]))
        blobs = self._preparer_codec.compress_all(raws)
        objects = [(c, u, blob) for (c, u), blob in zip(objects_of, blobs, strict=True)]
        return rows, objects, opened, closed, closed_all

    async def load_live(
        self, clusters: Collection[str] | None = None
    ) -> list[tuple[StoredPod, bytes | None]]:
        def load(conn: sqlite3.Connection) -> list[tuple[StoredPod, bytes | None]]:
            columns = ", ".join(f"p.{c}" for c in POD_COLUMNS)
            cursor = conn.execute(
                f"SELECT {columns}, o.obj FROM pods p LEFT JOIN pod_objects o "
                "ON o.cluster = p.cluster AND o.uid = p.uid "
                "WHERE p.is_dead = 0 ORDER BY p.first_seen"
            )
            wanted = None if clusters is None else set(clusters)
            decompress = self._codec.decompress
            loaded = []
            for values in cursor:
                row = row_from(values[:-1])
                if wanted is None or row.cluster in wanted:
                    blob = values[-1]
                    loaded.append((row, decompress(blob) if blob is not None else None))
            return loaded

        return await self._run(load)

    async def mark_dead_except(
        self, cluster: str, source: str, keep: Collection[str], at: float
    ) -> int:
        def mark(conn: sqlite3.Connection) -> int:
            gone = (
                "SELECT uid FROM pods WHERE cluster = ? AND source = ? AND is_dead = 0 "
                "AND uid NOT IN (SELECT value FROM json_each(?))"
            )
            args = (cluster, source, _json(keep))
            with _transaction(conn):
                conn.execute(
                    f"UPDATE leases SET held_to = ? WHERE held_to IS NULL AND cluster = ? "
                    f"AND uid IN ({gone})",
                    (at, cluster, *args),
                )
                cursor = conn.execute(
                    "UPDATE pods SET is_dead = 1, deleted_at = ?, last_seen = ?, ips = '[]' "
                    f"WHERE cluster = ? AND uid IN ({gone})",
                    (at, at, cluster, *args),
                )
                return cursor.rowcount

        return await self._run(mark)

    async def prune(self, dead_before: float) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            doomed = "SELECT cluster, uid FROM pods WHERE is_dead = 1 AND deleted_at < ?"
            with _transaction(conn):
                conn.execute(
                    f"DELETE FROM leases WHERE (cluster, uid) IN ({doomed})", (dead_before,)
                )
                conn.execute(
                    f"DELETE FROM pod_objects WHERE (cluster, uid) IN ({doomed})", (dead_before,)
                )
                conn.execute(
                    f"DELETE FROM container_instances WHERE (cluster, uid) IN ({doomed})",
                    (dead_before,),
                )
                conn.execute(
                    f"DELETE FROM pod_instances WHERE (cluster, uid) IN ({doomed})",
                    (dead_before,),
                )
                cursor = conn.execute(
                    "DELETE FROM pods WHERE is_dead = 1 AND deleted_at < ?", (dead_before,)
                )
                return cursor.rowcount

        return await self._run(prune)

    async def rows(self) -> list[StoredPod]:
        def rows(conn: sqlite3.Connection) -> list[StoredPod]:
            cursor = conn.execute(f"{_SELECT} ORDER BY namespace, name, cluster, uid")
            return [row_from(v) for v in cursor]

        return await self._run(rows)

    async def by_name(self, name: str, namespace: str | None) -> StoredPod | None:
        def by_name(conn: sqlite3.Connection) -> StoredPod | None:
            where, args = "name = ?", [name]
            if namespace is not None:
                where, args = "name = ? AND namespace = ?", [name, namespace]
            found = conn.execute(
                f"{_SELECT} WHERE {where} "
                "ORDER BY is_dead, coalesce(deleted_at, last_seen) DESC, last_seen DESC LIMIT 1",
                args,
            ).fetchone()
            return None if found is None else row_from(found)

        return await self._run(by_name)

    async def live_on_node(self, node: str) -> list[StoredPod]:
        def live(conn: sqlite3.Connection) -> list[StoredPod]:
            cursor = conn.execute(
                f"{_SELECT} WHERE node = ? AND is_dead = 0 ORDER BY namespace, name, cluster, uid",
                (node,),
            )
            return [row_from(v) for v in cursor]

        return await self._run(live)

    async def latest_by_ip(self, ip: str) -> StoredPod | None:
        def latest(conn: sqlite3.Connection) -> StoredPod | None:
            columns = ", ".join(f"p.{c}" for c in POD_COLUMNS)
            found = conn.execute(
                f"SELECT {columns} FROM leases l JOIN pods p ON p.cluster = l.cluster "
                "AND p.uid = l.uid WHERE l.ip = ? "
                "ORDER BY l.held_to IS NULL DESC, l.held_from DESC, p.last_seen DESC LIMIT 1",
                (ip,),
            ).fetchone()
            return None if found is None else row_from(found)

        return await self._run(latest)

    async def all_leases(self, ended_after: float) -> list[Lease]:
        def leases(conn: sqlite3.Connection) -> list[Lease]:
            cursor = conn.execute(
                f"SELECT {LEASE_COLUMNS} FROM leases l "
                "JOIN pods p ON p.cluster = l.cluster AND p.uid = l.uid "
                "WHERE l.held_to IS NULL OR l.held_to > ?",
                (ended_after,),
            )
            return [Lease(*values) for values in cursor]

        return await self._run(leases)

    async def pod(self, cluster: str, uid: str) -> StoredPod | None:
        def pod(conn: sqlite3.Connection) -> StoredPod | None:
            found = conn.execute(
                f"{_SELECT} WHERE cluster = ? AND uid = ?", (cluster, uid)
            ).fetchone()
            return None if found is None else row_from(found)

        return await self._run(pod)

    async def pod_object(self, cluster: str, uid: str) -> bytes | None:
        def get(conn: sqlite3.Connection) -> bytes | None:
            found = conn.execute(
                "SELECT obj FROM pod_objects WHERE cluster = ? AND uid = ?", (cluster, uid)
            ).fetchone()
            return None if found is None else self._codec.decompress(found[0])

        return await self._run(get)

    async def dead_pods(self, dead_since: float) -> list[StoredPod]:
        def dead(conn: sqlite3.Connection) -> list[StoredPod]:
            cursor = conn.execute(
                f"{_SELECT} WHERE is_dead = 1 AND deleted_at >= ? ORDER BY deleted_at",
                (dead_since,),
            )
            return [row_from(v) for v in cursor]

        return await self._run(dead)

    async def write_instances(
        self,
        instances: Sequence[StoredInstance],
        gone: Sequence[tuple[str, str, str]],
        keep: int,
        facts: Sequence[PodFacts] = (),
    ) -> None:
        batch = instance_batch(instances, gone)
        changed = msgspec.json.encode([list(key) for key in batch.changed]).decode()

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(_UPSERT_INSTANCE, batch.rows)
                conn.executemany(_FINISH_INSTANCES, batch.finished)
                conn.executemany(_TRIM_INSTANCES, [(c, u, keep) for c, u in batch.trimmed])
                documents = pod_documents(conn.execute(_INSTANCE_OBJECTS, (changed,)))
                conn.executemany(_UPSERT_POD_INSTANCES, documents)
                conn.executemany(_POD_FACTS, fact_values(facts))

        await self._run(write)

    async def instances(self, pods: Collection[tuple[str, str]]) -> list[StoredInstance]:
        keys = msgspec.json.encode([list(key) for key in pods]).decode()

        def read(conn: sqlite3.Connection) -> list[StoredInstance]:
            cursor = conn.execute(
                f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM container_instances "
                "WHERE (cluster, uid) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?)) "
                + instance_order(),
                (keys,),
            )
            return [instance_from(v) for v in cursor]

        return await self._run(read)

    async def instance_documents(
        self, pods: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str] | None]:
        clusters = uids_by_cluster(pods)

        def read(conn: sqlite3.Connection) -> list[tuple[str, str] | None]:
            texts = {
                cluster: conn.execute(_JOINED_DOCUMENTS, (cluster, _json(uids))).fetchone()[0]
                for cluster, (_, uids) in clusters.items()
            }
            return joined_documents(len(pods), clusters, texts)

        return await self._run(read)

    async def export_lines(
        self, cluster: str, uids: Sequence[str], deployment_ids: Sequence[str]
    ) -> bytes:
        asked = _json([f"{uid}\x1f{d}" for uid, d in zip(uids, deployment_ids, strict=True)])

        def read(conn: sqlite3.Connection) -> bytes:
            return bytes(conn.execute(_EXPORT_LINES, (cluster, asked)).fetchone()[0])

        return await self._run(read)

    async def instance_facets(self) -> list[tuple[str, str, str, str]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
            return list(
                conn.execute(
                    "SELECT cluster, uid, container_name, coalesce(image_digest, '') "
                    "FROM container_instances"
                )
            )

        return await self._run(read)

    async def integrations(self) -> list[StoredIntegration]:
        def read(conn: sqlite3.Connection) -> list[StoredIntegration]:
            cursor = conn.execute(f"{_SELECT_INTEGRATIONS} ORDER BY name, id")
            return [StoredIntegration(*values) for values in cursor]

        return await self._run(read)

    async def save_integration(self, integration: StoredIntegration) -> None:
        values = tuple(getattr(integration, c) for c in INTEGRATION_COLUMNS)

        def save(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(_SAVE_INTEGRATION, values)

        await self._run(save)

    async def save_integration_health(
        self, integration_id: str, last_error: str, last_error_phase: str, last_sync: float | None
    ) -> bool:
        values = (last_error, last_error_phase, last_sync, integration_id)

        def save(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                return conn.execute(_SAVE_INTEGRATION_HEALTH, values).rowcount > 0

        return await self._run(save)

    async def delete_integration(self, integration_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cursor = conn.execute("DELETE FROM integrations WHERE id = ?", (integration_id,))
                return cursor.rowcount > 0

        return await self._run(delete)

    async def ipsets(self) -> list[tuple[str, str]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return list(conn.execute("SELECT name, spec FROM ipsets ORDER BY name"))

        return await self._run(read)

    async def save_ipset(self, name: str, spec_json: str, at: float) -> None:
        def save(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO ipsets (name, spec, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, "
                    "updated_at = excluded.updated_at",
                    (name, spec_json, at),
                )

        await self._run(save)

    async def delete_ipset(self, name: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                return conn.execute("DELETE FROM ipsets WHERE name = ?", (name,)).rowcount > 0

        return await self._run(delete)


_SELECT_INTEGRATIONS = f"SELECT {', '.join(INTEGRATION_COLUMNS)} FROM integrations"
_SAVE_INTEGRATION = (
    f"INSERT INTO integrations ({', '.join(INTEGRATION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(INTEGRATION_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in INTEGRATION_COLUMNS if c != "id")
)

_SAVE_INTEGRATION_HEALTH = (
    "UPDATE integrations SET last_error = ?, last_error_phase = ?, last_sync = ? WHERE id = ?"
)


_UPSERT_INSTANCE = upsert_instance_sql(["?"] * len(INSTANCE_COLUMNS))
_JOINED_DOCUMENTS = (
    # json_each is the LEFT JOIN's left table, so SQLite scans it outermost, in the
    # array's order, and group_concat joins in that order (3.44's ORDER BY inside an
    # aggregate would say so explicitly; Debian's is older).
    "SELECT coalesce(group_concat(coalesce(p.live || char(31) || p.terminated, ''), "
    "char(30)), '') FROM json_each(?2) j "
    "LEFT JOIN pod_instances p ON p.cluster = ?1 AND p.uid = j.value"
)
"""The documents of one cluster's uids (a JSON array) as one text: see
:func:`~podindex.store.base.joined_documents`."""
_ASKED_UID = "substr(j.value, 1, instr(j.value, char(31)) - 1)"
_ASKED_DEPLOYMENT = "substr(j.value, instr(j.value, char(31)) + 1)"
_EXPORT_LINES = (
    # Each asked pod is "uid\x1fdeployment id" (a second array could not be joined
    # to the first by position without a scan of it per pod); the join's order is
    # json_each's, as _JOINED_DOCUMENTS says.
    # As a BLOB: Python takes the bytes as they are, where text is decoded (and the
    # response encodes it again).
    "SELECT CAST(coalesce(group_concat("
    + export_line_sql(_ASKED_DEPLOYMENT, "char")
    + f", char(10)), '') AS BLOB) FROM json_each(?2) j LEFT JOIN pod_instances p "
    f"ON p.cluster = ?1 AND p.uid = {_ASKED_UID}"
)
_POD_FACTS = (
    "UPDATE pod_instances SET pod_id = ?3, name_json = ?4, namespace_json = ?5, "
    "cluster_json = ?6, created_json = ?7 WHERE cluster = ?1 AND uid = ?2"
)
_UPSERT_POD_INSTANCES = (
    "INSERT INTO pod_instances (cluster, uid, live, terminated) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (cluster, uid) DO UPDATE SET live = excluded.live, "
    "terminated = excluded.terminated"
)
_INSTANCE_OBJECTS = (
    f"SELECT {instance_document_sql('json_object', 'json(ips)')} FROM container_instances "
    "WHERE (cluster, uid) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?)) "
    + instance_order()
)
_FINISH_INSTANCES = (
    "UPDATE container_instances SET finished = ? WHERE cluster = ? AND uid = ? AND finished IS NULL"
)
_TRIM_INSTANCES = trim_instances_sql("?1", "?2", "?3")


def _json(values: Collection[str]) -> str:
    return msgspec.json.encode(list(values)).decode()


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS podindex_schema (version INTEGER NOT NULL)")
    found = conn.execute("SELECT max(version) FROM podindex_schema").fetchone()
    return int(found[0] or 0)


def _migrate(conn: sqlite3.Connection, target: int) -> None:
    """Apply each migration above the stored version, each in its own transaction.

    The version is read inside the transaction, so two processes opening one
    file at once apply each migration once.
    """
    while True:
        with _transaction(conn):
            current = _version(conn)
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"the database has schema version {current}, newer than this podindex "
                    f"knows ({len(MIGRATIONS)}); upgrade podindex"
                )
            if current >= target:
                return
            for statement in MIGRATIONS[current].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO podindex_schema (version) VALUES (?)", (current + 1,))
