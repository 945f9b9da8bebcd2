"""The only code that sends HTTP to a Kubernetes API server.

A thin layer over one aiohttp session: build the real REST paths, attach the
current credentials (refreshing them once after a 401), turn non-2xx answers
into :mod:`podindex.kube.errors`, and hand a watch stream over as lines. Tests
pass their own session or point it at ``podindex.sim``; nothing is patched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import msgspec

from podindex import __version__
from podindex.kube.config import ClusterAccess
from podindex.kube.errors import (
    ApiError,
    StreamStalled,
    TransportError,
    Unauthorized,
    Unreachable,
    api_error,
    describe,
)
from podindex.model import Status

JSON = "application/json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
USER_AGENT = f"podindex/{__version__}"

_status_decoder = msgspec.json.Decoder(Status)


@dataclass(frozen=True, slots=True)
class Resource:
    """A listable, watchable collection, e.g. pods or (metadata-only) replicasets."""

    group_version: str
    plural: str
    metadata_only: bool = False

    def path(self, namespace: str | None = None) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    @property
    def list_accept(self) -> str:
        return METADATA_LIST if self.metadata_only else JSON

    @property
    def watch_accept(self) -> str:
        # A watch must ask for the object type, not the list type (recording 53).
        return METADATA_OBJECT if self.metadata_only else JSON


PODS = Resource("v1", "pods")
REPLICASETS = Resource("apps/v1", "replicasets", metadata_only=True)
JOBS = Resource("batch/v1", "jobs", metadata_only=True)


def status_from_response(code: int, reason: str, body: bytes) -> Status:
    """The Status in an error body, or one made up from the HTTP line when there is none."""
    try:
        status = _status_decoder.decode(body)
        if status.code:
            return status
    except msgspec.DecodeError:
        pass
    text = body.decode("utf-8", "replace").strip()[:200]
    return Status(status="Failure", code=code, reason=reason, message=text or reason)


class KubeClient:
    """HTTP to one API server. Owns its session unless one is passed in."""

    def __init__(
        self,
        access: ClusterAccess,
        session: aiohttp.ClientSession | None = None,
        *,
        connect_timeout: float = 10.0,
        request_timeout: float = 60.0,
    ) -> None:
        self.access = access
        self._session = session
        self._owns_session = session is None
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.access.ssl_context or False, limit=32)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                # Decompressed by aiohttp when the server compresses.
                auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def _refresh_credentials(self) -> None:
        """After a 401: new token, and a new connection pool if the client certificate changed
        (an exec plugin may rotate it); open streams on the old pool end and resume."""
        credentials = self.access.credentials
        await credentials.refresh()
        fresh = credentials.tls_context()
        if fresh is not None and fresh is not self.access.ssl_context:
            self.access.ssl_context = fresh
            if self._owns_session and self._session is not None:
                old, self._session = self._session, None
                await old.close()

    async def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        authorization = await self.access.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        return headers

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        accept: str,
        client_timeout: aiohttp.ClientTimeout,
        body: bytes | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        url = self.access.server + path
        for attempt in (1, 2):
            headers = await self._headers(accept)
            if body is not None:
                headers["Content-Type"] = JSON
            try:
                response = await self.session.request(
                    method, url, params=params, headers=headers, timeout=client_timeout, data=body
                )
            except (TimeoutError, aiohttp.ClientConnectorError, OSError) as exc:
                raise Unreachable(f"{method} {path}: {describe(exc)}") from exc
            except aiohttp.ClientError as exc:
                raise TransportError(f"{method} {path}: {describe(exc)}") from exc
            try:
                if response.status >= 400:
                    try:
                        error_body = await response.read()
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        raise TransportError(
                            f"{method} {path}: reading the error: {describe(exc)}"
                        ) from exc
                    error = api_error(
                        status_from_response(response.status, response.reason or "", error_body)
                    )
                    if isinstance(error, Unauthorized) and attempt == 1:
                        await self._refresh_credentials()
                        continue
                    raise error
                yield response
                return
            finally:
                response.release()
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(
        self, path: str, params: Mapping[str, str] | None = None, accept: str = JSON
    ) -> bytes:
        timeout = aiohttp.ClientTimeout(
            total=self._request_timeout, sock_connect=self._connect_timeout
        )
        try:
            async with self._request("GET", path, params or {}, accept, timeout) as response:
                return await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(f"GET {path}: {describe(exc)}") from exc

    async def post(self, path: str, body: bytes) -> bytes:
        """POST a JSON object (a create); the answer's body, whatever its 2xx status."""
        return await self._send("POST", path, body)

    async def delete(self, path: str, body: bytes) -> bytes:
        """DELETE with a JSON DeleteOptions body; the answer's body (the object, or a Status)."""
        return await self._send("DELETE", path, body)

    async def _send(self, method: str, path: str, body: bytes) -> bytes:
        timeout = aiohttp.ClientTimeout(
            total=self._request_timeout, sock_connect=self._connect_timeout
        )
        try:
            async with self._request(method, path, {}, JSON, timeout, body) as response:
                return await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(f"{method} {path}: {describe(exc)}") from exc

    async def list_page(
        self, resource: Resource, namespace: str | None, params: Mapping[str, str]
    ) -> bytes:
        return await self.get(resource.path(namespace), params, resource.list_accept)

    @asynccontextmanager
    async def watch_lines(
        self,
        resource: Resource,
        namespace: str | None,
        params: Mapping[str, str],
        stall_timeout: float,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a watch; yield an iterator over its newline-separated event lines.

        ``stall_timeout`` bounds the silence between two reads: a server that
        stops sending (not even a bookmark) raises :class:`StreamStalled`.
        """
        path = resource.path(namespace)
        async with self.stream(path, params, resource.watch_accept, stall_timeout) as response:
            yield _lines(response, path, stall_timeout)

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        params: Mapping[str, str],
        accept: str,
        read_timeout: float | None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose body is read as it arrives (a watch, a followed log); no total
        timeout, ``read_timeout`` between two reads (None: none)."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout, sock_read=read_timeout
        )
        async with self._request("GET", path, params, accept, timeout) as response:
            yield response

    @asynccontextmanager
    async def websocket(
        self, path: str, params: Sequence[tuple[str, str]], protocols: Sequence[str]
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """A WebSocket to the API server (exec, attach), authenticated as every request.

        A refused upgrade raises the ApiError for its status; aiohttp keeps
        the refusal's body from us, so the Status is made from the HTTP line.
        """
        url = self.access.server + path
        for attempt in (1, 2):
            headers = await self._headers(JSON)
            try:
                ws = await self.session.ws_connect(
                    url,
                    params=list(params),
                    headers=headers,
                    protocols=tuple(protocols),
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    heartbeat=30.0,
                )
            except aiohttp.WSServerHandshakeError as exc:
                error = api_error(
                    Status(status="Failure", code=exc.status, reason=exc.message, message="")
                )
                if isinstance(error, Unauthorized) and attempt == 1:
                    await self._refresh_credentials()
                    continue
                raise error from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise TransportError(f"WebSocket {path}: {describe(exc)}") from exc
            try:
                yield ws
            finally:
                await ws.close()
            return
        raise AssertionError("unreachable")  # pragma: no cover

    async def version(self) -> dict[str, str]:
        body = await self.get("/version")
        decoded = msgspec.json.decode(body)
        if not isinstance(decoded, dict):
            raise ApiError(
                Status(code=500, reason="BadVersion", message="unexpected /version body")
            )
        return {str(k): str(v) for k, v in decoded.items()}


async def _lines(
    response: aiohttp.ClientResponse, path: str, stall_timeout: float
) -> AsyncIterator[bytes]:
    pending = b""
    try:
        async for chunk in response.content.iter_any():
            if pending:
                chunk = pending + chunk
            lines = chunk.split(b"\n")
            pending = lines.pop()
            for line in lines:
                if line:
                    yield line
    except aiohttp.ServerTimeoutError as exc:
        raise StreamStalled(f"watch {path}: no bytes for {stall_timeout:g}s") from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise TransportError(f"watch {path}: {describe(exc)}") from exc
    if pending.strip():
        yield pending
