"""Every error the Kubernetes layer raises, drawn once.

KubeError
├── ConfigError            no usable kubeconfig / in-cluster / explicit settings
├── TransportError         the API server could not be reached or the stream broke
│   ├── Unreachable        no connection at all: refused, DNS, TLS handshake, connect timeout
│   └── StreamStalled      a watch sent no bytes (not even a bookmark) for too long
└── ApiError               the API server answered with a Status (HTTP or ERROR event)
    ├── Unauthorized       401
    ├── Forbidden          403
    └── Gone               410: resourceVersion or continue token expired; relist
"""

from __future__ import annotations

from podindex.model import Status


class KubeError(Exception):
    """Base of everything raised by ``podindex.kube``."""


class ConfigError(KubeError):
    pass


class TransportError(KubeError):
    pass


class Unreachable(TransportError):
    pass


class StreamStalled(TransportError):
    pass


class ApiError(KubeError):
    def __init__(self, status: Status) -> None:
        super().__init__(f"{status.code} {status.reason}: {status.message}")
        self.status = status

    @property
    def code(self) -> int:
        return self.status.code

    @property
    def retryable(self) -> bool:
        return self.code == 429 or self.code >= 500


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class Gone(ApiError):
    pass


def api_error(status: Status) -> ApiError:
    """The ApiError subclass for a Status body."""
    kinds: dict[int, type[ApiError]] = {401: Unauthorized, 403: Forbidden, 410: Gone}
    return kinds.get(status.code, ApiError)(status)


def describe(exc: BaseException) -> str:
    """A transport exception as text that never carries a credential.

    ``repr()`` of aiohttp's response errors includes the request's headers,
    ``Authorization`` among them; their ``str()`` (status, message, URL) and
    the exception's type are what a log line or an API answer may show.
    """
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
