"""Keeping CPython's cyclic garbage collector off the index's long-lived heap.

The index holds millions of objects that live as long as their pods (100k
pods' structs, maps, lists and records). CPython runs a full collection,
which walks every one of them, each time the young generations have
promoted a quarter as many objects again; with pods churning that is one
~0.45 s pause (100k pods) every few seconds, in the middle of lookups and
history writes (measured 12 to 20 µs of each history change, churn of 100k
pods).

Once the first sync is in, :func:`freeze` moves everything alive into the
permanent generation, which collections skip: they then walk only what was
made since. A frozen object that later becomes part of garbage with a
reference cycle would never be collected, so :func:`keep_frozen` unfreezes,
collects once and freezes again every ``every`` seconds: one full pause an
hour instead of one every few seconds. Garbage without cycles (most of it:
a replaced pod's struct tree) is freed by reference counting, frozen or not.

Between those, churn replaces pods, and their new objects collect in the
oldest generation again: after the first freeze, each full collection
walked all of them, 30 ms growing to 130 ms within 20 s at 10k changes/s
(``bench_history.py --offered``). So every ``check`` seconds (10)
:func:`keep_frozen` also freezes, without collecting, what is alive if a
full collection since took ``slow`` (10 ms) or more: the next one walks
only what came after. Each such freeze also takes what requests in flight
hold; what of that later becomes cyclic garbage waits for the hourly
collection, which is why these freezes are rare and only under churn.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("podindex.heap")

REFREEZE_EVERY = 3600.0
CHECK_EVERY = 10.0
SLOW_FULL_COLLECTION = 0.010
MIN_PODS = 10_000
"""Below this many pods a full collection is short enough to leave alone."""


def freeze() -> float:
    """Collect everything (cycles included), then freeze what is alive; returns the seconds it took."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


class FullCollections:
    """The longest full (oldest-generation) collection since :meth:`reset` (None:
    none), timed through ``gc.callbacks`` while registered (a context manager)."""

    def __init__(self) -> None:
        self.longest: float | None = None
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            took = time.perf_counter() - self._started
            self.longest = took if self.longest is None else max(self.longest, took)

    def reset(self) -> None:
        self.longest = None

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def keep_frozen(
    ready: Callable[[], bool],
    pods: Callable[[], int],
    every: float = REFREEZE_EVERY,
    min_pods: int = MIN_PODS,
    check: float = CHECK_EVERY,
    slow: float = SLOW_FULL_COLLECTION,
) -> None:
    """Once ``ready()`` and ``pods() >= min_pods`` (polled each second), :func:`freeze`
    every ``every`` seconds; every ``check`` seconds, freeze (without collecting)
    if a full collection since took ``slow`` seconds or more."""
    # Readiness is computed when asked (Service.ready): there is no event to wait on.
    while not (ready() and pods() >= min_pods):  # noqa: ASYNC110
        await asyncio.sleep(1.0)
    with FullCollections() as full:
        while True:
            took = freeze()
            log.info(
                "heap: %d objects frozen out of collections (%.2fs)", gc.get_freeze_count(), took
            )
            full.reset()
            refreeze_at = time.monotonic() + every
            while time.monotonic() < refreeze_at:
                await asyncio.sleep(min(check, max(0.0, refreeze_at - time.monotonic())))
                if full.longest is not None and full.longest >= slow:
                    gc.freeze()
                    full.reset()
