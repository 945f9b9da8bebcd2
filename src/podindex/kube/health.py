"""The health of one registered cluster's watch, as a small state machine.

::

    Pending ──sync──► Connected ◄──────── sync (silent recovery) ───────┐
       │                 │                                            │
       └──error──► Degraded (consecutive failures counted) ──5 min──► Disconnected
                     unreachable (connection refused, timeout) ───────►

Unreachable means no connection could be made (refused, DNS, TLS, connect
timeout): Disconnected at once. A stream that breaks after it was open is a
watch error like any other (load balancers cut long streams): Degraded.

Fed by the watchers (:meth:`on_sync` after a LIST or an opened WATCH,
:meth:`on_error` on every failed attempt) and by :meth:`tick`, which the
service calls about once a second to age Degraded into Disconnected. Time
comes from an injected clock, so tests move it instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from podindex.kube.errors import (
    ApiError,
    Forbidden,
    KubeError,
    Unauthorized,
    Unreachable,
    describe,
)

Status = Literal["Pending", "Connected", "Degraded", "Disconnected"]
STATUS_VALUES: dict[Status, int] = {"Pending": 0, "Disconnected": 0, "Degraded": 1, "Connected": 2}
"""The ``connection status`` gauge: 0 disconnected or pending, 1 degraded, 2 connected."""
DEGRADED_LIMIT = 300.0


def error_phase(exc: BaseException) -> str:
    """Which part failed: ``reachability`` (no connection), ``authentication`` or ``watch``
    (anything else: a stream cut or stalled, a server error, an undecodable event)."""
    if isinstance(exc, (Unauthorized, Forbidden)):
        return "authentication"
    if isinstance(exc, Unreachable):
        return "reachability"
    return "watch"


class HealthMonitor:
    """One integration's connection state, reconnect count and last successful sync."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        degraded_limit: float = DEGRADED_LIMIT,
        last_sync: float | None = None,
    ) -> None:
        self.clock = clock
        self.degraded_limit = degraded_limit
        self.status: Status = "Pending"
        self.consecutive_failures = 0
        self.reconnects = 0
        """Watch failures after which the watcher connected again (or is trying to)."""
        self.last_sync = last_sync
        """Unix time of the last successful LIST or WATCH open (kept across restarts)."""
        self.degraded_since: float | None = None
        self.last_error = ""
        self.last_error_phase = ""
        self.transitions = 0
        """Bumped on every change a caller may want to persist."""

    @property
    def value(self) -> int:
        return STATUS_VALUES[self.status]

    def on_sync(self) -> None:
        """A LIST completed or a WATCH opened: connected again, silently."""
        self.last_sync = self.clock()
        self.consecutive_failures = 0
        self.degraded_since = None
        if self.status != "Connected" or self.last_error:
            self.status = "Connected"
            self.last_error = self.last_error_phase = ""
            self.transitions += 1

    def on_error(self, exc: BaseException) -> None:
        """A list or watch attempt failed; the watcher backs off and tries again."""
        now = self.clock()
        self.consecutive_failures += 1
        self.reconnects += 1
        phase = error_phase(exc)
        self.last_error = _describe(exc)
        self.last_error_phase = phase
        self.transitions += 1
        if phase == "reachability":
            self.status = "Disconnected"
            return
        if self.status == "Disconnected":
            return  # only a successful sync brings it back
        if self.status != "Degraded":
            self.status = "Degraded"
            self.degraded_since = now
        self.tick()

    def tick(self) -> None:
        """Degraded for ``degraded_limit`` seconds becomes Disconnected."""
        since = self.degraded_since
        if (
            self.status == "Degraded"
            and since is not None
            and self.clock() - since >= self.degraded_limit
        ):
            self.status = "Disconnected"
            self.transitions += 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.code} {exc.status.reason}: {exc.status.message}"[:500]
    if isinstance(exc, KubeError):
        return (str(exc) or type(exc).__name__)[:500]  # ours: made without credentials
    return describe(exc)[:500]
