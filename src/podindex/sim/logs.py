"""Container logs as the kubelet serves them through ``pods/{name}/log``.

The dashboard tails, follows and pages pod logs, so the emulator needs logs
that behave like a kubelet's: one log per container *instance* (a restart
starts a new one; ``previous`` reads the last terminated one), RFC3339Nano
timestamps with nine fixed digits, ``tailLines``/``sinceTime``/``limitBytes``
applied the way the kubelet applies them (tail first, then since, then the
byte cap), and ``follow`` that ends when the container stops or the pod goes.

A container instance is named by its ``containerID`` in the pod status. Its
log is two merged, time-ordered sources: a generated heartbeat line every
``tick`` seconds of the instance's life (computed on demand, never stored),
and lines that tests or load generators append (:class:`ContainerLog`).
``sinceTime`` counts in whole seconds, as on a real server (the API server
passes it on formatted with ``time.RFC3339``): a client that resumes from the
last timestamp it saw gets that whole second again and must drop the lines it
already has (appended lines carry unique nanosecond timestamps to make that
exact). The parameter checks and their error messages follow kube-apiserver's
``LogLocation``/``ValidatePodLogOptions`` and the kubelet's
``validateContainerLogStatus``.

Known differences from a real server:
- the heartbeat lines are the emulator's own; real containers log what they log;
- appended lines beyond ``max_lines`` per instance are dropped oldest first
  (a kubelet rotates by size, 10 MiB x 5 files by default);
- a scheduled Pending pod without container statuses is treated as
  ``waiting: ContainerCreating`` (a real kubelet reports that state itself);
- the ``stream`` parameter (alpha PodLogsQuerySplitStreams) is ignored.
"""

from __future__ import annotations

import asyncio
import bisect
import calendar
import contextlib
import heapq
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from podindex.sim import status as st

JSON = dict[str, Any]
NS = 1_000_000_000
DEFAULT_MAX_LINES = 200_000


class LogError(Exception):
    """The request is answered with this Status body instead of a log."""

    def __init__(self, body: JSON) -> None:
        super().__init__(body.get("message", ""))
        self.body = body


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (fractional seconds optional)."""
    main, frac = text, ""
    if text.endswith("Z"):
        main = text[:-1]
        offset = 0
    elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        main = text[:-6]
        sign = 1 if text[-6] == "+" else -1
        offset = sign * (int(text[-5:-3]) * 3600 + int(text[-2:]) * 60)
    else:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    if "." in main:
        main, frac = main.split(".", 1)
        if not frac.isdigit():
            raise ValueError(f"not an RFC 3339 time: {text!r}")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) - offset
    return seconds * NS + int((frac + "0" * 9)[:9] or 0)


class TimestampFormatter:
    """Go's RFC3339NanoFixed in UTC (what ``timestamps=true`` prefixes), cached per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ns: int) -> bytes:
        second, frac = divmod(ns, NS)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{frac:09d}Z ".encode()


def format_timestamp(ns: int) -> str:
    """One RFC3339NanoFixed timestamp (no trailing space)."""
    return TimestampFormatter()(ns).decode()[:-1]


class ContainerLog:
    """Appended lines of one container instance, time-ordered, trimmed oldest first."""

    def __init__(self, max_lines: int = DEFAULT_MAX_LINES) -> None:
        self.max_lines = max_lines
        self.times: list[int] = []
        self.lines: list[bytes] = []  # each ends with b"\n"
        self.base = 0  # absolute index of lines[0] (lines before it were rotated away)
        self._changed = asyncio.Event()

    @property
    def end(self) -> int:
        """Absolute index one past the newest line."""
        return self.base + len(self.lines)

    def append(self, lines: list[bytes], now_ns: int | None = None) -> None:
        if not lines:
            return
        now = time.time_ns() if now_ns is None else now_ns
        last = self.times[-1] if self.times else 0
        first = max(now, last + 1)
        self.times.extend(range(first, first + len(lines)))
        self.lines.extend(lines)
        if len(self.lines) > self.max_lines + max(1024, self.max_lines // 4):
            drop = len(self.lines) - self.max_lines
            del self.times[:drop]
            del self.lines[:drop]
            self.base += drop
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, max_wait: float | None) -> None:
        """Sleep until the next append, or for at most max_wait seconds."""
        changed = self._changed
        if max_wait is not None and max_wait <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), max_wait)

    def index_at(self, ns: int) -> int:
        """Absolute index of the first line at or after ns."""
        return self.base + bisect.bisect_left(self.times, ns)

    def slice(self, start: int, stop: int) -> tuple[list[int], list[bytes]]:
        lo = max(start, self.base) - self.base
        hi = max(stop, self.base) - self.base
        return self.times[lo:hi], self.lines[lo:hi]


@dataclass(frozen=True, slots=True)
class Instance:
    """One container instance whose log is served: id, life span and generated-line text."""

    container_id: str
    container: str
    pod: str
    start_ns: int
    end_ns: int | None  # None while running


@dataclass(frozen=True, slots=True)
class LogOptions:
    container: str | None = None
    follow: bool = False
    previous: bool = False
    since_ns: int | None = None
    tail_lines: int | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


def parse_bool(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("", "0", "f", "F", "false", "FALSE", "False"):
        return False
    raise LogError(st.bad_request(f'strconv.ParseBool: parsing "{raw}": invalid syntax'))


def _int(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise LogError(
            st.bad_request(f'strconv.ParseInt: parsing "{raw}": invalid syntax')
        ) from None


def _invalid(pod: str, field: str, value: object, detail: str) -> JSON:
    cause_message = f"Invalid value: {value}: {detail}"
    return st.status(
        422,
        "Invalid",
        f'PodLogOptions "{pod}" is invalid: {field}: {cause_message}',
        details={
            "name": pod,
            "kind": "PodLogOptions",
            "causes": [{"reason": "FieldValueInvalid", "message": cause_message, "field": field}],
        },
    )


def parse_log_options(query: Mapping[str, str], pod: str, now_ns: int) -> LogOptions:
    """The query of a pods/log request, checked as ValidatePodLogOptions does."""
    tail = _int(query, "tailLines")
    limit = _int(query, "limitBytes")
    since_seconds = _int(query, "sinceSeconds")
    since_time = query.get("sinceTime") or None
    if tail is not None and tail < 0:
        raise LogError(_invalid(pod, "tailLines", tail, "must be greater than or equal to 0"))
    if limit is not None and limit < 1:
        raise LogError(_invalid(pod, "limitBytes", limit, "must be greater than 0"))
    since_ns: int | None = None
    if since_seconds is not None and since_time is not None:
        message = "at most one of `sinceTime` or `sinceSeconds` may be specified"
        raise LogError(
            st.status(
                422,
                "Invalid",
                f'PodLogOptions "{pod}" is invalid: <nil>: Forbidden: {message}',
                details={
                    "name": pod,
                    "kind": "PodLogOptions",
                    "causes": [
                        {"reason": "FieldValueForbidden", "message": f"Forbidden: {message}"}
                    ],
                },
            )
        )
    if since_seconds is not None:
        if since_seconds < 1:
            raise LogError(_invalid(pod, "sinceSeconds", since_seconds, "must be greater than 0"))
        since_ns = now_ns - since_seconds * NS
    elif since_time is not None:
        try:
            # The API server forwards sinceTime to the kubelet as time.RFC3339: whole seconds.
            since_ns = parse_rfc3339(since_time) // NS * NS
        except ValueError:
            raise LogError(
                st.bad_request(
                    f'parsing time "{since_time}" as "2006-01-02T15:04:05Z07:00": '
                    "cannot parse as RFC3339"
                )
            ) from None
    return LogOptions(
        container=query.get("container") or None,
        follow=parse_bool(query, "follow"),
        previous=parse_bool(query, "previous"),
        since_ns=since_ns,
        tail_lines=tail,
        timestamps=parse_bool(query, "timestamps"),
        limit_bytes=limit,
    )


def container_names(pod: JSON) -> list[str]:
    """Init, regular and ephemeral container names, in the order the API server lists them."""
    spec = pod.get("spec", {})
    return [
        c["name"]
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(key) or []
    ]


def choose_container(pod: JSON, container: str | None) -> str:
    """The container a logs request reads (apiserver's validateContainer)."""
    name = pod["metadata"]["name"]
    containers = pod.get("spec", {}).get("containers") or []
    if not container:
        if len(containers) == 1:
            return str(containers[0]["name"])
        if not containers:
            raise LogError(st.bad_request(f"a container name must be specified for pod {name}"))
        listed = " ".join(container_names(pod))
        raise LogError(
            st.bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{listed}]"
            )
        )
    if container not in container_names(pod):
        raise LogError(st.bad_request(f"container {container} is not valid for pod {name}"))
    return container


def _container_status(pod: JSON, container: str) -> JSON | None:
    status = pod.get("status", {})
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or []:
            if cs.get("name") == container:
                return dict(cs)
    return None


def _time_ns(text: object) -> int:
    return parse_rfc3339(str(text)) if text else time.time_ns()


def resolve_instance(pod: JSON, container: str, previous: bool) -> Instance:
    """Which container instance a log request reads (the kubelet's validateContainerLogStatus)."""
    name = pod["metadata"]["name"]
    cs = _container_status(pod, container)
    if cs is None:
        spec, status = pod.get("spec", {}), pod.get("status", {})
        if spec.get("nodeName") and status.get("phase", "Pending") == "Pending":
            cs = {"state": {"waiting": {"reason": "ContainerCreating"}}}
        else:
            raise LogError(
                st.bad_request(f'container "{container}" in pod "{name}" is not available')
            )
    state = cs.get("state") or {}
    last = (cs.get("lastState") or {}).get("terminated")
    running, terminated, waiting = (
        state.get("running"),
        state.get("terminated"),
        state.get("waiting"),
    )

    def from_terminated(t: JSON) -> Instance:
        return Instance(
            str(t["containerID"]),
            container,
            name,
            _time_ns(t.get("startedAt")),
            _time_ns(t.get("finishedAt")),
        )

    if previous:
        if not last or not last.get("containerID"):
            raise LogError(
                st.bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            )
        return from_terminated(last)
    if running is not None:
        return Instance(
            str(cs.get("containerID", "")),
            container,
            name,
            _time_ns(running.get("startedAt")),
            None,
        )
    if terminated is not None:
        if terminated.get("containerID"):
            return from_terminated(terminated)
        if last and last.get("containerID"):
            return from_terminated(last)
        raise LogError(st.bad_request(f'container "{container}" in pod "{name}" is terminated'))
    if last is not None:
        if not last.get("containerID"):
            raise LogError(st.bad_request(f'container "{container}" in pod "{name}" is terminated'))
        return from_terminated(last)
    if waiting is not None:
        reason = waiting.get("reason", "")
        why = {
            "ErrImagePull": "image can't be pulled",
            "ImagePullBackOff": "trying and failing to pull image",
        }.get(reason, reason)
        raise LogError(
            st.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {why}')
        )
    raise LogError(
        st.bad_request(f'container "{container}" in pod "{name}" is waiting to start - no logs yet')
    )


class LogView:
    """The time-ordered lines of one instance: generated ticks merged with appended lines."""

    def __init__(self, instance: Instance, log: ContainerLog | None, tick: float | None) -> None:
        self.instance = instance
        self.log = log
        self.tick_ns = int(tick * NS) if tick else 0
        self._prefix = f"[{instance.container}] {instance.pod} heartbeat ".encode()

    def tick_line(self, k: int) -> bytes:
        return b"%s%d\n" % (self._prefix, k)

    def ticks_until(self, ns: int) -> int:
        """Number of ticks with a time <= ns (tick k is at start + k*tick)."""
        if not self.tick_ns:
            return 0
        end = ns if self.instance.end_ns is None else min(ns, self.instance.end_ns)
        if end < self.instance.start_ns:
            return 0
        return (end - self.instance.start_ns) // self.tick_ns + 1

    def tick_at_or_after(self, ns: int) -> int:
        if not self.tick_ns or ns <= self.instance.start_ns:
            return 0
        return -(-(ns - self.instance.start_ns) // self.tick_ns)

    def tick_time(self, k: int) -> int:
        return self.instance.start_ns + k * self.tick_ns

    def lines(
        self, tick_from: int, tick_to: int, line_from: int, line_to: int
    ) -> Iterator[tuple[int, bytes]]:
        """Ticks [tick_from, tick_to) and appended lines [line_from, line_to), merged by time."""
        ticks = ((self.tick_time(k), self.tick_line(k)) for k in range(tick_from, tick_to))
        if self.log is None or line_from >= line_to:
            return iter(ticks) if tick_from < tick_to else iter(())
        times, texts = self.log.slice(line_from, line_to)
        if tick_from >= tick_to:
            return zip(times, texts, strict=True)
        return heapq.merge(ticks, zip(times, texts, strict=True), key=lambda p: p[0])

    def start_cursor(self, options: LogOptions, now_ns: int) -> tuple[int, int, int, int]:
        """(tick_from, tick_to, line_from, line_to) of what a request reads first.

        tailLines picks the last N lines, then sinceTime drops older ones (kubelet order).
        """
        tick_to = self.ticks_until(now_ns)
        line_to = self.log.end if self.log is not None else 0
        line_lo = self.log.base if self.log is not None else 0
        tick_from, line_from = 0, line_lo
        if options.tail_lines is not None:
            tick_from, line_from = self._tail(options.tail_lines, tick_to, line_lo, line_to)
        if options.since_ns is not None:
            tick_from = max(tick_from, self.tick_at_or_after(options.since_ns))
            if self.log is not None:
                line_from = max(line_from, self.log.index_at(options.since_ns))
        return tick_from, tick_to, line_from, line_to

    def _tail(self, n: int, tick_to: int, line_lo: int, line_to: int) -> tuple[int, int]:
        """Start positions so that exactly the last n merged lines remain."""
        tick_from = max(0, tick_to - n)
        line_from = max(line_lo, line_to - n)
        if self.log is None:
            return tick_from, line_to
        times, _ = self.log.slice(line_from, line_to)
        tail = heapq.nlargest(
            n,
            [(self.tick_time(k), 0, k) for k in range(tick_from, tick_to)]
            + [(t, 1, line_from + i) for i, t in enumerate(times)],
        )
        if not tail:
            return tick_to, line_to
        ticks_kept = [k for _, kind, k in tail if kind == 0]
        lines_kept = [i for _, kind, i in tail if kind == 1]
        return (
            min(ticks_kept) if ticks_kept else tick_to,
            min(lines_kept) if lines_kept else line_to,
        )


def render(pairs: Iterator[tuple[int, bytes]], timestamps: TimestampFormatter | None) -> bytes:
    if timestamps is None:
        return b"".join(text for _, text in pairs)
    return b"".join(timestamps(t) + text for t, text in pairs)


__all__ = [
    "ContainerLog",
    "Instance",
    "LogError",
    "LogOptions",
    "LogView",
    "TimestampFormatter",
    "choose_container",
    "container_names",
    "format_timestamp",
    "parse_bool",
    "parse_log_options",
    "parse_rfc3339",
    "render",
    "resolve_instance",
]
