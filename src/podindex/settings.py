"""Service settings: every option is a CLI flag and a ``PODINDEX_<NAME>`` variable.

The CLI writes the flags it was given into the environment before the server
starts its worker, and the worker reads them back with :func:`Settings.from_env`;
so the two spellings can never disagree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

_CLUSTER_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class SettingsError(ValueError):
    """An option has a value podindex cannot use; the message names the option."""


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:8080"
    kubeconfig: str | None = None
    context: str | None = None
    server: str | None = None
    """Explicit API server URL (with ``token_file`` and ``ca_file``)."""
    token_file: str | None = None
    ca_file: str | None = None
    cluster_id: str = "default"
    namespace: str | None = None
    selector: str | None = None
    grace_period: float = 30.0
    stall_timeout: float = 90.0
    page_size: int = 500
    log_level: str = "info"
    store: str = "sqlite:///podindex.db"
    """History store URL: ``sqlite:///path/file.db`` or ``postgresql://…``."""
    store_writer_process: bool = False
    """Write history from a child process (a second core for the writes), not from this one.

    Off by default: it costs ~10 % more CPU a change (the batch crosses a pipe), which
    is a loss whenever the cores are busy anyway (see BENCHMARKS.md)."""
    retention: float = 7 * 86400.0
    """Seconds a dead pod's history is kept (``7d``, ``12h``, ``30m`` are accepted too)."""
    instance_history: int = 10
    """Finished container instances kept per container of a pod (search and export show them)."""
    watch: bool = True
    """Watch the cluster; false serves only what agents push (a broker)."""
    ack_timeout: float = 5.0
    """Seconds a push waits for its write to the store before answering 503."""
    tokens_file: str | None = None
    """The API's access file: bearer tokens (as SHA-256) and service-account roles."""
    lookup_access: str = "open"
    """Who may read the index: ``open`` (anyone who can connect) or ``reader``."""
    tls_cert: str | None = None
    """PEM certificate (chain) for serving HTTPS; with ``tls_key``."""
    tls_key: str | None = None
    reconcile_interval: float = 10.0
    """Seconds between reads of the integrations and IP sets in the store, to follow what
    other replicas sharing it changed."""
    allowed_origins: str | None = None
    """Browser origins (comma-separated, ``*`` for any) allowed to open WebSockets besides
    the page's own host."""
    # --- integrations (registered clusters) ---
    secret_key_file: str | None = None
    """A Fernet key that encrypts integration tokens at rest; without it none can be created."""
    # --- forward-auth (GET /authz) ---
    trusted_proxies: str | None = None
    """Comma-separated CIDRs whose forwarded headers name the caller (default: none)."""
    forwarded_headers: str = "x-forwarded-for,x-real-ip,forwarded"
    """Which client-address headers a trusted proxy's request is read from, first present wins."""
    authz_targets: str = "fission,service-host"
    """Target-namespace presets (``fission``, ``service-host``) and ``header:NAME``."""
    authz_policy: str | None = None
    """YAML policy file adding allow/deny rules and target rules; reloaded when it changes."""
    authz_audit: bool = False
    """Log every /authz decision as one line (logger ``podindex.authz.audit``)."""

    @property
    def host(self) -> str:
        return self._split_listen()[0]

    @property
    def port(self) -> int:
        return self._split_listen()[1]

    def _split_listen(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise SettingsError(f"listen: expected HOST:PORT, got {self.listen!r}")
        return host.strip("[]") or "0.0.0.0", int(port)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = source.get(env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = convert(env_name(f.name), raw, str(f.type))
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[env_name(f.name)] = str(value)
        return out

    def validate(self) -> None:
        self._split_listen()
        if self.grace_period < 0:
            raise SettingsError("grace_period must be >= 0 seconds")
        if self.stall_timeout <= 0:
            raise SettingsError("stall_timeout must be > 0 seconds")
        if not 1 <= self.page_size <= 10000:
            raise SettingsError("page_size must be between 1 and 10000")
        if not _CLUSTER_ID.fullmatch(self.cluster_id):
            raise SettingsError(
                f"cluster_id must be a DNS label (a-z, 0-9, '-', at most 63), got {self.cluster_id!r}"
            )
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError("log_level must be debug, info, warning or error")
        if not self.store.startswith(("sqlite:", "postgresql:", "postgres:")):
            raise SettingsError("store must be sqlite:///path/file.db or postgresql://...")
        if self.retention <= 0:
            raise SettingsError("retention must be > 0")
        if not 1 <= self.instance_history <= 1000:
            raise SettingsError(
                f"instance_history must be between 1 and 1000, got {self.instance_history}"
            )
        if self.ack_timeout <= 0:
            raise SettingsError("ack_timeout must be > 0 seconds")
        if self.reconcile_interval <= 0:
            raise SettingsError("reconcile_interval must be > 0 seconds")
        if self.lookup_access not in ("open", "reader"):
            raise SettingsError(f"lookup_access must be open or reader, got {self.lookup_access!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert and tls_key go together: give both or neither")
        self._validate_authz()

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def _validate_authz(self) -> None:
        from podindex.authz import ProxyTrust, TargetRules  # pure; only its parsers are used

        try:
            ProxyTrust.parse(self.trusted_proxies, self.forwarded_headers)
        except ValueError as exc:
            raise SettingsError(f"trusted_proxies/forwarded_headers: {exc}") from None
        try:
            TargetRules.parse(self.authz_targets)
        except ValueError as exc:
            raise SettingsError(f"authz_targets: {exc}") from None


def env_name(field_name: str) -> str:
    return "PODINDEX_" + field_name.upper()


def convert(name: str, raw: str, type_name: str) -> object:
    """A setting's text (a flag or variable) as its field's type; durations take s/m/h/d."""
    if type_name.startswith("bool"):
        value = _BOOLEANS.get(raw.strip().lower())
        if value is None:
            raise SettingsError(f"{name}: expected true or false, got {raw!r}")
        return value
    try:
        if type_name.startswith("float"):
            matched = _DURATION.fullmatch(raw.strip())
            if matched is None:
                raise ValueError(raw)
            return float(matched[1]) * _UNIT_SECONDS[matched[2] or "s"]
        if type_name.startswith("int"):
            return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: expected a number, got {raw!r}") from exc
    return raw
