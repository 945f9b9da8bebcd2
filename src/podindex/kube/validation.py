"""Checking an integration's endpoint, CA and token before they are saved, phase by phase.

Three phases, in order, the first failure ending the check:

1. ``certificate``: the CA is PEM that parses as X.509 and is valid now.
2. ``reachability``: a TCP connection and a TLS handshake to the endpoint,
   the server's certificate verified against that CA (and its name).
3. ``authentication``: ``GET /version`` and one authorized call, a LIST of
   one pod in the scope's namespace (or the cluster), with the token.

Only HTTPS endpoints are accepted. Every message is scrubbed of the token:
some come from aiohttp or ssl exceptions, which are not ours to trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from cryptography import x509

from podindex.kube.client import PODS, KubeClient
from podindex.kube.config import explicit_access
from podindex.kube.errors import ApiError, Forbidden, KubeError, TransportError, Unauthorized

Phase = Literal["certificate", "reachability", "authentication"]
PHASES: tuple[Phase, ...] = ("certificate", "reachability", "authentication")


class EndpointError(ValueError):
    """The endpoint is not an ``https://host[:port]`` URL; the message says why."""


@dataclass(frozen=True, slots=True)
class Validation:
    """The outcome: ``server_version`` on success, else the failed ``phase`` and why."""

    ok: bool
    server_version: str = ""
    phase: Phase | None = None
    message: str = ""

    @classmethod
    def failed(cls, phase: Phase, message: str) -> Validation:
        return cls(False, phase=phase, message=message)


def check_endpoint(endpoint: str) -> tuple[str, int]:
    """``(host, port)`` of an HTTPS API server URL; :class:`EndpointError` otherwise."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port or 443
    except ValueError as exc:
        raise EndpointError(f"endpoint is not a URL: {exc}") from None
    if parts.scheme != "https":
        raise EndpointError("endpoint must be an https:// URL (API servers speak TLS)")
    if not parts.hostname:
        raise EndpointError("endpoint has no host")
    if parts.username or parts.password:
        raise EndpointError("endpoint must not carry credentials")
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise EndpointError("endpoint must be https://host[:port], without a path or query")
    return parts.hostname, port


def check_certificate(ca_pem: str, now: datetime.datetime | None = None) -> str | None:
    """None when ``ca_pem`` is X.509 PEM valid at ``now``; else what is wrong with it."""
    instant = now or datetime.datetime.now(datetime.UTC)
    try:
        certificates = x509.load_pem_x509_certificates(ca_pem.encode())
    except ValueError as exc:
        return f"CA certificate is not valid PEM X.509: {exc}"
    for cert in certificates:
        subject = cert.subject.rfc4514_string() or "(no subject)"
        if cert.not_valid_after_utc <= instant:
            return f"CA certificate {subject} expired at {cert.not_valid_after_utc.isoformat()}"
        if cert.not_valid_before_utc > instant:
            return (
                f"CA certificate {subject} is not valid before "
                f"{cert.not_valid_before_utc.isoformat()}"
            )
    try:
        ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        return f"CA certificate cannot be used for TLS: {exc}"
    return None


def scrub(text: str, secret: str) -> str:
    """``text`` with ``secret`` (and anything it leaks in) replaced."""
    return text.replace(secret, "****") if secret else text


async def validate_connection(
    endpoint: str,
    ca_pem: str,
    token: str,
    *,
    namespace: str | None = None,
    connect_timeout: float = 10.0,
    now: datetime.datetime | None = None,
) -> Validation:
    """Run the three phases in order; see the module docstring."""
    try:
        host, port = check_endpoint(endpoint)
    except EndpointError as exc:
        return Validation.failed("reachability", str(exc))
    problem = check_certificate(ca_pem, now)
    if problem is not None:
        return Validation.failed("certificate", problem)
    try:
        await _handshake(host, port, ca_pem, connect_timeout)
    except ssl.SSLCertVerificationError as exc:
        message = f"TLS verification against the given CA failed: {exc.verify_message or exc}"
        return Validation.failed("reachability", scrub(message, token))
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        detail = str(exc) or type(exc).__name__
        message = f"cannot connect to {host}:{port}: {detail}"
        return Validation.failed("reachability", scrub(message, token))
    client = KubeClient(
        explicit_access(endpoint, token=token, ca_pem=ca_pem),
        connect_timeout=connect_timeout,
        request_timeout=connect_timeout,
    )
    try:
        version = await client.version()
        await client.list_page(PODS, namespace or None, {"limit": "1"})
    except Unauthorized:
        return Validation.failed("authentication", "the API server rejected the token (401)")
    except Forbidden as exc:
        where = f"namespace {namespace}" if namespace else "the cluster"
        message = f"the token may not list pods in {where} (403): {exc.status.message}"
        return Validation.failed("authentication", scrub(message, token))
    except TransportError as exc:
        return Validation.failed("reachability", scrub(str(exc), token))
    except (ApiError, KubeError, ValueError) as exc:
        return Validation.failed("authentication", scrub(f"unexpected answer: {exc}", token))
    finally:
        await client.close()
    return Validation(True, server_version=version.get("gitVersion", ""))


async def _handshake(host: str, port: int, ca_pem: str, seconds: float) -> None:
    context = ssl.create_default_context(cadata=ca_pem)
    async with asyncio.timeout(seconds):
        _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
