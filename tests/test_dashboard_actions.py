"""Dashboard routes that go to the cluster (events, logs), against replayed API answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import msgspec
import pytest
from aiohttp import web

from podindex.api.app import create_app
from podindex.cluster import ClusterSync
from podindex.kube.client import KubeClient
from podindex.kube.config import explicit_access
from podindex.model import Pod
from podindex.service import Service
from podindex.settings import Settings
from tests.recordings import ReplayServer, recording, respond

UID = "9786f2ef-f7f2-464b-879c-0fd426588daf"  # web-1 in recording 62
POD = "/api/clusters/default/namespaces/team-a/pods"


def pod(name: str, uid: str, containers: list[str]) -> Pod:
    return msgspec.convert(
        {
            "metadata": {
                "name": name,
                "namespace": "team-a",
                "uid": uid,
                "resourceVersion": "10",
                "creationTimestamp": "2026-11-23T12:50:00Z",
            },
            "spec": {"nodeName": "node-1", "containers": [{"name": c} for c in containers]},
            "status": {"phase": "Running", "podIP": "10.2.0.1"},
        },
        Pod,
    )


@dataclass
class Replayed:
    server: ReplayServer
    client: httpx.AsyncClient


@pytest.fixture
async def replayed(tmp_path: Path) -> AsyncIterator[Replayed]:
    server = ReplayServer()
    url = await server.start()
    service = Service(Settings(store=f"sqlite:///{tmp_path}/h.db", watch=False))
    service.index.upsert_pod("default", pod("web-1", UID, ["app"]), 0.0)
    service.index.upsert_pod("default", pod("two", "uid-two", ["app", "proxy"]), 0.0)
    sync = ClusterSync("default", KubeClient(explicit_access(url, token="t")), service.index)
    sync.pods.synced.set()
    service.clusters["default"] = sync
    app = create_app(service, run_background=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://podindex"
        ) as client:
            yield Replayed(server, client)
    finally:
        await sync.client.close()
        await server.stop()


async def test_events_of_the_pod_instance_from_both_apis(replayed: Replayed) -> None:
    rec = recording("62-list-core-events-fieldselector")
    replayed.server.on("/api/v1/namespaces/team-a/events", lambda r: respond(rec))
    response = await replayed.client.get(POD + "/web-1/events")
    assert response.status_code == 200, response.text
    sent = replayed.server.requests[0]
    path, _, query = rec["request"]["path"].partition("?")
    assert (sent.path, dict(sent.query)) == (path, dict(parse_qsl(query))), "name, namespace, uid"
    events = response.json()["data"]
    assert [(e["reason"], e["count"]) for e in events] == [
        # All seen in the same second: the most recently written first (resourceVersion).
        ("Unhealthy", 1),  # written through events.k8s.io: eventTime, no count
        ("BackOff", 5),
        ("Pulled", 1),
    ]
    unhealthy = events[0]
    assert unhealthy["firstSeen"] == unhealthy["lastSeen"] == "2026-11-23T12:57:41Z"
    assert set(unhealthy) == {"type", "reason", "message", "firstSeen", "lastSeen", "count"}


async def test_a_forbidden_events_list_says_whose_credentials(replayed: Replayed) -> None:
    rec = recording("23-serviceaccount-forbidden-403")
    replayed.server.on("/api/v1/namespaces/team-a/events", lambda r: respond(rec))
    response = await replayed.client.get(POD + "/web-1/events")
    assert response.status_code == 403
    assert "cluster default's credentials" in response.json()["message"]


def log_chunks(*chunks: bytes, status: int = 200) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    return handler


async def test_logs_stream_into_the_envelope_with_utf8_split_across_chunks(
    replayed: Replayed,
) -> None:
    snow = "☃".encode()
    replayed.server.on(
        "/api/v1/namespaces/team-a/pods/web-1/log",
        log_chunks(b'2026-11-23T12:00:00Z "quoted"\n', snow[:1], snow[1:] + b"\n\ttab\n"),
    )
    response = await replayed.client.get(
        POD + "/web-1/logs", params={"tailLines": "10", "timestamps": "true"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200
    assert body["data"]["logs"] == '2026-11-23T12:00:00Z "quoted"\n☃\n\ttab\n'
    assert body["data"]["truncated"] is False
    assert replayed.server.seen("/api/v1/namespaces/team-a/pods/web-1/log") == [
        {
            "container": "app",
            "tailLines": "10",
            "timestamps": "true",
            "limitBytes": str(10 * 1024 * 1024),
        }
    ]


async def test_logs_of_a_multi_container_pod_need_a_container(replayed: Replayed) -> None:
    response = await replayed.client.get(POD + "/two/logs")
    assert response.status_code == 400
    assert response.json()["message"] == (
        "a container name must be specified for pod two, choose one of: [app proxy]"
    )
    unknown = await replayed.client.get(POD + "/two/logs", params={"container": "db"})
    assert unknown.status_code == 400 and "[app proxy]" in unknown.json()["message"]
    bad = await replayed.client.get(POD + "/web-1/logs", params={"limitBytes": "0"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("limitBytes")
    assert replayed.server.requests == [], "refused before asking the cluster"


async def test_a_kubernetes_error_before_the_first_byte_keeps_its_status(
    replayed: Replayed,
) -> None:
    rec = recording("20-get-missing-pod-404")
    replayed.server.on("/api/v1/namespaces/team-a/pods/web-1/log", lambda r: respond(rec))
    response = await replayed.client.get(POD + "/web-1/logs")
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "message": msgspec.json.decode(rec["response"]["body"])["message"],
        "data": None,
    }


async def test_logs_at_the_byte_limit_are_marked_truncated(replayed: Replayed) -> None:
    replayed.server.on("/api/v1/namespaces/team-a/pods/web-1/log", log_chunks(b"0123456789"))
    response = await replayed.client.get(POD + "/web-1/logs", params={"limitBytes": "10"})
    assert response.json()["data"] == {"logs": "0123456789", "truncated": True, "error": None}
