"""History writes from a process of their own, so that they use the second core.

In one process the write-behind is serial in practice: building rows,
encoding and compressing them and SQLite's statements all want the one GIL
(SQLite's thread gives it up around every row's step and waits for it back),
so the parts barely overlap. :class:`ProcessStore` keeps the
:class:`~podindex.store.base.Store` interface but sends the writes
(``write``, ``mark_dead_except``, ``prune``) to a child process that holds
its own store of the same URL: the service builds the next batch while the
child encodes, compresses and commits the previous one. Reads stay in the
service, on its own store (SQLite's WAL and PostgreSQL both let them run
beside the writer).

The child is a ``python -m podindex.store.process`` with two pipes: frames
(a 4-byte length, then msgpack) of requests on its stdin, of answers on its
stdout. A write is answered only once the child's store has committed it, so
:meth:`~podindex.history.HistoryWriter.commit` still acknowledges only what
is durable. The child's death fails the writes it had (a
:class:`~podindex.store.base.StoreError`: the writer keeps them pending and
retries), is logged, and the next write starts a new child. The child
ignores SIGINT/SIGTERM and exits once its stdin closes: when the service
closes the store (after waiting for its writes), or when the service dies,
even by SIGKILL; so it never outlives the service by more than the write it
is doing, and the service reaps it (no zombie).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import sys
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from podindex.store.base import (
    Lease,
    PodFacts,
    PodWrite,
    Store,
    StoredInstance,
    StoredIntegration,
    StoredPod,
    StoreError,
    StoreRejected,
    open_store,
)

log = logging.getLogger("podindex.store.process")

_HEADER = struct.Struct(">I")
_OK, _FAILED, _REJECTED = 0, 1, 2
_START_TIMEOUT = 60.0
"""Seconds for a new child to start and open its store (PostgreSQL's connect and
migration check included)."""
_STOP_TIMEOUT = 30.0
"""Seconds the child has to finish its writes and close once told to, before it is killed."""

_BUFFER = 2**22
"""Bytes read from a pipe before waiting for the reader (a batch's frame is a few MB)."""

_encode = msgspec.msgpack.Encoder().encode
_decode_request = msgspec.msgpack.Decoder(tuple[int, str, msgspec.Raw]).decode
_decode_answer = msgspec.msgpack.Decoder(tuple[int, int, Any]).decode
_decode_mark = msgspec.msgpack.Decoder(tuple[str, str, list[str], float]).decode


def _frame(message: object) -> bytes:
    body = _encode(message)
    return _HEADER.pack(len(body)) + body


class _Child:
    """One writer process and the answers it owes."""

    def __init__(self, process: asyncio.subprocess.Process, requests: int) -> None:
        self.process = process
        self._requests = requests
        """The write end of the child's stdin, written by ``_sender`` only."""
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podindex-writer-pipe")
        """Sends the frames, in order, with blocking writes (the GIL given up meanwhile):
        a batch's frame is megabytes, and the event loop would push it a pipe's
        64 KB at a time, only when it is free, while the child waits for the rest."""
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.sequence = 0
        self.gone: str | None = None
        """Why it can take no more requests (it died, or is being stopped)."""
        self.reading: asyncio.Task[None] | None = None

    async def call(self, op: str, args: object) -> Any:
        if self.gone is not None:
            raise StoreError(self.gone)
        self.sequence += 1
        seq = self.sequence
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self.waiting[seq] = answer
        try:
            await loop.run_in_executor(self._sender, self._send, (seq, op, args))
            return await answer
        except OSError as exc:
            raise StoreError(f"the store's writer process is gone: {exc}") from None
        finally:
            self.waiting.pop(seq, None)

    def _send(self, message: object) -> None:
        """On the sender thread."""
        data = memoryview(_frame(message))
        while data:
            if self._requests < 0:
                raise BrokenPipeError("the pipe to the writer process is closed")
            data = data[os.write(self._requests, data) :]

    def _close_requests(self) -> None:
        """On the sender thread, after every frame sent before."""
        if self._requests >= 0:
            os.close(self._requests)
            self._requests = -1

    async def read_answers(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                (size,) = _HEADER.unpack(await stdout.readexactly(_HEADER.size))
                seq, kind, value = _decode_answer(await stdout.readexactly(size))
                answer = self.waiting.get(seq)
                if answer is None or answer.done():
                    continue  # its caller was cancelled
                if kind == _OK:
                    answer.set_result(value)
                elif kind == _REJECTED:
                    answer.set_exception(StoreRejected(value))
                else:
                    answer.set_exception(StoreError(value))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        code = await self.process.wait()  # reaped: never a zombie
        if self.gone is None:
            self.gone = f"the store's writer process exited (code {code})"
            log.error("history: %s; its writes are retried in a new one", self.gone)
        for answer in self.waiting.values():
            if not answer.done():
                answer.set_exception(StoreError(self.gone))

    async def stop(self) -> None:
        """Let it finish what it was sent, close its store and exit; kill it if it hangs."""
        if self.gone is None:
            self.gone = "the store's writer process was stopped"
        closing = asyncio.get_running_loop().run_in_executor(self._sender, self._close_requests)
        stopped = asyncio.gather(closing, self.process.wait())
        try:
            await asyncio.wait_for(asyncio.shield(stopped), _STOP_TIMEOUT)
        except TimeoutError:
            log.error("history: the store's writer process did not stop; killed")
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await stopped  # a write blocked on the pipe fails once the child is gone
        self._sender.shutdown(wait=False)
        if self.reading is not None:
            await self.reading


class ProcessStore:
    """A :class:`~podindex.store.base.Store` whose writes run in a child process.

    ``local`` is a store of the same URL in this process: it migrates the
    schema at :meth:`open` and answers every read.
    """

    def __init__(self, url: str, local: Store) -> None:
        self._url = url
        self.local = local
        self.url = local.url
        self.write_chunk = local.write_chunk
        self._child: _Child | None = None
        self._starting: asyncio.Lock | None = None
        self.starts = 0
        """Children started so far (a second one means the first died)."""

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id, while there is one."""
        child = self._child
        return None if child is None or child.gone is not None else child.process.pid

    async def open(self, target_version: int | None = None) -> None:
        await self.local.open(target_version)
        try:
            await self._ensure_child()
        except BaseException:
            await self.local.close()
            raise

    async def close(self) -> None:
        child, self._child = self._child, None
        try:
            if child is not None:
                await child.stop()
        finally:
            await self.local.close()

    async def _ensure_child(self) -> _Child:
        child = self._child
        if child is not None and child.gone is None:
            return child
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            child = self._child
            if child is not None and child.gone is None:
                return child
            self._child = None
            child = await self._start()
            self._child = child
            return child

    async def _start(self) -> _Child:
        requests, send = os.pipe()  # not inherited (PEP 446) but as the child's stdin
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "podindex.store.process",
                stdin=requests,
                stdout=asyncio.subprocess.PIPE,
                limit=_BUFFER,
            )
        except OSError as exc:
            os.close(send)
            raise StoreError(f"cannot start the store's writer process: {exc}") from exc
        finally:
            os.close(requests)
        self.starts += 1
        child = _Child(process, send)
        child.reading = asyncio.create_task(child.read_answers(), name="history writer process")
        try:
            # The URL travels in the pipe, not the command line (it may hold a password).
            await asyncio.wait_for(child.call("open", self._url), _START_TIMEOUT)
        except BaseException as exc:
            await child.stop()
            if isinstance(exc, TimeoutError):
                raise StoreError("the store's writer process did not start in time") from None
            raise
        return child

    async def _call(self, op: str, args: object) -> Any:
        child = await self._ensure_child()
        return await child.call(op, args)

    # --- writes: in the child ---------------------------------------------------

    async def write(self, batch: Sequence[PodWrite]) -> None:
        # Prepared here (on the store's thread: compression gives the GIL up)
        # so that the child does only the transaction: the two halves of a
        # write cost about the same then, one on each core.
        if batch:
            await self.write_prepared(await self.local.prepare(batch))

    async def prepare(self, batch: Sequence[PodWrite]) -> Sequence[Any]:
        return await self.local.prepare(batch)

    async def write_prepared(self, prepared: Sequence[Any]) -> None:
        await self._call("write", prepared)

    async def mark_dead_except(
        self, cluster: str, source: str, keep: Collection[str], at: float
    ) -> int:
        return int(await self._call("mark_dead_except", (cluster, source, list(keep), at)))

    async def prune(self, dead_before: float) -> int:
        return int(await self._call("prune", dead_before))

    # --- everything else: here ----------------------------------------------------

    async def schema_version(self) -> int:
        return await self.local.schema_version()

    async def load_live(
        self, clusters: Collection[str] | None = None
    ) -> list[tuple[StoredPod, bytes | None]]:
        return await self.local.load_live(clusters)

    async def rows(self) -> list[StoredPod]:
        return await self.local.rows()

    async def by_name(self, name: str, namespace: str | None) -> StoredPod | None:
        return await self.local.by_name(name, namespace)

    async def live_on_node(self, node: str) -> list[StoredPod]:
        return await self.local.live_on_node(node)

    async def latest_by_ip(self, ip: str) -> StoredPod | None:
        return await self.local.latest_by_ip(ip)

    async def all_leases(self, ended_after: float) -> list[Lease]:
        return await self.local.all_leases(ended_after)

    async def pod(self, cluster: str, uid: str) -> StoredPod | None:
        return await self.local.pod(cluster, uid)

    async def pod_object(self, cluster: str, uid: str) -> bytes | None:
        return await self.local.pod_object(cluster, uid)

    async def dead_pods(self, dead_since: float) -> list[StoredPod]:
        return await self.local.dead_pods(dead_since)

    # Container instances change seldom (a restart, a pod's end): written in process.

    async def write_instances(
        self,
        instances: Sequence[StoredInstance],
        gone: Sequence[tuple[str, str, str]],
        keep: int,
        facts: Sequence[PodFacts] = (),
    ) -> None:
        await self.local.write_instances(instances, gone, keep, facts)

    async def instances(self, pods: Collection[tuple[str, str]]) -> list[StoredInstance]:
        return await self.local.instances(pods)

    async def instance_documents(
        self, pods: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str] | None]:
        return await self.local.instance_documents(pods)

    async def export_lines(
        self, cluster: str, uids: Sequence[str], deployment_ids: Sequence[str]
    ) -> bytes:
        return await self.local.export_lines(cluster, uids, deployment_ids)

    async def instance_facets(self) -> list[tuple[str, str, str, str]]:
        return await self.local.instance_facets()

    async def integrations(self) -> list[StoredIntegration]:
        return await self.local.integrations()

    async def save_integration(self, integration: StoredIntegration) -> None:
        await self.local.save_integration(integration)

    async def save_integration_health(
        self, integration_id: str, last_error: str, last_error_phase: str, last_sync: float | None
    ) -> bool:
        return await self.local.save_integration_health(
            integration_id, last_error, last_error_phase, last_sync
        )

    async def delete_integration(self, integration_id: str) -> bool:
        return await self.local.delete_integration(integration_id)

    async def ipsets(self) -> list[tuple[str, str]]:
        return await self.local.ipsets()

    async def save_ipset(self, name: str, spec_json: str, at: float) -> None:
        await self.local.save_ipset(name, spec_json, at)

    async def delete_ipset(self, name: str) -> bool:
        return await self.local.delete_ipset(name)


# --- the child --------------------------------------------------------------------


async def _serve_requests() -> None:
    """The child's loop: answer each request on stdin, several at once, until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_BUFFER)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    store: Store | None = None
    running: set[asyncio.Task[None]] = set()

    async def answer(seq: int, op: str, args: Any) -> None:
        nonlocal store
        try:
            if op == "open":
                store = open_store(str(args))
                await store.open()
                value: object = None
            elif store is None:
                raise StoreError("the store's writer process has no store open")
            elif op == "write":
                await store.write_prepared(msgspec.msgpack.decode(args))
                value = None
            elif op == "mark_dead_except":
                cluster, source, keep, at = _decode_mark(args)
                value = await store.mark_dead_except(cluster, source, keep, at)
            elif op == "prune":
                value = await store.prune(msgspec.msgpack.decode(args, type=float))
            else:
                raise StoreError(f"the store's writer process knows no {op!r}")
        except StoreRejected as exc:
            writer.write(_frame((seq, _REJECTED, str(exc))))
        except StoreError as exc:
            writer.write(_frame((seq, _FAILED, str(exc))))
        except Exception as exc:  # a bug: the writer retries, and it is logged here
            log.exception("the store's writer process failed a %s", op)
            writer.write(_frame((seq, _FAILED, f"{type(exc).__name__}: {exc}")))
        else:
            writer.write(_frame((seq, _OK, value)))
        with contextlib.suppress(ConnectionError):  # the service is gone: no one to tell
            await writer.drain()

    try:
        while True:
            try:
                (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                request = await reader.readexactly(size)
            except asyncio.IncompleteReadError:
                break  # the service closed the store, or died
            seq, op, args = _decode_request(request)
            if op == "open":
                await answer(
                    seq, op, msgspec.msgpack.decode(args, type=str)
                )  # before anything else
                continue
            task = asyncio.create_task(answer(seq, op, args))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running)
    finally:
        if store is not None:
            await store.close()
        writer.close()


def main() -> None:
    # Stopped by its stdin closing, not by signals: the terminal's Ctrl-C or a
    # TERM sent to the whole group must not cut a write short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_requests())


if __name__ == "__main__":
    main()
