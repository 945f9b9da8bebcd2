"""Live pod IP sets: named selector scopes over the index, and their change log.

A set is (cluster, optional namespace, label selector, grace period). Its
members are the IPs that pods in scope really hold, by the index's rules (a
pod's IPs only while it holds them: no terminal pods, no hostNetwork node
IPs; within a cluster one holder per IP). A change is one event with the
set's next revision:

- ``ADD ip pod``: the IP entered the set, or its pod changed (a new pod of
  the set took an IP that was draining): a client keeps one pod per IP;
- ``REMOVE ip pod``: the IP left the set a grace period ago and did not come
  back. While it drains it is still a member (``draining``); if it comes
  back the removal is cancelled; if it leaves again the wait starts over;
- ``RESYNC``: sent by a stream, never logged: what follows is the whole set;
- ``DELETED``: told to the set's listeners when it is deleted, never logged.

Revisions grow by one per event, from a base above every revision this
process issued (the first from the clock: unix seconds times a million), so
a revision issued before a restart, or by a deleted set of the same name, is
older than any the set issues now, and a client resuming from one is sent a
RESYNC rather than another set's events. Each set keeps its last
``log_size`` events for clients that reconnect with ``since``.

The index calls :meth:`IpSets.observe` with each pod's old and new record;
affected IPs are re-evaluated (their holder may have changed), nothing else.

Pure: no I/O; time comes from the caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal

import msgspec

from podindex.index import Index, PodRecord
from podindex.selectors import Selector, parse_selector

EventType = Literal["ADD", "REMOVE", "RESYNC", "DELETED"]
DEFAULT_GRACE = 30.0
DEFAULT_LOG_SIZE = 10_000


class IpSetSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    cluster: str
    selector: str = ""
    namespace: str | None = None
    grace_seconds: float = DEFAULT_GRACE


class PodRef(msgspec.Struct, frozen=True, gc=False):
    namespace: str
    name: str
    uid: str


class SetEvent(msgspec.Struct, frozen=True, gc=False):
    type: EventType
    ip: str | None
    pod: PodRef | None
    revision: int


class Member(msgspec.Struct, frozen=True, gc=False):
    ip: str
    pod: PodRef
    draining: bool
    remove_at: float | None = None
    """When a draining member's REMOVE is due (unix seconds)."""


def pod_ref(record: PodRecord) -> PodRef:
    return PodRef(record.namespace, record.name, record.key[1])


class IpSet:
    """One set's members and change log."""

    def __init__(self, spec: IpSetSpec, revision: int, log_size: int = DEFAULT_LOG_SIZE) -> None:
        self.spec = spec
        self.selector: Selector = parse_selector(spec.selector)
        self.revision = revision
        self.floor = revision
        """Events after this revision are all in the log."""
        self.members: dict[str, PodRef] = {}
        self.draining: dict[str, float] = {}
        """IP → when its REMOVE is due, for members that left the scope."""
        self.log: deque[SetEvent] = deque(maxlen=log_size)
        self.listeners: list[Callable[[SetEvent], None]] = []
        self.emitted = {"ADD": 0, "REMOVE": 0}

    def in_scope(self, record: PodRecord) -> bool:
        spec = self.spec
        return (
            record.key[0] == spec.cluster
            and (spec.namespace is None or record.namespace == spec.namespace)
            and self.selector.matches(record.pod.metadata.labels)
        )

    def snapshot(self) -> tuple[int, list[Member]]:
        """(revision, members sorted by IP) — the set as of that revision."""
        members = [
            Member(ip, pod, ip in self.draining, self.draining.get(ip))
            for ip, pod in sorted(self.members.items())
        ]
        return self.revision, members

    def since(self, revision: int) -> list[SetEvent] | None:
        """Events after ``revision``; None when some of them are no longer kept (or the
        revision is not one this set issued): the client must resync."""
        if revision < self.floor or revision > self.revision:
            return None
        if revision == self.revision:
            return []
        first = self.log[0].revision if self.log else self.revision + 1
        if revision + 1 < first:
            return None
        return [e for e in self.log if e.revision > revision]

    def _emit(self, kind: Literal["ADD", "REMOVE"], ip: str, pod: PodRef) -> None:
        self.revision += 1
        event = SetEvent(kind, ip, pod, self.revision)
        if len(self.log) == self.log.maxlen:
            self.floor = self.log[0].revision
        self.log.append(event)
        self.emitted[kind] += 1
        for listener in list(self.listeners):
            listener(event)

    def settle(self, ip: str, holder: PodRecord | None, now: float) -> None:
        """Make ``ip``'s membership match its holder now (None: no pod of the set holds it)."""
        current = self.members.get(ip)
        if holder is not None:
            ref = pod_ref(holder)
            self.draining.pop(ip, None)
            if current != ref:
                self.members[ip] = ref
                self._emit("ADD", ip, ref)
        elif current is not None and ip not in self.draining:
            if self.spec.grace_seconds <= 0:
                self._remove(ip)
            else:
                self.draining[ip] = now + self.spec.grace_seconds

    def expire(self, now: float) -> None:
        for ip in [ip for ip, due in self.draining.items() if due <= now]:
            self._remove(ip)

    def _remove(self, ip: str) -> None:
        self.draining.pop(ip, None)
        pod = self.members.pop(ip)
        self._emit("REMOVE", ip, pod)


class IpSets:
    """Every set, kept current from the index's changes."""

    def __init__(
        self,
        index: Index,
        *,
        revision_base: int,
        log_size: int = DEFAULT_LOG_SIZE,
    ) -> None:
        self.index = index
        self.revision_base = revision_base
        self.log_size = log_size
        self.sets: dict[str, IpSet] = {}
        self._filed: dict[str, dict[tuple[str, str] | None, list[IpSet]]] = {}
        """Per cluster, sets by one label pair their selector requires (None: no such
        pair): a pod event looks only at the sets its labels can be in."""
        self._holding: dict[tuple[str, str], set[IpSet]] = {}
        """(cluster, ip) → the sets that have the IP as a member (draining included)."""
        self._high_water = revision_base
        """No revision at or below this was issued by a set that still exists under its
        name; a new set starts above it, so a client of a deleted set of that name
        resyncs rather than replaying another set's events as its own."""

    def put(self, spec: IpSetSpec, now: float) -> IpSet:
        """Create a set, or change one's scope: the difference is emitted (ADDs now,
        REMOVEs after the grace period), not a drop and refill."""
        existing = self.sets.get(spec.name)
        if existing is None:
            base = max([self._high_water, *(s.revision for s in self.sets.values())]) + 1
            ipset = IpSet(spec, base, self.log_size)
            self.sets[spec.name] = ipset
        else:
            ipset = existing
            self._unfile(ipset)
            ipset.spec = spec
            ipset.selector = parse_selector(spec.selector)
        pairs = ipset.selector.equalities()
        filed = self._filed.setdefault(spec.cluster, {})
        filed.setdefault(pairs[0] if pairs else None, []).append(ipset)
        desired = self._desired(ipset)
        for ip in sorted(set(ipset.members) | set(desired)):
            self._settle(ipset, ip, desired.get(ip), now)
        return ipset

    def _settle(self, ipset: IpSet, ip: str, holder: PodRecord | None, now: float) -> None:
        ipset.settle(ip, holder, now)
        self._note(ipset, ip)

    def _note(self, ipset: IpSet, ip: str) -> None:
        key = (ipset.spec.cluster, ip)
        if ip in ipset.members:
            self._holding.setdefault(key, set()).add(ipset)
        else:
            holding = self._holding.get(key)
            if holding is not None:
                holding.discard(ipset)
                if not holding:
                    del self._holding[key]

    def delete(self, name: str) -> IpSet | None:
        ipset = self.sets.pop(name, None)
        if ipset is not None:
            self._unfile(ipset)
            for ip in list(ipset.members):
                holding = self._holding.get((ipset.spec.cluster, ip))
                if holding is not None:
                    holding.discard(ipset)
                    if not holding:
                        del self._holding[(ipset.spec.cluster, ip)]
            self._high_water = max(self._high_water, ipset.revision)
            gone = SetEvent("DELETED", None, None, ipset.revision)
            for listener in list(ipset.listeners):
                listener(gone)
        return ipset

    def _unfile(self, ipset: IpSet) -> None:
        filed = self._filed.get(ipset.spec.cluster, {})
        for key, same in list(filed.items()):
            if ipset in same:
                same.remove(ipset)
                if not same:
                    del filed[key]
        if not filed:
            self._filed.pop(ipset.spec.cluster, None)

    def _candidates(self, cluster: str, labels: dict[str, str]) -> list[IpSet]:
        filed = self._filed.get(cluster)
        if not filed:
            return []
        found = list(filed.get(None, ()))
        for pair in labels.items():
            found += filed.get(pair, ())
        return found

    def _desired(self, ipset: IpSet) -> dict[str, PodRecord]:
        spec = ipset.spec
        records = self.index.matching(
            cluster=spec.cluster,
            namespace=spec.namespace,
            selector=None if not ipset.selector.requirements else ipset.selector,
        )
        return {
            ip: record
            for record in records
            for ip in record.ips
            if self.index.holder(spec.cluster, ip) is record
        }

    def observe(self, old: PodRecord | None, new: PodRecord | None, now: float) -> None:
        """A pod changed (``old`` → ``new``; None: absent): re-evaluate the IPs it touched."""
        some = new if new is not None else old
        if some is None:
            return
        cluster = some.key[0]
        if cluster not in self._filed:
            return
        ips: Iterable[str] = {*(old.ips if old else ()), *(new.ips if new else ())}
        for ip in ips:
            holder = self.index.holder(cluster, ip)
            # Sets that hold the IP now, and sets the holder's labels can be in.
            candidates = set(self._holding.get((cluster, ip), ()))
            if holder is not None:
                candidates.update(self._candidates(cluster, holder.pod.metadata.labels))
            for ipset in candidates:
                in_set = holder if holder is not None and ipset.in_scope(holder) else None
                if in_set is not None or ip in ipset.members:
                    self._settle(ipset, ip, in_set, now)

    def expire(self, now: float) -> None:
        for ipset in self.sets.values():
            if ipset.draining:
                due = [ip for ip, at in ipset.draining.items() if at <= now]
                ipset.expire(now)
                for ip in due:
                    self._note(ipset, ip)
