"""The PostgreSQL history backend: for several replicas sharing one history.

asyncpg with a small pool. A write is one transaction: the batch is COPY'd
into a temporary table, one row per pod, and merged from there into
``pods``, ``pod_objects`` and ``leases`` with set-based ``INSERT … SELECT …
ON CONFLICT`` and ``UPDATE … FROM``, so a batch costs a handful of round
trips however big it is. JSON columns are text (``jsonb`` before schema v4).
Reads answer exactly as the SQLite backend's do, in the same order (text
ordered bytewise, as SQLite compares it).

The URL kept on the store (and put in every error) has its password removed;
the real one is used only to connect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import asyncpg
import msgspec

from podindex.store.base import (
    INSTANCE_COLUMNS,
    INTEGRATION_COLUMNS,
    IPS,
    LAST_SEEN,
    LEASE_COLUMNS,
    POD_COLUMNS,
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
    redact,
    row_from,
    trim_instances_sql,
    uids_by_cluster,
    upsert_instance_sql,
)

_T = TypeVar("_T")

# The tables are written mostly as updates (a pod's every change rewrites its
# row and object; a lease closes once): pages kept 30% free let most updates
# stay on their page without touching the indexes (HOT), measured 15k → 20k
# updated pods/s, for a third more heap.
MIGRATIONS: tuple[str, ...] = (
    # 1: pods with their object inline, and IP leases.
    """
    CREATE TABLE pods (
        cluster text NOT NULL, uid text NOT NULL,
        namespace text NOT NULL, name text NOT NULL, node text NOT NULL,
        ips jsonb NOT NULL, pod_ip text NOT NULL, phase text NOT NULL,
        host_network boolean NOT NULL,
        labels jsonb NOT NULL, annotations jsonb NOT NULL,
        workload_identity text NOT NULL, identity_source text NOT NULL,
        workload_kind text NOT NULL, workload_name text NOT NULL,
        selector_labels jsonb NOT NULL,
        owner_kind text NOT NULL, owner_name text NOT NULL,
        created_at text NOT NULL, started_at text NOT NULL,
        first_seen double precision NOT NULL, last_seen double precision NOT NULL,
        deleted_at double precision, is_dead boolean NOT NULL,
        source text NOT NULL, resource_version text NOT NULL, time_stamp text NOT NULL,
        pod_obj bytea,
        PRIMARY KEY (cluster, uid)
    ) WITH (fillfactor = 70);
    CREATE INDEX pods_by_name ON pods (name, namespace);
    CREATE INDEX pods_live_by_node ON pods (node) WHERE NOT is_dead;
    CREATE INDEX pods_dead_since ON pods (deleted_at) WHERE is_dead;
    CREATE TABLE leases (
        cluster text NOT NULL, uid text NOT NULL, ip text NOT NULL,
        held_from double precision NOT NULL, held_to double precision,
        PRIMARY KEY (cluster, uid, ip)
    ) WITH (fillfactor = 70);
    CREATE INDEX leases_by_ip ON leases (ip, held_from);
    """,
    # 2: objects move to their own table, so that listing and loading rows
    # never reads the (large) objects beside them. They come compressed:
    # PostgreSQL need not try again (STORAGE EXTERNAL).
    """
    CREATE TABLE pod_objects (
        cluster text NOT NULL, uid text NOT NULL, obj bytea NOT NULL,
        PRIMARY KEY (cluster, uid)
    ) WITH (fillfactor = 70);
    ALTER TABLE pod_objects ALTER COLUMN obj SET STORAGE EXTERNAL;
    INSERT INTO pod_objects (cluster, uid, obj)
        SELECT cluster, uid, pod_obj FROM pods WHERE pod_obj IS NOT NULL;
    ALTER TABLE pods DROP COLUMN pod_obj;
    """,
    # 3: registered clusters (integrations); the token column holds ciphertext only.
    """
    CREATE TABLE integrations (
        id text PRIMARY KEY, name text NOT NULL UNIQUE,
        endpoint text NOT NULL, ca_cert text NOT NULL, token bytea NOT NULL,
        namespace text NOT NULL, label_selector text NOT NULL,
        created_at double precision NOT NULL, updated_at double precision NOT NULL,
        context text NOT NULL, last_error text NOT NULL, last_error_phase text NOT NULL,
        last_sync double precision
    );
    """,
    # 4: IP sets; the spec is the API's JSON (the store reads none of it).
    """
    CREATE TABLE ipsets (
        name text PRIMARY KEY, spec text NOT NULL, updated_at double precision NOT NULL
    );
    """,
    # 5: JSON columns become text.
    # Every row is written with them and none is queried inside them; parsing
    # them into jsonb cost a fifth of a row's insert (measured 5 of 24 µs), and
    # text keeps their key order, as SQLite does. Indexed text compares
    # bytewise (COLLATE "C"), as SQLite's does and as every listing orders:
    # inserts into the indexes cost ~10% less than with the database's
    # collation (C.UTF-8 here; more with a language's collation).
    """
    ALTER TABLE pods
        ALTER COLUMN ips TYPE text USING ips::text,
        ALTER COLUMN labels TYPE text USING labels::text,
        ALTER COLUMN annotations TYPE text USING annotations::text,
        ALTER COLUMN selector_labels TYPE text USING selector_labels::text,
        ALTER COLUMN cluster TYPE text COLLATE "C",
        ALTER COLUMN uid TYPE text COLLATE "C",
        ALTER COLUMN namespace TYPE text COLLATE "C",
        ALTER COLUMN name TYPE text COLLATE "C",
        ALTER COLUMN node TYPE text COLLATE "C";
    ALTER TABLE leases
        ALTER COLUMN cluster TYPE text COLLATE "C",
        ALTER COLUMN uid TYPE text COLLATE "C",
        ALTER COLUMN ip TYPE text COLLATE "C";
    ALTER TABLE pod_objects
        ALTER COLUMN cluster TYPE text COLLATE "C",
        ALTER COLUMN uid TYPE text COLLATE "C";
    """,
    # 6: container instances (one row per container id), for pod search and export.
    """
    CREATE TABLE container_instances (
        cluster text COLLATE "C" NOT NULL, uid text COLLATE "C" NOT NULL,
        pod_id text NOT NULL, container_id text COLLATE "C" NOT NULL,
        runtime text NOT NULL, container_name text NOT NULL, node text NOT NULL,
        ips text NOT NULL, started text, image_digest text, finished text,
        exit_code integer, reason text, observed_at double precision NOT NULL,
        PRIMARY KEY (cluster, uid, container_id)
    );
    CREATE TABLE pod_instances (
        cluster text COLLATE "C" NOT NULL, uid text COLLATE "C" NOT NULL,
        live text NOT NULL, terminated text NOT NULL,
        PRIMARY KEY (cluster, uid)
    );
    """,
    # 7: what a pod's export line needs besides its instances and workload, none of
    # which ever changes for a uid, so the database writes the line (see
    # export_lines); NULL for pods written before.
    """
    ALTER TABLE pod_instances ADD COLUMN pod_id text, ADD COLUMN name_json text,
        ADD COLUMN namespace_json text, ADD COLUMN cluster_json text,
        ADD COLUMN created_json text;
    """,
)

_MIGRATION_LOCK = 0x706F64696E646578
"""The advisory lock key ("podindex") that serialises replicas migrating one database."""

_POOL_MAX = 4
_COMMAND_TIMEOUT = 30.0
_CONNECT_TIMEOUT = 10.0
_ACQUIRE_TIMEOUT = 30.0

_JSON = frozenset({"ips", "labels", "annotations", "selector_labels"})
_FLOAT = frozenset({"first_seen", "last_seen", "deleted_at"})
_BOOL = frozenset({"host_network", "is_dead"})
_FIRST_SEEN = POD_COLUMNS.index("first_seen")


def _batch_type(column: str) -> str:
    if column in _FLOAT:
        return "double precision"
    if column in _BOOL:
        return "boolean"
    return 'text COLLATE "C"'  # as the tables' (JSON columns too): joins use their indexes


_BATCH_TABLE = "podindex_batch"
_BATCH_COLUMNS = (
    *POD_COLUMNS,
    "open_from",
    "open_ips",
    "close_at",
    "close_keep",
    "obj",
)
"""A pod's row, the leases it opens (from when, on which IPs: a JSON list),
the release it made (when, keeping which IPs) and its compressed object (or
NULL): see :class:`_Batch`."""
_OPENED = len(POD_COLUMNS)
_OBJ = len(_BATCH_COLUMNS) - 1
_CREATE_BATCH = (
    f"CREATE TEMPORARY TABLE {_BATCH_TABLE} ("
    + ", ".join(f"{c} {_batch_type(c)}" for c in POD_COLUMNS)
    + ", open_from double precision, open_ips text"
    + ", close_at double precision, close_keep text, obj bytea) ON COMMIT DROP"
)
_NESTED_LOOPS = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
"""Joins of the batch with a table go through the table's primary key, row by row.

The batch table has no statistics and a table's may lag far behind
(autovacuum analyses it now and then): the planner then took the leases
table for small and closed a batch's leases by sorting all of it (measured
441 ms for 1 507 leases among 100k, against 52 ms through the index)."""
_COLUMNS = ", ".join(POD_COLUMNS)
_MERGE_PODS = (
    f"INSERT INTO pods ({_COLUMNS}) SELECT {_COLUMNS} FROM {_BATCH_TABLE} "
    "ON CONFLICT (cluster, uid) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}" for c in POD_COLUMNS if c not in ("cluster", "uid", "first_seen")
    )
    # Several replicas may write one pod: the earliest sighting stands.
    + ", first_seen = least(pods.first_seen, excluded.first_seen)"
)
_MERGE_OBJECTS = (
    f"INSERT INTO pod_objects (cluster, uid, obj) SELECT cluster, uid, obj FROM {_BATCH_TABLE} "
    "WHERE obj IS NOT NULL ON CONFLICT (cluster, uid) DO UPDATE SET obj = excluded.obj"
)


def _open_leases(source: str) -> str:
    """For each row of ``source``, open a lease on each of ``ips`` (JSON, no repeats) at ``at``."""
    return (
        "INSERT INTO leases (cluster, uid, ip, held_from, held_to) "
        f"SELECT s.cluster, s.uid, i.ip, s.at, NULL FROM {source} AS s(cluster, uid, at, ips) "
        "CROSS JOIN LATERAL json_array_elements_text(s.ips::json) AS i(ip) "
        # A pod taking back an IP it gave up (a selector-scoped watch re-adding
        # it) holds it again: the lease reopens rather than staying closed.
        "ON CONFLICT (cluster, uid, ip) DO UPDATE SET held_to = NULL "
        "WHERE leases.held_to IS NOT NULL"
    )


def _close_leases(source: str) -> str:
    """Close each row of ``source``'s open leases at ``at``, but those on ``ips`` (JSON)."""
    return (
        f"UPDATE leases l SET held_to = s.at FROM {source} AS s(cluster, uid, at, ips) "
        "WHERE l.cluster = s.cluster AND l.uid = s.uid AND l.held_to IS NULL "
        "AND NOT (s.ips::jsonb ? l.ip)"
    )


def _from_batch(at: str, ips: str) -> str:
    return f"(SELECT cluster, uid, {at}, {ips} FROM {_BATCH_TABLE} WHERE {at} IS NOT NULL)"


_FROM_ARRAYS = "unnest($1::text[], $2::text[], $3::float8[], $4::text[])"
_OPEN_BATCH_LEASES = _open_leases(_from_batch("open_from", "open_ips"))
_CLOSE_BATCH_LEASES = _close_leases(_from_batch("close_at", "close_keep"))
_OPEN_MORE_LEASES = _open_leases(_FROM_ARRAYS)
_CLOSE_MORE_LEASES = _close_leases(_FROM_ARRAYS)
_SELECT = f"SELECT {_COLUMNS} FROM pods"
_ALL_LEASES = (
    f"SELECT {LEASE_COLUMNS} FROM leases l JOIN pods p ON p.cluster = l.cluster AND p.uid = l.uid "
    "WHERE l.held_to IS NULL OR l.held_to > $1"
)
_P_COLUMNS = ", ".join(f"p.{c}" for c in POD_COLUMNS)
_LOAD_LIVE = (
    f"SELECT {_P_COLUMNS}, o.obj FROM pods p LEFT JOIN pod_objects o "
    "ON o.cluster = p.cluster AND o.uid = p.uid WHERE NOT p.is_dead {and_clusters}"
    'ORDER BY p.first_seen, p.cluster COLLATE "C", p.uid COLLATE "C"'
)
_MARK_DEAD = """
    WITH gone AS (
        UPDATE pods SET is_dead = true, deleted_at = $4, last_seen = $4, ips = '[]'
        WHERE cluster = $1 AND source = $2 AND NOT is_dead
        AND uid NOT IN (SELECT unnest($3::text[]))
        RETURNING uid
    ), closed AS (
        UPDATE leases SET held_to = $4
        WHERE held_to IS NULL AND cluster = $1 AND uid IN (SELECT uid FROM gone)
    )
    SELECT count(*) FROM gone
"""
_PRUNE = """
    WITH doomed AS (
        DELETE FROM pods WHERE is_dead AND deleted_at < $1 RETURNING cluster, uid
    ), leases_gone AS (
        DELETE FROM leases WHERE (cluster, uid) IN (SELECT cluster, uid FROM doomed)
    ), objects_gone AS (
        DELETE FROM pod_objects WHERE (cluster, uid) IN (SELECT cluster, uid FROM doomed)
    ), instances_gone AS (
        DELETE FROM container_instances
        WHERE (cluster, uid) IN (SELECT cluster, uid FROM doomed)
    ), documents_gone AS (
        DELETE FROM pod_instances WHERE (cluster, uid) IN (SELECT cluster, uid FROM doomed)
    )
    SELECT count(*) FROM doomed
"""
_ORDER = 'ORDER BY namespace COLLATE "C", name COLLATE "C", cluster COLLATE "C", uid COLLATE "C"'
"""SQLite's order (bytewise text), whatever the database's collation."""
_ROWS = f"{_SELECT} {_ORDER}"
_LIVE_ON_NODE = f"{_SELECT} WHERE node = $1 AND NOT is_dead {_ORDER}"
_BY_NAME_ORDER = "ORDER BY is_dead, coalesce(deleted_at, last_seen) DESC, last_seen DESC LIMIT 1"
_LATEST_BY_IP = (
    f"SELECT {_P_COLUMNS} FROM leases l JOIN pods p ON p.cluster = l.cluster AND p.uid = l.uid "
    "WHERE l.ip = $1 "
    "ORDER BY l.held_to IS NULL DESC, l.held_from DESC, p.last_seen DESC LIMIT 1"
)
_POD = f"{_SELECT} WHERE cluster = $1 AND uid = $2"
_DEAD_PODS = f"{_SELECT} WHERE is_dead AND deleted_at >= $1 ORDER BY deleted_at"
_UPSERT_INSTANCE = upsert_instance_sql([f"${i + 1}" for i in range(len(INSTANCE_COLUMNS))])
_FINISH_INSTANCES = (
    "UPDATE container_instances SET finished = $1 "
    "WHERE cluster = $2 AND uid = $3 AND finished IS NULL"
)
_TRIM_INSTANCES = trim_instances_sql("$1", "$2", "$3")
_JOINED_DOCUMENTS = (
    "SELECT coalesce(string_agg(coalesce(p.live || chr(31) || p.terminated, ''), chr(30) "
    "ORDER BY j.n), '') FROM unnest($2::text[]) WITH ORDINALITY AS j (uid, n) "
    "LEFT JOIN pod_instances p ON p.cluster = $1 AND p.uid = j.uid"
)
"""The documents of one cluster's uids as one text: see
:func:`~podindex.store.base.joined_documents`."""
_EXPORT_LINES = (
    "SELECT convert_to(coalesce(string_agg("
    + export_line_sql("j.deployment_id", "chr")
    + ", chr(10) ORDER BY j.n), ''), 'UTF8') "
    "FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS j (uid, deployment_id, n) "
    "LEFT JOIN pod_instances p ON p.cluster = $1 AND p.uid = j.uid"
)
_POD_FACTS = (
    "UPDATE pod_instances SET pod_id = $3, name_json = $4, namespace_json = $5, "
    "cluster_json = $6, created_json = $7 WHERE cluster = $1 AND uid = $2"
)
_UPSERT_POD_INSTANCES = (
    "INSERT INTO pod_instances (cluster, uid, live, terminated) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (cluster, uid) DO UPDATE SET live = excluded.live, "
    "terminated = excluded.terminated"
)
_INSTANCE_OBJECTS = (
    f"SELECT {instance_document_sql('json_build_object', 'ips::json')} "
    "FROM container_instances "
    "WHERE (cluster, uid) IN (SELECT * FROM unnest($1::text[], $2::text[])) "
    + instance_order(' COLLATE "C"')
)
_INSTANCES = (
    f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM container_instances "
    "WHERE (cluster, uid) IN (SELECT * FROM unnest($1::text[], $2::text[])) "
    + instance_order(' COLLATE "C"')
)
_VERSION = "SELECT coalesce(max(version), 0) FROM podindex_schema"

_SELECT_INTEGRATIONS = f"SELECT {', '.join(INTEGRATION_COLUMNS)} FROM integrations"
_SAVE_INTEGRATION = (
    f"INSERT INTO integrations ({', '.join(INTEGRATION_COLUMNS)}) VALUES ("
    + ", ".join(f"${i + 1}" for i in range(len(INTEGRATION_COLUMNS)))
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in INTEGRATION_COLUMNS if c != "id")
)

_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
"""What asyncpg raises when the database is unreachable, slow (TimeoutError) or refuses."""


class PostgresStore:
    write_chunk = 2500
    """A flush of 5 000 changes is two transactions at once, on two connections:
    two backends share the merge (measured, churn: 10.6k to 10.9k changes/s against
    8.5k to 8.6k in one transaction of 5 000)."""

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        self._dsn = url
        password = urlsplit(url).password
        self._secrets = tuple({password, unquote(password)}) if password else ()
        self._pool: Any = None
        self._thread: ThreadPoolExecutor | None = None
        """Compresses, decompresses and prepares batches, off the event loop."""
        self._codec = ObjectCodec()
        """Used on that thread only."""

    async def open(self, target_version: int | None = None) -> None:
        """Connect and migrate (to ``target_version``, else the newest: for tests of upgrades)."""
        try:
            pool = await asyncpg.create_pool(
                dsn=self._dsn,
                min_size=1,
                max_size=_POOL_MAX,
                command_timeout=_COMMAND_TIMEOUT,
                timeout=_CONNECT_TIMEOUT,
                init=_init_connection,
            )
        except _FAILURES as exc:
            raise self._error("connecting", exc) from self._cause(exc)
        except ValueError as exc:  # asyncpg could not parse the URL
            raise StoreConfigError(self._message("unusable URL", exc)) from self._cause(exc)
        try:
            async with pool.acquire(timeout=_ACQUIRE_TIMEOUT) as conn:
                await _migrate(conn, target_version or len(MIGRATIONS))
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, _FAILURES):
                raise self._error("migrating", exc) from self._cause(exc)
            raise
        self._pool = pool
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podindex-postgres")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), _COMMAND_TIMEOUT)
            except (*_FAILURES, TimeoutError):
                pool.terminate()

    async def schema_version(self) -> int:
        async def version(conn: Any) -> int:
            return int(await conn.fetchval(_VERSION))

        return await self._run("reading the schema version", version)

    async def write(self, batch: Sequence[PodWrite]) -> None:
        """One transaction, with the outcome of SQLite's write, in a few statements.

        The pods are prepared on the store's thread (rows encoded, objects
        compressed), COPY'd into a temporary table, one row each, and merged
        from there: every row, every lease opened (on ``lease_ips``), the
        leases each release closes (see :class:`_Batch`), and the objects.
        """
        if batch:
            await self.write_prepared(await self.prepare(batch))

    async def prepare(self, batch: Sequence[PodWrite]) -> Sequence[Any]:
        """The batch as plain data for :meth:`write_prepared` (here or in another process)."""
        prepared = await self._off_loop(_Batch, batch, self._codec.compress_all)
        return (
            list(prepared.records.values()),
            [_columns(round_) for round_ in prepared.opens],
            [_columns(round_) for round_ in prepared.closes],
            prepared.opening,
            prepared.closing,
            prepared.objects,
        )

    async def write_prepared(self, prepared: Sequence[Any]) -> None:
        records, opens, closes, opening, closing, objects = prepared
        if not records:
            return
        first = [_MERGE_PODS]
        if opening:
            first.append(_OPEN_BATCH_LEASES)
        if closing and not opens:
            first.append(_CLOSE_BATCH_LEASES)
        if objects:
            first.append(_MERGE_OBJECTS)

        async def write(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(f"{_CREATE_BATCH};\n{_NESTED_LOOPS}")
                await conn.copy_records_to_table(
                    _BATCH_TABLE, records=records, columns=_BATCH_COLUMNS
                )
                await conn.execute(";\n".join(first))
                for columns in opens:
                    await conn.execute(_OPEN_MORE_LEASES, *columns)
                if closing and opens:
                    await conn.execute(_CLOSE_BATCH_LEASES)
                for columns in closes:
                    await conn.execute(_CLOSE_MORE_LEASES, *columns)

        await self._run(f"writing {len(records)} pods", write)

    async def load_live(
        self, clusters: Collection[str] | None = None
    ) -> list[tuple[StoredPod, bytes | None]]:
        async def load(conn: Any) -> list[Any]:
            if clusters is None:
                found: list[Any] = await conn.fetch(_LOAD_LIVE.format(and_clusters=""))
            else:
                query = _LOAD_LIVE.format(and_clusters="AND p.cluster = ANY($1::text[]) ")
                found = await conn.fetch(query, list(clusters))
            return found

        found = await self._run("loading live pods", load)
        decompress = self._codec.decompress

        def rows() -> list[tuple[StoredPod, bytes | None]]:
            width = len(POD_COLUMNS)
            loaded = []
            for rec in found:
                blob = rec[width]
                loaded.append(
                    (row_from(tuple(rec)[:width]), None if blob is None else decompress(blob))
                )
            return loaded

        return await self._off_loop(rows)

    async def mark_dead_except(
        self, cluster: str, source: str, keep: Collection[str], at: float
    ) -> int:
        async def mark(conn: Any) -> int:
            return int(await conn.fetchval(_MARK_DEAD, cluster, source, list(keep), at))

        return await self._run("marking vanished pods dead", mark)

    async def prune(self, dead_before: float) -> int:
        async def prune(conn: Any) -> int:
            return int(await conn.fetchval(_PRUNE, dead_before))

        return await self._run("pruning dead pods", prune)

    async def rows(self) -> list[StoredPod]:
        async def rows(conn: Any) -> list[StoredPod]:
            return [row_from(rec) for rec in await conn.fetch(_ROWS)]

        return await self._run("reading rows", rows)

    async def by_name(self, name: str, namespace: str | None) -> StoredPod | None:
        async def by_name(conn: Any) -> StoredPod | None:
            if namespace is None:
                found = await conn.fetchrow(f"{_SELECT} WHERE name = $1 {_BY_NAME_ORDER}", name)
            else:
                found = await conn.fetchrow(
                    f"{_SELECT} WHERE name = $1 AND namespace = $2 {_BY_NAME_ORDER}",
                    name,
                    namespace,
                )
            return None if found is None else row_from(found)

        return await self._run("looking up a pod by name", by_name)

    async def live_on_node(self, node: str) -> list[StoredPod]:
        async def live(conn: Any) -> list[StoredPod]:
            return [row_from(rec) for rec in await conn.fetch(_LIVE_ON_NODE, node)]

        return await self._run("reading a node's pods", live)

    async def latest_by_ip(self, ip: str) -> StoredPod | None:
        async def latest(conn: Any) -> StoredPod | None:
            found = await conn.fetchrow(_LATEST_BY_IP, ip)
            return None if found is None else row_from(found)

        return await self._run("looking up a pod by IP", latest)

    async def all_leases(self, ended_after: float) -> list[Lease]:
        async def leases(conn: Any) -> list[Lease]:
            return [Lease(*rec) for rec in await conn.fetch(_ALL_LEASES, ended_after)]

        return await self._run("loading leases", leases)

    async def pod(self, cluster: str, uid: str) -> StoredPod | None:
        async def pod(conn: Any) -> StoredPod | None:
            found = await conn.fetchrow(_POD, cluster, uid)
            return None if found is None else row_from(found)

        return await self._run("reading a pod", pod)

    async def pod_object(self, cluster: str, uid: str) -> bytes | None:
        async def get(conn: Any) -> bytes | None:
            blob: bytes | None = await conn.fetchval(
                "SELECT obj FROM pod_objects WHERE cluster = $1 AND uid = $2", cluster, uid
            )
            return blob

        blob = await self._run("reading a pod object", get)
        return None if blob is None else await self._off_loop(self._codec.decompress, blob)

    async def dead_pods(self, dead_since: float) -> list[StoredPod]:
        async def dead(conn: Any) -> list[StoredPod]:
            return [row_from(rec) for rec in await conn.fetch(_DEAD_PODS, dead_since)]

        return await self._run("reading dead pods", dead)

    async def write_instances(
        self,
        instances: Sequence[StoredInstance],
        gone: Sequence[tuple[str, str, str]],
        keep: int,
        facts: Sequence[PodFacts] = (),
    ) -> None:
        batch = instance_batch(instances, gone)
        clusters = [cluster for cluster, _ in batch.changed]
        uids = [uid for _, uid in batch.changed]

        async def write(conn: Any) -> None:
            async with conn.transaction():
                if batch.rows:
                    await conn.executemany(_UPSERT_INSTANCE, batch.rows)
                if batch.finished:
                    await conn.executemany(_FINISH_INSTANCES, batch.finished)
                if batch.trimmed:
                    trim = [(c, u, keep) for c, u in batch.trimmed]
                    await conn.executemany(_TRIM_INSTANCES, trim)
                if batch.changed:
                    found = await conn.fetch(_INSTANCE_OBJECTS, clusters, uids)
                    documents = pod_documents((r[0], r[1], r[2], r[3], r[4]) for r in found)
                    await conn.executemany(_UPSERT_POD_INSTANCES, documents)
                if facts:
                    await conn.executemany(_POD_FACTS, fact_values(facts))

        await self._run("writing container instances", write)

    async def instances(self, pods: Collection[tuple[str, str]]) -> list[StoredInstance]:
        clusters = [cluster for cluster, _ in pods]
        uids = [uid for _, uid in pods]

        async def read(conn: Any) -> list[StoredInstance]:
            return [instance_from(rec) for rec in await conn.fetch(_INSTANCES, clusters, uids)]

        return await self._run("reading container instances", read)

    async def instance_documents(
        self, pods: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str] | None]:
        clusters = uids_by_cluster(pods)

        async def read(conn: Any) -> list[tuple[str, str] | None]:
            texts = {
                cluster: await conn.fetchval(_JOINED_DOCUMENTS, cluster, uids)
                for cluster, (_, uids) in clusters.items()
            }
            return joined_documents(len(pods), clusters, texts)

        return await self._run("reading container instances", read)

    async def export_lines(
        self, cluster: str, uids: Sequence[str], deployment_ids: Sequence[str]
    ) -> bytes:
        async def read(conn: Any) -> bytes:
            return bytes(await conn.fetchval(_EXPORT_LINES, cluster, uids, deployment_ids))

        return await self._run("reading container instances", read)

    async def instance_facets(self) -> list[tuple[str, str, str, str]]:
        async def read(conn: Any) -> list[tuple[str, str, str, str]]:
            found = await conn.fetch(
                "SELECT cluster, uid, container_name, coalesce(image_digest, '') "
                "FROM container_instances"
            )
            return [(rec[0], rec[1], rec[2], rec[3]) for rec in found]

        return await self._run("reading container instance facets", read)

    async def integrations(self) -> list[StoredIntegration]:
        async def read(conn: Any) -> list[StoredIntegration]:
            found = await conn.fetch(f'{_SELECT_INTEGRATIONS} ORDER BY name COLLATE "C", id')
            return [StoredIntegration(*rec) for rec in found]

        return await self._run("reading integrations", read)

    async def save_integration(self, integration: StoredIntegration) -> None:
        values = [getattr(integration, c) for c in INTEGRATION_COLUMNS]

        async def save(conn: Any) -> None:
            await conn.execute(_SAVE_INTEGRATION, *values)

        await self._run("saving an integration", save)

    async def save_integration_health(
        self, integration_id: str, last_error: str, last_error_phase: str, last_sync: float | None
    ) -> bool:
        async def save(conn: Any) -> bool:
            status: str = await conn.execute(
                "UPDATE integrations SET last_error = $1, last_error_phase = $2, last_sync = $3 "
                "WHERE id = $4",
                last_error,
                last_error_phase,
                last_sync,
                integration_id,
            )
            return status != "UPDATE 0"

        return await self._run("saving an integration's health", save)

    async def delete_integration(self, integration_id: str) -> bool:
        async def delete(conn: Any) -> bool:
            status: str = await conn.execute(
                "DELETE FROM integrations WHERE id = $1", integration_id
            )
            return status != "DELETE 0"

        return await self._run("deleting an integration", delete)

    async def ipsets(self) -> list[tuple[str, str]]:
        async def read(conn: Any) -> list[tuple[str, str]]:
            found = await conn.fetch('SELECT name, spec FROM ipsets ORDER BY name COLLATE "C"')
            return [(rec[0], rec[1]) for rec in found]

        return await self._run("reading IP sets", read)

    async def save_ipset(self, name: str, spec_json: str, at: float) -> None:
        async def save(conn: Any) -> None:
            await conn.execute(
                "INSERT INTO ipsets (name, spec, updated_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, "
                "updated_at = excluded.updated_at",
                name,
                spec_json,
                at,
            )

        await self._run("saving an IP set", save)

    async def delete_ipset(self, name: str) -> bool:
        async def delete(conn: Any) -> bool:
            status: str = await conn.execute("DELETE FROM ipsets WHERE name = $1", name)
            return status != "DELETE 0"

        return await self._run("deleting an IP set", delete)

    async def _run(self, what: str, job: Callable[[Any], Awaitable[_T]]) -> _T:
        pool = self._pool
        if pool is None:
            raise StoreError(f"store {self.url} is not open")
        try:
            async with pool.acquire(timeout=_ACQUIRE_TIMEOUT) as conn:
                return await job(conn)
        except _FAILURES as exc:
            raise self._error(what, exc) from self._cause(exc)

    async def _off_loop(self, work: Callable[..., _T], *args: Any) -> _T:
        """``work(*args)`` on the store's thread (CPU work: the event loop keeps serving)."""
        if self._thread is None:
            raise StoreError(f"store {self.url} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    def _message(self, what: str, exc: BaseException) -> str:
        detail = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else "no detail")
        message = f"postgres {self.url}: {what}: {type(exc).__name__}: {detail}"
        return self._scrub(message)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        # SQLSTATE class 22 (data exception) and 23 (integrity): the data, not
        # the connection. The same batch would fail again.
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate[:2] in ("22", "23"):
            return StoreRejected(self._message(what, exc))
        return StoreError(self._message(what, exc))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain, unless its text would show the password (then nothing)."""
        text = str(exc)
        return None if any(secret in text for secret in self._secrets) else exc


_Round = dict[tuple[str, str], tuple[float, str]]
"""Lease changes, one at most per pod: ``(cluster, uid) → (at, IPs as JSON)``."""


class _Batch:
    """A batch as rows of the batch table, one per pod, objects compressed.

    A pod written twice in one batch (rare) ends as its last write, with its
    earliest sighting and its last object; its first acquisition and release
    ride in its row, the second (third…) go in ``opens`` and ``closes``, to be
    applied after the first ones, in order: as if written one after the other.
    """

    def __init__(
        self, batch: Sequence[PodWrite], compress_all: Callable[[Sequence[bytes]], list[bytes]]
    ) -> None:
        compressed = iter(compress_all([w.pod_obj for w in batch if w.pod_obj is not None]))
        self.records: dict[tuple[str, str], tuple[object, ...]] = {}
        self.opens: list[_Round] = []
        self.closes: list[_Round] = []
        self.opening = self.closing = self.objects = False
        records = self.records
        for w in batch:
            values = _without_nul(w.values)
            key = cast(tuple[str, str], values[:2])
            ips = cast(str, values[IPS])
            last_seen = cast(float, values[LAST_SEEN])
            obj = None if w.pod_obj is None else next(compressed)
            self.objects = self.objects or obj is not None
            acquired = w.acquired and bool(w.lease_ips)
            if acquired:
                lease_ips = _lease_ips(w, ips)
            self.opening = self.opening or acquired
            self.closing = self.closing or w.released
            before = records.get(key)
            if before is None:
                records[key] = (
                    *values,
                    *((w.lease_from, lease_ips) if acquired else (None, None)),
                    *((last_seen, ips) if w.released else (None, None)),
                    obj,
                )
                continue
            first_seen = min(cast(float, before[_FIRST_SEEN]), cast(float, values[_FIRST_SEEN]))
            opened, closed = before[_OPENED : _OPENED + 2], before[_OPENED + 2 : _OBJ]
            if acquired:
                if opened[0] is None:
                    opened = (w.lease_from, lease_ips)
                else:
                    _later(self.opens, key, (w.lease_from, lease_ips))
            if w.released:
                if closed[0] is None:
                    closed = (last_seen, ips)
                else:
                    _later(self.closes, key, (last_seen, ips))
            records[key] = (
                *values[:_FIRST_SEEN],
                first_seen,
                *values[_FIRST_SEEN + 1 :],
                *opened,
                *closed,
                before[_OBJ] if obj is None else obj,
            )


def _without_nul(values: tuple[object, ...]) -> tuple[object, ...]:
    """PostgreSQL text and jsonb cannot hold NUL (SQLite can): it becomes U+FFFD.

    Kubernetes names and labels cannot contain one, but annotations and what
    agents push might; one such pod must not make a whole batch fail forever.
    """
    text = "".join([v for v in values if type(v) is str])  # one scan (a false alarm is harmless)
    if "\x00" not in text and "\\u0000" not in text:
        return values
    return tuple(
        v.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd") if isinstance(v, str) else v
        for v in values
    )


def _lease_ips(w: PodWrite, row_ips: str) -> str:
    """``w.lease_ips`` as JSON, each IP once (``row_ips``: the row's IPs as JSON)."""
    if len(set(w.lease_ips)) < len(w.lease_ips):
        return _json(tuple(dict.fromkeys(w.lease_ips)))
    text = _json(w.lease_ips)
    return row_ips if text == row_ips else text  # mostly the same: one string kept


def _json(ips: tuple[str, ...]) -> str:
    return msgspec.json.encode(ips).decode()


def _later(rounds: list[_Round], key: tuple[str, str], change: tuple[float, str]) -> None:
    """Put a pod's n-th lease change of a batch in the n-th round (kept in order)."""
    for round_ in rounds:
        if key not in round_:
            round_[key] = change
            return
    rounds.append({key: change})


def _columns(round_: _Round) -> list[list[Any]]:
    """A round as the four arrays (cluster, uid, at, ips) that ``unnest`` takes."""
    rows = [(*key, *change) for key, change in round_.items()]
    return [list(column) for column in zip(*rows, strict=True)]


async def _init_connection(conn: Any) -> None:
    # jsonb travels as its text: rows are encoded and decoded by msgspec.
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=str, decoder=str, format="text")


async def _migrate(conn: Any, target: int) -> None:
    """Apply each migration above the stored version, each in its own transaction.

    The transaction takes an advisory lock and then reads the version, so
    several replicas starting at once apply each migration once.
    """
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS podindex_schema (version integer NOT NULL)"
            )
            current = int(await conn.fetchval(_VERSION))
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"the database has schema version {current}, newer than this podindex "
                    f"knows ({len(MIGRATIONS)}); upgrade podindex"
                )
            if current >= target:
                return
            await conn.execute(MIGRATIONS[current])
            await conn.execute("INSERT INTO podindex_schema (version) VALUES ($1)", current + 1)
