"""The heap freeze: collections skip what the first sync loaded, and refreezing collects cycles."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest

from podindex import heap


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_freeze_collects_cycles_then_takes_the_living_out_of_collections() -> None:
    dead = cycle()  # garbage already: the freeze's collection frees it
    kept = [Node() for _ in range(1000)]
    heap.freeze()
    assert dead() is None
    assert gc.get_freeze_count() >= len(kept)
    later = cycle()  # garbage made after the freeze is still collected
    gc.collect()
    assert later() is None


def test_a_frozen_cycle_is_freed_by_the_next_refreeze() -> None:
    holder = [Node()]
    holder[0].other = holder[0]
    ref = weakref.ref(holder[0])
    heap.freeze()
    holder.clear()  # a cycle only: reference counting cannot free it
    gc.collect()
    assert ref() is not None, "frozen objects are skipped by collections"
    heap.freeze()
    assert ref() is None


async def test_keep_frozen_waits_for_the_first_sync_and_enough_pods() -> None:
    gc.unfreeze()
    state = {"ready": False, "pods": 50_000}
    task = asyncio.create_task(
        heap.keep_frozen(lambda: state["ready"], lambda: state["pods"], every=3600)
    )
    try:
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() == 0  # not synced yet
        state.update(ready=True, pods=10)
        await asyncio.sleep(1.2)
        assert gc.get_freeze_count() == 0  # synced, but too few pods to matter
        state["pods"] = heap.MIN_PODS
        await asyncio.sleep(1.2)
        assert gc.get_freeze_count() > 0
    finally:
        task.cancel()


async def test_what_a_full_collection_leaves_alive_is_frozen_within_a_check() -> None:
    gc.unfreeze()
    gc.disable()  # no full collection but the test's own
    task = asyncio.create_task(
        heap.keep_frozen(lambda: True, lambda: heap.MIN_PODS, check=0.05, slow=0.0)
    )
    try:
        await asyncio.sleep(0.1)
        first = gc.get_freeze_count()
        assert first > 0
        kept = [Node() for _ in range(5000)]  # made after the freeze: collections walk them
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() < first + len(kept), "no full collection yet: not frozen"
        gc.collect()  # a full collection: what it leaves alive is frozen at the next check
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() >= first + len(kept)
    finally:
        gc.enable()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not any(isinstance(c, heap.FullCollections) for c in gc.callbacks)


async def test_a_quick_full_collection_freezes_nothing() -> None:
    gc.unfreeze()
    gc.disable()
    task = asyncio.create_task(
        heap.keep_frozen(lambda: True, lambda: heap.MIN_PODS, check=0.05, slow=60.0)
    )
    try:
        await asyncio.sleep(0.1)
        first = gc.get_freeze_count()
        kept = [Node() for _ in range(5000)]
        gc.collect()  # far quicker than 60 s: no reason to freeze what churned
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() < first + len(kept)
    finally:
        gc.enable()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
