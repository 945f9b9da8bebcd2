"""The READY, STATUS and RESTARTS columns of ``kubectl get pods``, computed as kubectl does.

A port of ``printPod`` (kubernetes ``pkg/printers/internalversion``): the
pod's phase or reason, then init containers (``Init:1/2``,
``Init:CrashLoopBackOff``, sidecars counted as containers once started), then
the app containers from last to first (a waiting or terminated reason wins;
``Completed`` with a container still running reads ``Running`` or
``NotReady`` by the Ready condition), then ``Terminating`` / ``Unknown`` for
a pod being deleted. Checked against a real API server's Table in
``k8s-recordings/40-table-pods-status-column.json``.

Pure: no I/O, no clock (ages are formatted from a ``now`` the caller gives).
"""

from __future__ import annotations

import msgspec

from podindex.model import Container, ContainerStatus, Pod, PodStatus

NODE_UNREACHABLE = "NodeLost"
_TERMINAL = ("Succeeded", "Failed")


class DisplayStatus(msgspec.Struct, frozen=True, gc=False):
    ready: str
    """``ready/total``: ready app containers (and started sidecars) of all of them."""
    status: str
    restarts: int
    last_restart: str | None
    """When the most recent counted restart's container ended (RFC 3339), if known."""
    containers: tuple[tuple[str, bool, int], ...] = ()
    """(name, ready, restartCount) of each app container that reports a status."""

    def key(self) -> tuple[object, ...]:
        """Plain values equal for equal displays (for sharing one instance among pods)."""
        return (self.ready, self.status, self.restarts, self.last_restart, self.containers)


def display_status(pod: Pod) -> DisplayStatus:
    spec, status = pod.spec, pod.status
    init_specs = {c.name: c for c in spec.initContainers or ()}
    total = len(spec.containers or ()) + sum(1 for c in init_specs.values() if _sidecar(c))
    reason = status.reason or status.phase
    for condition in status.conditions or ():
        if condition.type == "PodScheduled" and condition.reason == "SchedulingGated":
            reason = "SchedulingGated"

    restarts = sidecar_restarts = ready = 0
    last_restart = sidecar_last_restart = ""
    initializing = False
    init_statuses = status.initContainerStatuses or ()
    for i, container in enumerate(init_statuses):
        restarts += container.restartCount
        last_restart = max(last_restart, _last_finished(container))
        sidecar = _sidecar(init_specs.get(container.name))
        if sidecar:
            sidecar_restarts += container.restartCount
            sidecar_last_restart = max(sidecar_last_restart, _last_finished(container))
        state = container.state
        terminated = state.terminated if state else None
        waiting = state.waiting if state else None
        if terminated is not None and terminated.exitCode == 0:
            continue
        if sidecar and container.started:
            ready += container.ready
            continue
        if terminated is not None:
            if terminated.reason:
                reason = "Init:" + terminated.reason
            elif terminated.signal:
                reason = f"Init:Signal:{terminated.signal}"
            else:
                reason = f"Init:ExitCode:{terminated.exitCode}"
        elif waiting is not None and waiting.reason and waiting.reason != "PodInitializing":
            reason = "Init:" + waiting.reason
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(status, "Initialized"):
        restarts, last_restart = sidecar_restarts, sidecar_last_restart
        running = False
        for container in reversed(status.containerStatuses or ()):
            restarts += container.restartCount
            last_restart = max(last_restart, _last_finished(container))
            state = container.state
            waiting = state.waiting if state else None
            terminated = state.terminated if state else None
            if waiting is not None and waiting.reason:
                reason = waiting.reason
            elif terminated is not None and terminated.reason:
                reason = terminated.reason
            elif terminated is not None:
                reason = (
                    f"Signal:{terminated.signal}"
                    if terminated.signal
                    else f"ExitCode:{terminated.exitCode}"
                )
            elif container.ready and state is not None and state.running is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"

    if pod.metadata.deletionTimestamp is not None:
        if status.reason == NODE_UNREACHABLE:
            reason = "Unknown"
        elif status.phase not in _TERMINAL:
            reason = "Terminating"
    containers = tuple((c.name, c.ready, c.restartCount) for c in status.containerStatuses or ())
    return DisplayStatus(f"{ready}/{total}", reason, restarts, last_restart or None, containers)


def _sidecar(container: Container | None) -> bool:
    return container is not None and container.restartPolicy == "Always"


def _last_finished(container: ContainerStatus) -> str:
    last = container.lastState
    if last is None or last.terminated is None:
        return ""
    # RFC 3339 in UTC with a Z, as the API server writes them: ordered as text.
    return last.terminated.finishedAt or ""


def _condition_true(status: PodStatus, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in status.conditions or ())


def restarts_column(restarts: int, last_restart_age: float | None) -> str:
    """kubectl's RESTARTS cell: ``7 (2m2s ago)``, or the bare count."""
    if restarts and last_restart_age is not None:
        return f"{restarts} ({human_duration(last_restart_age)} ago)"
    return str(restarts)


def human_duration(seconds: float) -> str:
    """kubectl's age format (apimachinery ``duration.HumanDuration``): 2m2s, 5h30m, 3d4h."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"
