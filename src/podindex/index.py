"""The in-memory pod index: every pod of every cluster, and who holds each IP.

State changes only through the ``apply``-style methods below, each a pure
function of the index's state and its arguments (the time is passed in; there
is no I/O and no clock). The API reads the lookup tables directly.

The rules (DESIGN.md, "Semantics that matter"):

* A pod is keyed by ``(cluster, uid)``; a name is not an identity.
* A pod holds its ``status.podIPs`` only while it is Pending or Running and
  not ``hostNetwork``. Succeeded/Failed pods keep ``podIP`` in their status,
  but the address is free for reuse, so they hold nothing.
* When several live pods of one cluster claim an IP (a missed delete, a late
  event), the newest wins: later ``creationTimestamp``, then on a tie the
  one podindex first saw later. Older claimants never displace it, whatever
  order events arrive in. Claimants in two clusters make the IP ambiguous (409).
* An event for a deleted uid is ignored unless its integer resourceVersion is
  newer than the deletion's (uids are never reused, so only a selector-scoped
  watch re-adding a pod that matches again can be newer), and an event whose
  integer resourceVersion is not newer than the one held is a replay.
  A relist (:meth:`Index.replace_pods`) is the truth and bypasses both.
* When the pod that held an IP stops holding it (deleted, terminal phase,
  address gone) the IP resolves to that pod, ``state: terminated``, for
  ``grace_seconds`` unless another pod claims it.
* hostNetwork pods share their node's IP: an IP held only by them answers as
  the node, naming its pods, never as one of them.

Pods are kept in the trimmed, value-sharing form of :mod:`podindex.sharing`;
records and what they hold are never mutated, only replaced.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from typing import Final, Literal, TypeVar

import msgspec

from podindex import answers
from podindex.addresses import normalise_ip
from podindex.identity import controller_of, resolve_workload
from podindex.listing import Listing
from podindex.model import ObjectMeta, OwnerRecord, Pod, PodKey, Workload
from podindex.selectors import Selector
from podindex.sharing import KeptPod, ValueSharing, kept_status_equal

HOLDING_PHASES: Final = frozenset({"Pending", "Running", ""})
TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})
NEVER: Final = math.inf
AGENT: Final = "agent"
"""``identity_source`` of a workload named by the agent that pushed the pod."""

_K = TypeVar("_K")

CallerKind = Literal["pod", "node", "clusters", "terminating"]
"""Who is behind an IP, for forward-auth (:meth:`Index.caller`)."""

NameKey = tuple[str, str, str]
"""(cluster, namespace, name)"""

WorkloadKey = tuple[str, str, str, str]
"""(cluster, namespace, kind, name)"""

Answer = bytes | tuple[int, bytes, float]
"""What ``GET /pod?ip=`` returns: the body of a 200 that does not expire (nearly every
answer, so no tuple is spent on it), else (HTTP status, body, valid until)."""


class PodRecord(msgspec.Struct, gc=False):
    key: PodKey
    pod: Pod
    ips: tuple[str, ...]
    """Canonical IPs this pod holds now; empty when it holds none."""
    host_ip: str
    """The node IP, for a non-terminal hostNetwork pod (else empty)."""
    workload: Workload
    body: bytes
    seq: int
    source: str
    resource_version: str
    """Of the last event applied; ``pod`` is kept from the last event that changed it."""

    @property
    def cluster(self) -> str:
        return self.key[0]

    @property
    def namespace(self) -> str:
        return self.pod.metadata.namespace

    @property
    def name(self) -> str:
        return self.pod.metadata.name

    @property
    def node(self) -> str:
        return self.pod.spec.nodeName

    def order(self) -> tuple[str, str, str, str]:
        """Listing order; unique, since two live pods may briefly share a name."""
        return (self.namespace, self.name, self.key[0], self.key[1])

    def rank(self) -> tuple[str, int]:
        """Newer pods rank higher: creation time, then first-seen order."""
        return (self.pod.metadata.creationTimestamp or "", self.seq)


class Change(msgspec.Struct, gc=False):
    """What the index decided about one pod, for the history store (:mod:`podindex.history`)."""

    record: PodRecord
    """The pod as now kept; for a removed pod, as it was last seen."""
    at: float
    """When the index applied it; 0.0 for an owner change whose caller gave no time."""
    dead: bool
    acquired: bool
    """It holds an IP it did not hold before this change."""
    released: bool
    """It gave up an IP it held before this change."""
    first: bool = False
    """The index had not seen this pod before (it may have held its IPs for long)."""
    acquired_at: float = 0.0
    """Set by the history writer: when the leases this change opens began."""


class Release(msgspec.Struct, gc=False):
    """An IP whose holder let go of it within the grace period."""

    record: PodRecord
    deadline: float
    body: bytes


def held_ips(pod: Pod) -> tuple[str, ...]:
    """The canonical IPs a pod holds, by the rules in the module docstring."""
    if pod.spec.hostNetwork or pod.status.phase not in HOLDING_PHASES:
        return ()
    status = pod.status
    raw = [p.ip for p in status.podIPs] if status.podIPs else [status.podIP]
    ips: list[str] = []
    for text in raw:
        ip = normalise_ip(text) if text else None
        if ip is not None and ip not in ips:
            ips.append(ip)
    return tuple(ips)


def host_network_ip(pod: Pod) -> str:
    if not pod.spec.hostNetwork or pod.status.phase in TERMINAL_PHASES:
        return ""
    return normalise_ip(pod.status.hostIP or pod.status.podIP or "") or ""


def _same_but_version(kept: Pod, new: Pod) -> bool:
    """Every field podindex keeps is equal, the resourceVersion aside."""
    if kept.spec != new.spec or not kept_status_equal(kept.status, new.status):
        return False
    a, b = kept.metadata, new.metadata
    return (
        a.uid == b.uid
        and a.name == b.name
        and a.namespace == b.namespace
        and a.labels == b.labels
        and a.annotations == b.annotations
        and a.ownerReferences == b.ownerReferences
        and a.creationTimestamp == b.creationTimestamp
        and a.deletionTimestamp == b.deletionTimestamp
        and a.deletionGracePeriodSeconds == b.deletionGracePeriodSeconds
    )


def _rv(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


class Index:
    """Pods of all clusters with lookups by IP, name, node, namespace, labels and workload."""

    def __init__(self, grace_seconds: float = 30.0, dead_uid_ttl: float = 3600.0) -> None:
        self.grace_seconds = grace_seconds
        self.dead_uid_ttl = dead_uid_ttl
        self.pods: dict[PodKey, PodRecord] = {}
        self.answers: dict[str, Answer] = {}
        """Canonical IP -> encoded answer. The hot path reads only this."""
        self.owners: dict[str, dict[str, OwnerRecord]] = {}
        self._seq = 0
        self._ip_claims: dict[str, PodKey | set[PodKey]] = {}
        self._released: dict[str, Release] = {}
        self._release_queue: deque[tuple[float, str]] = deque()
        self._host_ips: dict[str, set[PodKey]] = {}
        self._names: dict[NameKey, PodKey | set[PodKey]] = {}
        self._by_namespace: dict[str, set[PodKey]] = {}
        self._by_node: dict[str, set[PodKey]] = {}
        self._by_label: dict[tuple[str, str], set[PodKey]] = {}
        self._label_values: dict[str, set[str]] = {}
        """Each label key's values in ``_by_label``: search tries a key's values, not every pair."""
        self._by_workload: dict[WorkloadKey, set[PodKey]] = {}
        self.sharing = ValueSharing()
        self._listing: Listing | None = None
        self.observers: list[Callable[[PodRecord | None, PodRecord | None, float], None]] = []
        self.status_observer: Callable[[PodKey, Pod], None] | None = None
        """Sees each pod applied with its container statuses (which the index does not keep).
        A watcher calls it as it decodes a pod (:class:`podindex.cluster.ClusterSync`)."""
        """Called after each pod is added, changed in what it holds or is labelled, or
        removed: (old record, new record, now); None for absent."""
        """Turns a decoded pod into the form kept here (see :mod:`podindex.sharing`)."""
        self._dead: dict[PodKey, tuple[float, int | None]] = {}
        """Deleted uid -> (forget after, resourceVersion at deletion)."""
        self._dead_queue: deque[tuple[float, PodKey]] = deque()
        self.changes: list[Change] | None = None
        """When a list, every change to a pod's kept state is appended to it (the
        history writer takes them); None keeps no record of changes."""

    # --- applying events ----------------------------------------------------

    def upsert_pod(
        self,
        cluster: str,
        pod: Pod,
        now: float,
        *,
        source: str = "watch",
        workload: Workload | None = None,
    ) -> bool:
        """Apply an ADDED/MODIFIED pod. Returns False when ignored as stale.

        ``workload`` given (an agent that pushed the pod named it) is kept
        instead of the one resolved from labels and owners.
        """
        key = (cluster, pod.metadata.uid)
        dead = self._dead.get(key)
        if dead is not None:
            # Older than its deletion: a late or replayed event. Newer: the pod came
            # back into a selector-scoped watch (DELETED when it stopped matching).
            new_version = _rv(pod.metadata.resourceVersion)
            if new_version is None or dead[1] is None or new_version <= dead[1]:
                return False
            del self._dead[key]
        old = self.pods.get(key)
        if old is not None:
            new_rv = _rv(pod.metadata.resourceVersion)
            old_rv = _rv(old.resource_version)
            if new_rv is not None and old_rv is not None and new_rv <= old_rv:
                return False
        self._store(key, pod, old, now, source, workload)
        return True

    def delete_pod(self, cluster: str, pod: Pod, now: float) -> bool:
        """Apply a DELETED pod: by uid, so a deleted pod never removes its successor."""
        key = (cluster, pod.metadata.uid)
        old = self.pods.get(key)
        versions = [_rv(pod.metadata.resourceVersion)]
        if old is not None:
            versions.append(_rv(old.resource_version))
        known = [v for v in versions if v is not None]
        self._mark_dead(key, now, max(known) if known else None)
        if old is None:
            return False
        if self.status_observer is not None:  # how its containers ended
            self.status_observer(key, pod)
        self._remove(old, now, final_pod=pod)
        return True

    def replace_pods(
        self, cluster: str, pods: Iterable[Pod], now: float, version: str = ""
    ) -> None:
        """Reconcile a cluster with a fresh LIST (at resourceVersion ``version``): it is the truth.

        Pods absent from the list are deleted (their IPs enter the grace
        period), and events older than the list cannot bring them back;
        listed pods are stored even if their resourceVersion is lower than
        the one held (an API server restored with a new history).
        """
        list_version = _rv(version)
        listed: dict[PodKey, Pod] = {}
        for pod in pods:
            key = (cluster, pod.metadata.uid)
            listed[key] = pod
            self._dead.pop(key, None)
        # New pods first, in list order (their first-seen order). Then the pods
        # already known, listed or vanished, from the oldest to the newest: where
        # several claimed one IP, its holder is the last to give it up, so the
        # grace period shows the holder, not a stale claimant that never had it.
        known = sorted(
            (
                r
                for k, r in self.pods.items()
                if k[0] == cluster and (k in listed or r.source == "watch")
            ),
            key=PodRecord.rank,
        )
        for key, pod in listed.items():
            if key not in self.pods:
                self._store(key, pod, None, now, "watch")
        for record in known:
            key = record.key
            if key in listed:
                self._store(key, listed[key], record, now, record.source)
            else:
                self._remove(record, now, final_pod=record.pod)
                versions = [
                    v for v in (_rv(record.resource_version), list_version) if v is not None
                ]
                self._mark_dead(key, now, max(versions) if versions else None)

    def upsert_owner(self, owner: OwnerRecord, now: float = 0.0) -> None:
        table = self.owners.setdefault(owner.cluster, {})
        # Most ReplicaSet events are status (replica counts): nothing the walk reads.
        if table.get(owner.uid) != owner:
            table[owner.uid] = owner
            self._refresh_owned(owner.cluster, owner.namespace, {owner.uid}, now)

    def delete_owner(self, cluster: str, uid: str, now: float = 0.0) -> None:
        owner = self.owners.get(cluster, {}).pop(uid, None)
        if owner is not None:
            self._refresh_owned(cluster, owner.namespace, {uid}, now)

    def replace_owners(
        self, cluster: str, kind: str, owners: Iterable[OwnerRecord], now: float = 0.0
    ) -> None:
        """Reconcile ReplicaSets or Jobs of a cluster with a fresh LIST."""
        table = self.owners.setdefault(cluster, {})
        fresh = {o.uid: o for o in owners}
        changed = {o for o in table.values() if o.kind == kind and fresh.get(o.uid) != o}
        changed |= {o for o in fresh.values() if table.get(o.uid) != o}
        for uid in [u for u, o in table.items() if o.kind == kind]:
            del table[uid]
        table.update(fresh)
        by_namespace: dict[str, set[str]] = {}
        for owner in changed:
            by_namespace.setdefault(owner.namespace, set()).add(owner.uid)
        for namespace, uids in by_namespace.items():
            self._refresh_owned(cluster, namespace, uids, now)

    def forget_cluster(self, cluster: str, now: float) -> None:
        """Drop every pod of a cluster (its integration was removed)."""
        for key in [k for k in self.pods if k[0] == cluster]:
            self._remove(self.pods[key], now, final_pod=self.pods[key].pod, release=False)
        for ip in [ip for ip, r in self._released.items() if r.record.key[0] == cluster]:
            del self._released[ip]
            self._refresh_ip(ip, now)
        self.owners.pop(cluster, None)

    def expire(self, now: float) -> None:
        """Drop grace-period entries and dead-uid memories whose time has passed."""
        queue = self._release_queue
        while queue and queue[0][0] <= now:
            _, ip = queue.popleft()
            release = self._released.get(ip)
            if release is not None and release.deadline <= now:
                del self._released[ip]
                self._refresh_ip(ip, now)
        self.sharing.prune_if_due()
        dead_queue = self._dead_queue
        while dead_queue and dead_queue[0][0] <= now:
            _, key = dead_queue.popleft()
            entry = self._dead.get(key)
            if entry is not None and entry[0] <= now:
                del self._dead[key]

    # --- lookups ------------------------------------------------------------

    def lookup_ip(self, ip: str, now: float) -> tuple[int, bytes] | None:
        """The answer for a canonical IP, or None when no pod holds or recently held it."""
        found = self.answers.get(ip)
        if found is None:
            return None
        if isinstance(found, bytes):
            return 200, found
        if found[2] <= now:
            return None
        return found[0], found[1]

    def caller(self, ip: str, now: float) -> tuple[CallerKind, tuple[PodRecord, ...]] | None:
        """Who may be calling from a canonical IP, by the rules of the IP answers.

        ``pod``: the one live pod holding it (the common case: two dict hits).
        The ambiguous cases: ``clusters`` (a holder in each of several
        clusters), ``terminating`` (its pod was deleted or finished within the
        grace period), ``node`` (a node IP: its hostNetwork pods, sorted).
        None: nobody.
        """
        claims = self._ip_claims.get(ip)
        if claims is not None:
            if isinstance(claims, tuple):
                winners = {claims[0]: self.pods[claims]}
            else:
                winners = self._winners(ip)
            # The same address may be something else in another cluster: a node's, or
            # a pod's within its grace. Then it is ambiguous, not this cluster's pod.
            others = self._elsewhere(ip, set(winners), now)
            if len(winners) == 1 and not others:
                return "pod", tuple(winners.values())
            found = [winners[c] for c in sorted(winners)] + others
            return "clusters", tuple(found)
        release = self._released.get(ip)
        if release is not None and release.deadline > now:
            return "terminating", (release.record,)
        hosts = self._host_ips.get(ip)
        if hosts:
            return "node", tuple(sorted((self.pods[k] for k in hosts), key=PodRecord.order))
        return None

    def _elsewhere(self, ip: str, clusters: set[str], now: float) -> list[PodRecord]:
        """Who else answers for ``ip`` outside ``clusters``: pods within their grace and
        hostNetwork pods of a node with that address."""
        found: list[PodRecord] = []
        release = self._released.get(ip)
        if (
            release is not None
            and release.deadline > now
            and release.record.cluster not in clusters
        ):
            found.append(release.record)
        hosts = self._host_ips.get(ip)
        if hosts:
            found += sorted(
                (self.pods[k] for k in hosts if k[0] not in clusters), key=PodRecord.order
            )
        return found

    def holder(self, cluster: str, ip: str) -> PodRecord | None:
        """The pod of ``cluster`` that holds ``ip`` now, if any."""
        winners = self._winners(ip)
        return winners.get(cluster)

    def get(self, cluster: str, uid: str) -> PodRecord | None:
        return self.pods.get((cluster, uid))

    def by_name(self, cluster: str, namespace: str, name: str) -> PodRecord | None:
        claims = self._names.get((cluster, namespace, name))
        if claims is None:
            return None
        if isinstance(claims, tuple):
            return self.pods[claims]
        return max((self.pods[k] for k in claims), key=PodRecord.rank)

    def named(self, name: str, namespace: str | None = None) -> list[PodRecord]:
        """Every live pod of that name (in ``namespace``, else in any), in every cluster."""
        keys: Iterable[PodKey] = (
            self._by_namespace.get(namespace, ()) if namespace is not None else self.pods
        )
        found = [r for r in map(self.pods.__getitem__, keys) if r.name == name]
        found.sort(key=PodRecord.order)
        return found

    def select(
        self,
        *,
        cluster: str | None = None,
        namespace: str | None = None,
        node: str | None = None,
        selector: Selector | None = None,
        workload: WorkloadKey | None = None,
    ) -> list[PodRecord]:
        """Pods matching every given filter, ordered by (namespace, name, cluster, uid)."""
        found = self.matching(
            cluster=cluster, namespace=namespace, node=node, selector=selector, workload=workload
        )
        found.sort(key=PodRecord.order)
        return found

    def matching(
        self,
        *,
        cluster: str | None = None,
        namespace: str | None = None,
        node: str | None = None,
        selector: Selector | None = None,
        workload: WorkloadKey | None = None,
    ) -> list[PodRecord]:
        """Pods matching every given filter, in no particular order (from the smallest table)."""
        candidates: list[set[PodKey]] = []
        if namespace is not None:
            candidates.append(self._by_namespace.get(namespace, set()))
        if node is not None:
            candidates.append(self._by_node.get(node, set()))
        if workload is not None:
            candidates.append(self._by_workload.get(workload, set()))
        if selector is not None:
            candidates.extend(self._by_label.get(pair, set()) for pair in selector.equalities())
        if candidates:
            smallest = min(candidates, key=len)
            keys: Iterable[PodKey] = [
                k for k in smallest if all(k in c for c in candidates if c is not smallest)
            ]
            records: Iterable[PodRecord] = map(self.pods.__getitem__, keys)
        else:
            records = self.pods.values()
        if cluster is None and selector is None:
            return list(records)
        return [
            r
            for r in records
            if (cluster is None or r.key[0] == cluster)
            and (selector is None or selector.matches(r.pod.metadata.labels))
        ]

    @property
    def listing(self) -> Listing:
        """The dashboard's newest-first, by-status, searchable view of the same pods;
        built on first use (it costs memory), kept up to date from then on."""
        if self._listing is None:
            listing = Listing()
            for record in self.pods.values():
                listing.put(record.key, record.pod, record.ips)
            self._listing = listing
        return self._listing

    @property
    def by_namespace(self) -> Mapping[str, Set[PodKey]]:
        return self._by_namespace

    @property
    def by_node(self) -> Mapping[str, Set[PodKey]]:
        return self._by_node

    @property
    def by_label(self) -> Mapping[tuple[str, str], Set[PodKey]]:
        return self._by_label

    @property
    def label_values(self) -> Mapping[str, Set[str]]:
        """Each label key, with the values pods have for it."""
        return self._label_values

    def clusters(self) -> set[str]:
        return {k[0] for k in self.pods}

    def __len__(self) -> int:
        return len(self.pods)

    def __iter__(self) -> Iterator[PodRecord]:
        return iter(self.pods.values())

    # --- internals ----------------------------------------------------------

    def _workload(self, meta: ObjectMeta, cluster: str) -> Workload:
        workload = resolve_workload(meta, self.owners.get(cluster, {}))
        if workload.identity_source == "pod":
            return workload  # a bare pod's identity is its own: nothing to share
        return self.sharing.workload(workload)

    def _make_record(
        self,
        key: PodKey,
        pod: Pod,
        seq: int,
        source: str,
        old: PodRecord | None = None,
        workload: Workload | None = None,
        *,
        answer: bool = True,
    ) -> PodRecord:
        """The record for ``pod``; keeps ``old``'s pod, body and tables when only the version moved.

        Container statuses are not kept (they are most of a pod's status and
        most of its events: readiness, restarts); what remains is compared
        with ``old``, so a status-only event costs a comparison, not a rebuild.
        Without ``answer`` a new body is not encoded (a deleted pod's final
        record: its released IPs get their own in :meth:`_release`).
        """
        version = pod.metadata.resourceVersion
        if (
            old is not None
            and old.source == source
            and (workload is None or workload == old.workload)
            and _same_but_version(old.pod, pod)
        ):
            # Readiness and restarts change no answer, only kubectl's columns.
            display = self.sharing.display(pod)
            kept = old.pod
            if isinstance(kept, KeptPod) and kept.display is not display:
                kept = msgspec.structs.replace(kept, display=display)
            return msgspec.structs.replace(old, pod=kept, seq=seq, resource_version=version)
        pod = self.sharing.pod(pod)
        if workload is None:
            workload = self._workload(pod.metadata, key[0])
        ips = held_ips(pod)
        body = (
            answers.pod_answer(key[0], pod, list(ips), workload, source=source) if answer else b""
        )
        return PodRecord(
            key=key,
            pod=pod,
            ips=ips,
            host_ip=host_network_ip(pod),
            workload=workload,
            body=body,
            seq=seq,
            source=source,
            resource_version=version,
        )

    def _store(
        self,
        key: PodKey,
        pod: Pod,
        old: PodRecord | None,
        now: float,
        source: str,
        workload: Workload | None = None,
    ) -> None:
        if self.status_observer is not None:
            self.status_observer(key, pod)
        if old is None:
            self._seq += 1
            seq = self._seq
        else:
            seq = old.seq
        record = self._make_record(key, pod, seq, source, old, workload)
        if self._listing is not None and (old is None or old.pod is not record.pod):
            self._listing.put(key, record.pod, record.ips, old.pod if old is not None else None)
        if old is not None and record.body is old.body:
            # Same answer, same keys: every table already points at this pod's key.
            self.pods[key] = record
            return
        if old is not None:
            self._unlink(old, record, now)
        self.pods[key] = record
        self._link(record, old)
        for observer in self.observers:
            observer(old, record, now)
        if self.changes is not None:
            old_ips = old.ips if old is not None else ()
            self.changes.append(
                Change(
                    record,
                    now,
                    False,
                    any(ip not in old_ips for ip in record.ips),
                    any(ip not in record.ips for ip in old_ips),
                    old is None,
                )
            )

    def _link(self, record: PodRecord, old: PodRecord | None) -> None:
        key = record.key
        cluster = key[0]
        meta = record.pod.metadata
        old_meta = old.pod.metadata if old is not None else None
        if old_meta is None or old_meta.name != meta.name or old_meta.namespace != meta.namespace:
            _claim(self._names, (cluster, meta.namespace, meta.name), key)
            self._by_namespace.setdefault(meta.namespace, set()).add(key)
        if old is None or old.node != record.node:
            self._by_node.setdefault(record.node, set()).add(key)
        old_labels = old_meta.labels if old_meta is not None else {}
        for pair in meta.labels.items():
            if old_labels.get(pair[0]) != pair[1]:
                holders = self._by_label.get(pair)
                if holders is None:
                    holders = self._by_label[pair] = set()
                    self._label_values.setdefault(pair[0], set()).add(pair[1])
                holders.add(key)
        wkey = self._workload_key(record)
        if old is None or self._workload_key(old) != wkey:
            self._by_workload.setdefault(wkey, set()).add(key)
        old_ips = old.ips if old is not None else ()
        for ip in record.ips:
            if ip not in old_ips:
                _claim(self._ip_claims, ip, key)
        if record.host_ip and (old is None or old.host_ip != record.host_ip):
            self._host_ips.setdefault(record.host_ip, set()).add(key)
        # Every IP this pod touches may answer differently now (its body changed).
        for ip in {*record.ips, *old_ips, record.host_ip} - {""}:
            self._refresh_ip(ip, None)

    def _unlink(
        self,
        old: PodRecord,
        new: PodRecord | None,
        now: float,
        *,
        released_as: PodRecord | None = None,
    ) -> None:
        """Remove ``old``'s entries that ``new`` (None: nothing) no longer has.

        An IP that ``old`` held and gives up enters the grace period, shown as
        ``new`` (still indexed) or ``released_as`` (deleted); neither: no grace.
        """
        key = old.key
        cluster = key[0]
        meta = old.pod.metadata
        new_meta = new.pod.metadata if new is not None else None
        if new_meta is None or new_meta.name != meta.name or new_meta.namespace != meta.namespace:
            _unclaim(self._names, (cluster, meta.namespace, meta.name), key)
            _discard(self._by_namespace, meta.namespace, key)
        if new is None or new.node != old.node:
            _discard(self._by_node, old.node, key)
        new_labels = new_meta.labels if new_meta is not None else {}
        for pair in meta.labels.items():
            if new_labels.get(pair[0]) != pair[1]:
                _discard(self._by_label, pair, key)
                if pair not in self._by_label:
                    _discard_value(self._label_values, pair)
        wkey = self._workload_key(old)
        if new is None or self._workload_key(new) != wkey:
            _discard(self._by_workload, wkey, key)
        new_ips = new.ips if new is not None else ()
        for ip in old.ips:
            if ip not in new_ips:
                was_holder = self._winners(ip).get(cluster) is old
                _unclaim(self._ip_claims, ip, key)
                shown = new if new is not None else released_as
                if was_holder and shown is not None:
                    self._release(ip, shown, old.ips, now)
                self._refresh_ip(ip, now)
        if old.host_ip and (new is None or new.host_ip != old.host_ip):
            _discard(self._host_ips, old.host_ip, key)
            self._refresh_ip(old.host_ip, now)

    def _remove(
        self, record: PodRecord, now: float, *, final_pod: Pod, release: bool = True
    ) -> None:
        """Drop a pod; with ``release`` its IPs enter the grace period showing ``final_pod``."""
        # A DELETED event's pod is nearly always the last MODIFIED one with a new
        # resourceVersion: compared with the record, it is kept as it is.
        final = (
            self._make_record(
                record.key,
                final_pod,
                record.seq,
                record.source,
                record,
                self._kept(record),
                answer=False,
            )
            if release or self.changes is not None
            else None
        )
        self._unlink(record, None, now, released_as=final if release else None)
        del self.pods[record.key]
        if self._listing is not None:
            self._listing.remove(record.key, record.pod)
        for observer in self.observers:
            observer(record, None, now)
        if self.changes is not None and final is not None:
            self.changes.append(Change(final, now, True, False, bool(record.ips)))

    def _mark_dead(self, key: PodKey, now: float, version: int | None) -> None:
        expiry = now + self.dead_uid_ttl
        self._dead[key] = (expiry, version)
        self._dead_queue.append((expiry, key))

    def _release(self, ip: str, record: PodRecord, held: tuple[str, ...], now: float) -> None:
        deadline = now + self.grace_seconds
        body = answers.pod_answer(
            record.key[0],
            record.pod,
            list(held),
            record.workload,
            source=record.source,
            released_at=answers.rfc3339(now),
        )
        self._released[ip] = Release(record=record, deadline=deadline, body=body)
        self._release_queue.append((deadline, ip))

    def _winners(self, ip: str) -> dict[str, PodRecord]:
        """The holding pod of ``ip`` in each cluster that has a claimant."""
        claims = self._ip_claims.get(ip)
        if claims is None:
            return {}
        if isinstance(claims, tuple):
            record = self.pods[claims]
            return {claims[0]: record}
        winners: dict[str, PodRecord] = {}
        for key in claims:
            record = self.pods[key]
            best = winners.get(key[0])
            if best is None or record.rank() > best.rank():
                winners[key[0]] = record
        return winners

    def _refresh_ip(self, ip: str, now: float | None) -> None:
        """Recompute the encoded answer for one IP from the claim tables."""
        winners = self._winners(ip)
        if len(winners) == 1:
            (record,) = winners.values()
            self.answers[ip] = record.body
            return
        if winners:
            bodies = [winners[c].body for c in sorted(winners)]
            self.answers[ip] = (409, answers.ambiguous_answer(ip, bodies), NEVER)
            return
        release = self._released.get(ip)
        if release is not None and (now is None or release.deadline > now):
            self.answers[ip] = (200, release.body, release.deadline)
            return
        hosts = self._host_ips.get(ip)
        if hosts:
            status, body = self._node_body(ip, hosts)
            self.answers[ip] = body if status == 200 else (status, body, NEVER)
            return
        self.answers.pop(ip, None)

    def _node_body(self, ip: str, hosts: set[PodKey]) -> tuple[int, bytes]:
        """The node answer; 409 like any IP in use in two clusters (overlapping node CIDRs)."""
        records = sorted((self.pods[k] for k in hosts), key=lambda r: (r.namespace, r.name))
        clusters = sorted({r.key[0] for r in records})
        if len(clusters) > 1:
            per_cluster = [
                answers.node_answer(
                    ip, c, *self._node_of(ip, [r for r in records if r.key[0] == c])
                )
                for c in clusters
            ]
            return 409, answers.ambiguous_answer(ip, per_cluster)
        return 200, answers.node_answer(ip, clusters[0], *self._node_of(ip, records))

    @staticmethod
    def _node_of(ip: str, records: list[PodRecord]) -> tuple[str, list[answers.PodRef]]:
        node = records[0].node if records else ""
        refs = [answers.PodRef(r.key[0], r.namespace, r.name, r.key[1]) for r in records]
        return node, refs

    @staticmethod
    def _kept(record: PodRecord) -> Workload | None:
        """The workload an agent named for this pod (never re-resolved), else None."""
        return record.workload if record.workload.identity_source == AGENT else None

    @staticmethod
    def _workload_key(record: PodRecord) -> WorkloadKey:
        w = record.workload
        return (record.key[0], record.namespace, w.kind, w.name)

    def _refresh_owned(
        self, cluster: str, namespace: str, owner_uids: set[str], now: float
    ) -> None:
        """Recompute identities of the pods these owners control (they appeared, changed or went).

        A scan of the owner's namespace: owner changes are rare next to pod
        events, and a per-owner table would cost every pod ~300 bytes.
        """
        for key in [k for k in self._by_namespace.get(namespace, ()) if k[0] == cluster]:
            record = self.pods[key]
            ref = controller_of(record.pod.metadata)
            if ref is None or ref.uid not in owner_uids or self._kept(record) is not None:
                continue
            workload = self._workload(record.pod.metadata, cluster)
            if workload != record.workload:
                refreshed = self._make_record(key, record.pod, record.seq, record.source)
                self._unlink(record, refreshed, now)
                self.pods[key] = refreshed
                self._link(refreshed, record)
                if self.changes is not None:
                    self.changes.append(Change(refreshed, now, False, False, False))


def _claim(table: dict[_K, PodKey | set[PodKey]], k: _K, key: PodKey) -> None:
    current = table.get(k)
    if current is None:
        table[k] = key
    elif isinstance(current, tuple):
        if current != key:
            table[k] = {current, key}
    else:
        current.add(key)


def _unclaim(table: dict[_K, PodKey | set[PodKey]], k: _K, key: PodKey) -> None:
    current = table.get(k)
    if current is None:
        return
    if isinstance(current, tuple):
        if current == key:
            del table[k]
        return
    current.discard(key)
    if len(current) == 1:
        table[k] = next(iter(current))


def _discard_value(table: dict[str, set[str]], pair: tuple[str, str]) -> None:
    values = table.get(pair[0])
    if values is not None:
        values.discard(pair[1])
        if not values:
            del table[pair[0]]


def _discard(table: dict[_K, set[PodKey]], k: _K, key: PodKey) -> None:
    members = table.get(k)
    if members is not None:
        members.discard(key)
        if not members:
            del table[k]
