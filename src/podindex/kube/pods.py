"""What the dashboard asks a cluster about one pod: its object, events and logs; deleting it.

Events are listed through the core API with a field selector on the pod's
name, namespace *and uid*, so a same-name predecessor's events are not
mixed in. The core API shows events written through ``events.k8s.io/v1``
too (recording 62), converted: their time is ``eventTime`` and a repeated
event's count and last time are in ``series``. :func:`event_summary` reads
whichever the event carries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
import msgspec

from podindex.kube.client import PODS, KubeClient
from podindex.kube.errors import StreamStalled, TransportError, describe


class _Series(msgspec.Struct):
    count: int = 0
    lastObservedTime: str | None = None


class _EventMeta(msgspec.Struct):
    name: str = ""
    creationTimestamp: str | None = None
    resourceVersion: str = ""


class CoreEvent(msgspec.Struct):
    """A ``core/v1`` Event, only what a summary needs."""

    metadata: _EventMeta = msgspec.field(default_factory=_EventMeta)
    type: str = ""
    reason: str = ""
    message: str = ""
    count: int | None = None
    firstTimestamp: str | None = None
    lastTimestamp: str | None = None
    eventTime: str | None = None
    series: _Series | None = None


class _EventList(msgspec.Struct):
    items: list[CoreEvent] | None = None


class EventSummary(msgspec.Struct, frozen=True):
    """One event as the dashboard document shows it."""

    type: str
    reason: str
    message: str
    firstSeen: str | None
    lastSeen: str | None
    count: int


_events = msgspec.json.Decoder(_EventList)


def event_summary(event: CoreEvent) -> EventSummary:
    """First and last time and count, from a legacy event or an events.k8s.io one."""
    created = event.metadata.creationTimestamp
    first = event.firstTimestamp or _seconds(event.eventTime) or created
    series = event.series
    if series is not None and series.count:
        last = _seconds(series.lastObservedTime) or event.lastTimestamp or first
        count = series.count
    else:
        last = event.lastTimestamp or first
        count = event.count or 1
    return EventSummary(event.type, event.reason, event.message, first, last, count)


def _seconds(micro_time: str | None) -> str | None:
    """``2026-11-23T12:57:41.493107Z`` (MicroTime) as the seconds form the others use."""
    if not micro_time:
        return None
    head, dot, _ = micro_time.partition(".")
    return head + "Z" if dot else micro_time


async def pod_events(client: KubeClient, namespace: str, name: str, uid: str) -> list[EventSummary]:
    """Events about this pod instance, the most recently seen first."""
    selector = ",".join(
        (
            f"involvedObject.name={name}",
            f"involvedObject.namespace={namespace}",
            f"involvedObject.uid={uid}",
        )
    )
    body = await client.get(f"/api/v1/namespaces/{namespace}/events", {"fieldSelector": selector})
    decoded = _events.decode(body).items or []
    # Most recently seen first; within one second, the most recently written.
    decoded.sort(key=lambda e: (event_summary(e).lastSeen or "", _version(e)), reverse=True)
    return [event_summary(e) for e in decoded]


def _version(event: CoreEvent) -> int:
    rv = event.metadata.resourceVersion
    return int(rv) if rv.isdigit() else 0


def pod_path(namespace: str, name: str, subresource: str = "") -> str:
    path = f"{PODS.path(namespace)}/{name}"
    return f"{path}/{subresource}" if subresource else path


@asynccontextmanager
async def log_stream(
    client: KubeClient,
    namespace: str,
    name: str,
    params: Mapping[str, str],
    *,
    read_timeout: float | None = None,
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Open ``pods/{name}/log``; yield an iterator over its chunks as they arrive.

    Errors before the first byte (404, a 400 naming the containers) raise
    from here, so a caller can still answer with a status; a break later
    ends the iteration with :class:`TransportError`.
    """
    async with client.stream(
        pod_path(namespace, name, "log"), params, "text/plain", read_timeout
    ) as response:
        yield _chunks(response, read_timeout)


async def _chunks(
    response: aiohttp.ClientResponse, read_timeout: float | None
) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except aiohttp.ServerTimeoutError as exc:
        raise StreamStalled(f"log stream: no bytes for {read_timeout}s") from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise TransportError(f"log stream: {describe(exc)}") from exc


EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class _Cause(msgspec.Struct):
    reason: str = ""
    message: str = ""


class _Details(msgspec.Struct):
    causes: list[_Cause] | None = None


class _ExecStatus(msgspec.Struct):
    status: str = ""
    reason: str = ""
    message: str = ""
    details: _Details | None = None


_exec_status = msgspec.json.Decoder(_ExecStatus)


def exit_code(status_frame: bytes) -> tuple[int, str]:
    """(exit code, message) from the channel-3 Status that ends an exec session.

    Success is 0; ``NonZeroExitCode`` carries the code as an ``ExitCode``
    cause; any other failure (the command could not start) is 126, a
    shell's "cannot execute", with the server's message.
    """
    try:
        status = _exec_status.decode(status_frame)
    except msgspec.DecodeError:
        return 126, status_frame.decode("utf-8", "replace")[:200]
    if status.status == "Success":
        return 0, ""
    for cause in (status.details.causes or []) if status.details else []:
        if cause.reason == "ExitCode" and cause.message.isdigit():
            return int(cause.message), status.message
    return 126, status.message


class ExecStream:
    """One exec session over the channel protocol: stdin/resize out, frames in."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.protocol = ws.protocol or ""

    async def stdin(self, data: bytes) -> None:
        await self.ws.send_bytes(bytes((STDIN,)) + data)

    async def resize(self, cols: int, rows: int) -> None:
        size = msgspec.json.encode({"Width": cols, "Height": rows})
        await self.ws.send_bytes(bytes((RESIZE,)) + size)

    async def close_stdin(self) -> None:
        """End of input (v5 only: v4 has no way to say it but closing the session)."""
        if self.protocol.startswith("v5."):
            await self.ws.send_bytes(bytes((CLOSE, STDIN)))

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        """(channel, payload) until the server closes the session."""
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data:
                yield message.data[0], message.data[1:]
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                return


@asynccontextmanager
async def exec_stream(
    client: KubeClient,
    namespace: str,
    name: str,
    container: str,
    command: list[str],
    *,
    tty: bool,
) -> AsyncIterator[ExecStream]:
    params = [("container", container), ("stdin", "true"), ("stdout", "true")]
    params += [("stderr", "false" if tty else "true"), ("tty", "true" if tty else "false")]
    params += [("command", part) for part in command]
    async with client.websocket(pod_path(namespace, name, "exec"), params, EXEC_PROTOCOLS) as ws:
        yield ExecStream(ws)
