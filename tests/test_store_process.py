"""The store's writer process: its death is a store failure, retried in a new one; it
never outlives the service, and closing the store reaps it.

The store contract itself runs through it too (the ``store`` fixture's
``writer-process`` parameter).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podindex.history import HistoryWriter
from podindex.index import Index
from podindex.store.base import StoreError, open_store
from podindex.store.process import ProcessStore
from tests.test_history import C, live_uids, pod
from tests.test_store import row, write


def child_pid(store: ProcessStore) -> int:
    child = store._child
    assert child is not None
    return child.process.pid


def gone(pid: int) -> bool:
    """No such process, not even a zombie (it was reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def opened(url: str) -> ProcessStore:
    store = open_store(url, writer_process=True)
    assert isinstance(store, ProcessStore)
    await store.open()
    return store


async def test_a_killed_writer_fails_its_writes_and_the_next_write_starts_another(
    store_url: str,
) -> None:
    store = await opened(store_url)
    try:
        await store.write([write(row("u1"))])
        first = child_pid(store)
        os.kill(first, signal.SIGSTOP)  # so that it dies with a write in hand
        writing = asyncio.create_task(store.write([write(row("u2"))]))
        await asyncio.sleep(0.2)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(StoreError, match="writer process exited"):
            await writing
        await store.write([write(row("u3"))])
        assert child_pid(store) != first and store.starts == 2
        assert gone(first), "the dead child is reaped"
        assert {r.uid for r in await store.rows()} >= {"u1", "u3"}
    finally:
        await store.close()


async def test_history_written_through_a_writer_that_died_loses_nothing(
    tmp_path: Path,
) -> None:
    store = await opened(f"sqlite:///{tmp_path}/history.db")
    index = Index()
    writer = HistoryWriter(store, index, flush_interval=0.01)
    task = asyncio.create_task(writer.run())
    try:
        index.upsert_pod(C, pod(1), 1000.0)
        await asyncio.wait_for(writer.commit(), 10)
        dying = child_pid(store)
        os.kill(dying, signal.SIGSTOP)  # so that it dies with a write in hand
        for n in range(2, 50):
            index.upsert_pod(C, pod(n), 1001.0)
        acknowledged = asyncio.create_task(writer.commit())
        await asyncio.sleep(0.2)
        assert not acknowledged.done()
        os.kill(dying, signal.SIGKILL)
        await asyncio.wait_for(acknowledged, 40)  # acknowledged once in the store
        assert await live_uids(store) == {f"uid-{n}" for n in range(1, 50)}
        assert writer.stats.failures >= 1 and store.starts == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_closing_the_store_stops_and_reaps_its_writer(tmp_path: Path) -> None:
    store = await opened(f"sqlite:///{tmp_path}/history.db")
    await store.write([write(row("u1"))])
    pid = child_pid(store)
    await store.close()
    assert gone(pid)
    reopened = open_store(f"sqlite:///{tmp_path}/history.db")
    await reopened.open()
    try:
        assert [r.uid for r in await reopened.rows()] == ["u1"]
    finally:
        await reopened.close()


def test_an_in_memory_database_is_written_in_process() -> None:
    assert not isinstance(open_store("sqlite://", writer_process=True), ProcessStore)


SERVICE = """
import asyncio, sys
from podindex.store.base import open_store

async def main():
    store = open_store(sys.argv[1], writer_process=True)
    await store.open()
    print(store._child.process.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_the_writer_exits_when_the_service_is_killed(tmp_path: Path) -> None:
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, f"sqlite:///{tmp_path}/history.db"],
        stdout=subprocess.PIPE,
    )
    try:
        assert service.stdout is not None
        pid = int(service.stdout.readline())
        service.kill()  # SIGKILL, to the service alone: its child is not told
        service.wait()
        deadline = time.monotonic() + 20
        while not gone(pid):  # the child's parent is now init, which reaps it
            assert time.monotonic() < deadline, "the writer outlived the service"
            time.sleep(0.05)
    finally:
        service.kill()
        service.wait()
        if service.stdout is not None:
            service.stdout.close()
