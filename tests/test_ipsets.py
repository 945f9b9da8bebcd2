"""IP sets: a client replaying a set's stream holds exactly the set the index implies.

Random pod events (new pods, IP changes, relabels, phase changes, deletes,
IP reuse across pods) and selector changes, on a fake clock; after every
step the engine's members equal the set computed directly from the index
(plus IPs still draining), a client that applied every event holds the same,
and a client reconnecting from any revision it saw catches up to it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podindex.index import Index
from podindex.ipsets import IpSets, IpSetSpec, PodRef, SetEvent, pod_ref
from podindex.selectors import parse_selector
from tests.test_index import new_pod

GRACE = 5.0
IPS = [f"10.0.0.{i}" for i in range(1, 9)]
APPS = ["web", "db", "cache"]


class Client:
    """What a firewall agent does with the stream: a dict of IP → pod."""

    def __init__(self) -> None:
        self.members: dict[str, PodRef] = {}
        self.revision = 0

    def apply(self, event: SetEvent) -> None:
        assert event.revision == self.revision + 1 or self.revision == 0, "no gaps"
        self.revision = event.revision
        assert event.ip is not None and event.pod is not None
        if event.type == "ADD":
            self.members[event.ip] = event.pod
        else:
            assert event.type == "REMOVE"
            assert self.members.pop(event.ip) == event.pod


def desired(index: Index, spec: IpSetSpec) -> dict[str, PodRef]:
    """The set straight from the index: IPs whose holder is in scope."""
    out = {}
    for ip in IPS:
        holder = index.holder(spec.cluster, ip)
        if holder is None:
            continue
        labels = holder.pod.metadata.labels
        if spec.namespace is not None and holder.namespace != spec.namespace:
            continue
        if not parse_selector(spec.selector).matches(labels):
            continue
        out[ip] = pod_ref(holder)
    return out


class World:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.index = Index(grace_seconds=0.0)
        self.now = 1000.0
        self.sets = IpSets(self.index, revision_base=1_000_000)
        self.index.observers.append(self.sets.observe)
        self.pods: dict[str, dict[str, Any]] = {}
        self.rv = 1
        self.serial = 0

    def pod_event(self) -> None:
        rng = self.rng
        self.rv += 1
        if self.pods and rng.random() < 0.3:
            uid = rng.choice(sorted(self.pods))
            fields = self.pods.pop(uid)
            self.index.delete_pod("c1", self._pod(uid, fields), self.now)
            return
        if self.pods and rng.random() < 0.6:
            uid = rng.choice(sorted(self.pods))
            fields = self.pods[uid]
            change = rng.choice(["ip", "app", "phase", "namespace-stays"])
            if change == "ip":
                fields["ips"] = [rng.choice(IPS)] if rng.random() < 0.8 else []
            elif change == "app":
                fields["app"] = rng.choice(APPS)
            elif change == "phase":
                fields["phase"] = rng.choice(["Running", "Succeeded", "Pending"])
        else:
            self.serial += 1
            uid = f"uid-{self.serial}"
            self.pods[uid] = fields = {
                "ips": [rng.choice(IPS)],
                "app": rng.choice(APPS),
                "phase": "Running",
                "namespace": rng.choice(["a", "b"]),
                "created": f"2026-11-23T13:{self.serial // 60 % 60:02d}:{self.serial % 60:02d}Z",
            }
        self.index.upsert_pod("c1", self._pod(uid, fields), self.now)

    def _pod(self, uid: str, f: dict[str, Any]) -> Any:
        return new_pod(
            uid.replace("uid", "p"),
            uid,
            namespace=f["namespace"],
            ips=f["ips"],
            rv=self.rv,
            phase=f["phase"],
            labels={"app": f["app"]},
            created=f["created"],
        )


def check(world: World, name: str, client: Client) -> None:
    ipset = world.sets.sets[name]
    want = desired(world.index, ipset.spec)
    revision, members = ipset.snapshot()
    have = {m.ip: m.pod for m in members}
    draining = {m.ip for m in members if m.draining}
    # Held IPs are members with their holder; every other member is draining, within grace.
    assert {ip: have[ip] for ip in want} == want
    assert set(have) - set(want) == draining
    for m in members:
        if m.draining:
            assert m.remove_at is not None and world.now < m.remove_at <= world.now + GRACE
    assert client.members == have and client.revision in (revision, 0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_a_replayed_stream_equals_the_set_the_index_implies(seed: int) -> None:
    world = World(seed)
    specs = [
        IpSetSpec("web", "c1", "app=web", grace_seconds=GRACE),
        IpSetSpec("a-db", "c1", "app=db", namespace="a", grace_seconds=GRACE),
        IpSetSpec("not-db", "c1", "app!=db", grace_seconds=GRACE),  # no label pair to file by
    ]
    clients = {s.name: Client() for s in specs}
    for spec in specs:
        ipset = world.sets.put(spec, world.now)
        ipset.listeners.append(clients[spec.name].apply)
    seen: dict[str, list[int]] = {s.name: [] for s in specs}
    for step in range(120):
        roll = world.rng.random()
        if roll < 0.75:
            world.pod_event()
        elif roll < 0.8:
            spec = world.sets.sets["web"].spec
            app = world.rng.choice(APPS)
            world.sets.put(IpSetSpec("web", "c1", f"app={app}", grace_seconds=GRACE), world.now)
            del spec
        else:
            world.now += world.rng.choice([0.5, 1.0, 3.0, 6.0])
        world.sets.expire(world.now)
        for name, client in clients.items():
            check(world, name, client)
            seen[name].append(world.sets.sets[name].revision)
        if step % 17 == 0:
            # A client reconnecting from a revision it saw catches up exactly.
            for name, revisions in seen.items():
                since = world.rng.choice(revisions)
                events = world.sets.sets[name].since(since)
                assert events is not None
                assert [e.revision for e in events] == list(
                    range(since + 1, world.sets.sets[name].revision + 1)
                )


def test_a_removal_waits_for_grace_is_cancelled_when_the_ip_returns_and_restarts() -> None:
    world = World(0)
    ipset = world.sets.put(IpSetSpec("web", "c1", "app=web", grace_seconds=GRACE), world.now)
    client = Client()
    ipset.listeners.append(client.apply)
    pod = {
        "ips": ["10.0.0.1"],
        "app": "web",
        "phase": "Running",
        "namespace": "a",
        "created": "2026-11-23T13:00:00Z",
    }
    world.pods["uid-1"] = pod
    world.rv += 1
    world.index.upsert_pod("c1", world._pod("uid-1", pod), world.now)
    assert client.members == {"10.0.0.1": PodRef("a", "p-1", "uid-1")}

    # The pod goes; a new pod of the set takes the IP within the grace: no REMOVE at all.
    world.index.delete_pod("c1", world._pod("uid-1", pod), world.now)
    assert ipset.snapshot()[1][0].draining
    world.now += 2
    world.rv += 1
    world.index.upsert_pod("c1", world._pod("uid-2", pod), world.now)
    assert client.members == {"10.0.0.1": PodRef("a", "p-2", "uid-2")}, "an ADD, no REMOVE"
    assert ipset.emitted == {"ADD": 2, "REMOVE": 0}

    # It goes again, and once more rapidly: each departure restarts the wait.
    world.index.delete_pod("c1", world._pod("uid-2", pod), world.now)
    world.now += 4
    world.rv += 1
    world.index.upsert_pod("c1", world._pod("uid-2b", pod), world.now)
    world.index.delete_pod("c1", world._pod("uid-2b", pod), world.now)
    world.now += 4
    world.sets.expire(world.now)
    assert "10.0.0.1" in client.members, "the second departure's grace is not over"
    world.now += 1.5
    world.sets.expire(world.now)
    assert client.members == {} and ipset.emitted["REMOVE"] == 1


def test_a_selector_change_emits_the_difference_and_sets_stay_independent() -> None:
    world = World(0)
    web = world.sets.put(IpSetSpec("web", "c1", "app=web", grace_seconds=0), world.now)
    everyone = world.sets.put(IpSetSpec("all", "c1", "", grace_seconds=0), world.now)
    for i, app in enumerate(["web", "web", "db"], start=1):
        f = {
            "ips": [f"10.0.0.{i}"],
            "app": app,
            "phase": "Running",
            "namespace": "a",
            "created": "2026-11-23T13:00:00Z",
        }
        world.rv += 1
        world.index.upsert_pod("c1", world._pod(f"uid-{i}", f), world.now)
    assert sorted(web.members) == ["10.0.0.1", "10.0.0.2"]
    before = web.revision
    world.sets.put(IpSetSpec("web", "c1", "app in (web,db)", grace_seconds=0), world.now)
    events = web.since(before)
    assert events is not None and [(e.type, e.ip) for e in events] == [("ADD", "10.0.0.3")]
    world.sets.put(IpSetSpec("web", "c1", "app=db", grace_seconds=0), world.now)
    assert sorted(web.members) == ["10.0.0.3"]
    assert sorted(everyone.members) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_revisions_older_than_the_log_or_from_before_a_restart_need_a_resync() -> None:
    index = Index()
    sets = IpSets(index, revision_base=5_000, log_size=3)
    ipset = sets.put(IpSetSpec("s", "c1", "", grace_seconds=0), 0.0)
    for i in range(1, 6):
        index.upsert_pod("c1", new_pod(f"p{i}", f"u{i}", ips=[f"10.1.0.{i}"], rv=i), 0.0)
    index.observers.append(sets.observe)
    for i in range(6, 12):
        index.upsert_pod("c1", new_pod(f"p{i}", f"u{i}", ips=[f"10.1.0.{i}"], rv=i), 0.0)
    assert ipset.revision == 5_007  # the first set starts above the base
    assert ipset.since(5_004) is not None and len(ipset.since(5_004) or []) == 3
    assert ipset.since(5_003) is None, "evicted from the log"
    assert ipset.since(4_000) is None, "a revision from before this process"
    assert ipset.since(9_999) is None, "a revision this set never issued"


@pytest.mark.parametrize("grace", [0.0, GRACE])
def test_a_terminal_or_host_network_pod_holds_no_member(grace: float) -> None:
    index = Index()
    sets = IpSets(index, revision_base=0)
    index.observers.append(sets.observe)
    ipset = sets.put(IpSetSpec("s", "c1", "", grace_seconds=grace), 0.0)
    index.upsert_pod("c1", new_pod("done", "u1", ips=["10.2.0.1"], phase="Succeeded"), 0.0)
    index.upsert_pod("c1", new_pod("node", "u2", host_network=True, host_ip="10.0.0.9"), 0.0)
    assert ipset.members == {}


def test_a_set_deleted_and_made_again_never_reissues_a_revision() -> None:
    index = Index()
    sets = IpSets(index, revision_base=1_000)
    index.observers.append(sets.observe)
    old = sets.put(IpSetSpec("fw", "c1", "app=a", grace_seconds=0), 0.0)
    for i in range(1, 4):
        index.upsert_pod(
            "c1", new_pod(f"a{i}", f"ua{i}", ips=[f"10.0.0.{i}"], labels={"app": "a"}), 0.0
        )
    last_seen = old.revision
    deleted: list[SetEvent] = []
    old.listeners.append(deleted.append)
    sets.delete("fw")
    assert [e.type for e in deleted] == ["DELETED"]
    new = sets.put(IpSetSpec("fw", "c1", "app=b", grace_seconds=0), 0.0)
    for i in range(1, 6):
        index.upsert_pod(
            "c1", new_pod(f"b{i}", f"ub{i}", ips=[f"10.0.1.{i}"], labels={"app": "b"}), 0.0
        )
    assert new.floor > last_seen
    assert new.since(last_seen) is None, "the old set's client must resync"
