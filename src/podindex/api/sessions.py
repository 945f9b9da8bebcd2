"""Live pod sessions over WebSocket: following a container's log, and a shell (exec).

``/ws/clusters/{cluster}/namespaces/{namespace}/pods/{name}/logs`` and
``…/exec``, as ``seeds/dashboard-pod-api.md`` documents them.

Authentication happens before the upgrade is accepted: the ``Authorization``
header, or, for browsers (which cannot set headers on a WebSocket), a
subprotocol entry ``base64url.bearer.authorization.podindex.io.<token>``
offered beside ``podindex.v1`` (the protocol the server selects; the token
entry is never echoed). Never a query-string token: query strings end up in
access logs. A browser's ``Origin`` must be the page's own host or one of
``--allowed-origins`` (cross-site WebSocket hijacking). A refused upgrade is
closed before it is accepted, which the HTTP side sees as 403; errors after
that are a ``{"type": "error"}`` message and a close code 4000 + status.

Logs: the client sends ``{"type": "subscribe", "container", "follow",
"tailLines", "sinceTime", "timestamps"}``; each line is one
``{"type": "log", "data", "timestamp"}`` message. podindex always asks
Kubernetes for timestamps, so a client that reconnects with the last
``timestamp`` it saw as ``sinceTime`` gets the lines after it, none twice.
``{"type": "heartbeat"}`` goes out after ``HEARTBEAT`` seconds of silence, so
proxies keep the connection. A client that subscribes with ``"batch": true``
gets ``{"type": "logs", "lines": [{"data", "timestamp"}, …]}`` instead: the
lines of each chunk Kubernetes sent, in one message. granian sends some 10
to 15 thousand WebSocket messages a second on this project's benchmark
machine, so one message per line caps a stream there; batches go past 50k
lines a second (BENCHMARKS.md). The next chunk is read from Kubernetes only
once the last one's messages were handed to the server, so podindex holds
one chunk per stream; a slow client's backlog is in the server's and the
kernel's buffers, not in a queue of ours.

Exec: ``container`` and ``command`` (default ``/bin/sh``) in the query;
``{"type": "input", "data"}``, ``{"type": "resize", "cols", "rows"}`` and
``{"type": "close"}`` (end of input) from the client; ``{"type": "output",
"data", "stream"}`` to it, and ``{"type": "exit", "code", "message"}`` when
the command ends. Admin only; every session's start and end are audited.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from podindex.api.auth import Authenticator, Principal, Role
from podindex.api.dashboard import bool_param, from_kube, log_params
from podindex.api.errors import ApiProblem
from podindex.cluster import ClusterSync
from podindex.index import PodRecord
from podindex.kube import pods
from podindex.kube.errors import KubeError
from podindex.service import Service

log = logging.getLogger("podindex.sessions")
audit = logging.getLogger("podindex.audit")

PROTOCOL = "podindex.v1"
TOKEN_PROTOCOL = "base64url.bearer.authorization.podindex.io."
HEARTBEAT = 15.0
BATCH_LINES = 1000
SUBSCRIBE_TIMEOUT = 30.0
_encode = msgspec.json.encode


def bearer_from(websocket: WebSocket) -> str | None:
    """``Authorization`` header, else the token subprotocol entry (base64url, unpadded)."""
    header = websocket.headers.get("authorization")
    if header:
        return header
    for offered in _offered(websocket):
        if offered.startswith(TOKEN_PROTOCOL):
            encoded = offered[len(TOKEN_PROTOCOL) :]
            try:
                token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return f"Bearer {token}"
    return None


def _offered(websocket: WebSocket) -> list[str]:
    raw = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def origin_allowed(websocket: WebSocket, allowed: frozenset[str]) -> bool:
    """No Origin (not a browser), the page's own host, or a configured origin."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    if origin in allowed or "*" in allowed:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host", "")


def routes(service: Service) -> list[WebSocketRoute]:
    allowed = frozenset(
        o.strip() for o in (service.settings.allowed_origins or "").split(",") if o.strip()
    )
    lookup_role = Role.NONE if service.settings.lookup_access == "open" else Role.READER

    async def admitted(
        websocket: WebSocket, role: Role
    ) -> tuple[Principal, ClusterSync, PodRecord] | None:
        """Check origin, caller, cluster and pod; accept, or close before accepting."""
        params = websocket.path_params
        namespace, name = params["namespace"], params["name"]
        if not origin_allowed(websocket, allowed):
            log.warning("WebSocket from origin %r refused", websocket.headers.get("origin"))
            await websocket.close(code=1008)
            return None
        authenticator: Authenticator = websocket.app.state.authenticator
        try:
            principal = await authenticator.check(bearer_from(websocket), role, namespace)
        except ApiProblem:
            await websocket.close(code=1008)
            return None
        await websocket.accept(subprotocol=PROTOCOL if PROTOCOL in _offered(websocket) else None)
        sync = service.clusters.get(params["cluster"])
        record = (
            service.index.by_name(sync.cluster_id, namespace, name) if sync is not None else None
        )
        if sync is None or record is None:
            what = f"cluster {params['cluster']!r}" if sync is None else f"pod {namespace}/{name}"
            await _fail(websocket, ApiProblem(404, "not_found", f"no {what}"))
            return None
        return principal, sync, record

    async def logs(websocket: WebSocket) -> None:
        admission = await admitted(websocket, lookup_role)
        if admission is None:
            return
        _, sync, record = admission
        try:
            request = await asyncio.wait_for(websocket.receive_json(), SUBSCRIBE_TIMEOUT)
        except (TimeoutError, WebSocketDisconnect, ValueError):
            await _fail(websocket, ApiProblem(400, "no_subscribe", "expected a subscribe message"))
            return
        try:
            subscription = _subscription(request, record)
        except ApiProblem as problem:
            await _fail(websocket, problem)
            return
        await _follow(websocket, sync, record, *subscription)

    async def shell(websocket: WebSocket) -> None:
        admission = await admitted(websocket, Role.ADMIN)
        if admission is None:
            return
        principal, sync, record = admission
        query = websocket.query_params
        try:
            container = log_params({"container": query.get("container", "")}, record)["container"]
            tty = bool_param({"tty": query.get("tty", "true")}, "tty")
        except ApiProblem as problem:
            await _fail(websocket, problem)
            return
        command = query.getlist("command") or ["/bin/sh"]
        await _exec(websocket, principal, sync, record, container, command, tty)

    base = "/ws/clusters/{cluster}/namespaces/{namespace}/pods/{name}"
    return [WebSocketRoute(base + "/logs", logs), WebSocketRoute(base + "/exec", shell)]


Instant = tuple[int, int]
"""(unix seconds, nanoseconds): a log line's time, exactly."""


def _subscription(
    request: Any, record: PodRecord
) -> tuple[dict[str, str], bool, tuple[Instant, int | None] | None, bool]:
    """Kubernetes log parameters, whether the client wants timestamps, the resume point
    (the last line's time and ``seq`` it saw), and whether it takes lines in batches."""
    if not isinstance(request, dict) or request.get("type") != "subscribe":
        raise ApiProblem(400, "no_subscribe", 'expected {"type": "subscribe", …}')
    query = {
        k: str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in request.items()
        if k in ("container", "tailLines", "previous") and v is not None
    }
    params = log_params(query, record)
    params.pop("limitBytes")  # a followed stream is not capped; it is paced by the client
    follow = request.get("follow", True)
    if follow not in (True, False):
        raise ApiProblem(400, "invalid_parameter", "follow: expected true or false")
    if follow:
        params["follow"] = "true"
    params["timestamps"] = "true"
    resume: tuple[Instant, int | None] | None = None
    since = request.get("sinceTime")
    if since is not None:
        instant = _instant(since) if isinstance(since, str) else None
        if instant is None:
            raise ApiProblem(400, "invalid_parameter", "sinceTime: expected an RFC 3339 time")
        seq = request.get("sinceSeq")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
            raise ApiProblem(400, "invalid_parameter", "sinceSeq: expected a whole number")
        # Kubernetes takes whole seconds: ask from the second, drop what was seen here.
        whole = datetime.fromtimestamp(instant[0], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params["sinceTime"] = whole
        params.pop("tailLines", None)
        resume = (instant, seq)
    batch = request.get("batch", False)
    if batch not in (True, False):
        raise ApiProblem(400, "invalid_parameter", "batch: expected true or false")
    return params, bool(request.get("timestamps", False)), resume, batch


def _instant(stamp: str) -> Instant | None:
    """An RFC 3339 time to the nanosecond (any offset), or None."""
    head, dot, rest = stamp.partition(".")
    fraction, offset = "", ""
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, offset = rest[:digits], rest[digits:]
    else:
        for sign in ("Z", "+", "-"):
            at = head.find(sign, 11)
            if at != -1:
                head, offset = head[:at], head[at:]
                break
    try:
        when = datetime.fromisoformat(head + (offset.replace("Z", "+00:00") or "+00:00"))
    except ValueError:
        return None
    if len(fraction) > 9:
        return None
    return int(when.timestamp()), int(fraction.ljust(9, "0") or 0)


async def _follow(
    websocket: WebSocket,
    sync: ClusterSync,
    record: PodRecord,
    params: dict[str, str],
    timestamps: bool,
    resume: tuple[Instant, int | None] | None,
    batch: bool,
) -> None:
    send = _Sender(websocket)
    last: list[Any] = [None, -1]  # the last line's timestamp text and its seq
    what = f"{sync.cluster_id}/{record.namespace}/{record.name}"

    async def pump() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        async with pods.log_stream(
            sync.client, record.namespace, record.name, params, read_timeout=None
        ) as chunks:
            async for chunk in chunks:
                lines = (pending + decoder.decode(chunk)).split("\n")
                pending = lines.pop()
                await deliver(lines)
        if pending:
            await deliver([pending])
        await send({"type": "end"})

    async def deliver(lines: list[str]) -> None:
        entries = []
        for line in lines:
            stamp, _, text = line.partition(" ")
            # seq: how many lines before this one carried the same time (usually 0).
            last[1] = last[1] + 1 if stamp == last[0] else 0
            last[0] = stamp
            if resume is not None and _seen(stamp, last[1], resume):
                continue
            entries.append(
                {"data": line if timestamps else text, "timestamp": stamp, "seq": last[1]}
            )
        if not batch:
            for entry in entries:
                await send({"type": "log", **entry})
            return
        for start in range(0, len(entries), BATCH_LINES):
            await send({"type": "logs", "lines": entries[start : start + BATCH_LINES]})

    streaming = asyncio.create_task(pump())
    beating = asyncio.create_task(send.heartbeats())
    listening = asyncio.create_task(_until_closed(websocket))
    try:
        done, _ = await asyncio.wait({streaming, listening}, return_when=asyncio.FIRST_COMPLETED)
        if streaming in done:
            error = streaming.exception()
            if isinstance(error, KubeError):
                await _fail(websocket, from_kube(error, sync, f"following logs of {what}"))
                return
            if error is not None:
                raise error
            await websocket.close(code=1000)
    finally:
        for task in (streaming, beating, listening):
            task.cancel()
        for task in (streaming, beating, listening):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task


def _seen(stamp: str, seq: int, resume: tuple[Instant, int | None]) -> bool:
    """The client saw this line already: before its resume point, or at that time with a
    ``seq`` it had (without ``sinceSeq``, every line of that time counts as seen)."""
    instant = _instant(stamp)
    if instant is None:
        return False
    at, seen_seq = resume
    return instant < at or (instant == at and (seen_seq is None or seq <= seen_seq))


async def _exec(
    websocket: WebSocket,
    principal: Principal,
    sync: ClusterSync,
    record: PodRecord,
    container: str,
    command: list[str],
    tty: bool,
) -> None:
    session = {
        "action": "exec",
        "cluster": sync.cluster_id,
        "namespace": record.namespace,
        "name": record.name,
        "uid": record.key[1],
        "container": container,
        "command": command,
        "by": principal.name,
        "via": principal.via,
    }
    started = time.monotonic()
    audit.info(
        "exec started in %s/%s (%s) by %s",
        record.namespace,
        record.name,
        container,
        principal.name,
        extra={"audit": {**session, "event": "start"}},
    )
    code: int | None = None
    ended_by = "command"
    send = _Sender(websocket)
    try:
        async with pods.exec_stream(
            sync.client, record.namespace, record.name, container, command, tty=tty
        ) as stream:
            client = asyncio.create_task(_forward_input(websocket, stream, send))
            output = asyncio.create_task(_forward_output(stream, send))
            try:
                done, _ = await asyncio.wait({client, output}, return_when=asyncio.FIRST_COMPLETED)
                if output in done:
                    code = output.result()
                else:
                    # The client went away (or broke): leaving this block closes the
                    # session with Kubernetes, so the command does not run on unwatched.
                    ended_by = "client"
                    client.result()
            finally:
                for task in (client, output):
                    task.cancel()
                for task in (client, output):
                    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                        await task
        if ended_by == "command":
            if code is None:
                await send({"type": "exit", "code": None, "message": "the session ended"})
            await websocket.close(code=1000)
    except KubeError as exc:
        await _fail(websocket, from_kube(exc, sync, f"exec in {record.namespace}/{record.name}"))
    except WebSocketDisconnect:
        ended_by = "client"
    finally:
        audit.info(
            "exec ended in %s/%s by %s: exit %s (%s)",
            record.namespace,
            record.name,
            principal.name,
            code,
            ended_by,
            extra={
                "audit": {
                    **session,
                    "event": "end",
                    "exitCode": code,
                    "endedBy": ended_by,
                    "seconds": round(time.monotonic() - started, 3),
                }
            },
        )


async def _forward_output(stream: pods.ExecStream, send: _Sender) -> int | None:
    """Kubernetes' output to the client; the exit code when the command ends."""
    decoders = {
        channel: codecs.getincrementaldecoder("utf-8")("replace")
        for channel in (pods.STDOUT, pods.STDERR)
    }
    code: int | None = None
    async for channel, payload in stream.frames():
        if channel in decoders:
            text = decoders[channel].decode(payload)
            if text:
                name = "stdout" if channel == pods.STDOUT else "stderr"
                await send({"type": "output", "data": text, "stream": name})
        elif channel == pods.STATUS:
            code, message = pods.exit_code(payload)
            await send({"type": "exit", "code": code, "message": message})
    return code


async def _forward_input(websocket: WebSocket, stream: pods.ExecStream, send: _Sender) -> None:
    """Client messages to the session (input, resize, close of input) until the client
    goes; a message that is not one of those is answered with an error and skipped."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            decoded = msgspec.json.decode(message.get("text") or message.get("bytes") or b"")
        except msgspec.DecodeError:
            decoded = None
        kind = decoded.get("type") if isinstance(decoded, dict) else None
        try:
            if kind == "input" and isinstance(decoded.get("data"), str):
                await stream.stdin(decoded["data"].encode())
            elif kind == "resize" and _size(decoded.get("cols")) and _size(decoded.get("rows")):
                await stream.resize(decoded["cols"], decoded["rows"])
            elif kind == "close":
                await stream.close_stdin()
            else:
                kind = None
        except ConnectionResetError:
            # Kubernetes' side is closing (the command ended): its output says how;
            # what the client sends until then goes nowhere.
            await _until_closed(websocket)
            return
        if kind is None:
            await send(
                {
                    "type": "error",
                    "code": 400,
                    "message": 'expected {"type": "input", "data"}, {"type": "resize", '
                    '"cols", "rows"} or {"type": "close"}; message skipped',
                }
            )


def _size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 10_000


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


class _Sender:
    """One writer at a time (the stream and the heartbeat share the socket)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.lock = asyncio.Lock()
        self.last = time.monotonic()

    async def __call__(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await self.websocket.send_text(_encode(message).decode())
            self.last = time.monotonic()

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.last + HEARTBEAT - time.monotonic()))
            if time.monotonic() - self.last >= HEARTBEAT:
                await self({"type": "heartbeat"})


async def _fail(websocket: WebSocket, problem: ApiProblem) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(
            _encode({"type": "error", "code": problem.status, "message": problem.message}).decode()
        )
        await websocket.close(code=4000 + problem.status)
