"""Registered clusters ("integrations"): kept in the store, watched, health-checked.

Each integration is one more cluster of the index, with its own id (a DNS
label derived from its name, fixed at creation), its own scoped watchers
(namespace and label selector) and its own :class:`HealthMonitor`. Creating
one validates it (certificate → reachability → authentication), seals its
token with the service's key and saves it, then starts its watchers; a change
of endpoint, CA, token or scope restarts only its watchers (a fresh relist, a
fresh backoff); deleting it stops them and forgets its pods (history records
them dead).

Readiness is not held hostage: the service is ready once its configured
cluster is synced; each integration reports its own health here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from podindex.cluster import ClusterSync, WatchOptions
from podindex.kube.config import explicit_access
from podindex.kube.health import HealthMonitor, Status
from podindex.kube.validation import (
    EndpointError,
    Validation,
    check_certificate,
    check_endpoint,
    validate_connection,
)
from podindex.sealing import Sealer, SealingError
from podindex.selectors import SelectorError, parse_selector
from podindex.store.base import StoredIntegration, StoreError, StoreRejected

if TYPE_CHECKING:
    from podindex.service import Service

log = logging.getLogger("podindex.integrations")

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NOT_ID = re.compile(r"[^a-z0-9-]+")
MAX_NAME = 253
PREVIEW_SAMPLE = 100
SYNC_SAVE_EVERY = 60.0
"""Seconds ``last_sync`` may advance before it is saved again (state changes save at once)."""


class IntegrationError(Exception):
    """A request about integrations that cannot be done; ``status`` and ``code`` for the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ValidationRefused(IntegrationError):
    """Validation failed in one phase: nothing was saved or changed."""

    def __init__(self, validation: Validation) -> None:
        super().__init__(422, "validation_failed", validation.message)
        self.validation = validation


@dataclass(frozen=True)
class Spec:
    """What a caller gives for an integration (the token in the clear: never logged)."""

    name: str
    endpoint: str
    ca_cert: str
    token: str
    namespace: str = ""
    label_selector: str = ""
    context: str = ""

    def __repr__(self) -> str:
        return f"Spec(name={self.name!r}, endpoint={self.endpoint!r}, token=****)"


class View(msgspec.Struct, kw_only=True):
    """An integration as the API shows it: everything but the token."""

    id: str
    cluster: str
    name: str
    endpoint: str
    ca_cert: str
    namespace: str
    label_selector: str
    context: str
    status: Status
    consecutive_failures: int
    reconnect_count: int
    last_error: str
    last_error_phase: str
    last_sync: float | None
    pods: int
    synced: bool
    created_at: float
    updated_at: float


class PodSample(msgspec.Struct):
    name: str
    ip: str


class Preview(msgspec.Struct):
    pods: list[PodSample]
    total_count: int
    truncated: bool


class Integrations:
    """Every integration of one service; the API's only way to them."""

    def __init__(
        self,
        service: Service,
        sealer: Sealer | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.sealer = sealer
        self.clock = clock
        self.rows: dict[str, StoredIntegration] = {}
        self.monitors: dict[str, HealthMonitor] = {}
        self.validate = validate_connection
        """Replaceable by tests that have no cluster to validate against."""
        self._persisted: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self.loaded = False
        """The stored integrations are known (the store answered at start); until then the
        API answers 503 rather than an empty list that is not the truth."""

    # --- reading ---------------------------------------------------------------

    def view(self, integration_id: str) -> View:
        row = self._row(integration_id)
        monitor = self.monitors[integration_id]
        sync = self.service.clusters.get(integration_id)
        return View(
            id=row.id,
            cluster=row.id,
            name=row.name,
            endpoint=row.endpoint,
            ca_cert=row.ca_cert,
            namespace=row.namespace,
            label_selector=row.label_selector,
            context=row.context,
            status=monitor.status,
            consecutive_failures=monitor.consecutive_failures,
            reconnect_count=monitor.reconnects,
            last_error=monitor.last_error,
            last_error_phase=monitor.last_error_phase,
            last_sync=monitor.last_sync,
            pods=self.pod_count(row.id),
            synced=sync.ready if sync is not None else False,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def views(self) -> list[View]:
        return [self.view(i) for i in sorted(self.rows, key=lambda i: (self.rows[i].name, i))]

    def pod_count(self, cluster: str) -> int:
        return sum(1 for key in self.service.index.pods if key[0] == cluster)

    def preview(self, integration_id: str, selector_text: str | None) -> Preview:
        """Pods of the integration with IPs that match ``selector_text``: a capped sample."""
        self._row(integration_id)
        try:
            selector = parse_selector(selector_text)
        except SelectorError as exc:
            raise IntegrationError(400, "invalid_selector", f"selector: {exc}") from None
        records = self.service.index.select(
            cluster=integration_id, selector=None if selector.empty else selector
        )
        with_ip = [r for r in records if r.ips]
        sample = [PodSample(r.name, r.ips[0]) for r in with_ip[:PREVIEW_SAMPLE]]
        return Preview(sample, len(with_ip), len(with_ip) > PREVIEW_SAMPLE)

    # --- changing --------------------------------------------------------------

    async def test(self, spec: Spec) -> Validation:
        _check_spec(spec, named=False)
        return await self.validate(
            spec.endpoint, spec.ca_cert, spec.token, namespace=spec.namespace or None
        )

    async def create(self, spec: Spec) -> View:
        _check_spec(spec)
        sealer = self._sealer()
        async with self._lock:
            if any(r.name == spec.name for r in self.rows.values()):
                raise IntegrationError(
                    409, "name_taken", f"an integration named {spec.name!r} exists"
                )
            await self._validated(spec)
            now = self.clock()
            row = StoredIntegration(
                id=self._new_id(spec.name),
                name=spec.name,
                endpoint=spec.endpoint.rstrip("/"),
                ca_cert=spec.ca_cert,
                token=sealer.seal(spec.token),
                namespace=spec.namespace,
                label_selector=spec.label_selector,
                created_at=now,
                updated_at=now,
                context=spec.context,
            )
            await self._save(row)
            self.rows[row.id] = row
            await self._start(row, spec.token)
            log.info("integration %s (%s): created, watching %s", row.id, row.name, row.endpoint)
            return self.view(row.id)

    async def update(
        self,
        integration_id: str,
        *,
        name: str | None = None,
        endpoint: str | None = None,
        ca_cert: str | None = None,
        token: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> View:
        """Change what is given; restart the watchers only if how or what they watch changed."""
        sealer = self._sealer()
        async with self._lock:
            try:  # a change starts from the stored integration, not an older copy here
                await self._reconcile()
            except StoreError as exc:
                raise IntegrationError(503, "store_unavailable", str(exc)) from None
            old = self._row(integration_id)
            old_token = token if token is not None else self._open_token(sealer, old)
            spec = Spec(
                name=old.name if name is None else name,
                endpoint=old.endpoint if endpoint is None else endpoint,
                ca_cert=old.ca_cert if ca_cert is None else ca_cert,
                token=old_token,
                namespace=old.namespace if namespace is None else namespace,
                label_selector=old.label_selector if label_selector is None else label_selector,
                context=old.context,
            )
            _check_spec(spec)
            if spec.name != old.name and any(
                r.name == spec.name for r in self.rows.values() if r.id != old.id
            ):
                raise IntegrationError(
                    409, "name_taken", f"an integration named {spec.name!r} exists"
                )
            connection_changed = (
                spec.endpoint.rstrip("/") != old.endpoint
                or spec.ca_cert != old.ca_cert
                or token is not None
                or spec.namespace != old.namespace
            )
            restart = connection_changed or spec.label_selector != old.label_selector
            if connection_changed:
                await self._validated(spec)
            row = replace_row(
                old,
                name=spec.name,
                endpoint=spec.endpoint.rstrip("/"),
                ca_cert=spec.ca_cert,
                token=old.token if token is None else sealer.seal(token),
                namespace=spec.namespace,
                label_selector=spec.label_selector,
                updated_at=self.clock(),
            )
            await self._save(row)
            self.rows[row.id] = row
            if restart:
                await self.service.remove_cluster(row.id, forget=False)
                await self._start(row, spec.token)
                log.info("integration %s: changed; its watchers restarted", row.id)
            return self.view(row.id)

    async def delete(self, integration_id: str) -> None:
        async with self._lock:
            row = self._row(integration_id)
            try:
                await self.service.history.store.delete_integration(row.id)
            except StoreError as exc:
                raise IntegrationError(503, "store_unavailable", str(exc)) from None
            await self.service.remove_cluster(row.id, forget=True)
            del self.rows[row.id]
            self.monitors.pop(row.id, None)
            self._persisted.pop(row.id, None)
            log.info("integration %s (%s): deleted; its pods left the index", row.id, row.name)

    # --- running ---------------------------------------------------------------

    async def load(self) -> None:
        """Start every stored integration not running yet (the store is open)."""
        await self._load()
        self.loaded = True

    async def _load(self) -> None:
        for row in await self.service.history.store.integrations():
            if row.id in self.rows:
                continue
            self.rows[row.id] = row
            if self.sealer is None:
                self._broken(row, "no secret_key_file is configured: the token cannot be opened")
                continue
            try:
                token = self.sealer.open(row.token)
            except SealingError as exc:
                self._broken(row, str(exc))
                continue
            await self._start(row, token)

    def cluster_ids(self) -> Iterable[str]:
        return self.rows.keys()

    async def run(self, interval: float = 1.0, reconcile_every: float = 10.0) -> None:
        """Age the monitors once a second and save their state when it changed; every
        ``reconcile_every`` seconds, follow what other replicas changed in the store."""
        last_reconcile = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
                if time.monotonic() - last_reconcile >= reconcile_every:
                    last_reconcile = time.monotonic()
                    await self.reconcile()
            except StoreError as exc:
                log.warning("integrations: store unavailable (%s); retrying", exc)
            except Exception:  # a bug here must not stop the watchers beside it
                log.exception("integrations: health tick failed; retrying next second")

    async def reconcile(self) -> None:
        """Start, restart or stop watchers for what the store says now: integrations
        registered, changed or deleted through another replica sharing it."""
        async with self._lock:
            await self._reconcile()

    async def _reconcile(self) -> None:
        """:meth:`reconcile`, for a caller that holds the lock."""
        stored = {row.id: row for row in await self.service.history.store.integrations()}
        for integration_id in [i for i in self.rows if i not in stored]:
            await self.service.remove_cluster(integration_id, forget=True)
            del self.rows[integration_id]
            self.monitors.pop(integration_id, None)
            self._persisted.pop(integration_id, None)
            log.info("integration %s: deleted elsewhere; its pods left the index", integration_id)
        for integration_id, row in stored.items():
            mine = self.rows.get(integration_id)
            if mine is not None and mine.updated_at == row.updated_at:
                continue
            if mine is not None and not _watch_changed(mine, row):
                self.rows[integration_id] = replace_row(
                    mine, name=row.name, updated_at=row.updated_at
                )
                continue
            if mine is not None:
                await self.service.remove_cluster(integration_id, forget=False)
            self.rows[integration_id] = row
            if self.sealer is None:
                self._broken(row, "no secret_key_file is configured: the token cannot be opened")
                continue
            try:
                token = self.sealer.open(row.token)
            except SealingError as exc:
                self._broken(row, str(exc))
                continue
            await self._start(row, token)
            log.info(
                "integration %s (%s): %s elsewhere; watching %s",
                row.id,
                row.name,
                "changed" if mine is not None else "registered",
                row.endpoint,
            )

    async def tick(self) -> None:
        async with self._lock:  # never saves a row that a delete is removing
            await self._tick()

    async def _tick(self) -> None:
        for integration_id, monitor in list(self.monitors.items()):
            monitor.tick()
            row = self.rows.get(integration_id)
            if row is None:
                continue
            sync_advanced = (monitor.last_sync or 0.0) - (row.last_sync or 0.0) >= SYNC_SAVE_EVERY
            if self._persisted.get(integration_id) == monitor.transitions and not sync_advanced:
                continue
            updated = replace_row(
                row,
                last_error=monitor.last_error,
                last_error_phase=monitor.last_error_phase,
                last_sync=monitor.last_sync,
            )
            try:  # health only: another replica may have changed or deleted the integration
                stored = await self.service.history.store.save_integration_health(
                    integration_id, updated.last_error, updated.last_error_phase, updated.last_sync
                )
            except StoreError as exc:
                log.warning("integration %s: health not saved (%s)", integration_id, exc)
                continue
            if not stored:
                log.warning(
                    "integration %s: no longer stored (deleted through another replica?); "
                    "still watched here until this replica restarts",
                    integration_id,
                )
            self.rows[integration_id] = updated
            self._persisted[integration_id] = monitor.transitions

    # --- internals -------------------------------------------------------------

    def _row(self, integration_id: str) -> StoredIntegration:
        row = self.rows.get(integration_id)
        if row is None:
            raise IntegrationError(404, "not_found", f"no integration {integration_id!r}")
        return row

    def _open_token(self, sealer: Sealer, row: StoredIntegration) -> str:
        try:
            return sealer.open(row.token)
        except SealingError as exc:
            raise IntegrationError(
                409, "token_unreadable", f"{exc}; give bearer_token to replace it"
            ) from None

    def _sealer(self) -> Sealer:
        if self.sealer is None:
            raise IntegrationError(
                409,
                "no_secret_key",
                "integrations need a key to encrypt their tokens: set secret_key_file "
                "(PODINDEX_SECRET_KEY_FILE); tokens are never stored in the clear",
            )
        return self.sealer

    async def _validated(self, spec: Spec) -> None:
        result = await self.validate(
            spec.endpoint, spec.ca_cert, spec.token, namespace=spec.namespace or None
        )
        if not result.ok:
            log.warning(
                "integration %r: validation failed in phase %s: %s",
                spec.name,
                result.phase,
                result.message,
            )
            raise ValidationRefused(result)

    async def _save(self, row: StoredIntegration) -> None:
        try:
            await self.service.history.store.save_integration(row)
        except StoreRejected as exc:
            raise IntegrationError(409, "name_taken", str(exc)) from None
        except StoreError as exc:
            raise IntegrationError(503, "store_unavailable", str(exc)) from None

    def _new_id(self, name: str) -> str:
        base = _NOT_ID.sub("-", name.lower()).strip("-")[:40].strip("-") or "cluster"
        while True:
            candidate = f"{base}-{secrets.token_hex(3)}"
            if candidate not in self.service.clusters and candidate not in self.rows:
                return candidate

    def _monitor(self, row: StoredIntegration) -> HealthMonitor:
        monitor = self.monitors.get(row.id)
        if monitor is None:
            monitor = HealthMonitor(self.clock, last_sync=row.last_sync)
            self.monitors[row.id] = monitor
        return monitor

    def _broken(self, row: StoredIntegration, message: str) -> None:
        monitor = self._monitor(row)
        monitor.status = "Disconnected"
        monitor.last_error = message
        monitor.last_error_phase = "authentication"
        log.error("integration %s (%s): not started: %s", row.id, row.name, message)

    async def _start(self, row: StoredIntegration, token: str) -> None:
        settings = self.service.settings
        access = explicit_access(row.endpoint, token=token, ca_pem=row.ca_cert)
        access.source = f"integration {row.id} ({row.endpoint})"
        options = WatchOptions(
            namespace=row.namespace or None,
            label_selector=row.label_selector or None,
            page_size=settings.page_size,
            stall_timeout=settings.stall_timeout,
        )
        old = self.monitors.get(row.id)
        monitor = HealthMonitor(
            self.clock, last_sync=old.last_sync if old is not None else row.last_sync
        )
        if old is not None:
            monitor.reconnects = old.reconnects
        self.monitors[row.id] = monitor
        sync = await self.service.add_cluster(row.id, access, options, integration=True)
        _observe(sync, monitor)


def _observe(sync: ClusterSync, monitor: HealthMonitor) -> None:
    """Health follows the pods watcher: pods are what an integration is for. A token that
    may list pods but not ReplicaSets or Jobs (a narrowly scoped service account) leaves
    identities to labels and shows in the watch error metrics, not as an unhealthy cluster."""
    sync.pods.on_sync = monitor.on_sync
    sync.pods.on_error = monitor.on_error


def _watch_changed(old: StoredIntegration, new: StoredIntegration) -> bool:
    """What its watchers depend on changed (not only its name)."""
    return (
        old.endpoint != new.endpoint
        or old.ca_cert != new.ca_cert
        or old.token != new.token
        or old.namespace != new.namespace
        or old.label_selector != new.label_selector
    )


def replace_row(row: StoredIntegration, **changes: object) -> StoredIntegration:
    return msgspec.structs.replace(row, **changes)


def _check_spec(spec: Spec, *, named: bool = True) -> None:
    """Input checks that need no network; each error names its field."""
    if named and (not spec.name.strip() or len(spec.name) > MAX_NAME):
        raise IntegrationError(400, "invalid_name", f"name must be 1 to {MAX_NAME} characters")
    try:
        check_endpoint(spec.endpoint)
    except EndpointError as exc:
        raise IntegrationError(400, "invalid_endpoint", f"endpoint: {exc}") from None
    if not spec.token.strip():
        raise IntegrationError(400, "invalid_bearer_token", "bearer_token must not be empty")
    if spec.namespace and not _NAMESPACE.fullmatch(spec.namespace):
        raise IntegrationError(
            400, "invalid_namespace", f"namespace {spec.namespace[:80]!r} is not a DNS label"
        )
    try:
        parse_selector(spec.label_selector)
    except SelectorError as exc:
        raise IntegrationError(400, "invalid_label_selector", f"label_selector: {exc}") from None
    problem = check_certificate(spec.ca_cert) if spec.ca_cert.strip() else "ca_cert is empty"
    if problem is not None:
        raise ValidationRefused(Validation.failed("certificate", problem))
