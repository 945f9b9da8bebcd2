"""The watcher against the real API server's recorded bytes, replayed over a socket."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web

from podindex.cluster import OwnerSink, PodSink
from podindex.index import Index
from podindex.kube.client import PODS, REPLICASETS, KubeClient
from podindex.kube.config import ClusterAccess, StaticToken, explicit_access
from podindex.kube.errors import ApiError, Gone, StreamStalled, TransportError, Unauthorized
from podindex.kube.watcher import WatchDriver, Watcher
from podindex.model import PartialObjectMetadata, PartialObjectMetadataList, Pod, PodList
from tests.recordings import ReplayServer, recording, respond, stream, watch_lines

NOW = 1_800_000_000.0


OPEN_CLIENTS: list[KubeClient] = []


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    server = ReplayServer()
    await server.start()
    yield server
    while OPEN_CLIENTS:
        await OPEN_CLIENTS.pop().close()
    await server.stop()


def client_for(access: ClusterAccess) -> KubeClient:
    client = KubeClient(access)
    OPEN_CLIENTS.append(client)
    return client


def pod_watcher(
    url: str, index: Index, *, page_size: int = 2, token: str | None = "t0k3n"
) -> Watcher[Pod]:
    client = client_for(explicit_access(url, token=token))
    return Watcher(
        client,
        PODS,
        Pod,
        PodList,
        PodSink(index, "c1", lambda: NOW),
        page_size=page_size,
        stall_timeout=2.0,
        backoff=lambda error, attempt: 0.01,
        rng=random.Random(7),
    )


async def run_for(watcher: Watcher[Pod], seconds: float) -> None:
    """Run the watcher's endless loop for a while, then cancel it as the service would."""
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def fixed(name: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        return await respond(recording(name))

    return handler


def watching(name: str, **kwargs: float):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream(request, watch_lines(recording(name)), **kwargs)

    return handler


async def test_chunked_list_then_watch_applies_the_recorded_stream(replay: ReplayServer) -> None:
    replay.on("/api/v1/pods", fixed("02"), fixed("03"), fixed("04"), watching("05"))
    index = Index()
    watcher = pod_watcher(replay.url, index)

    version = await watcher.list_once()
    assert version == "277"
    assert len(index) == 5
    lists = replay.seen("/api/v1/pods")
    assert lists[0] == {"limit": "2"}
    # The continue tokens are passed back exactly as the server issued them.
    assert lists[1]["continue"].startswith("eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6Mjc3")
    assert lists[2]["continue"] != lists[1]["continue"]
    assert index.lookup_ip("10.244.2.10", NOW) is not None  # db-0

    applied = await watcher.watch_once()
    assert applied == 6
    params = replay.seen("/api/v1/pods")[3]
    assert params["watch"] == "1"
    assert params["resourceVersion"] == "277"
    assert params["allowWatchBookmarks"] == "true"
    assert 300 <= int(params["timeoutSeconds"]) <= 600
    # The last BOOKMARK moved the version past the last object event.
    assert watcher.resource_version == "382"
    db0 = index.lookup_ip("10.244.2.10", NOW + 1)
    assert db0 is not None
    assert msgspec.json.decode(db0[1])["state"] == "terminated"
    assert index.lookup_ip("10.244.2.10", NOW + 31) is None
    web2 = index.by_name("c1", "team-a", "web-2")
    assert web2 is not None and web2.pod.metadata.labels["version"] == "v2"
    assert index.by_name("c1", "team-a", "web-3") is not None
    assert index.by_name("c1", "team-a", "db-0") is None


async def test_watch_error_410_raises_gone_and_run_relists(replay: ReplayServer) -> None:
    replay.on("/api/v1/pods", fixed("02"), fixed("03"), fixed("04"))
    replay.on("/api/v1/pods", watching("74"))  # ERROR 410 'too old resource version'
    replay.on("/api/v1/pods", fixed("09"))  # relist: a newer world, rv 752
    index = Index()
    watcher = pod_watcher(replay.url, index)
    await watcher.list_once()
    with pytest.raises(Gone):
        await watcher.watch_once()

    task = asyncio.create_task(watcher.run())
    watcher.resource_version = None  # as run() does after Gone
    for _ in range(200):
        if watcher.stats.lists >= 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert watcher.stats.lists == 2
    assert watcher.resource_version is not None
    relist = replay.seen("/api/v1/pods")[4]
    assert "watch" not in relist and "continue" not in relist
    # Every pod of the new list is there, and nothing else.
    assert len(index) == 28
    assert {r.pod.metadata.resourceVersion for r in index} <= {str(v) for v in range(1, 753)}


async def test_watch_error_410_without_watch_cache_is_gone_too(replay: ReplayServer) -> None:
    replay.on("/api/v1/pods", fixed("04"), watching("80"))
    watcher = pod_watcher(replay.url, Index())
    await watcher.list_once()
    with pytest.raises(Gone) as caught:
        await watcher.watch_once()
    assert caught.value.status.message == "The resourceVersion for the provided watch is too old."


async def test_expired_continue_token_restarts_the_list_from_the_start(
    replay: ReplayServer,
) -> None:
    replay.on("/api/v1/pods", fixed("02"), fixed("75"), fixed("02"), fixed("03"), fixed("04"))
    index = Index()
    watcher = pod_watcher(replay.url, index)
    await watcher.list_once()
    seen = replay.seen("/api/v1/pods")
    assert len(seen) == 5
    # After the 410 the list starts over; the inconsistent token offered is not used.
    assert seen[2] == {"limit": "2"}
    assert watcher.stats.relists_410 == 1
    assert len(index) == 5


async def test_401_refreshes_credentials_once_then_fails(replay: ReplayServer) -> None:
    refreshed: list[bool] = []

    class Rotating(StaticToken):
        async def refresh(self) -> None:
            refreshed.append(True)
            self.token = "fresh"

    replay.on("/api/v1/pods", fixed("21"), fixed("04"))
    access = explicit_access(replay.url, token="stale")
    access.credentials = Rotating("stale")
    watcher = Watcher(client_for(access), PODS, Pod, PodList, PodSink(Index(), "c1", lambda: NOW))
    await watcher.list_once()
    assert refreshed == [True]
    auth = [r.headers.get("Authorization") for r in replay.requests]
    assert auth == ["Bearer stale", "Bearer fresh"]

    replay.on("/api/v1/pods", fixed("21"), fixed("21"))
    with pytest.raises(Unauthorized) as caught:
        await watcher.list_once()
    assert caught.value.status.reason == "Unauthorized"


async def test_metadata_only_owners_name_the_deployment(replay: ReplayServer) -> None:
    replay.on("/apis/apps/v1/replicasets", fixed("50"))
    replay.on("/api/v1/pods", fixed("55"))
    index = Index()
    client = client_for(explicit_access(replay.url, token="x"))
    owners: Watcher[PartialObjectMetadata] = Watcher(
        client,
        REPLICASETS,
        PartialObjectMetadata,
        PartialObjectMetadataList,
        OwnerSink(index, "c1", "ReplicaSet", time.time),
    )
    await owners.list_once()
    accept = replay.requests[0].headers["Accept"]
    assert accept == recording("50")["request"]["headers"]["Accept"]
    pods = pod_watcher(replay.url, index, page_size=500)
    await pods.list_once()
    frontend = index.by_name("c1", "apps-demo", "frontend-7fd665d5d5-47n6r")
    assert frontend is not None
    assert (frontend.workload.kind, frontend.workload.name) == ("Deployment", "frontend")
    standalone = index.by_name("c1", "apps-demo", "standalone-rs-pgdqm")
    assert standalone is not None
    assert (standalone.workload.kind, standalone.workload.name) == (
        "ReplicaSet",
        "standalone-rs",
    )


def test_driver_tracks_bookmarks_and_metadata_watch_lines() -> None:
    driver = WatchDriver(PartialObjectMetadata, "367")
    events = [driver.feed(line) for line in watch_lines(recording("52"))]
    applied = [e for e in events if e is not None]
    assert [e[0] for e in applied] == ["MODIFIED"] * len(applied)
    assert driver.bookmarks >= 1
    assert driver.resource_version == "378"


def test_driver_reads_the_initial_events_end_bookmark() -> None:
    driver = WatchDriver(Pod, "")
    events = [driver.feed(line) for line in watch_lines(recording("06"))]
    assert [e[0] for e in events if e is not None] == ["ADDED", "ADDED"]
    assert driver.resource_version == "287"


async def test_silent_stream_is_detected_as_stalled(replay: ReplayServer) -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        lines = watch_lines(recording("05"))[:1]
        return await stream(request, lines, hold=5.0)

    replay.on("/api/v1/pods", fixed("04"), silent)
    index = Index()
    watcher = pod_watcher(replay.url, index)
    watcher.stall_timeout = 0.3
    await watcher.list_once()
    with pytest.raises(StreamStalled):
        await watcher.watch_once()
    # The event before the silence was applied and its version kept for the resume.
    assert watcher.resource_version == "280"


async def test_run_resumes_from_the_last_version_after_disconnects(replay: ReplayServer) -> None:
    lines = watch_lines(recording("05"))

    def part(chunk: list[bytes]):  # type: ignore[no-untyped-def]
        async def handler(request: web.Request) -> web.StreamResponse:
            return await stream(request, chunk, hold=0.05)

        return handler

    async def broken(request: web.Request) -> web.StreamResponse:
        raise web.HTTPInternalServerError()

    replay.on("/api/v1/pods", fixed("02"), fixed("03"), fixed("04"))
    replay.on("/api/v1/pods", part(lines[:2]), broken, part(lines[2:5]), part(lines[5:]))
    index = Index()
    watcher = pod_watcher(replay.url, index)
    task = asyncio.create_task(watcher.run())
    for _ in range(300):
        if watcher.stats.events >= 6 and watcher.resource_version == "382":
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    watches = [p for p in replay.seen("/api/v1/pods") if p.get("watch") == "1"]
    assert [w["resourceVersion"] for w in watches[:4]] == ["277", "282", "282", "286"]
    assert watcher.stats.lists == 1  # no relist: a disconnect is not a 410
    assert watcher.stats.errors == 1  # the 500
    assert index.by_name("c1", "team-a", "web-3") is not None


def test_backoff_is_capped_jittered_and_honours_retry_after() -> None:
    from podindex.kube.watcher import capped_backoff
    from podindex.model import Status, StatusDetails

    policy = capped_backoff(base=0.5, cap=8.0, rng=random.Random(1))
    error = TransportError("down")
    delays = [policy(error, attempt) for attempt in range(1, 12)]
    for attempt, delay in enumerate(delays, start=1):
        step = min(8.0, 0.5 * 2 ** (attempt - 1))
        assert step * 0.5 <= delay <= step
    assert max(delays) <= 8.0
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    throttled = ApiError(Status(code=429, details=StatusDetails(retryAfterSeconds=3)))
    assert policy(throttled, 1) == 3.0


async def test_an_undecodable_list_is_retried_not_fatal(replay: ReplayServer) -> None:
    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b'{"kind":"PodList","items":[{"metadata":7}]}', content_type="application/json"
        )

    replay.on("/api/v1/pods", garbage, fixed("04"))
    index = Index()
    watcher = pod_watcher(replay.url, index)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.synced.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert watcher.stats.errors == 1
    assert "Expected `object`" in watcher.stats.last_error
    assert len(index) == 1


async def test_repeated_410s_back_off_instead_of_spinning(replay: ReplayServer) -> None:
    # Every LIST continue expires, and every watch is told its version is too old.
    replay.on("/api/v1/pods", *[fixed("02"), fixed("75")] * 40)
    watcher = pod_watcher(replay.url, Index())
    watcher.backoff = lambda error, attempt: 0.2
    await run_for(watcher, 1.0)
    # Each attempt lists twice (one restart after an expired token), then backs off
    # 0.2 s: a handful of requests a second, not thousands.
    assert len(replay.requests) <= 40
    assert watcher.stats.relists_410 >= 2
    assert not watcher.synced.is_set()


async def test_watch_410_loop_backs_off(replay: ReplayServer) -> None:
    for _ in range(30):
        replay.on("/api/v1/pods", fixed("04"), watching("74"))
    watcher = pod_watcher(replay.url, Index())
    watcher.backoff = lambda error, attempt: 0.2
    await run_for(watcher, 1.0)
    lists = [p for p in replay.seen("/api/v1/pods") if "watch" not in p]
    assert 1 <= len(lists) <= 8


async def test_401_with_a_rotated_client_certificate_opens_a_new_pool(
    replay: ReplayServer,
) -> None:
    import ssl

    class ExecPlugin(StaticToken):
        """Like a kubeconfig exec plugin that hands out a new client certificate."""

        context = ssl.create_default_context()

        async def refresh(self) -> None:
            self.context = ssl.create_default_context()

        def tls_context(self) -> ssl.SSLContext | None:
            return self.context

    replay.on("/api/v1/pods", fixed("21"), fixed("04"))
    credentials = ExecPlugin("t")
    access = explicit_access(replay.url, token="t")
    access.credentials = credentials
    access.ssl_context = credentials.context
    client = client_for(access)
    first_pool = client.session
    await client.list_page(PODS, None, {})
    assert access.ssl_context is credentials.context  # the rotated one
    assert client.session is not first_pool
    assert first_pool.closed


async def test_a_server_that_cuts_every_watch_at_once_never_looks_connected(
    replay: ReplayServer,
) -> None:
    from podindex.kube.health import HealthMonitor

    async def empty_watch(request: web.Request) -> web.StreamResponse:
        return await stream(request, [])

    async def pods(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch"):
            return await empty_watch(request)
        return await respond(recording("09-list-pods-rv0-limit2"))

    replay.on("/api/v1/pods", *([pods] * 200))
    watcher = pod_watcher(replay.url, Index(), page_size=500)
    monitor = HealthMonitor()
    watcher.on_sync, watcher.on_error = monitor.on_sync, monitor.on_error
    await run_for(watcher, 1.0)
    assert monitor.consecutive_failures >= 5, "every cut counts; none resets the count"
    assert monitor.status == "Degraded"
