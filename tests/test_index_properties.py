"""Property-based tests of the pod index against a simple reference model.

A hypothesis state machine plays random pod histories over a small universe
(2 clusters, 6 uids per cluster, 2 reused names, a handful of IPs including
an IPv6 one and one that is also a node's hostIP) and delivers their events
reordered, duplicated and late: replays of old versions, DELETEs of any
version, events for uids that were already deleted, relists that list any
subset at any version, and clock advances with ``expire``.

After every step every answer of the index is compared with
:class:`ReferenceModel`, which keeps only a dict of uid -> accepted pod, the
dead uids and the per-IP release records, and recomputes every answer from
scratch by the rules of DESIGN.md ("Semantics that matter"). It shares no
code with the index: not ``held_ips``, not ``normalise_ip``, not the rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from podindex.index import Index
from podindex.model import ObjectMeta, Pod, PodIP, PodSpec, PodStatus
from podindex.selectors import parse_selector

GRACE = 30.0
DEAD_TTL = 100.0

CLUSTERS = ("c1", "c2")
UIDS = tuple(f"uid-{n}" for n in range(6))
NAMES = ("web-0", "web-1")
NAMESPACES = ("ns-a", "ns-b")
NODES = ("", "node-a", "node-b")
NODE_IPS = {"": "", "node-a": "10.0.0.1", "node-b": "10.0.0.2"}
PHASES = ("Pending", "Running", "Succeeded", "Failed", "")
LABEL_SETS: tuple[dict[str, str], ...] = (
    {},
    {"k": "v"},
    {"k": "w"},
    {"k": "v", "tier": "db"},
)
CREATION_TIMES = (None, "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z")

# Every canonical IP of the universe with the spellings events may carry.
# "10.0.0.1" is also node-a's hostIP.
SPELLINGS: dict[str, tuple[str, ...]] = {
    "10.1.0.1": ("10.1.0.1", "10.1.000.01"),
    "10.1.0.2": ("10.1.0.2",),
    "fd00::1": ("fd00::1", "FD00:0:0::0001"),
    "10.0.0.1": ("10.0.0.1",),
}
CANONICAL = {spelling: ip for ip, spellings in SPELLINGS.items() for spelling in spellings}
LOOKUP_IPS = (*SPELLINGS, "10.0.0.2")

HOLDING = {"Pending", "Running", ""}
TERMINAL = {"Succeeded", "Failed"}


# --- the reference model -----------------------------------------------------


@dataclass
class Stored:
    pod: Pod
    seq: int


@dataclass
class Release:
    key: tuple[str, str]
    pod: Pod
    held: list[str]
    deadline: float


@dataclass
class ReferenceModel:
    """uid -> latest accepted pod, dead uids, IP releases; answers recomputed each time."""

    pods: dict[tuple[str, str], Stored] = field(default_factory=dict)
    dead: dict[tuple[str, str], tuple[float, int | None]] = field(default_factory=dict)
    """uid -> (forget after, highest resourceVersion known when it was deleted)."""
    releases: dict[str, Release] = field(default_factory=dict)
    seq: int = 0

    # rules

    @staticmethod
    def held(pod: Pod) -> list[str]:
        if pod.spec.hostNetwork or pod.status.phase not in HOLDING:
            return []
        if pod.status.podIPs:
            raw = [p.ip for p in pod.status.podIPs]
        else:
            raw = [pod.status.podIP] if pod.status.podIP else []
        out: list[str] = []
        for text in raw:
            ip = CANONICAL[text]
            if ip not in out:
                out.append(ip)
        return out

    @staticmethod
    def host_ip(pod: Pod) -> str:
        if not pod.spec.hostNetwork or pod.status.phase in TERMINAL:
            return ""
        return pod.status.hostIP or pod.status.podIP

    def rank(self, key: tuple[str, str]) -> tuple[str, int]:
        stored = self.pods[key]
        return (stored.pod.metadata.creationTimestamp or "", stored.seq)

    def holders(self, ip: str) -> dict[str, tuple[str, str]]:
        """cluster -> key of the newest pod that claims ``ip`` there."""
        best: dict[str, tuple[str, str]] = {}
        for key, stored in self.pods.items():
            if ip in self.held(stored.pod):
                current = best.get(key[0])
                if current is None or self.rank(key) > self.rank(current):
                    best[key[0]] = key
        return best

    def all_holders(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(cluster, ip) -> holder, over the whole universe."""
        return {(cluster, ip): key for ip in SPELLINGS for cluster, key in self.holders(ip).items()}

    def _put(self, key: tuple[str, str], pod: Pod) -> None:
        if key in self.pods:
            self.pods[key].pod = pod
        else:
            self.seq += 1
            self.pods[key] = Stored(pod, self.seq)

    def _release_given_up(
        self,
        before: dict[tuple[str, str], tuple[str, str]],
        old_pods: dict[tuple[str, str], Pod],
        shown: dict[tuple[str, str], Pod],
        now: float,
    ) -> None:
        """Each IP whose holder (before the change) no longer claims it: grace, showing the pod."""
        for (_cluster, ip), key in before.items():
            if key not in shown:
                continue
            still = key in self.pods and ip in self.held(self.pods[key].pod)
            if not still:
                self.releases[ip] = Release(key, shown[key], self.held(old_pods[key]), now + GRACE)

    # events

    def upsert(self, cluster: str, pod: Pod, now: float) -> None:
        key = (cluster, pod.metadata.uid)
        if key in self.dead:
            death = self.dead[key][1]
            version = pod.metadata.resourceVersion
            if not version.isdigit() or death is None or int(version) <= death:
                return
            del self.dead[key]  # newer than its deletion: it came back
        old = self.pods.get(key)
        if old is not None:
            new_rv, old_rv = pod.metadata.resourceVersion, old.pod.metadata.resourceVersion
            if new_rv.isdigit() and old_rv.isdigit() and int(new_rv) <= int(old_rv):
                return
        before = self.all_holders()
        old_pods = {key: old.pod} if old is not None else {}
        self._put(key, pod)
        if old is not None:
            self._release_given_up(before, old_pods, {key: pod}, now)

    def delete(self, cluster: str, pod: Pod, now: float) -> None:
        key = (cluster, pod.metadata.uid)
        old = self.pods.get(key)
        versions = [pod.metadata.resourceVersion]
        if old is not None:
            versions.append(old.pod.metadata.resourceVersion)
        numbers = [int(v) for v in versions if v.isdigit()]
        self.dead[key] = (now + DEAD_TTL, max(numbers) if numbers else None)
        if old is not None:
            before = self.all_holders()
            del self.pods[key]
            self._release_given_up(before, {key: old.pod}, {key: pod}, now)

    def relist(self, cluster: str, listed: list[Pod], now: float) -> None:
        """The list is the truth; the grace shows the pod that held the IP before the relist."""
        before = self.all_holders()
        old_pods = {k: s.pod for k, s in self.pods.items()}
        shown: dict[tuple[str, str], Pod] = {}
        seen: set[tuple[str, str]] = set()
        for pod in listed:
            key = (cluster, pod.metadata.uid)
            seen.add(key)
            self.dead.pop(key, None)
            self._put(key, pod)
            shown[key] = pod
        for key in [k for k in self.pods if k[0] == cluster and k not in seen]:
            shown[key] = self.pods[key].pod
            last = self.pods[key].pod.metadata.resourceVersion
            del self.pods[key]
            self.dead[key] = (now + DEAD_TTL, int(last) if last.isdigit() else None)
        self._release_given_up(before, old_pods, shown, now)

    def expire(self, now: float) -> None:
        self.releases = {ip: r for ip, r in self.releases.items() if r.deadline > now}
        self.dead = {k: t for k, t in self.dead.items() if t[0] > now}

    # answers, from scratch

    def expected_lookup(self, ip: str, now: float) -> dict[str, Any] | None:
        holders = self.holders(ip)
        if len(holders) > 1:
            return {"status": 409, "clusters": set(holders)}
        if holders:
            (key,) = holders.values()
            pod = self.pods[key].pod
            return {
                "status": 200,
                "state": "live",
                "cluster": key[0],
                "uid": key[1],
                "name": pod.metadata.name,
                "namespace": pod.metadata.namespace,
                "phase": pod.status.phase,
                "pod_ips": self.held(pod),
            }
        release = self.releases.get(ip)
        if release is not None and release.deadline > now:
            return {
                "status": 200,
                "state": "terminated",
                "cluster": release.key[0],
                "uid": release.key[1],
                "name": release.pod.metadata.name,
                "namespace": release.pod.metadata.namespace,
                "phase": release.pod.status.phase,
                "pod_ips": release.held,
            }
        on_node = {k for k, s in self.pods.items() if self.host_ip(s.pod) == ip}
        if not on_node:
            return None
        clusters = {k[0] for k in on_node}
        if len(clusters) > 1:
            return {"status": 409, "clusters": clusters}
        return {
            "status": 200,
            "state": "node",
            "cluster": next(iter(clusters)),
            "node_name": self.pods[next(iter(on_node))].pod.spec.nodeName,
            "pods": on_node,
        }

    def expected_by_name(self, cluster: str, namespace: str, name: str) -> str | None:
        keys = [
            k
            for k, s in self.pods.items()
            if k[0] == cluster
            and s.pod.metadata.namespace == namespace
            and s.pod.metadata.name == name
        ]
        return max(keys, key=self.rank)[1] if keys else None


def observed_lookup(index: Index, ip: str, now: float) -> dict[str, Any] | None:
    found = index.lookup_ip(ip, now)
    if found is None:
        return None
    status, raw = found
    body = msgspec.json.decode(raw)
    if "matches" in body:  # ambiguous: whatever the status says, compare it
        return {"status": status, "clusters": {m["cluster"] for m in body["matches"]}}
    if body["state"] == "node":
        pods = {(p["cluster"], p["uid"]) for p in body["pods"]}
        return {
            "status": status,
            "state": "node",
            "cluster": body["cluster"],
            "node_name": body["node_name"],
            "pods": pods,
        }
    return {
        "status": status,
        "state": body["state"],
        "cluster": body["cluster"],
        "uid": body["uid"],
        "name": body["name"],
        "namespace": body["namespace"],
        "phase": body["phase"],
        "pod_ips": body["pod_ips"],
    }


# --- the state machine -------------------------------------------------------

clusters = st.sampled_from(CLUSTERS)
uids = st.sampled_from(UIDS)
# Negative: counted from the newest version, so recent versions are common.
versions = st.integers(min_value=-3, max_value=8)
pod_ips = st.lists(st.sampled_from(sorted(CANONICAL)), max_size=2)


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = Index(grace_seconds=GRACE, dead_uid_ttl=DEAD_TTL)
        self.model = ReferenceModel()
        self.now = 1000.0
        self.rv = 0
        self.history: dict[tuple[str, str], list[Pod]] = {}
        self.created: dict[tuple[str, str], str | None] = {}
        self.host_network: dict[tuple[str, str], bool] = {}

    @initialize(
        created=st.lists(st.sampled_from(CREATION_TIMES), min_size=12, max_size=12),
        host_network=st.lists(
            st.sampled_from([False, False, False, True]), min_size=12, max_size=12
        ),
    )
    def immutable_fields(self, created: list[str | None], host_network: list[bool]) -> None:
        """creationTimestamp and hostNetwork never change for a uid."""
        keys = [(c, u) for c in CLUSTERS for u in UIDS]
        self.created = dict(zip(keys, created, strict=True))
        self.host_network = dict(zip(keys, host_network, strict=True))

    def _pick(self, cluster: str, uid: str, version: int) -> Pod | None:
        history = self.history.get((cluster, uid))
        if not history:
            return None
        return history[version % len(history)]

    @rule(
        cluster=clusters,
        uid=uids,
        phase=st.sampled_from(PHASES),
        ips=pod_ips,
        only_pod_ip=st.booleans(),
        node=st.sampled_from(NODES),
        labels=st.sampled_from(LABEL_SETS),
        deliver=st.sampled_from([True, True, True, False]),
    )
    def new_version(
        self,
        cluster: str,
        uid: str,
        phase: str,
        ips: list[str],
        only_pod_ip: bool,
        node: str,
        labels: dict[str, str],
        deliver: bool,
    ) -> None:
        """A new state of the pod; delivered now, or held back to arrive late."""
        self.rv += 1
        key = (cluster, uid)
        n = UIDS.index(uid)
        host_network = self.host_network[key]
        host_ip = NODE_IPS[node]
        if host_network:
            ips = [host_ip] if host_ip else []
        status = PodStatus(
            phase=phase,
            hostIP=host_ip,
            podIP=ips[0] if ips else "",
            podIPs=None if only_pod_ip or not ips else [PodIP(ip) for ip in ips],
        )
        pod = Pod(
            metadata=ObjectMeta(
                name=NAMES[n % 2],
                namespace=NAMESPACES[n // 4],
                uid=uid,
                resourceVersion=str(self.rv),
                creationTimestamp=self.created[key],
                labels=dict(labels),
            ),
            spec=PodSpec(nodeName=node, hostNetwork=host_network),
            status=status,
        )
        self.history.setdefault(key, []).append(pod)
        if deliver:
            self.index.upsert_pod(cluster, pod, self.now)
            self.model.upsert(cluster, pod, self.now)

    @rule(cluster=clusters, uid=uids, version=versions)
    def replay(self, cluster: str, uid: str, version: int) -> None:
        """ADDED/MODIFIED of any version: late, duplicated or after the DELETE."""
        pod = self._pick(cluster, uid, version)
        if pod is not None:
            self.index.upsert_pod(cluster, pod, self.now)
            self.model.upsert(cluster, pod, self.now)

    @rule(cluster=clusters, uid=uids, version=versions)
    def delete(self, cluster: str, uid: str, version: int) -> None:
        """DELETED carrying any version: the final one, or a late replay of an old one."""
        pod = self._pick(cluster, uid, version)
        if pod is not None:
            self.index.delete_pod(cluster, pod, self.now)
            self.model.delete(cluster, pod, self.now)

    @rule(
        cluster=clusters,
        listed=st.dictionaries(uids, versions, max_size=6),
    )
    def relist(self, cluster: str, listed: dict[str, int]) -> None:
        """A fresh LIST (after 410 Gone): any subset, at any version."""
        pods = [p for u, v in listed.items() if (p := self._pick(cluster, u, v)) is not None]
        self.index.replace_pods(cluster, pods, self.now)
        self.model.relist(cluster, pods, self.now)

    @rule(seconds=st.sampled_from([0.5, 5.0, 15.0, 29.5, 30.0, 31.0, 60.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.index.expire(self.now)
        self.model.expire(self.now)

    @invariant()
    def same_answers(self) -> None:
        index, model, now = self.index, self.model, self.now
        assert len(index) == len(model.pods)
        for ip in LOOKUP_IPS:
            expected = model.expected_lookup(ip, now)
            assert observed_lookup(index, ip, now) == expected, ip
            if expected is not None:
                event(f"answer {expected['status']} {expected.get('state', '')}")
        # No stale answers kept: the clock only moves with ``expire``.
        assert set(index.answers) == {
            ip for ip in LOOKUP_IPS if model.expected_lookup(ip, now) is not None
        }
        for ip in SPELLINGS:
            holders = model.holders(ip)
            for cluster in CLUSTERS:
                record = index.holder(cluster, ip)
                assert (record.key if record is not None else None) == holders.get(cluster)
        for cluster in CLUSTERS:
            for namespace in NAMESPACES:
                for name in NAMES:
                    record = index.by_name(cluster, namespace, name)
                    found = record.key[1] if record is not None else None
                    assert found == model.expected_by_name(cluster, namespace, name)

    @invariant()
    def same_selections(self) -> None:
        index, model = self.index, self.model

        def keys(records: list[Any]) -> list[tuple[str, str]]:
            order = [(r.namespace, r.name, r.key[0]) for r in records]
            assert order == sorted(order)
            return sorted(r.key for r in records)

        for namespace in NAMESPACES:
            want = sorted(k for k, s in model.pods.items() if s.pod.metadata.namespace == namespace)
            assert keys(index.select(namespace=namespace)) == want
        for node in NODES:
            want = sorted(k for k, s in model.pods.items() if s.pod.spec.nodeName == node)
            assert keys(index.select(node=node)) == want
        want = sorted(k for k, s in model.pods.items() if s.pod.metadata.labels.get("k") == "v")
        assert keys(index.select(selector=parse_selector("k=v"))) == want
        want = sorted(
            k
            for k, s in model.pods.items()
            if k[0] == "c2" and s.pod.metadata.namespace == "ns-a" and "k" in s.pod.metadata.labels
        )
        assert (
            keys(index.select(cluster="c2", namespace="ns-a", selector=parse_selector("k"))) == want
        )
        # Search's view of the labels: each key with exactly the values pods have now.
        values: dict[str, set[str]] = {}
        for s in model.pods.values():
            for k, v in s.pod.metadata.labels.items():
                values.setdefault(k, set()).add(v)
        assert {k: set(v) for k, v in index.label_values.items()} == values

    @invariant()
    def same_listing(self) -> None:
        """The dashboard's listing: newest first (ties: namespace, name, uid, backwards),
        every pod once, filters agreeing with a brute-force pass over the model."""
        index, model = self.index, self.model
        for cluster in ("c1", "c2"):
            pods = {k: s.pod for k, s in model.pods.items() if k[0] == cluster}

            def newest_first(
                k: tuple[str, str], pods: dict[tuple[str, str], Pod] = pods
            ) -> tuple[str, str, str, str]:
                meta = pods[k].metadata
                return (meta.creationTimestamp or "", meta.namespace, meta.name, k[1])

            want = sorted(pods, key=newest_first, reverse=True)
            total, page = index.listing.query(cluster, start=0, stop=len(want) + 1)
            assert (total, page) == (len(want), want)
            if len(want) > 2:
                assert index.listing.query(cluster, start=1, stop=3) == (len(want), want[1:3])
            for term in ("a", "node-b", "10."):
                searched = [
                    k
                    for k in want
                    if any(
                        term in text
                        for text in (
                            pods[k].metadata.name,
                            pods[k].metadata.namespace,
                            pods[k].spec.nodeName,
                            pods[k].status.podIP,
                            *index.pods[k].ips,
                        )
                    )
                ]
                found = index.listing.query(cluster, search=term, stop=1000)
                assert found == (len(searched), searched)
            for status in {index.sharing.display(p).status for p in pods.values()}:
                have = [k for k in want if index.sharing.display(pods[k]).status == status]
                assert index.listing.query(cluster, status=status, stop=1000) == (len(have), have)
        assert len(index.listing) == len(model.pods)


IndexMachine.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=50,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)
TestIndexAgainstModel = IndexMachine.TestCase
# Passing takes ~10 s; a failure's shrinking may take minutes, and cutting it
# at the default 60 s would hide the minimal example behind a timeout.
TestIndexAgainstModel.pytestmark = [pytest.mark.timeout(600)]
