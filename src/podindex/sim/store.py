"""The emulator's etcd: pre-encoded objects in key order plus a bounded revision history.

Each object is kept as the exact JSON bytes the API server would put in a list
(no kind/apiVersion) together with the few values needed to evaluate selectors,
so a LIST chunk is assembled by concatenating stored bytes. Writes append to a
single history of events ordered by a global revision (etcd semantics); the
history serves watch replays and lets LIST reconstruct the state at an older
revision (resourceVersionMatch=Exact, continue tokens), until it is trimmed or
compacted - after which those requests get 410 Gone as on a real server.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec


@dataclass(frozen=True, slots=True)
class Resource:
    """Static description of one served resource type."""

    kind: str
    plural: str
    group: str
    version: str
    namespaced: bool
    field_labels: frozenset[str]
    bookmark_tail: bytes  # what follows "metadata" in an empty object of this kind
    stored_as: Resource | None = None  # a view of another resource's objects (converted)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def object_prefix(self) -> bytes:
        return b'{"kind":"%s","apiVersion":"%s",' % (self.kind.encode(), self.api_version.encode())


_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})

POD = Resource(
    "Pod",
    "pods",
    "",
    "v1",
    True,
    _COMMON_FIELDS
    | {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.hostIP",
        "status.nominatedNodeName",
    },
    b',"spec":{"containers":null},"status":{}}',
)
REPLICASET = Resource(
    "ReplicaSet",
    "replicasets",
    "apps",
    "v1",
    True,
    _COMMON_FIELDS | {"status.replicas"},
    b',"spec":{"selector":null,"template":{"metadata":{},"spec":{"containers":null}}},'
    b'"status":{"replicas":0}}',
)
JOB = Resource(
    "Job",
    "jobs",
    "batch",
    "v1",
    True,
    _COMMON_FIELDS | {"status.successful"},
    b',"spec":{"template":{"metadata":{},"spec":{"containers":null}}},"status":{}}',
)
NODE = Resource(
    "Node",
    "nodes",
    "",
    "v1",
    False,
    frozenset({"metadata.name", "spec.unschedulable"}),
    b',"spec":{},"status":{"daemonEndpoints":{"kubeletEndpoint":{"Port":0}},"nodeInfo":'
    b'{"machineID":"","systemUUID":"","bootID":"","kernelVersion":"","osImage":"",'
    b'"containerRuntimeVersion":"","kubeletVersion":"","kubeProxyVersion":"",'
    b'"operatingSystem":"","architecture":""}}}',
)
EVENT = Resource(
    "Event",
    "events",
    "",
    "v1",
    True,
    frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    b',"involvedObject":{},"source":{},"firstTimestamp":null,"lastTimestamp":null,'
    b'"eventTime":null,"reportingComponent":"","reportingInstance":""}',
)
EVENT_V1 = Resource(
    "Event",
    "events",
    "events.k8s.io",
    "v1",
    True,
    frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "reason",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reportingController",
            "type",
        }
    ),
    b',"eventTime":null,"regarding":{},"deprecatedSource":{},'
    b'"deprecatedFirstTimestamp":null,"deprecatedLastTimestamp":null}',
    stored_as=EVENT,
)
RESOURCES = (POD, REPLICASET, JOB, NODE, EVENT)
"""Resources with a table of their own."""
VIEWS = (EVENT_V1,)
"""Resources served by converting another resource's stored objects."""


class _MetadataOnly(msgspec.Struct):
    metadata: msgspec.Raw


_metadata_decoder = msgspec.json.Decoder(_MetadataOnly)


def object_key(namespace: str, name: str) -> str:
    """etcd key suffix; its string order is the order of LIST results."""
    return f"{namespace}/{name}" if namespace else name


class StoredObject:
    """One revision of one object: its list-item bytes and selector inputs."""

    __slots__ = ("_meta", "body", "fields", "key", "labels", "name", "namespace", "resource", "rv")

    def __init__(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        rv: int,
        body: bytes,
        labels: dict[str, str],
        fields: dict[str, str],
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self.key = object_key(namespace, name)
        self.rv = rv
        self.body = body
        self.labels = labels
        self.fields = fields
        self._meta: bytes | None = None

    def full_body(self) -> bytes:
        """The object with kind/apiVersion first, as GET and watch events carry it."""
        return self.resource.object_prefix + self.body[1:]

    def metadata_body(self) -> bytes:
        """The object as a meta.k8s.io/v1 PartialObjectMetadata."""
        if self._meta is None:
            raw = _metadata_decoder.decode(self.body).metadata
            self._meta = (
                b'{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":'
                + bytes(raw)
                + b"}"
            )
        return self._meta

    def with_resource_version(self, rv: int) -> StoredObject:
        """Same content stamped with another revision (deletes and selector-exit events)."""
        old = b'"resourceVersion":"%d"' % self.rv
        new = b'"resourceVersion":"%d"' % rv
        body = self.body.replace(old, new, 1)
        return StoredObject(
            self.resource, self.namespace, self.name, rv, body, self.labels, self.fields
        )


class Event:
    """One write: the object after it (for DELETED: the final state) and before it."""

    __slots__ = ("obj", "prev", "rv", "type")

    def __init__(self, rv: int, type_: str, obj: StoredObject, prev: StoredObject | None) -> None:
        self.rv = rv
        self.type = type_
        self.obj = obj
        self.prev = prev


class Table:
    """Current objects of one resource, with keys kept sorted for paging."""

    def __init__(self) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.sorted_keys: list[str] = []

    def get(self, key: str) -> StoredObject | None:
        return self.objects.get(key)

    def put(self, obj: StoredObject) -> None:
        if obj.key not in self.objects:
            bisect.insort(self.sorted_keys, obj.key)
        self.objects[obj.key] = obj

    def put_many_unsorted(self, objs: list[StoredObject]) -> None:
        """Bulk load: one sort at the end instead of an insort per object."""
        for obj in objs:
            if obj.key not in self.objects:
                self.sorted_keys.append(obj.key)
            self.objects[obj.key] = obj
        self.sorted_keys.sort()

    def remove(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            i = bisect.bisect_left(self.sorted_keys, key)
            del self.sorted_keys[i]

    def key_range(self, namespace: str | None) -> tuple[int, int]:
        if not namespace:
            return 0, len(self.sorted_keys)
        lo = bisect.bisect_left(self.sorted_keys, namespace + "/")
        hi = bisect.bisect_left(self.sorted_keys, namespace + "0")  # '0' sorts right after '/'
        return lo, hi


class TooOld(Exception):
    """The requested revision is older than the retained history (-> 410 Gone)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class History:
    """Events after ``floor`` in revision order; anything at or before ``floor`` is gone."""

    def __init__(self, limit: int, floor: int) -> None:
        self.limit = limit
        self.floor = floor
        self.events: list[Event] = []

    def append(self, event: Event) -> None:
        self.events.append(event)
        # Trim in batches so the list copy is amortised over many writes.
        if len(self.events) > self.limit + max(16, self.limit // 8):
            self.drop_oldest(len(self.events) - self.limit)

    def drop_oldest(self, count: int) -> None:
        if count <= 0:
            return
        self.floor = self.events[count - 1].rv
        del self.events[:count]

    def compact(self, rv: int) -> None:
        self.events.clear()
        self.floor = rv

    def check(self, rv: int) -> None:
        if rv < self.floor:
            raise TooOld(rv, self.floor)

    def since(self, rv: int) -> list[Event]:
        """Events with revision > rv; raises TooOld if some of them are gone."""
        self.check(rv)
        i = bisect.bisect_right(self.events, rv, key=lambda e: e.rv)
        return self.events[i:]


@dataclass(slots=True)
class Page:
    items: list[StoredObject]
    last_key: str | None  # key of the last returned item when more remain
    remaining: int  # objects after last_key (selector-independent)


class Snapshot:
    """A read view of one resource as of revision ``rv`` (current objects minus later writes)."""

    def __init__(self, table: Table, history: History, resource: Resource, rv: int) -> None:
        self.table = table
        self.rv = rv
        # For every key written after rv: its state at rv (None = did not exist).
        self.overrides: dict[str, StoredObject | None] = {}
        for event in history.since(rv):
            obj = event.obj
            if obj.resource is resource and obj.key not in self.overrides:
                self.overrides[obj.key] = event.prev

    def iter_from(self, start: str, namespace: str | None) -> Iterator[StoredObject]:
        """Objects with key >= start (within namespace), in key order."""
        table = self.table
        lo, hi = table.key_range(namespace)
        lo = max(lo, bisect.bisect_left(table.sorted_keys, start, lo, hi))
        current = (table.sorted_keys[i] for i in range(lo, hi))
        prefix = f"{namespace}/" if namespace else ""
        vanished = sorted(
            k
            for k, v in self.overrides.items()
            if v is not None and k >= start and k.startswith(prefix) and k not in table.objects
        )
        for key in heapq.merge(current, vanished):
            obj = self.overrides[key] if key in self.overrides else table.objects[key]
            if obj is not None:
                yield obj

    def count_after(self, key: str, namespace: str | None) -> int:
        table = self.table
        lo, hi = table.key_range(namespace)
        n = hi - max(lo, bisect.bisect_right(table.sorted_keys, key, lo, hi))
        prefix = f"{namespace}/" if namespace else ""
        for k, v in self.overrides.items():
            if k > key and k.startswith(prefix):
                n += (v is not None) - (k in table.objects)
        return n
