"""The pod subresources that kube-apiserver hands to the kubelet: ``log`` and ``exec``.

kube-apiserver answers ``pods/{name}/log`` by validating the options and the
container name itself, then streaming the kubelet's answer back; kubelet errors
(a waiting container, no previous instance) come back as 400 Status bodies with
the kubelet's text as message. ``pods/{name}/exec`` is checked the same way
(pod, container, node, upgrade) and then becomes a WebSocket: ``v5.channel.k8s.io``
is served by the API server's stream translator, ``v4.channel.k8s.io`` by the
kubelet itself, which is why some messages differ between the two. Frames carry
a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a JSON metav1.Status when
the command ends), 4 resize (``{"Width":..,"Height":..}``), and in v5 only 255
``[255, channel]`` to close one stream. The server sends one empty frame on the
lowest open output channel first, and closes with code 1000 after the Status.

Known differences from a real server:
- a WebSocket request without a supported subprotocol gets a bare 403 (what the
  kubelet's handshake answers for unknown ones); a real kubelet would also speak
  the older ``channel.k8s.io``/``base64.channel.k8s.io`` protocols and no protocol;
- SPDY (``POST`` with ``Upgrade: SPDY/3.1``) is not spoken: it gets 400
  "Upgrade request required" like a plain GET;
- an exec without ``command`` is refused with 400 before the upgrade (a real
  runtime fails it later);
- resize frames are recorded whether or not ``tty`` was asked for (the real
  server only reads them for a terminal).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from podindex.sim import status as st
from podindex.sim.logs import (
    NS,
    LogError,
    LogOptions,
    LogView,
    TimestampFormatter,
    choose_container,
    container_names,
    parse_log_options,
    parse_rfc3339,
    resolve_instance,
)
from podindex.sim.logs import (
    parse_bool as _parse_bool,
)
from podindex.sim.shell import ExecSession, NotExecutable, Shell, default_files
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
            stored = cluster.stored(POD, namespace, name)
            pod_rv = -1 if stored is None else stored.rv
            if pod_rv != seen_rv:  # only a write to this pod can end the instance
                seen_rv = pod_rv
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


# --- exec ------------------------------------------------------------------------------

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
BEARER_PROTOCOL = "base64url.bearer.authorization.k8s.io."


def go_status(
    status: str,
    *,
    message: str | None = None,
    reason: str | None = None,
    details: JSON | None = None,
    code: int | None = None,
) -> JSON:
    """metav1.Status as encoding/json writes it on the error channel (no kind/apiVersion)."""
    body: JSON = {"metadata": {}, "status": status}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    if code:
        body["code"] = code
    return body


def internal_error(cause: str) -> JSON:
    """apierrors.NewInternalError(err)."""
    return go_status(
        "Failure",
        message=f"Internal error occurred: {cause}",
        reason="InternalError",
        details={"causes": [{"message": cause}]},
        code=500,
    )


def exit_status(argv: list[str], code: int, protocol: str) -> JSON:
    """The error-channel Status of a command that exited with ``code``.

    v4 comes straight from the kubelet (containerd's CodeExitError text); v5 goes
    through the API server's stream translator, which re-wraps the exit error
    that client-go's v4 decoder made of the kubelet's Status.
    """
    if code == 0:
        return go_status("Success")
    inner = (
        f"command terminated with exit code {code}"
        if protocol == V5
        else f"error executing command [{' '.join(argv)}], exit code {code}"
    )
    return go_status(
        "Failure",
        message=f"command terminated with non-zero exit code: {inner}",
        reason="NonZeroExitCode",
        details={"causes": [{"reason": "ExitCode", "message": str(code)}]},
    )


def offered_protocols(request: web.Request) -> list[str]:
    raw = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    return [p.strip() for p in raw.split(",") if p.strip()]


def _exec_bool(query: Mapping[str, str], name: str) -> bool:
    try:
        return _parse_bool(query, name)
    except LogError as err:
        raise StatusError(err.body) from None


class PodExec:
    """GET /api/v1/namespaces/{ns}/pods/{name}/exec, upgraded to a channel.k8s.io WebSocket."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def _container(self, pod: JSON, wanted: str | None) -> str:
        """streamLocation's container choice and its messages."""
        name = pod["metadata"]["name"]
        spec = pod.get("spec", {})
        containers = [c["name"] for c in spec.get("containers") or []]
        if not wanted:
            if len(containers) == 1:
                return str(containers[0])
            if not containers:
                raise StatusError(
                    st.bad_request(f"a container name must be specified for pod {name}")
                )
            message = (
                f"a container name must be specified for pod {name}, "
                f"choose one of: [{' '.join(containers)}]"
            )
            inits = [c["name"] for c in spec.get("initContainers") or []]
            if inits:
                message += f" or one of the init containers: [{' '.join(inits)}]"
            raise StatusError(st.bad_request(message))
        if wanted not in container_names(pod):
            raise StatusError(st.bad_request(f"container {wanted} is not valid for pod {name}"))
        return wanted

    async def handle(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        q = request.query
        command = q.getall("command", [])
        stdin, stdout = _exec_bool(q, "stdin"), _exec_bool(q, "stdout")
        stderr, tty = _exec_bool(q, "stderr"), _exec_bool(q, "tty")
        pod = self.cluster.get_pod(namespace, name)
        if pod is None:
            raise StatusError(st.not_found(POD, name))
        container = self._container(pod, q.get("container") or None)
        if not pod.get("spec", {}).get("nodeName"):
            raise StatusError(st.bad_request(f"pod {name} does not have a host assigned"))
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise StatusError(st.bad_request("Upgrade request required"))
        offered = offered_protocols(request)
        protocol = V5 if V5 in offered else V4 if V4 in offered else None
        if protocol is None:
            # x/net/websocket refuses a subprotocol it does not speak: bare 403, no body.
            return web.Response(status=403, body=b"")
        if not command:
            raise StatusError(st.bad_request("you must specify at least one command"))
        if not (stdin or stdout or stderr):
            raise StatusError(
                st.bad_request("you must specify at least 1 of stdin, stdout, stderr")
            )
        if tty:
            stderr = False  # a terminal has one output stream (kubelet NewOptions)
        instance = self._running_instance(pod, container)
        if instance is None and protocol == V4:
            return web.Response(
                status=500,
                text=f'container not found ("{container}")',
                content_type="text/plain",
            )
        session = ExecSession(
            namespace, name, container, list(command), stdin, stdout, stderr, tty, protocol
        )
        self.cluster.exec_sessions.append(session)
        ws = web.WebSocketResponse(protocols=(protocol,), autoping=True, max_msg_size=0)
        await ws.prepare(request)
        try:
            first = STDOUT if stdout else STDERR if stderr else ERROR
            await ws.send_bytes(bytes([first]))
            if instance is None:
                cause = f'unable to upgrade connection: container not found ("{container}")'
                await self._finish(ws, session, internal_error(cause), None)
            else:
                await self._run(ws, session, pod, instance)
        finally:
            session.ended = True
            if not ws.closed:
                await ws.close()
        return ws

    @staticmethod
    def _running_instance(pod: JSON, container: str) -> str | None:
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in pod.get("status", {}).get(key) or []:
                if cs.get("name") == container and (cs.get("state") or {}).get("running"):
                    return str(cs.get("containerID", ""))
        return None

    async def _run(
        self, ws: web.WebSocketResponse, session: ExecSession, pod: JSON, instance: str
    ) -> None:
        stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        if not session.stdin:
            stdin.put_nowait(None)

        async def send(channel: int, data: bytes) -> None:
            if data and not ws.closed:
                await ws.send_bytes(bytes([channel]) + data)

        async def out(data: bytes) -> None:
            if session.stdout:
                await send(STDOUT, data)

        async def err(data: bytes) -> None:
            if session.tty:
                await out(data)
            elif session.stderr:
                await send(STDERR, data)

        meta = pod["metadata"]
        shell = Shell(
            hostname=meta["name"],
            files={
                **default_files(
                    meta["namespace"], meta["name"], pod.get("status", {}).get("podIP", "")
                ),
                **self.cluster.container_files,
            },
            out=out,
            err=err,
            tty=session.tty,
            size=lambda: session.sizes[-1] if session.sizes else None,
        )
        reader = asyncio.create_task(self._read_client(ws, session, stdin))
        process = asyncio.create_task(shell.exec(session.command, stdin))
        killed = asyncio.create_task(self._container_stopped(meta, session.container, instance))
        try:
            await asyncio.wait({reader, process, killed}, return_when=asyncio.FIRST_COMPLETED)
            if process.done():
                try:
                    code: int | None = process.result()
                    status = exit_status(session.command, code or 0, session.protocol)
                except NotExecutable:
                    code, status = None, self._not_executable(session)
                await self._finish(ws, session, status, code)
            elif killed.done():
                code = 137  # the container stopped: its processes got SIGKILL
                await self._finish(
                    ws, session, exit_status(session.command, code, session.protocol), code
                )
        finally:
            for task in (reader, process, killed):
                task.cancel()
            await asyncio.gather(reader, process, killed, return_exceptions=True)

    @staticmethod
    def _not_executable(session: ExecSession) -> JSON:
        binary = session.command[0]
        why = (
            f"stat {binary}: no such file or directory"
            if binary.startswith("/")
            else "executable file not found in $PATH"
        )
        runtime = (
            "error executing command in container: failed to exec in container: failed to start "
            f'exec "{uuid.uuid4().hex}{uuid.uuid4().hex}": OCI runtime exec failed: exec failed: '
            f'unable to start container process: exec: "{binary}": {why}: unknown'
        )
        kubelet = internal_error(runtime)
        if session.protocol == V4:
            return kubelet
        return internal_error(str(kubelet["message"]))

    @staticmethod
    async def _finish(
        ws: web.WebSocketResponse, session: ExecSession, status: JSON, code: int | None
    ) -> None:
        session.status = status
        session.exit_code = code
        if not ws.closed:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(status, separators=(",", ":")).encode())
            await ws.close(code=1000)

    @staticmethod
    async def _read_client(
        ws: web.WebSocketResponse, session: ExecSession, stdin: asyncio.Queue[bytes | None]
    ) -> None:
        """Client frames: stdin, resize, and (v5) the close signal for a channel."""
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data = bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                data = str(msg.data).encode()
            else:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and session.stdin and not session.stdin_closed:
                session.received += payload
                if payload:
                    stdin.put_nowait(payload)
            elif channel == RESIZE:
                session.sizes.extend(_terminal_sizes(payload))
            elif (
                channel == CLOSE
                and session.protocol == V5
                and payload == bytes([STDIN])
                and not session.stdin_closed
            ):
                session.stdin_closed = True
                stdin.put_nowait(None)
        stdin.put_nowait(None)

    async def _container_stopped(self, meta: JSON, container: str, instance: str) -> None:
        """Returns when the exec'd container instance is gone (pod deleted, stopped, restarted)."""
        cluster = self.cluster
        seen_rv = -1
        while True:
            stored = cluster.stored(POD, meta["namespace"], meta["name"])
            if stored is not None and stored.rv == seen_rv:
                await cluster.wait_for_change(None)
                continue
            seen_rv = -1 if stored is None else stored.rv
            pod = cluster.get_pod(meta["namespace"], meta["name"])
            if pod is None or pod["metadata"]["uid"] != meta["uid"]:
                return
            if self._running_instance(pod, container) != instance:
                return
            await cluster.wait_for_change(None)


def _terminal_sizes(payload: bytes) -> list[tuple[int, int]]:
    """TerminalSize JSON values ({"Width":..,"Height":..}, one per json.Encoder line)."""
    sizes: list[tuple[int, int]] = []
    decoder = json.JSONDecoder()
    text = payload.decode(errors="replace")
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos] in " \r\n\t":
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        if isinstance(value, dict):
            sizes.append((int(value.get("Width", 0)), int(value.get("Height", 0))))
    return sizes


__all__ = ["V4", "V5", "LogOptions", "PodExec", "PodLogs", "StatusError", "log_headers"]
