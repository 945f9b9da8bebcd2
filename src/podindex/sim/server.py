"""The HTTP face of FakeCluster: kube-apiserver's REST, LIST and WATCH protocol over aiohttp.

podindex talks to Kubernetes only over HTTP, so the emulator must behave like
kube-apiserver v1.36 at the wire level: paths, status codes, Status bodies,
chunked lists with continue tokens, watch streams with bookmarks and the 410
forms. Responses are assembled from pre-encoded object bytes; small ones get a
Content-Length and larger ones are chunked, as Go's net/http does (2 KiB rule).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from podindex.sim import status as st
from podindex.sim.events import V1_FIELD_LABELS, v1_event
from podindex.sim.kubelet import BEARER_PROTOCOL, PodExec, PodLogs, StatusError, offered_protocols
from podindex.sim.selectors import FieldSelector, LabelSelector, SelectorError
from podindex.sim.store import (
    EVENT,
    EVENT_V1,
    RESOURCES,
    VIEWS,
    Event,
    Resource,
    Snapshot,
    StoredObject,
    TooOld,
)

if TYPE_CHECKING:
    from podindex.sim.cluster import FakeCluster
    from podindex.sim.tls import TlsMaterial

_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode
GO_CHUNKING_THRESHOLD = 2048  # net/http sends Content-Length when the body fits its buffer
WRITE_BATCH = 256 * 1024
PRETIMEOUT_BOOKMARK = 2.0  # the watch cache sends a last bookmark 2 s before the deadline
DEFAULT_MIN_REQUEST_TIMEOUT = 1800  # watches without timeoutSeconds last 30-60 min

VERSION_INFO = {
    "major": "1",
    "minor": "36",
    "emulationMajor": "1",
    "emulationMinor": "36",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "35",
    "gitVersion": "v1.36.2",
    "gitCommit": "98b35193b2ac7a23a673325f5e9b830ecd5ba406",
    "gitTreeState": "clean",
    "buildDate": "2026-11-23T12:47:44Z",
    "goVersion": "go1.27.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}

FULL, METADATA, METADATA_LIST = "full", "metadata", "metadata-list"


class HttpError(Exception):
    """Abort the request with a Status body."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.body = body


def negotiate(accept: str) -> str | None:
    """Pick the representation from Accept: full objects, PartialObjectMetadata(List), or None."""
    if not accept.strip():
        return FULL
    for entry in accept.split(","):
        media, *raw_params = (p.strip() for p in entry.split(";"))
        if media not in ("application/json", "application/*", "*/*"):
            continue
        params = dict(p.split("=", 1) for p in raw_params if "=" in p)
        wanted = params.get("as")
        if wanted is None:
            return FULL
        if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            if wanted == "PartialObjectMetadata":
                return METADATA
            if wanted == "PartialObjectMetadataList":
                return METADATA_LIST
    return None


def encode_continue(rv: int, start: str) -> str:
    raw = _encode({"v": "meta.k8s.io/v1", "rv": rv, "start": start})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_continue(token: str) -> tuple[int, str]:
    """(revision, start key as written in the token) of a continue token."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("unknown version")
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise HttpError(st.bad_request(f"continue key is not valid: {exc}")) from None


def start_key(token_start: str) -> str:
    """Token start keys are '/ns/name\\0' (watch cache) or 'ns/name\\0' (etcd); normalise."""
    return token_start[1:] if token_start.startswith("/") else token_start


@dataclass(frozen=True, slots=True)
class Route:
    resource: Resource
    namespace: str | None
    name: str | None


TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 2:
        return None
    for resource in RESOURCES + VIEWS:
        if (resource.group, resource.version, resource.plural) == (group, version, rest[0]):
            if namespace is not None and not resource.namespaced:
                return None
            name = rest[1] if len(rest) == 2 else None
            if name is not None and resource.namespaced and namespace is None:
                return None
            return Route(resource, namespace, name)
    return None


def parse_pod_subresource(path: str) -> tuple[str, str, str] | None:
    """(namespace, pod, subresource) of /api/v1/namespaces/{ns}/pods/{name}/{sub}."""
    parts = path.split("/")
    if (
        len(parts) == 8
        and parts[1:4] == ["api", "v1", "namespaces"]
        and parts[5] == "pods"
        and all(parts[i] for i in (4, 6, 7))
    ):
        return parts[4], parts[6], parts[7]
    return None


def bookmark_object(resource: Resource, rv: int, media: str, *, initial_end: bool) -> bytes:
    annotations = b',"annotations":{"k8s.io/initial-events-end":"true"}' if initial_end else b""
    meta = b'"metadata":{"resourceVersion":"%d"%s}' % (rv, annotations)
    if media == METADATA:
        return b'{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1",' + meta + b"}"
    return resource.object_prefix + meta + resource.bookmark_tail


def storage_of(resource: Resource) -> Resource:
    """The resource whose table holds a served resource's objects."""
    return resource.stored_as or resource


def item_body(served: Resource, obj: StoredObject) -> bytes:
    """An object's list-item bytes in the served resource's form (views convert)."""
    if served.stored_as is None:
        return obj.body
    return _encode(v1_event(_decode(obj.body)))


def full_body(served: Resource, obj: StoredObject) -> bytes:
    if served.stored_as is None:
        return obj.full_body()
    return served.object_prefix + item_body(served, obj)[1:]


def event_line(type_: str, obj: StoredObject, media: str, served: Resource | None = None) -> bytes:
    if media == METADATA:
        body = obj.metadata_body()
    else:
        body = obj.full_body() if served is None else full_body(served, obj)
    return b'{"type":"%s","object":%s}\n' % (type_.encode(), body)


class WatchFilter:
    """Which events a watcher sees, with the watch cache's selector-transition rules."""

    def __init__(
        self,
        resource: Resource,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        media: str,
    ) -> None:
        self.served = resource
        self.resource = storage_of(resource)
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.media = media
        self.unfiltered = labels.empty and fields.empty

    def matches(self, obj: StoredObject) -> bool:
        return self.labels.matches(obj.labels) and self.fields.matches(obj.fields)

    def line(self, event: Event) -> bytes | None:
        obj = event.obj
        if obj.resource is not self.resource:
            return None
        if self.namespace and obj.namespace != self.namespace:
            return None
        if self.unfiltered or event.type == "DELETED":
            if self.unfiltered or self.matches(obj):
                return event_line(event.type, obj, self.media, self.served)
            return None
        now_matches = self.matches(obj)
        was_matching = event.prev is not None and self.matches(event.prev)
        if now_matches:
            return event_line("MODIFIED" if was_matching else "ADDED", obj, self.media, self.served)
        if was_matching and event.prev is not None:
            # Leaving the selector looks like a delete of the old state at the new revision.
            return event_line(
                "DELETED", event.prev.with_resource_version(event.rv), self.media, self.served
            )
        return None


class SimServer:
    """aiohttp application serving one FakeCluster."""

    def __init__(self, cluster: FakeCluster, tls: TlsMaterial | None) -> None:
        self.cluster = cluster
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.logs = PodLogs(cluster)
        self.exec = PodExec(cluster)
        self._transports: set[asyncio.BaseTransport] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    # --- lifecycle -----------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        self.host = host
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        ssl_context = self.tls.server_context() if self.tls else None
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        self._abort_requests()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def suspend(self) -> None:
        """Cut every connection and stop listening (connections are refused)."""
        await self.stop()

    async def resume(self) -> None:
        await self.start(self.host, self.port)

    def _abort_requests(self) -> None:
        for transport in list(self._transports):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        self._transports.clear()

    # --- request plumbing ----------------------------------------------------------------

    @staticmethod
    def _headers() -> dict[str, str]:
        return {
            "Audit-Id": str(uuid.uuid4()),
            "Cache-Control": "no-cache, private",
            "Content-Type": "application/json",
        }

    async def _send(
        self, request: web.Request, code: int, chunks: Iterable[bytes]
    ) -> web.StreamResponse:
        parts = list(chunks)
        total = sum(len(p) for p in parts)
        if total < GO_CHUNKING_THRESHOLD:
            return web.Response(status=code, body=b"".join(parts), headers=self._headers())
        resp = web.StreamResponse(status=code, headers=self._headers())
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await self._write_lines(resp, parts)
        await resp.write_eof()
        return resp

    async def _send_status(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await self._send(request, int(body["code"]), [st.encode_status(body)])

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
        try:
            if self.cluster.token is not None and self._bearer(request) != self.cluster.token:
                return await self._send_status(request, st.unauthorized())
            try:
                return await self._route(request)
            except (HttpError, StatusError) as err:
                return await self._send_status(request, err.body)
            except SelectorError as err:
                return await self._send_status(request, st.bad_request(str(err)))
        finally:
            if transport is not None:
                self._transports.discard(transport)

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        """The bearer token: Authorization header, or (WebSockets) a subprotocol entry."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[len("Bearer ") :]
        for protocol in offered_protocols(request):
            if protocol.startswith(BEARER_PROTOCOL):
                encoded = protocol[len(BEARER_PROTOCOL) :]
                try:
                    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
                except (ValueError, binascii.Error):
                    return None
        return None

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method == "GET":
            if path == "/version":
                body = json.dumps(VERSION_INFO, indent=2).encode()
                return await self._send(request, 200, [body])
            if path == "/api":
                return await self._send(request, 200, [self._api_versions()])
            if path == "/apis":
                return await self._send(request, 200, [_encode(API_GROUPS) + b"\n"])
            if path in RESOURCE_LISTS:
                return await self._send(request, 200, [RESOURCE_LISTS[path]])
        if request.method == "POST" and path == TOKEN_REVIEWS:
            return await self._token_review(request)
        subresource = parse_pod_subresource(path)
        if subresource is not None:
            return await self._pod_subresource(request, *subresource)
        route = parse_route(path)
        if route is None:
            if path.startswith(("/api/", "/apis/")) or path in ("/api", "/apis"):
                return await self._send_status(request, st.no_such_resource())
            return web.Response(status=404, text="404 page not found\n", content_type="text/plain")
        media = negotiate(request.headers.get("Accept", ""))
        if media is None:
            raise HttpError(
                st.not_acceptable(
                    "only the following media types are accepted: application/json, "
                    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, "
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
                )
            )
        if request.method == "GET" and route.name is None:
            if request.query.get("watch") in ("1", "true", "True"):
                return await self._watch(request, route, media)
            return await self._list(request, route, media)
        if request.method == "GET" and route.name is not None:
            return await self._get(request, route, media)
        if request.method == "DELETE" and route.name is not None:
            return await self._delete(request, route)
        if (
            request.method == "POST"
            and route.name is None
            and route.namespace is not None
            and storage_of(route.resource) is EVENT
        ):
            return await self._create_event(request, route)
        raise HttpError(st.method_not_allowed())

    async def _token_review(self, request: web.Request) -> web.StreamResponse:
        """Create a TokenReview: 201 with the spec echoed back (token included, as the real
        server does) and ``status`` saying whom the token authenticates."""
        if not self.cluster.token_reviews_allowed:
            raise HttpError(
                st.status(
                    403,
                    "Forbidden",
                    'tokenreviews.authentication.k8s.io is forbidden: User "podindex" cannot '
                    'create resource "tokenreviews" in API group "authentication.k8s.io" at '
                    "the cluster scope",
                    details={"group": "authentication.k8s.io", "kind": "tokenreviews"},
                )
            )
        try:
            review = json.loads(await request.read())
            token = review["spec"]["token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise HttpError(st.bad_request(f"invalid TokenReview: {exc}")) from None
        user = self.cluster.service_account_tokens.get(token)
        status: dict[str, Any] = (
            {"authenticated": True, "user": user, "audiences": ["https://kubernetes.default.svc"]}
            if user is not None
            else {"user": {}, "error": "[invalid bearer token, service account token is not valid]"}
        )
        body = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"token": token},
            "status": status,
        }
        return await self._send(request, 201, [_encode(body) + b"\n"])

    def _api_versions(self) -> bytes:
        return (
            _encode(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                }
            )
            + b"\n"
        )

    # --- events --------------------------------------------------------------------------

    async def _create_event(self, request: web.Request, route: Route) -> web.StreamResponse:
        """POST an Event (core/v1 or events.k8s.io/v1): 201 with the object in that API's form."""
        from podindex.sim.events import InvalidEvent

        assert route.namespace is not None
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise HttpError(st.bad_request(f"json parse error: {exc}")) from None
        if not isinstance(body, dict):
            raise HttpError(st.bad_request("the body of the request was not an object"))
        manager = request.headers.get("User-Agent", "").split("/", 1)[0] or "unknown"
        try:
            obj = self.cluster.create_event(
                route.namespace,
                body,
                api_version=route.resource.api_version,
                manager=manager,
            )
        except InvalidEvent as err:
            raise HttpError(err.body) from None
        except FileExistsError:
            name = str((body.get("metadata") or {}).get("name", ""))
            raise HttpError(st.already_exists(route.resource, name)) from None
        stored = self.cluster.stored(EVENT, route.namespace, obj["metadata"]["name"])
        assert stored is not None
        return await self._send(request, 201, [full_body(route.resource, stored), b"\n"])

    # --- pod subresources (served by the emulated kubelet) ------------------------------

    async def _pod_subresource(
        self, request: web.Request, namespace: str, name: str, subresource: str
    ) -> web.StreamResponse:
        if subresource == "log":
            if request.method != "GET":
                raise HttpError(st.method_not_allowed())
            return await self.logs.handle(request, namespace, name)
        if subresource == "exec":
            if request.method not in ("GET", "POST"):
                raise HttpError(st.method_not_allowed())
            return await self.exec.handle(request, namespace, name)
        raise HttpError(st.no_such_resource())

    # --- GET / DELETE of one object ------------------------------------------------------

    async def _get(self, request: web.Request, route: Route, media: str) -> web.StreamResponse:
        assert route.name is not None
        stored = self.cluster.stored(storage_of(route.resource), route.namespace or "", route.name)
        if stored is None:
            raise HttpError(st.not_found(route.resource, route.name))
        if media == METADATA_LIST:
            raise HttpError(
                st.not_acceptable(
                    "you requested PartialObjectMetadataList, but the requested object is not a list"
                )
            )
        body = stored.metadata_body() if media == METADATA else full_body(route.resource, stored)
        return await self._send(request, 200, [body, b"\n"])

    async def _delete(self, request: web.Request, route: Route) -> web.StreamResponse:
        # cluster.py imports this module, so its error types are imported late.
        from podindex.sim.cluster import Conflict, NotFound

        assert route.name is not None
        options = await self._delete_options(request)
        preconditions = options.get("preconditions") or {}
        grace = options.get("gracePeriodSeconds")
        if grace is None and "gracePeriodSeconds" in request.query:
            grace = int(request.query["gracePeriodSeconds"])
        namespace = route.namespace or ""
        try:
            if route.resource.kind == "Pod":
                obj = self.cluster.delete_pod(
                    namespace,
                    route.name,
                    None if grace is None else int(grace),
                    uid=preconditions.get("uid"),
                    resource_version=preconditions.get("resourceVersion"),
                )
                body = _encode(_with_type(route.resource, obj)) + b"\n"
            else:
                obj = self.cluster.delete(
                    storage_of(route.resource),
                    namespace,
                    route.name,
                    uid=preconditions.get("uid"),
                    resource_version=preconditions.get("resourceVersion"),
                )
                body = (
                    _encode(st.success(route.resource, route.name, obj["metadata"]["uid"])) + b"\n"
                )
        except NotFound:
            raise HttpError(st.not_found(route.resource, route.name)) from None
        except Conflict as err:
            raise HttpError(st.conflict(route.resource, route.name, str(err))) from None
        return await self._send(request, 200, [body])

    @staticmethod
    async def _delete_options(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            options = json.loads(raw)
        except ValueError as exc:
            raise HttpError(st.bad_request(f"invalid DeleteOptions: {exc}")) from None
        if not isinstance(options, dict):
            raise HttpError(st.bad_request("invalid DeleteOptions"))
        return options

    # --- LIST -----------------------------------------------------------------------------

    def _selectors(
        self, request: web.Request, resource: Resource
    ) -> tuple[LabelSelector, FieldSelector]:
        fields = FieldSelector.parse(request.query.get("fieldSelector"), resource.field_labels)
        if resource is EVENT_V1:
            # Field labels are converted to the stored (core) names, as the API server does.
            fields = FieldSelector(tuple((V1_FIELD_LABELS[n], eq, v) for n, eq, v in fields.terms))
        return LabelSelector.parse(request.query.get("labelSelector")), fields

    async def _wait_for_revision(self, rv: int) -> None:
        """A resourceVersion from the future: wait briefly, then 504 like the watch cache."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cluster.too_large_wait
        while self.cluster.resource_version < rv:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise HttpError(st.too_large(rv, self.cluster.resource_version))
            await self.cluster.wait_for_change(remaining)

    @staticmethod
    def _parse_rv(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise HttpError(
                st.bad_request(f'resourceVersion: Invalid value: "{text}": must be an integer')
            ) from None

    async def _list(self, request: web.Request, route: Route, media: str) -> web.StreamResponse:
        if media == METADATA:
            raise HttpError(
                st.not_acceptable(
                    "you requested PartialObjectMetadata, but the requested object is a list"
                )
            )
        q = request.query
        labels, fields = self._selectors(request, route.resource)
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise HttpError(st.bad_request(f"invalid limit: {q.get('limit')}")) from None
        rv_param = q.get("resourceVersion", "")
        match = q.get("resourceVersionMatch", "")
        token = q.get("continue", "")
        history = self.cluster.history
        start = ""
        if token:
            if rv_param not in ("", "0"):
                raise HttpError(
                    st.bad_request("specifying resource version is not allowed when using continue")
                )
            token_rv, token_start = decode_continue(token)
            start = start_key(token_start)
            if token_rv == -1:
                at = self.cluster.resource_version  # explicitly inconsistent continuation
            else:
                if token_rv < history.floor:
                    raise HttpError(
                        st.expired(st.CONTINUE_TOO_OLD, continue_token=encode_continue(-1, start))
                    )
                at = token_rv
        elif rv_param == "":
            at = self.cluster.resource_version
        elif rv_param == "0" and match != "Exact":
            at = self.cluster.resource_version
            limit = 0  # served from the watch cache with any-version semantics: no paging
        else:
            requested = self._parse_rv(rv_param)
            await self._wait_for_revision(requested)
            if match == "Exact":
                if requested < history.floor:
                    raise HttpError(st.expired(st.LIST_TOO_OLD))
                at = requested
            else:
                at = self.cluster.resource_version
        try:
            storage = storage_of(route.resource)
            snapshot = Snapshot(self.cluster.table(storage), history, storage, at)
        except TooOld:
            raise HttpError(st.expired(st.LIST_TOO_OLD)) from None
        items, more_after, remaining = self._page(
            snapshot, start, route.namespace, labels, fields, limit
        )
        metadata: dict[str, Any] = {"resourceVersion": str(at)}
        if more_after is not None:
            metadata["continue"] = encode_continue(at, "/" + more_after + "\x00")
            if labels.empty and fields.empty:
                metadata["remainingItemCount"] = remaining
        if media == METADATA_LIST:
            head = b'{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1",'
            bodies = [o.metadata_body() for o in items]
        else:
            head = b'{"kind":"%s","apiVersion":"%s",' % (
                route.resource.list_kind.encode(),
                route.resource.api_version.encode(),
            )
            bodies = [item_body(route.resource, o) for o in items]
        chunks = [head, b'"metadata":', _encode(metadata), b',"items":[']
        for i, body in enumerate(bodies):
            if i:
                chunks.append(b",")
            chunks.append(body)
        chunks.append(b"]}\n")
        return await self._send(request, 200, chunks)

    @staticmethod
    def _page(
        snapshot: Snapshot,
        start: str,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int,
    ) -> tuple[list[StoredObject], str | None, int]:
        items: list[StoredObject] = []
        unfiltered = labels.empty and fields.empty
        for obj in snapshot.iter_from(start, namespace):
            if unfiltered or (labels.matches(obj.labels) and fields.matches(obj.fields)):
                items.append(obj)
                if limit and len(items) >= limit:
                    remaining = snapshot.count_after(obj.key, namespace)
                    return items, (obj.key if remaining else None), remaining
        return items, None, 0

    # --- WATCH ---------------------------------------------------------------------------

    async def _watch(self, request: web.Request, route: Route, media: str) -> web.StreamResponse:
        cluster = self.cluster
        q = request.query
        labels, fields = self._selectors(request, route.resource)
        watch_filter = WatchFilter(route.resource, route.namespace, labels, fields, media)
        rv_param = q.get("resourceVersion", "")
        send_initial_param = q.get("sendInitialEvents", "")
        allow_bookmarks = q.get("allowWatchBookmarks") in ("true", "1", "True")
        timeout = self._watch_timeout(q.get("timeoutSeconds"))
        requested = self._parse_rv(rv_param) if rv_param not in ("", "0") else None
        if requested is not None:
            await self._wait_for_revision(requested)

        resp = web.StreamResponse(status=200, headers=self._headers())
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if media == METADATA_LIST:
            # The real server cannot encode single events as a list type: it ends the stream.
            await resp.write_eof()
            return resp

        send_initial = send_initial_param == "true" or (
            requested is None and send_initial_param != "false"
        )
        initial_end_bookmark = send_initial_param == "true" and allow_bookmarks
        cluster.active_watches += 1
        try:
            if requested is not None and not send_initial and requested < cluster.history.floor:
                error = st.expired(
                    f"too old resource version: {requested} ({cluster.history.floor})"
                )
                await resp.write(b'{"type":"ERROR","object":' + _encode(error) + b"}\n")
            else:
                await self._stream(
                    resp,
                    watch_filter,
                    start_rv=requested,
                    send_initial=send_initial,
                    initial_end_bookmark=initial_end_bookmark,
                    allow_bookmarks=allow_bookmarks,
                    duration=timeout,
                )
            await resp.write_eof()
        finally:
            cluster.active_watches -= 1
        return resp

    @staticmethod
    def _watch_timeout(text: str | None) -> float:
        if text:
            try:
                return float(int(text))
            except ValueError:
                raise HttpError(st.bad_request(f"invalid timeoutSeconds: {text}")) from None
        return float(random.uniform(DEFAULT_MIN_REQUEST_TIMEOUT, 2 * DEFAULT_MIN_REQUEST_TIMEOUT))

    async def _stream(
        self,
        resp: web.StreamResponse,
        watch_filter: WatchFilter,
        *,
        start_rv: int | None,
        send_initial: bool,
        initial_end_bookmark: bool,
        allow_bookmarks: bool,
        duration: float,
    ) -> None:
        cluster = self.cluster
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + duration
        epoch = cluster.drop_epoch
        resource = watch_filter.served
        media = watch_filter.media

        cursor = cluster.resource_version if start_rv is None or send_initial else start_rv
        if send_initial:
            await self._write_initial(resp, watch_filter, cursor)
            if initial_end_bookmark:
                await resp.write(
                    b'{"type":"BOOKMARK","object":%s}\n'
                    % bookmark_object(resource, cursor, media, initial_end=True)
                )
        first_rv = cursor
        pretimeout = deadline - PRETIMEOUT_BOOKMARK
        next_bookmark = self._next_bookmark(started, pretimeout)

        while cluster.drop_epoch == epoch:
            if cluster.watches_stalled:
                await cluster.wait_for_change(None)
                continue
            try:
                events = cluster.history.since(cursor)
            except TooOld:
                return  # fell behind the retained history: the server closes the stream
            latest = cluster.resource_version
            lines = [line for e in events if (line := watch_filter.line(e)) is not None]
            cursor = latest
            await self._write_lines(resp, lines)
            now = loop.time()
            if now >= deadline:
                return
            if allow_bookmarks and now >= next_bookmark:
                # The watch cache skips the pre-timeout bookmark when nothing happened
                # since the watch began (recording 07); periodic ones always go out.
                if next_bookmark != pretimeout or cursor > first_rv:
                    await self._bookmark(resp, resource, cursor, media)
                next_bookmark = self._next_bookmark(now, pretimeout)
            wake = min(deadline, next_bookmark) if allow_bookmarks else deadline
            if cluster.resource_version == cursor:
                await cluster.wait_for_change(wake - loop.time())

    def _next_bookmark(self, now: float, pretimeout: float) -> float:
        """Like the watch cache: every bookmark_interval, and once 2 s before the deadline."""
        periodic = now + self.cluster.bookmark_interval
        return min(periodic, pretimeout) if pretimeout > now else periodic

    async def _write_initial(
        self, resp: web.StreamResponse, watch_filter: WatchFilter, rv: int
    ) -> None:
        snapshot = Snapshot(
            self.cluster.table(watch_filter.resource),
            self.cluster.history,
            watch_filter.resource,
            rv,
        )
        lines = [
            event_line("ADDED", obj, watch_filter.media, watch_filter.served)
            for obj in snapshot.iter_from("", watch_filter.namespace)
            if watch_filter.unfiltered or watch_filter.matches(obj)
        ]
        await self._write_lines(resp, lines)

    @staticmethod
    async def _write_lines(resp: web.StreamResponse, lines: list[bytes]) -> None:
        """Write in batches of about WRITE_BATCH bytes: one write per line is slow."""
        batch: list[bytes] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= WRITE_BATCH:
                await resp.write(b"".join(batch))
                batch, size = [], 0
        if batch:
            await resp.write(b"".join(batch))

    @staticmethod
    async def _bookmark(resp: web.StreamResponse, resource: Resource, rv: int, media: str) -> None:
        await resp.write(
            b'{"type":"BOOKMARK","object":%s}\n'
            % bookmark_object(resource, rv, media, initial_end=False)
        )


def _with_type(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    if "kind" in obj:
        return obj
    return {"kind": resource.kind, "apiVersion": resource.api_version, **obj}


READ_DELETE = ["delete", "get", "list", "watch"]
EVENT_VERBS = ["create", "delete", "get", "list", "watch"]


def _resource_list(
    group_version: str,
    resources: list[tuple[Resource, str, list[str]]],
    *,
    verbs: dict[str, list[str]] | None = None,
    subresources: list[dict[str, Any]] | None = None,
) -> bytes:
    entries: list[dict[str, Any]] = []
    for r, singular, short in resources:
        entries.append(
            {
                "name": r.plural,
                "singularName": singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": (verbs or {}).get(r.plural, READ_DELETE),
                **({"shortNames": short} if short else {}),
            }
        )
        entries.extend(e for e in subresources or [] if e["name"].startswith(r.plural + "/"))
    return (
        _encode(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": entries,
            }
        )
        + b"\n"
    )


def _group(name: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [gv], "preferredVersion": gv}


API_GROUPS = {
    "kind": "APIGroupList",
    "apiVersion": "v1",
    "groups": [_group("apps"), _group("events.k8s.io"), _group("batch")],
}


def _build_resource_lists() -> dict[str, bytes]:
    from podindex.sim.store import JOB, NODE, POD, REPLICASET

    return {
        "/api/v1": _resource_list(
            "v1",
            [(EVENT, "event", ["ev"]), (NODE, "node", ["no"]), (POD, "pod", ["po"])],
            verbs={"events": EVENT_VERBS},
            subresources=[
                {
                    "name": "pods/exec",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "PodExecOptions",
                    "verbs": ["create", "get"],
                },
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                },
            ],
        ),
        "/apis/events.k8s.io/v1": _resource_list(
            "events.k8s.io/v1", [(EVENT_V1, "event", ["ev"])], verbs={"events": EVENT_VERBS}
        ),
        "/apis/apps/v1": _resource_list("apps/v1", [(REPLICASET, "replicaset", ["rs"])]),
        "/apis/batch/v1": _resource_list("batch/v1", [(JOB, "job", [])]),
    }


RESOURCE_LISTS = _build_resource_lists()

__all__ = ["SimServer", "decode_continue", "encode_continue", "negotiate", "parse_route"]
