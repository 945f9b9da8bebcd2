"""Where a cluster is and how to authenticate to it.

Three sources, as operators expect: a kubeconfig (``KUBECONFIG``,
``--kubeconfig``, ``--context``; exec plugins, OIDC, client certificates and
tokens through kubernetes_asyncio's loader), the in-cluster service account
(its projected token re-read when the kubelet rotates it), and an explicit
endpoint + CA + bearer token. The result is a :class:`ClusterAccess`: a base
URL, an SSL context, and a :class:`Credentials` that yields the Authorization
header and can be refreshed after a 401.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from podindex.kube.errors import ConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class Credentials(Protocol):
    async def authorization(self) -> str | None:
        """The Authorization header value, or None (client certificates only)."""

    async def refresh(self) -> None:
        """Called after a 401: fetch a fresh credential if the source can."""

    def tls_context(self) -> ssl.SSLContext | None:
        """A TLS context carrying a client certificate from this source, if it has one."""


@dataclass
class StaticToken:
    token: str | None

    async def authorization(self) -> str | None:
        return f"Bearer {self.token}" if self.token else None

    async def refresh(self) -> None:
        return None

    def tls_context(self) -> ssl.SSLContext | None:
        return None

    def __repr__(self) -> str:  # never show the token
        return "StaticToken(****)"


@dataclass
class TokenFile:
    """A projected service-account token: re-read whenever the file changes."""

    path: Path
    _token: str = field(default="", repr=False)
    _stamp: tuple[int, int] = (0, 0)

    def _read_if_changed(self) -> None:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {self.path}: {exc}") from exc
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            self._token = self.path.read_text().strip()
            self._stamp = stamp

    async def authorization(self) -> str | None:
        self._read_if_changed()
        return f"Bearer {self._token}" if self._token else None

    async def refresh(self) -> None:
        self._stamp = (0, 0)

    def tls_context(self) -> ssl.SSLContext | None:
        return None


@dataclass
class ClusterAccess:
    """Everything needed to open connections to one API server."""

    server: str
    ssl_context: ssl.SSLContext | None
    credentials: Credentials
    source: str
    """Human description for logs (never includes secrets)."""

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")


def _ssl_context(
    ca_file: str | None = None,
    ca_data: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    verify: bool = True,
    server_name: str | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    del server_name  # aiohttp takes server_hostname per request; kept for parity
    return context


def explicit_access(
    server: str,
    *,
    token: str | None = None,
    token_file: str | None = None,
    ca_file: str | None = None,
    ca_pem: str | None = None,
) -> ClusterAccess:
    """An API server given by endpoint, CA and bearer token (a file is re-read on change)."""
    if not server.startswith(("https://", "http://")):
        raise ConfigError(f"API server URL must start with https:// (got {server!r})")
    context = None
    if server.startswith("https://"):
        context = _ssl_context(ca_file=ca_file, ca_data=ca_pem)
    credentials: Credentials = TokenFile(Path(token_file)) if token_file else StaticToken(token)
    return ClusterAccess(server, context, credentials, source=f"explicit {server}")


def in_cluster_access(directory: Path = SERVICE_ACCOUNT_DIR) -> ClusterAccess:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError("not running in a cluster (KUBERNETES_SERVICE_HOST unset)")
    token_path = directory / "token"
    if not token_path.exists():
        raise ConfigError(f"service account token {token_path} does not exist")
    if ":" in host:
        host = f"[{host}]"
    server = f"https://{host}:{port}"
    context = _ssl_context(ca_file=str(directory / "ca.crt"))
    return ClusterAccess(
        server, context, TokenFile(token_path), source="in-cluster service account"
    )


class KubeconfigCredentials:
    """Credentials from a kubeconfig user: token, exec plugin, OIDC or client certificate.

    ``refresh`` reloads the kubeconfig, which re-runs an exec plugin or
    refreshes an OIDC token, as kubectl does after a 401.
    """

    def __init__(self, path: str | None, context: str | None) -> None:
        if path is not None and not Path(path).is_file():
            # The loader's own message for this ("Expected key current-context") misleads.
            raise ConfigError(f"kubeconfig {path} does not exist or is not a file")
        self._path = path
        self._context = context
        self._authorization: str | None = None
        self.server = ""
        self.ssl_context: ssl.SSLContext | None = None

    async def load(self) -> None:
        from kubernetes_asyncio import config as k8s_config
        from kubernetes_asyncio.client import Configuration

        configuration = Configuration()
        try:
            await k8s_config.load_kube_config(
                config_file=self._path,
                context=self._context,
                client_configuration=configuration,
                persist_config=False,
            )
        except Exception as exc:  # the loader raises many types; all mean "unusable"
            raise ConfigError(f"kubeconfig {self._path or '~/.kube/config'}: {exc}") from exc
        self.server = str(configuration.host)
        self._authorization = configuration.api_key.get("BearerToken") or None
        if self._authorization and not self._authorization.startswith("Bearer "):
            self._authorization = "Bearer " + self._authorization
        if self.server.startswith("https://"):
            self.ssl_context = _ssl_context(
                ca_file=configuration.ssl_ca_cert,
                cert_file=configuration.cert_file,
                key_file=configuration.key_file,
                verify=bool(configuration.verify_ssl),
            )

    async def authorization(self) -> str | None:
        return self._authorization

    async def refresh(self) -> None:
        await self.load()

    def tls_context(self) -> ssl.SSLContext | None:
        return self.ssl_context

    def __repr__(self) -> str:
        return f"KubeconfigCredentials(path={self._path!r}, context={self._context!r})"


def kubeconfig_path(explicit: str | None) -> str | None:
    """The kubeconfig to use, or None when none exists (then in-cluster or demo)."""
    if explicit:
        return explicit
    env = os.environ.get("KUBECONFIG")
    if env:
        first = env.split(os.pathsep)[0]
        return first if first else None
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


async def kubeconfig_access(path: str | None, context: str | None) -> ClusterAccess:
    credentials = KubeconfigCredentials(path, context)
    await credentials.load()
    where = f"kubeconfig {path or '~/.kube/config'}" + (f" context {context}" if context else "")
    return ClusterAccess(credentials.server, credentials.ssl_context, credentials, source=where)


async def discover_access(kubeconfig: str | None, context: str | None) -> ClusterAccess | None:
    """kubeconfig if one is configured or present, else in-cluster, else None."""
    path = kubeconfig_path(kubeconfig)
    if path is not None or context is not None:
        return await kubeconfig_access(path, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster_access()
    return None


@dataclass(frozen=True)
class KubeconfigCluster:
    """A kubeconfig context as an integration: endpoint, CA (PEM) and bearer token."""

    context: str
    endpoint: str
    ca_pem: str
    token: str = field(repr=False)


def kubeconfig_cluster(text: str, context: str | None) -> KubeconfigCluster:
    """Read one context of a kubeconfig given as text (a token user with inline CA data).

    Exec plugins, client certificates and file references are not accepted:
    an integration is stored as endpoint + CA + token, nothing that lives
    on one machine's disk or needs a local program.
    """
    import base64

    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The problem and where, never PyYAML's snippet of the line: it may hold a token.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"kubeconfig is not YAML: {problem}{where}") from None
    if not isinstance(document, dict):
        raise ConfigError("kubeconfig is not a mapping")

    def named(section: str, name: str) -> dict[str, object]:
        for entry in document.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                inner = entry.get(section[:-1])
                if isinstance(inner, dict):
                    return inner
        raise ConfigError(f"kubeconfig has no {section[:-1]} named {name!r}")

    chosen = context or document.get("current-context")
    if not isinstance(chosen, str) or not chosen:
        raise ConfigError("kubeconfig has no current-context; name a context")
    ctx = named("contexts", chosen)
    cluster = named("clusters", str(ctx.get("cluster", "")))
    user = named("users", str(ctx.get("user", "")))
    server = cluster.get("server")
    if not isinstance(server, str):
        raise ConfigError(f"context {chosen!r}: its cluster has no server")
    ca_data = cluster.get("certificate-authority-data")
    if not isinstance(ca_data, str):
        raise ConfigError(f"context {chosen!r}: certificate-authority-data (inline) is required")
    try:
        ca_pem = base64.b64decode(ca_data, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"context {chosen!r}: certificate-authority-data is not base64") from None
    token = user.get("token")
    if not isinstance(token, str) or not token:
        raise ConfigError(
            f"context {chosen!r}: only users with a bearer token can be registered "
            "(not exec plugins, client certificates or token files)"
        )
    return KubeconfigCluster(chosen, server, ca_pem, token)
