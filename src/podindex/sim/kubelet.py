"""The pod subresources that kube-apiserver hands to the kubelet: ``log`` (and ``exec``).

kube-apiserver answers ``pods/{name}/log`` by validating the options and the
container name itself, then streaming the kubelet's answer back; kubelet errors
(a waiting container, no previous instance) come back as 400 Status bodies with
the kubelet's text as message. This module is that pair, for the emulator:
request checks in the API server's order, then the log read from
:mod:`podindex.sim.logs`, plain text, chunked when it streams.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from podindex.sim import status as st
from podindex.sim.logs import (
    NS,
    LogError,
    LogOptions,
    LogView,
    TimestampFormatter,
    choose_container,
    parse_log_options,
    parse_rfc3339,
    resolve_instance,
)
from podindex.sim.store import POD

if TYPE_CHECKING:
    from podindex.sim.cluster import FakeCluster

JSON = dict[str, Any]
GO_CHUNKING_THRESHOLD = 2048
WRITE_BATCH = 256 * 1024
MAX_LINES_PER_READ = 20_000


class StatusError(Exception):
    """Answer with this Status body (raised by the handlers here)."""

    def __init__(self, body: JSON) -> None:
        super().__init__(body.get("message", ""))
        self.body = body


def log_headers() -> dict[str, str]:
    return {
        "Audit-Id": str(uuid.uuid4()),
        "Cache-Control": "no-cache, private",
        "Content-Type": "text/plain",
    }


class _Budget:
    """limitBytes: how many bytes may still be sent (None = unlimited)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def take(self, data: bytes) -> bytes:
        if self.left is None:
            return data
        data = data[: self.left]
        self.left -= len(data)
        return data

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0


class PodLogs:
    """GET /api/v1/namespaces/{ns}/pods/{name}/log."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    async def handle(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        cluster = self.cluster
        now = time.time_ns()
        try:
            options = parse_log_options(request.query, name, now)
        except LogError as err:
            raise StatusError(err.body) from None
        pod = cluster.get_pod(namespace, name)
        if pod is None:
            raise StatusError(st.not_found(POD, name))
        try:
            container = choose_container(pod, options.container)
            if not pod.get("spec", {}).get("nodeName"):
                # No node, no kubelet: the API server streams nothing (LocationStreamer, nil URL).
                return web.Response(status=200, body=b"", headers=log_headers())
            instance = resolve_instance(pod, container, options.previous)
        except LogError as err:
            raise StatusError(err.body) from None
        log = cluster.container_log(instance.container_id)
        view = LogView(instance, log, cluster.log_tick)
        tick_from, tick_to, line_from, line_to = view.start_cursor(options, now)
        stamp = TimestampFormatter() if options.timestamps else None
        budget = _Budget(options.limit_bytes)
        follow = options.follow and instance.end_ns is None and not options.previous

        if not follow:
            first = self._render(view, stamp, tick_from, tick_to, line_from, line_to, budget)
            body = b"".join(first)
            if len(body) < GO_CHUNKING_THRESHOLD:
                return web.Response(status=200, body=body, headers=log_headers())
            resp = web.StreamResponse(status=200, headers=log_headers())
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(body)
            await resp.write_eof()
            return resp

        resp = web.StreamResponse(status=200, headers=log_headers())
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        cluster.active_log_follows += 1
        try:
            for chunk in self._render(view, stamp, tick_from, tick_to, line_from, line_to, budget):
                await resp.write(chunk)
            if not budget.spent:
                await self._follow(resp, view, pod, container, stamp, budget, tick_to, line_to)
            await resp.write_eof()
        finally:
            cluster.active_log_follows -= 1
        return resp

    @staticmethod
    def _render(
        view: LogView,
        stamp: TimestampFormatter | None,
        tick_from: int,
        tick_to: int,
        line_from: int,
        line_to: int,
        budget: _Budget,
    ) -> list[bytes]:
        """The lines in range as write-sized chunks, cut at the byte budget."""
        chunks: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for t, text in view.lines(tick_from, tick_to, line_from, line_to):
            line = stamp(t) + text if stamp is not None else text
            batch.append(line)
            size += len(line)
            if size >= WRITE_BATCH or (budget.left is not None and size >= budget.left):
                chunks.append(budget.take(b"".join(batch)))
                batch, size = [], 0
                if budget.spent:
                    return chunks
        if batch:
            chunks.append(budget.take(b"".join(batch)))
        return [c for c in chunks if c]

    async def _follow(
        self,
        resp: web.StreamResponse,
        view: LogView,
        pod: JSON,
        container: str,
        stamp: TimestampFormatter | None,
        budget: _Budget,
        tick_pos: int,
        line_pos: int,
    ) -> None:
        """Stream new lines until the instance ends, the pod goes, or the byte budget is spent."""
        cluster = self.cluster
        log = view.log
        assert log is not None
        uid = pod["metadata"]["uid"]
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        seen_rv = -1
        end_ns: int | None = None
        while True:
            if cluster.resource_version != seen_rv:
                seen_rv = cluster.resource_version
                end_ns = self._instance_end(namespace, name, uid, container, view)
            now = time.time_ns()
            horizon = now if end_ns is None else end_ns
            tick_to = view.ticks_until(horizon)
            line_to = log.end
            line_to = min(line_to, line_pos + MAX_LINES_PER_READ)
            if tick_to > tick_pos or line_to > line_pos:
                line_pos = max(line_pos, log.base)
                for chunk in self._render(
                    view, stamp, tick_pos, tick_to, line_pos, line_to, budget
                ):
                    await resp.write(chunk)
                tick_pos, line_pos = tick_to, line_to
                if budget.spent:
                    return
                if line_pos < log.end:
                    continue  # more appended lines are waiting: no sleep
            if end_ns is not None:
                return
            wait = 1.0
            if view.tick_ns:
                wait = max(0.0, (view.tick_time(tick_pos) - time.time_ns()) / NS)
            await _wait_either(log.wait(wait), cluster.wait_for_change(wait), wait)

    def _instance_end(
        self, namespace: str, name: str, uid: str, container: str, view: LogView
    ) -> int | None:
        """None while the followed instance runs; else when it stopped (now if unknown)."""
        pod = self.cluster.get_pod(namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return time.time_ns()
        wanted = view.instance.container_id
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in pod.get("status", {}).get(key) or []:
                if cs.get("name") != container:
                    continue
                state = cs.get("state") or {}
                if state.get("running") is not None and cs.get("containerID") == wanted:
                    return None
                for record in (
                    state.get("terminated"),
                    (cs.get("lastState") or {}).get("terminated"),
                ):
                    if record and record.get("containerID") == wanted and record.get("finishedAt"):
                        return parse_rfc3339(str(record["finishedAt"])) + NS - 1
        return time.time_ns()


async def _wait_either(a: Any, b: Any, max_wait: float) -> None:
    tasks = {asyncio.ensure_future(a), asyncio.ensure_future(b)}
    try:
        await asyncio.wait(tasks, timeout=max_wait + 0.05, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["LogOptions", "PodLogs", "StatusError", "log_headers"]
