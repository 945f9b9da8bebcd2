"""The history store's interface: what every backend keeps and answers.

A backend keeps one row per pod instance ``(cluster, uid)``, live or dead,
the IP leases ``(cluster, ip, uid, from, to)`` that make "who held this IP
at T" a question with one answer, and each pod's object (compressed) for
detail views. Writes come in batches from :mod:`podindex.history`, one
transaction per batch; reads serve the broker and attribution endpoints.

Times are unix seconds (floats). Kubernetes' own timestamps (created,
started) are kept as the RFC 3339 text the API server sent.

Only :mod:`podindex.model` is imported here: the store knows rows, not the index.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import msgspec
import zstandard


class StoreError(Exception):
    """The store could not do what was asked (unreachable, full, refused)."""


class StoreRejected(StoreError):
    """The store refused the data itself, not the connection: the same write would fail again."""


class StoreConfigError(StoreError):
    """The store URL cannot be used; the message says why."""


class StoredPod(msgspec.Struct, gc=False):
    """One pod instance as the store keeps it (everything but its object)."""

    cluster: str
    uid: str
    namespace: str
    name: str
    node: str
    ips: tuple[str, ...]
    """The IPs the pod holds now: empty once it is dead or terminal."""
    pod_ip: str
    """The pod's primary IP as last reported, kept after it died (for display)."""
    phase: str
    host_network: bool
    labels: dict[str, str]
    annotations: dict[str, str]
    workload_identity: str
    identity_source: str
    workload_kind: str
    workload_name: str
    selector_labels: dict[str, str]
    owner_kind: str
    owner_name: str
    created_at: str
    started_at: str
    first_seen: float
    last_seen: float
    deleted_at: float | None
    is_dead: bool
    source: str
    """``watch`` (seen by podindex's own watcher) or ``push`` (sent by an agent)."""
    resource_version: str
    time_stamp: str
    """The pushing agent's own timestamp, as it sent it (empty for watched pods)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.cluster, self.uid)


class PodWrite(msgspec.Struct, gc=False):
    """One pod's latest state to write, with what changed about the IPs it holds.

    The row comes as the values both backends bind (:func:`row_values`' tuple,
    in ``POD_COLUMNS`` order, JSON columns as text), built once by the writer
    straight from what it keeps: a :class:`StoredPod` in between and a second
    pass over its fields cost ~10 µs a change. :meth:`of` makes one from a row.
    """

    values: tuple[object, ...]
    pod_obj: bytes | None
    """The pod's object as JSON (the store compresses it); None leaves the stored one."""
    acquired: bool
    """It may hold IPs it held in no earlier write: open leases for ``lease_ips``."""
    released: bool
    """It gave up IPs: close its open leases for IPs not in the row's ``ips`` at its ``last_seen``."""
    lease_from: float
    """When a lease opened by this write began (the pod's start time when first seen)."""
    lease_ips: tuple[str, ...] = ()
    """The IPs to open leases for: the row's ``ips``, or for a pod that came and went
    between two writes, the IPs it held when it went (opened, then closed)."""

    @classmethod
    def of(
        cls,
        row: StoredPod,
        pod_obj: bytes | None,
        acquired: bool,
        released: bool,
        lease_from: float,
        lease_ips: tuple[str, ...] = (),
    ) -> PodWrite:
        return cls(row_values(row), pod_obj, acquired, released, lease_from, lease_ips)

    @property
    def key(self) -> tuple[str, str]:
        return (self.values[0], self.values[1])  # type: ignore[return-value]

    @property
    def row(self) -> StoredPod:
        """The row, decoded again (for tests and diagnostics, not the write path)."""
        return row_from(self.values)


class Lease(msgspec.Struct, gc=False):
    """A pod's hold on an IP, with what attribution says of the pod.

    Mutable: the history writer's in-memory copy closes (and refreshes) its
    leases in place.
    """

    cluster: str
    ip: str
    uid: str
    held_from: float
    held_to: float | None
    """None while the pod still holds the IP."""
    namespace: str
    name: str
    node: str
    workload_identity: str
    workload_kind: str
    workload_name: str


class StoredInstance(msgspec.Struct, gc=False):
    """One run of one container (one container id), as the store keeps it.

    Kubernetes' own times (RFC 3339 text); ``finished`` None while it runs, ""
    when it ended at a time nobody reported. A finished instance is final.
    """

    cluster: str
    uid: str
    """The pod's."""
    pod_id: str
    """The pod's id in the search API (``containingPodId``), kept for its JSON."""
    container_id: str
    """Without the runtime's scheme (``containerd://``)."""
    runtime: str
    container_name: str
    node: str
    ips: tuple[str, ...]
    started: str | None
    image_digest: str | None
    finished: str | None
    exit_code: int | None
    reason: str | None
    observed_at: float
    """When podindex first saw it: orders instances whose times tie to the second."""

    @property
    def pod_key(self) -> tuple[str, str]:
        return (self.cluster, self.uid)


INSTANCE_COLUMNS: tuple[str, ...] = tuple(StoredInstance.__struct_fields__)
_INSTANCE_IPS = INSTANCE_COLUMNS.index("ips")


def instance_order(collate: str = "") -> str:
    """How :meth:`Store.instances` orders: per pod and container, running ones first,
    then the finished ones oldest first; ``collate`` makes text compare bytewise."""
    return (
        f"ORDER BY cluster{collate}, uid{collate}, container_name{collate}, "
        f"finished IS NOT NULL, finished{collate}, started{collate}, observed_at"
    )


def instance_values(instance: StoredInstance) -> tuple[object, ...]:
    """The row's values in ``INSTANCE_COLUMNS`` order; IPs as JSON text."""
    values = list(msgspec.structs.astuple(instance))
    values[_INSTANCE_IPS] = _encode(list(instance.ips)).decode()
    return tuple(values)


class InstanceBatch(msgspec.Struct, frozen=True):
    """:meth:`Store.write_instances`' statements' parameters."""

    rows: list[tuple[object, ...]]
    """Instances to upsert."""
    finished: list[tuple[str, str, str]]
    """(at, cluster, uid) of the pods gone."""
    trimmed: list[tuple[str, str]]
    """Pods whose finished instances to trim to the last ``keep``."""
    changed: list[tuple[str, str]]
    """Pods whose documents to rebuild (every pod touched)."""


def instance_batch(
    instances: Sequence[StoredInstance], gone: Sequence[tuple[str, str, str]]
) -> InstanceBatch:
    gone_pods = [(cluster, uid) for cluster, uid, _ in gone]
    return InstanceBatch(
        rows=[instance_values(i) for i in instances],
        finished=[(at, cluster, uid) for cluster, uid, at in gone],
        trimmed=sorted({(i.cluster, i.uid) for i in instances if i.finished is not None})
        + gone_pods,
        changed=sorted({(i.cluster, i.uid) for i in instances} | set(gone_pods)),
    )


def pod_documents(
    rows: Iterable[tuple[str, str, str, bool, str]],
) -> list[tuple[str, str, str, str]]:
    """(cluster, uid, live JSON, terminated JSON) of each pod, from its instances'
    objects as :func:`instance_document_sql` selects them, in :func:`instance_order`:
    running ones in one array, finished ones in one ``{"instances": […]}`` bucket per
    container, oldest first."""
    pods: dict[tuple[str, str], tuple[list[str], list[list[str]]]] = {}
    last: tuple[str, str, str] | None = None
    for cluster, uid, name, finished, text in rows:
        key = (cluster, uid)
        found = pods.get(key)
        if found is None:
            found = pods[key] = ([], [])
        if not finished:
            found[0].append(text)
            continue
        if last != (cluster, uid, name):
            last = (cluster, uid, name)
            found[1].append([])
        found[1][-1].append(text)
    return [
        (
            cluster,
            uid,
            f"[{','.join(live)}]",
            "[" + ",".join('{"instances":[' + ",".join(b) + "]}" for b in buckets) + "]",
        )
        for (cluster, uid), (live, buckets) in pods.items()
    ]


class PodFacts(NamedTuple):
    """What a pod's export line needs besides its instances and its workload; none of
    it ever changes for a uid."""

    cluster: str
    uid: str
    pod_id: str
    name: str
    namespace: str
    created: str | None


EXPORT_FALLBACK = b"\x1f"
"""Starts the part of :meth:`Store.export_lines` the caller writes itself."""


EXPORT_LINE_FORMAT = (
    '{"result":{"pod":{"id":"%s","name":%s,"deploymentId":%s,"namespace":%s,'
    '"clusterId":%s,"liveInstances":%s,"terminatedInstances":%s,"started":%s}}}'
)
"""One pod's export line, as SQL ``format()`` fills it (both databases have it)."""


def fact_values(facts: Iterable[PodFacts]) -> list[tuple[str, str, str, str, str, str, str]]:
    """``(cluster, uid, pod id, then name, namespace, cluster and created as JSON text)``
    of each pod: facts are kept as the export writes them, so that the database only
    puts texts together (quoting them there cost a third of a line)."""
    return [
        (
            f.cluster,
            f.uid,
            f.pod_id,
            _json_text(f.name),
            _json_text(f.namespace),
            _json_text(f.cluster),
            _json_text(f.created),
        )
        for f in facts
    ]


def export_line_sql(deployment_id: str, char: str) -> str:
    """The text of one pod's export line from ``pod_instances`` ``p`` (see
    :meth:`Store.export_lines`); ``deployment_id``: the expression of the JSON text
    of the id given, ``char``: the backend's function from a code point to a character."""
    fallback = f"{char}({EXPORT_FALLBACK[0]})"
    return (
        f"CASE WHEN p.uid IS NULL THEN {fallback} "
        f"WHEN p.pod_id IS NULL THEN {fallback} || p.live || {fallback} || p.terminated "
        f"ELSE format('{EXPORT_LINE_FORMAT}', p.pod_id, p.name_json, {deployment_id}, "
        "p.namespace_json, p.cluster_json, p.live, p.terminated, p.created_json) END"
    )


DOCUMENT_SEPARATOR = "\x1e"
"""Between two pods' documents in a joined read (JSON text never holds a raw control
character, so neither separator can occur inside a document)."""
ARRAY_SEPARATOR = "\x1f"
"""Between a pod's live and terminated arrays in a joined read; a pod without
documents is an empty string."""


def uids_by_cluster(pods: Sequence[tuple[str, str]]) -> dict[str, tuple[list[int], list[str]]]:
    """Each cluster's uids in ``pods`` and their positions there: a joined read asks
    one cluster at a time (a plain uid array is what both databases look up fastest)."""
    clusters: dict[str, tuple[list[int], list[str]]] = {}
    for position, (cluster, uid) in enumerate(pods):
        found = clusters.get(cluster)
        if found is None:
            found = clusters[cluster] = ([], [])
        found[0].append(position)
        found[1].append(uid)
    return clusters


def joined_documents(
    size: int,
    clusters: dict[str, tuple[list[int], list[str]]],
    texts: dict[str, str],
) -> list[tuple[str, str] | None]:
    """:meth:`Store.instance_documents` of ``size`` pods grouped by
    :func:`uids_by_cluster`, from each cluster's ``texts``: the database's documents
    of its uids, in their order, joined by the separators above. One text a cluster,
    not a row a pod: rows cost more to hand to Python than the lookups do."""
    found: list[tuple[str, str] | None] = [None] * size
    for cluster, (positions, uids) in clusters.items():
        parts = texts[cluster].split(DOCUMENT_SEPARATOR)
        if len(parts) != len(uids):
            raise StoreError(f"instance documents: {len(parts)} read for {len(uids)} pods")
        for position, part in zip(positions, parts, strict=True):
            if part:
                live, _, terminated = part.partition(ARRAY_SEPARATOR)
                found[position] = (live, terminated)
    return found


def instance_from(values: Sequence[object]) -> StoredInstance:
    row = list(values)
    row[_INSTANCE_IPS] = _decode_ips(str(row[_INSTANCE_IPS]))
    return StoredInstance(*row)  # type: ignore[arg-type]


def instance_document_sql(json_object: str, ips: str) -> str:
    """The select list of :meth:`Store.instance_documents`: the backend's JSON object
    builder (``json_object``, ``json_build_object``) and its IPs-as-JSON expression."""
    fields = (
        f"'instanceId', {json_object}('containerRuntime', runtime, 'id', container_id, "
        "'node', node), 'containingPodId', pod_id, 'containerName', container_name, "
        f"'containerIps', {ips}, 'started', started, 'imageDigest', image_digest, "
        "'finished', finished, 'exitCode', exit_code, 'terminationReason', reason"
    )
    return f"cluster, uid, container_name, finished IS NOT NULL, {json_object}({fields})"


def upsert_instance_sql(params: Sequence[str]) -> str:
    """Insert an instance or update a running one (a finished instance is final:
    a stale status cannot bring it back to life); ``params``: the placeholders."""
    return (
        f"INSERT INTO container_instances ({', '.join(INSTANCE_COLUMNS)}) "
        f"VALUES ({', '.join(params)}) "
        "ON CONFLICT (cluster, uid, container_id) DO UPDATE SET "
        "runtime = excluded.runtime, container_name = excluded.container_name, "
        "node = excluded.node, ips = excluded.ips, "
        "started = coalesce(excluded.started, container_instances.started), "
        "image_digest = coalesce(excluded.image_digest, container_instances.image_digest), "
        "finished = excluded.finished, exit_code = excluded.exit_code, reason = excluded.reason "
        "WHERE container_instances.finished IS NULL"
    )


def trim_instances_sql(cluster: str, uid: str, keep: str) -> str:
    """Delete a pod's finished instances beyond the newest ``keep`` per container name."""
    return (
        f"DELETE FROM container_instances WHERE cluster = {cluster} AND uid = {uid} "
        "AND container_id IN (SELECT container_id FROM (SELECT container_id, row_number() OVER ("
        "PARTITION BY container_name ORDER BY finished DESC, started DESC, observed_at DESC) "
        f"AS n FROM container_instances WHERE cluster = {cluster} AND uid = {uid} "
        f"AND finished IS NOT NULL) ranked WHERE n > {keep})"
    )


class StoredIntegration(msgspec.Struct):
    """A registered cluster (an integration), as the store keeps it.

    ``token`` is the bearer token sealed by the caller (encrypted with the
    service's key): the store never sees it in the clear. Never shown by
    ``repr``.
    """

    id: str
    name: str
    endpoint: str
    ca_cert: str
    token: bytes
    namespace: str
    label_selector: str
    created_at: float
    updated_at: float
    context: str = ""
    """The kubeconfig context it was registered from, if any (informational)."""
    last_error: str = ""
    last_error_phase: str = ""
    last_sync: float | None = None

    def __repr__(self) -> str:
        return f"StoredIntegration(id={self.id!r}, name={self.name!r}, endpoint={self.endpoint!r})"

    __str__ = __repr__


INTEGRATION_COLUMNS: tuple[str, ...] = tuple(StoredIntegration.__struct_fields__)


LEASE_COLUMNS = (
    "l.cluster, l.ip, l.uid, l.held_from, l.held_to, p.namespace, p.name, p.node, "
    "p.workload_identity, p.workload_kind, p.workload_name"
)
"""What :meth:`Store.leases` selects from ``leases l JOIN pods p``, in :class:`Lease` order."""


class Store(Protocol):
    """A history backend. Every method is one round trip (or one transaction)."""

    url: str
    """The URL it was opened with, credentials removed (safe to log)."""

    write_chunk: int
    """Pods a :meth:`write` should hold: the writer cuts a flush into chunks of
    this many and has up to two of them with the store at once."""

    async def open(self, target_version: int | None = None) -> None:
        """Connect and bring the schema up to the newest version (or ``target_version``)."""

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def write(self, batch: Sequence[PodWrite]) -> None:
        """Upsert every row, its object and its leases in one transaction.

        The same as :meth:`write_prepared` of :meth:`prepare`'s answer.
        """

    async def prepare(self, batch: Sequence[PodWrite]) -> Sequence[Any]:
        """A batch as plain data (rows encoded, objects compressed): CPU work, no I/O.

        Only lists, tuples, text, numbers, bytes and None, so that another
        process can write it (tuples may come back as lists)."""

    async def write_prepared(self, prepared: Sequence[Any]) -> None:
        """Write what :meth:`prepare` made of a batch, in one transaction."""

    async def load_live(
        self, clusters: Collection[str] | None = None
    ) -> list[tuple[StoredPod, bytes | None]]:
        """Live rows (of ``clusters``, or all) with their objects, oldest first."""

    async def mark_dead_except(
        self, cluster: str, source: str, keep: Collection[str], at: float
    ) -> int:
        """Mark live rows of ``cluster`` from ``source`` whose uid is not in ``keep`` dead.

        Closes their open leases at ``at``. Used when an outage overflowed the
        queue: the index's state is then the truth.
        """

    async def prune(self, dead_before: float) -> int:
        """Delete pods dead since before ``dead_before``, their objects and leases."""

    async def rows(self) -> list[StoredPod]:
        """Every row, ordered by (namespace, name, cluster, uid)."""

    async def by_name(self, name: str, namespace: str | None) -> StoredPod | None:
        """The live row of that name, else the one that died last."""

    async def live_on_node(self, node: str) -> list[StoredPod]:
        """Live rows of pods on ``node``, ordered by (namespace, name, cluster, uid)."""

    async def latest_by_ip(self, ip: str) -> StoredPod | None:
        """The pod whose lease on ``ip`` began last (the live holder, or the last one)."""

    async def all_leases(self, ended_after: float) -> list[Lease]:
        """Every lease still open or closed after ``ended_after``: loaded at start."""

    async def pod(self, cluster: str, uid: str) -> StoredPod | None:
        """One pod's row."""

    async def pod_object(self, cluster: str, uid: str) -> bytes | None: ...

    async def dead_pods(self, dead_since: float) -> list[StoredPod]:
        """Rows of pods that died at or after ``dead_since``, oldest death first."""

    # --- container instances ------------------------------------------------

    async def write_instances(
        self,
        instances: Sequence[StoredInstance],
        gone: Sequence[tuple[str, str, str]],
        keep: int,
        facts: Sequence[PodFacts] = (),
    ) -> None:
        """In one transaction: upsert ``instances`` (a finished one stays as it was),
        finish the running instances of the pods in ``gone`` (cluster, uid, at), keep
        the last ``keep`` finished instances per container of every pod touched, and
        keep the ``facts`` of pods with instances (for :meth:`export_lines`)."""

    async def instances(self, pods: Collection[tuple[str, str]]) -> list[StoredInstance]:
        """The instances of ``pods`` ((cluster, uid) pairs)."""

    async def instance_documents(
        self, pods: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str] | None]:
        """The instances of ``pods`` as the search API's JSON, in ``pods``' order: for
        each pod its ``liveInstances`` and ``terminatedInstances`` arrays, kept ready
        (rebuilt by :meth:`write_instances` for every pod it touches); None for a pod
        with none. An export reads them by the hundred thousand: the database joins
        each cluster's documents into one text (see :func:`joined_documents`)."""

    async def export_lines(
        self, cluster: str, uids: Sequence[str], deployment_ids: Sequence[str]
    ) -> bytes:
        """The export's lines of one cluster's pods, in ``uids``' order, joined by
        newlines: ``{"result":{"pod":StoragePod}}``, made by the database from the pod's
        documents and facts and the deployment id given as JSON text (it may change,
        unlike the facts). A pod without documents is ``EXPORT_FALLBACK`` instead; one without
        facts (written by an older podindex) is ``EXPORT_FALLBACK`` followed by its
        live and terminated documents, each after ``EXPORT_FALLBACK`` too."""

    async def instance_facets(self) -> list[tuple[str, str, str, str]]:
        """(cluster, uid, container name, image digest or "") of every instance: what
        search needs of them, loaded at start."""

    # --- integrations (registered clusters) ---------------------------------

    async def integrations(self) -> list[StoredIntegration]:
        """Every integration, ordered by name."""

    async def save_integration(self, integration: StoredIntegration) -> None:
        """Insert or replace (by id). A name another integration has: :class:`StoreRejected`."""

    async def save_integration_health(
        self, integration_id: str, last_error: str, last_error_phase: str, last_sync: float | None
    ) -> bool:
        """Update only an integration's health; False when there is none of that id.

        Never inserts and never writes the configuration: a replica saving the health
        it observed cannot undo a change, or a delete, made through another replica.
        """

    async def delete_integration(self, integration_id: str) -> bool:
        """Remove one; False when there was none of that id."""

    # --- IP sets (named selector scopes) -----------------------------------------

    async def ipsets(self) -> list[tuple[str, str]]:
        """Every IP set as (name, its spec's JSON), ordered by name."""

    async def save_ipset(self, name: str, spec_json: str, at: float) -> None:
        """Insert or replace (by name)."""

    async def delete_ipset(self, name: str) -> bool:
        """Remove one; False when there was none of that name."""


def redact(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_store(url: str, *, writer_process: bool = False) -> Store:
    """The backend for a store URL: ``sqlite:///path/file.db`` or ``postgresql://…``.

    ``writer_process``: its writes run in a child process (see :mod:`podindex.store.process`);
    not for an in-memory SQLite database, which another process cannot share.
    """
    scheme = urlsplit(url).scheme
    backend: Store
    if scheme == "sqlite":
        from podindex.store.sqlite import SQLiteStore

        backend = SQLiteStore(url)
        writer_process = writer_process and backend.path != ":memory:"
    elif scheme in ("postgresql", "postgres"):
        from podindex.store.postgres import PostgresStore

        backend = PostgresStore(url)
    else:
        raise StoreConfigError(
            f"store: unsupported URL {redact(url)!r}; use sqlite:///path/file.db or postgresql://..."
        )
    if writer_process:
        from podindex.store.process import ProcessStore

        return ProcessStore(url, backend)
    return backend


class ObjectCodec:
    """Pod objects are kept zstd-compressed (about a third of their JSON).

    zstd, not zlib: at level 1 it compresses a 2 KB pod as small as zlib's
    level 1 in under half the time (measured 10 µs against 26 µs), and the
    write path compresses every changed pod. Not thread-safe: one per thread.
    """

    def __init__(self) -> None:
        self._compressor = zstandard.ZstdCompressor(level=1)
        self._decompressor = zstandard.ZstdDecompressor()

    def compress(self, raw: bytes) -> bytes:
        return self._compressor.compress(raw)

    def compress_all(self, raws: Sequence[bytes]) -> list[bytes]:
        """Each of ``raws`` compressed, the same as :meth:`compress`, in one call.

        Called on a store's thread: one call gives the GIL up and wins it back
        once for the batch. Compressing one by one, that thread wins it back
        after every pod, each time waiting for a busy event loop to let go of
        it (up to the 5 ms switch interval).
        """
        if not raws or not all(raws):  # the batch call refuses empty inputs
            return [self._compressor.compress(raw) for raw in raws]
        done = self._compressor.multi_compress_to_buffer(list(raws), threads=1)
        return [done[i].tobytes() for i in range(len(done))]

    def decompress(self, blob: bytes) -> bytes:
        return self._decompressor.decompress(blob)


POD_COLUMNS: tuple[str, ...] = tuple(StoredPod.__struct_fields__)
"""Column order of the pods table's row values (the struct's field order)."""
CLUSTER, UID, IPS, LAST_SEEN, IS_DEAD = (
    POD_COLUMNS.index(c) for c in ("cluster", "uid", "ips", "last_seen", "is_dead")
)
"""Positions in :func:`row_values`' tuple (:attr:`PodWrite.values`) that the stores read."""

UPDATED_COLUMNS: tuple[str, ...] = tuple(
    c
    for c in POD_COLUMNS
    if c not in ("cluster", "uid", "namespace", "name", "created_at", "first_seen")
)
"""What an upsert of a known pod sets: a pod's identity, name and creation never
change, and leaving them out spares the (name, namespace) index every update."""

_JSON_COLUMNS = frozenset({"ips", "labels", "annotations", "selector_labels"})
_encode = msgspec.json.encode
_decode_ips = msgspec.json.Decoder(tuple[str, ...]).decode
_decode_map = msgspec.json.Decoder(dict[str, str]).decode


def _json_text(value: object) -> str:
    return _encode(value).decode()


class JsonTexts:
    """JSON text of maps, each distinct map object encoded once: one per batch.

    The index shares one label (annotation, selector) map among pods that
    carry equal ones (a ReplicaSet's pods), so a batch of rows holds few
    distinct maps. Keyed by identity; the map is held with its text, so that
    its id cannot be reused while the cache lives.
    """

    def __init__(self) -> None:
        self._texts: dict[int, tuple[object, str]] = {}

    def __call__(self, value: dict[str, str]) -> str:
        found = self._texts.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        text = _json_text(value)
        self._texts[id(value)] = (value, text)
        return text


def row_values(row: StoredPod, texts: JsonTexts | None = None) -> tuple[object, ...]:
    """A row as column values, JSON columns as text: what both backends bind.

    ``texts`` encodes the maps, once each in a batch; without it, each row's own.
    """
    text = _json_text if texts is None else texts
    return (
        row.cluster,
        row.uid,
        row.namespace,
        row.name,
        row.node,
        _encode(row.ips).decode(),
        row.pod_ip,
        row.phase,
        row.host_network,
        text(row.labels),
        text(row.annotations),
        row.workload_identity,
        row.identity_source,
        row.workload_kind,
        row.workload_name,
        text(row.selector_labels),
        row.owner_kind,
        row.owner_name,
        row.created_at,
        row.started_at,
        row.first_seen,
        row.last_seen,
        row.deleted_at,
        row.is_dead,
        row.source,
        row.resource_version,
        row.time_stamp,
    )


def row_from(values: Sequence[object]) -> StoredPod:
    """The inverse of :func:`row_values`, from a result row in column order."""
    v = list(values)
    for i, name in enumerate(POD_COLUMNS):
        if name in _JSON_COLUMNS:
            text = v[i]
            raw = text.encode() if isinstance(text, str) else text
            v[i] = _decode_ips(raw) if name == "ips" else _decode_map(raw)  # type: ignore[arg-type]
    v[8] = bool(v[8])
    v[23] = bool(v[23])
    return StoredPod(*v)  # type: ignore[arg-type]
