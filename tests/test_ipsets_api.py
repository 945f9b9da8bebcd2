"""IP sets over the API, end to end: a real ``podindex serve`` watching the emulator.

A client follows a set's stream through churn, a selector change, a reconnect
and a restart of podindex, and always holds the set the cluster implies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from podindex.sim import POD, FakeCluster
from tests.auth import ADMIN_TOKEN, READER_TOKEN, bearer, standard_tokens
from tests.test_e2e_serve import TOKEN, start_podindex, stop, wait_ready

SETS = "/api/v1/ipsets"


@dataclass
class Running:
    sim: FakeCluster
    env: dict[str, str]
    base: str = ""
    process: Any = None

    async def start(self) -> None:
        self.process, self.base = start_podindex("serve", env=self.env)
        await wait_ready(self.base, self.process)

    def stop(self) -> str:
        output = stop(self.process)
        assert "Traceback" not in output, output
        return output


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with FakeCluster(token=TOKEN, bookmark_interval=0.5, grace_scale=0.0) as sim:
        for i in range(6):
            sim.create_pod(
                "shop",
                f"web-{i}",
                node="node-1",
                ip=f"10.6.0.{i + 1}",
                labels={"app": "web" if i < 4 else "db"},
            )
        (tmp_path / "kube-token").write_text(TOKEN)
        env = {
            "PODINDEX_SERVER": sim.url,
            "PODINDEX_TOKEN_FILE": str(tmp_path / "kube-token"),
            "PODINDEX_TOKENS_FILE": str(standard_tokens(tmp_path)),
            "PODINDEX_STORE": f"sqlite:///{tmp_path}/h.db",
            "PODINDEX_GRACE_PERIOD": "0",
        }
        run = Running(sim, env)
        await run.start()
        try:
            yield run
        finally:
            run.stop()


def implied(sim: FakeCluster, app: str) -> set[str]:
    """The set the cluster implies: running pods of the app, by IP."""
    return {
        p["status"]["podIP"]
        for p in sim.list_objects(POD)
        if p["metadata"].get("labels", {}).get("app") == app
        and p["status"].get("phase") == "Running"
        and p["status"].get("podIP")
        and not p["metadata"].get("deletionTimestamp")
    }


class Follower:
    """A firewall agent: applies the stream to its own set, remembers the revision."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str, Any]] = {}
        self.revision: int | None = None
        self.resyncs = 0

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "RESYNC":
            self.members.clear()
            self.resyncs += 1
        elif kind == "ADD":
            self.members[event["ip"]] = event["pod"]
        elif kind == "REMOVE":
            del self.members[event["ip"]]
        if kind in ("ADD", "REMOVE", "RESYNC", "BOOKMARK"):
            self.revision = max(self.revision or 0, event["revision"])

    async def follow(self, base: str, name: str, until: Any, timeout: float = 15.0) -> None:
        params = {} if self.revision is None else {"since": str(self.revision)}
        deadline = time.monotonic() + timeout
        async with (
            httpx.AsyncClient(base_url=base, headers=bearer(READER_TOKEN), timeout=None) as c,
            c.stream("GET", f"{SETS}/{name}/watch", params=params) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                self.apply(json.loads(line))
                if until(self):
                    return
                assert time.monotonic() < deadline, f"stream never settled: {self.members}"


async def test_a_follower_holds_the_implied_set_through_churn_reconnects_and_a_restart(
    running: Running,
) -> None:
    sim = running.sim
    async with httpx.AsyncClient(base_url=running.base, headers=bearer(ADMIN_TOKEN)) as admin:
        created = await admin.post(
            SETS,
            json={"name": "web", "cluster": "default", "selector": "app=web", "grace_seconds": 1},
        )
        assert created.status_code == 201, created.text
        follower = Follower()
        await follower.follow(running.base, "web", lambda f: set(f.members) == implied(sim, "web"))
        assert len(follower.members) == 4

        # Churn while the follower is away: a pod goes, a new one comes.
        sim.delete_pod("shop", "web-0", 0)
        sim.create_pod("shop", "web-9", node="node-1", ip="10.6.0.9", labels={"app": "web"})
        await follower.follow(running.base, "web", lambda f: set(f.members) == implied(sim, "web"))
        assert "10.6.0.1" not in follower.members and "10.6.0.9" in follower.members
        assert follower.resyncs == 0, "the reconnect replayed the changes it missed"

        # A selector change: the difference, not a drop and refill.
        before = follower.revision
        updated = await admin.patch(f"{SETS}/web", json={"selector": "app in (web,db)"})
        assert updated.status_code == 200
        await follower.follow(
            running.base,
            "web",
            lambda f: set(f.members) == implied(sim, "web") | implied(sim, "db"),
        )
        assert follower.revision is not None and before is not None
        assert follower.revision - before == 2, "two ADDs, nothing removed"

    # podindex restarts: the set comes back from the store; the follower's revision is
    # from the old process, so it resyncs.
    running.stop()
    await running.start()
    await follower.follow(running.base, "web", lambda f: f.resyncs == 1 and len(f.members) == 6)
    assert set(follower.members) == implied(sim, "web") | implied(sim, "db")


async def test_members_and_the_removal_grace(running: Running) -> None:
    sim = running.sim
    async with httpx.AsyncClient(base_url=running.base, headers=bearer(ADMIN_TOKEN)) as client:
        await client.post(
            SETS,
            json={
                "name": "db",
                "cluster": "default",
                "requirements": [{"key": "app", "operator": "in", "values": ["db"]}],
                "grace_seconds": 2,
            },
        )
        sim.delete_pod("shop", "web-4", 0)
        await asyncio.sleep(0.5)
        listed = (await client.get(f"{SETS}/db/members")).json()
        draining = {m["ip"]: m["draining"] for m in listed["members"]}
        assert draining == {"10.6.0.5": True, "10.6.0.6": False}
        await asyncio.sleep(2.5)
        listed = (await client.get(f"{SETS}/db/members")).json()
        assert [m["ip"] for m in listed["members"]] == ["10.6.0.6"]
        metrics = (await client.get("/metrics")).text
        assert 'podindex_ipset_events_total{set="db",type="REMOVE"} 1.0' in metrics


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"name": "x", "cluster": "nowhere"}, 400, "invalid_cluster"),
        ({"name": "Bad Name", "cluster": "default"}, 400, "invalid_name"),
        ({"name": "x", "cluster": "default", "selector": "app in (a"}, 400, "invalid_selector"),
        (
            {
                "name": "x",
                "cluster": "default",
                "requirements": [{"key": "app", "operator": "like", "values": ["a"]}],
            },
            400,
            "invalid_selector",
        ),
        ({"name": "x", "cluster": "default", "grace_seconds": -1}, 400, "invalid_grace_seconds"),
        ({"name": "x", "cluster": "default", "colour": "red"}, 400, "invalid_body"),
    ],
)
async def test_bad_sets_are_refused_and_change_nothing(
    running: Running, body: dict[str, Any], status: int, error: str
) -> None:
    async with httpx.AsyncClient(base_url=running.base, headers=bearer(ADMIN_TOKEN)) as client:
        response = await client.post(SETS, json=body)
        assert response.status_code == status and response.json()["error"] == error
        if "requirements" in body:
            assert "requirements[0]" in response.json()["message"]
        assert (await client.get(SETS)).json() == {"items": []}


async def test_roles_and_server_sent_events(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.base) as client:
        spec = {"name": "web", "cluster": "default", "selector": "app=web"}
        assert (await client.post(SETS, json=spec)).status_code == 401
        reader = bearer(READER_TOKEN)
        assert (await client.post(SETS, json=spec, headers=reader)).status_code == 403
        made = await client.post(SETS, json=spec, headers=bearer(ADMIN_TOKEN))
        assert made.status_code == 201
        assert (await client.get(SETS + "/web/members")).status_code == 401
        headers = {**reader, "Accept": "text/event-stream"}
        async with client.stream("GET", SETS + "/web/watch", headers=headers) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = []
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                if len(events) == 4:
                    break
        assert {e["type"] for e in events} == {"ADD"} and len({e["ip"] for e in events}) == 4
        gone = await client.delete(SETS + "/web", headers=bearer(ADMIN_TOKEN))
        assert gone.status_code == 204
        assert (await client.get(SETS + "/web", headers=reader)).status_code == 404


async def test_concurrent_changes_to_one_set_do_not_interleave(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.base, headers=bearer(ADMIN_TOKEN)) as client:
        made = await asyncio.gather(
            *(
                client.post(SETS, json={"name": "fw", "cluster": "default", "selector": s})
                for s in ("app=web", "app=db")
            )
        )
        assert sorted(r.status_code for r in made) == [201, 409]
        changed, gone = await asyncio.gather(
            client.patch(f"{SETS}/fw", json={"selector": "app=web"}),
            client.delete(f"{SETS}/fw"),
        )
        assert gone.status_code == 204 and changed.status_code in (200, 404)
        assert (await client.get(f"{SETS}/fw")).status_code == 404, "deleted means deleted"


async def test_a_stream_that_overflowed_still_hears_its_set_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from podindex.api import ipsets as api
    from podindex.index import Index
    from podindex.ipsets import IpSets, IpSetSpec
    from tests.test_index import new_pod

    monkeypatch.setattr(api, "STREAM_QUEUE", 2)
    index = Index()
    sets = IpSets(index, revision_base=0)
    index.observers.append(sets.observe)
    index.upsert_pod("c1", new_pod("p0", "u0", ips=["10.0.0.100"]), 0.0)
    ipset = sets.put(IpSetSpec("s", "c1", "", grace_seconds=0), 0.0)
    stream = api._stream(ipset, None, False, api.StreamStats(), lambda: "s" in sets.sets)
    first = json.loads(await anext(stream))  # the member; the stream now listens
    assert (first["type"], first["ip"]) == ("ADD", "10.0.0.100")
    for i in range(1, 6):  # overflows the queue of 2
        index.upsert_pod("c1", new_pod(f"p{i}", f"u{i}", ips=[f"10.0.0.{i}"]), 0.0)
    sets.delete("s")
    lines = [json.loads(line) async for line in stream]
    assert lines[-1]["type"] == "DELETED"
