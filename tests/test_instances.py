"""The container-instance tracker's write-behind against a real store: batches, and a
failed batch going back in the queue under what came since."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from podindex.instances import InstanceTracker
from podindex.model import Pod
from podindex.store.base import Store, StoreError


def pod(uid: str, container_id: str, *, restarted_from: str | None = None) -> Pod:
    status: dict[str, Any] = {
        "name": "app",
        "containerID": f"containerd://{container_id}",
        "imageID": "registry.example/app@sha256:" + "ab" * 32,
        "state": {"running": {"startedAt": "2026-11-30T10:00:00Z"}},
    }
    if restarted_from:
        status["lastState"] = {
            "terminated": {
                "containerID": f"containerd://{restarted_from}",
                "exitCode": 1,
                "startedAt": "2026-11-30T09:00:00Z",
                "finishedAt": "2026-11-30T09:59:00Z",
            }
        }
    return msgspec.convert(
        {
            "metadata": {"uid": uid, "name": uid, "namespace": "ns"},
            "spec": {"nodeName": "node-1"},
            "status": {"podIP": "10.0.0.1", "containerStatuses": [status]},
        },
        Pod,
    )


async def test_a_big_queue_is_written_in_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = InstanceTracker(store, batch_size=10)
    for n in range(35):
        tracker.observe(("c1", f"p{n}"), pod(f"p{n}", f"c{n}"))
    calls: list[int] = []
    real = store.write_instances

    async def counting(instances: Any, gone: Any, keep: int, facts: Any) -> None:
        calls.append(len(instances))
        assert len(facts) == len(instances), "each pod's facts go with its instances"
        await real(instances, gone, keep, facts)

    monkeypatch.setattr(store, "write_instances", counting)
    await tracker.flush()
    assert calls == [10, 10, 10, 5]
    assert not tracker.pending
    found = await tracker.documents([("c1", f"p{n}") for n in range(35)])
    assert len(found) == 35


async def test_a_failed_batch_stays_queued_under_what_came_since(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = InstanceTracker(store, batch_size=10)
    tracker.observe(("c1", "p1"), pod("p1", "first"))
    real = store.write_instances

    async def failing(instances: Any, gone: Any, keep: int, facts: Any) -> None:
        # While the write is out, the container restarts.
        tracker.observe(("c1", "p1"), pod("p1", "second", restarted_from="first"))
        raise StoreError("down")

    monkeypatch.setattr(store, "write_instances", failing)
    with pytest.raises(StoreError):
        await tracker.flush()
    monkeypatch.setattr(store, "write_instances", real)
    (live, finished) = (await tracker.of([("c1", "p1")]))[("c1", "p1")]
    assert [i.instanceId.id for i in live] == ["second"]
    assert [[i.instanceId.id for i in b] for b in finished] == [["first"]]
    await tracker.flush()
    assert not tracker.pending
    stored = sorted((i.container_id, i.finished) for i in await store.instances([("c1", "p1")]))
    assert stored == [("first", "2026-11-30T09:59:00Z"), ("second", None)]
    line = msgspec.json.decode(await store.export_lines("c1", ["p1"], ["null"]))
    assert line["result"]["pod"]["name"] == "p1", "the pod's facts were kept for the retry"


async def test_a_flush_during_a_read_hides_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = InstanceTracker(store)
    tracker.observe(("c1", "p1"), pod("p1", "first"))
    real = store.instances

    async def read_then_flush(keys: Any) -> Any:
        before = await real(keys)  # read before the write commits...
        await tracker.flush()  # ...which takes the pod out of the queue meanwhile
        return before

    monkeypatch.setattr(store, "instances", read_then_flush)
    found = await tracker.of([("c1", "p1")])
    assert [i.instanceId.id for i in found[("c1", "p1")][0]] == ["first"]
