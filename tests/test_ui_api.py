"""What the web UI needs from the API, in process: who am I, an IP's lease history, pods of
every cluster in one list, and the UI's own files (content types, caching, CSP)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podindex.api import ui
from podindex.api.app import create_app
from podindex.kube.config import explicit_access
from podindex.service import Service
from podindex.settings import Settings
from podindex.sim import FakeCluster
from tests.auth import ADMIN_TOKEN, READER_TOKEN, bearer, write_tokens
from tests.test_e2e_serve import TOKEN

SCOPED_TOKEN = "test-scoped-admin-token"


class Env:
    def __init__(self, sims: list[FakeCluster], service: Service, client: httpx.AsyncClient):
        self.sims, self.service, self.client = sims, service, client

    async def settled(self, check: Any, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "the index never caught up"
            await asyncio.sleep(0.02)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with (
        FakeCluster(token=TOKEN, bookmark_interval=0.2, grace_scale=0.01) as east,
        FakeCluster(token=TOKEN, bookmark_interval=0.2, grace_scale=0.01) as west,
    ):
        for i in range(6):
            east.create_pod(
                "team-a",
                f"east-{i}",
                labels={"app.kubernetes.io/name": "web"},
                node="n1",
                ip=f"10.1.0.{i + 1}",
            )
            west.create_pod(
                "team-b",
                f"west-{i}",
                labels={"app.kubernetes.io/name": "db"},
                node="n1",
                ip=f"10.2.0.{i + 1}",
            )
            await asyncio.sleep(0.3 if i == 2 else 0)  # two creation seconds at least
        tokens = write_tokens(
            tmp_path / "access.yaml",
            {ADMIN_TOKEN: "admin", READER_TOKEN: "reader"},
        )
        with tokens.open("a") as f:
            from podindex.api.auth import token_digest

            f.write(
                f"  - {{name: team-a-ops, role: admin, namespaces: [team-a], "
                f"sha256: {token_digest(SCOPED_TOKEN)}}}\n"
            )
        settings = Settings(store=f"sqlite:///{tmp_path}/h.db", tokens_file=str(tokens))
        service = Service(settings)
        await service.add_cluster("east", explicit_access(east.url, token=TOKEN))
        await service.add_cluster("west", explicit_access(west.url, token=TOKEN))
        task = asyncio.create_task(service.run())
        try:
            app = create_app(service, run_background=False)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://podindex"
            ) as client:
                e = Env([east, west], service, client)
                await e.settled(lambda: service.ready and len(service.index) == 12)
                yield e
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- GET /api/whoami ---------------------------------------------------------------


async def test_whoami_names_the_caller_and_its_grants_never_the_token(env: Env) -> None:
    anonymous = await env.client.get("/api/whoami")
    assert anonymous.status_code == 200
    assert anonymous.json() == {
        "name": "anonymous",
        "via": "anonymous",
        "role": "none",
        "grants": [],
        "lookups": "open",
    }
    admin = await env.client.get("/api/whoami", headers=bearer(ADMIN_TOKEN))
    assert admin.json()["role"] == "admin"
    assert admin.json()["grants"] == [{"role": "admin", "namespaces": None}]
    assert ADMIN_TOKEN not in admin.text
    scoped = (await env.client.get("/api/whoami", headers=bearer(SCOPED_TOKEN))).json()
    assert scoped["name"] == "team-a-ops"
    assert scoped["grants"] == [{"role": "admin", "namespaces": ["team-a"]}]
    reader = (await env.client.get("/api/whoami", headers=bearer(READER_TOKEN))).json()
    assert reader["role"] == "reader"


@pytest.mark.parametrize("header", ["Bearer nobody-knows-me", "Basic dXNlcjpwYXNz", "Bearer "])
async def test_whoami_refuses_a_token_nobody_knows(env: Env, header: str) -> None:
    answer = await env.client.get("/api/whoami", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthenticated"
    assert answer.headers["www-authenticate"].startswith("Bearer")


# --- GET /api/ips/{ip}/leases -------------------------------------------------------


async def test_lease_history_lists_every_holder_of_an_ip_newest_first(env: Env) -> None:
    east, west = env.sims
    history = env.service.history
    await env.settled(lambda: history.loaded)
    east.delete_pod("team-a", "east-0", grace_seconds=0)
    await env.settled(lambda: env.service.index.by_name("east", "team-a", "east-0") is None)
    await asyncio.sleep(1.1)  # a later second: the next lease begins after the first ended
    east.create_pod(
        "team-a", "successor", labels={"app.kubernetes.io/name": "web"}, node="n1", ip="10.1.0.1"
    )
    west.create_pod(
        "team-b", "elsewhere", labels={"app.kubernetes.io/name": "db"}, node="n1", ip="10.1.0.1"
    )
    await env.settled(lambda: env.service.index.by_name("west", "team-b", "elsewhere") is not None)
    await env.settled(lambda: env.service.index.by_name("east", "team-a", "successor") is not None)

    body = (await env.client.get("/api/ips/10.1.0.1/leases")).json()
    assert body["ip"] == "10.1.0.1" and body["total"] == 3
    names = [(lease["cluster"], lease["name"]) for lease in body["leases"]]
    assert set(names[:2]) == {("east", "successor"), ("west", "elsewhere")}
    assert names[2] == ("east", "east-0")
    first = body["leases"][2]
    assert first["held_to"] is not None and first["held_from"] <= first["held_to"]
    assert all(lease["held_to"] is None for lease in body["leases"][:2])
    assert [x["held_from"] for x in body["leases"]] == sorted(
        (x["held_from"] for x in body["leases"]), reverse=True
    )
    assert first["workload_identity"] == "web"

    only_east = (await env.client.get("/api/ips/10.1.0.1/leases?cluster=east&limit=1")).json()
    assert only_east["total"] == 2 and [x["name"] for x in only_east["leases"]] == ["successor"]
    # Any spelling of the address: the canonical one is answered.
    mapped = (await env.client.get("/api/ips/::ffff:10.1.0.1/leases")).json()
    assert mapped["ip"] == "10.1.0.1" and mapped["total"] == 3
    nobody = (await env.client.get("/api/ips/10.9.9.9/leases")).json()
    assert nobody == {"ip": "10.9.9.9", "total": 0, "leases": []}


@pytest.mark.parametrize(
    ("path", "error", "names"),
    [
        ("/api/ips/not-an-ip/leases", "invalid_ip", "ip"),
        ("/api/ips/10.1.0.1/leases?limit=0", "invalid_parameter", "limit"),
        ("/api/ips/10.1.0.1/leases?limit=x", "invalid_parameter", "limit"),
        ("/api/ips/10.1.0.1/leases?at=5", "unknown_parameter", "at"),
    ],
)
async def test_lease_history_names_bad_input(env: Env, path: str, error: str, names: str) -> None:
    answer = await env.client.get(path)
    assert answer.status_code == 400
    assert answer.json()["error"] == error and names in answer.json()["message"]


async def test_lease_history_follows_the_lookup_role(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "access.yaml", {READER_TOKEN: "reader"})
    settings = Settings(
        store=f"sqlite:///{tmp_path}/h.db", tokens_file=str(tokens), lookup_access="reader"
    )
    app = create_app(Service(settings), run_background=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://podindex"
    ) as client:
        assert (await client.get("/api/ips/10.1.0.1/leases")).status_code == 401
        whoami = (await client.get("/api/whoami", headers=bearer(READER_TOKEN))).json()
        assert whoami["lookups"] == "reader"


# --- GET /api/pods ------------------------------------------------------------------


async def test_every_cluster_in_one_list_newest_first(env: Env) -> None:
    body = (await env.client.get("/api/pods", params={"pageSize": 100})).json()
    assert body["code"] == 200
    data = body["data"]
    assert data["total"] == 12 and data["unsynced"] == []
    assert {p["cluster"] for p in data["items"]} == {"east", "west"}
    stamps = [p["createdAt"] for p in data["items"]]
    assert stamps == sorted(stamps, reverse=True)
    assert {p["identity"] for p in data["items"]} == {"web", "db"}

    # Pages of the merged list are its slices.
    pages = []
    for page in (1, 2, 3):
        got = await env.client.get("/api/pods", params={"page": page, "pageSize": 5})
        pages += [(p["cluster"], p["uid"]) for p in got.json()["data"]["items"]]
    assert pages == [(p["cluster"], p["uid"]) for p in data["items"]]

    filtered = await env.client.get(
        "/api/pods", params={"labelSelector": "app.kubernetes.io/name=db"}
    )
    assert {p["name"][:4] for p in filtered.json()["data"]["items"]} == {"west"}
    searched = await env.client.get("/api/pods", params={"search": "EAST-3"})
    assert [p["name"] for p in searched.json()["data"]["items"]] == ["east-3"]


async def test_every_cluster_list_refuses_pages_too_deep_to_merge(env: Env) -> None:
    answer = await env.client.get("/api/pods", params={"page": 21, "pageSize": 500})
    assert answer.status_code == 400
    assert answer.json()["code"] == 400 and "page" in answer.json()["message"]
    bad = await env.client.get("/api/pods", params={"labelSelector": "app in (x"})
    assert bad.status_code == 400 and "labelSelector" in bad.json()["message"]


# --- the UI's files -------------------------------------------------------------------


async def test_the_root_redirects_to_the_ui(env: Env) -> None:
    for path in ("/", "/ui"):
        answer = await env.client.get(path)
        assert answer.status_code == 307 and answer.headers["location"] == "/ui/"


async def test_the_page_is_served_with_a_strict_policy_and_no_inline_script(env: Env) -> None:
    page = await env.client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(
        d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'", "no inline script, no eval, no other origin"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    # Every script comes from a file of this origin: none inline, no handler attributes.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", page.text)
    for attrs, _ in scripts:
        src = re.search(r'src="([^"]+)"', attrs)
        assert src is not None
        asset = await env.client.get("/ui/" + src.group(1))
        assert asset.status_code == 200, src.group(1)  # vendor files: scripts/build-ui ran
        assert asset.headers["content-type"] == "text/javascript; charset=utf-8"


async def test_files_revalidate_with_their_etag(env: Env) -> None:
    first = await env.client.get("/ui/app.css")
    assert first.headers["content-type"] == "text/css; charset=utf-8"
    etag = first.headers["etag"]
    again = await env.client.get("/ui/app.css", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    head = await env.client.head("/ui/app.js")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len((await env.client.get("/ui/app.js")).content)


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/../pyproject.toml", "/ui/vendor/x.LICENSE"])
async def test_unknown_files_are_a_json_404(env: Env, path: str) -> None:
    answer = await env.client.get(path)
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"


def test_files_outside_the_known_types_are_never_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "secret.txt").write_text("no")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.js").write_text("1")
    assets = ui.load_assets(tmp_path)
    assert set(assets) == {"index.html", "sub/a.js"}
    assert ui.load_assets(tmp_path / "missing") == {}


async def test_a_missing_build_says_so(tmp_path: Path) -> None:
    from starlette.applications import Starlette

    from podindex.api import errors

    app = Starlette(
        routes=ui.routes(tmp_path / "empty"),
        exception_handlers={errors.ApiProblem: errors.problem_handler},
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://podindex"
    ) as client:
        answer = await client.get("/ui/")
    assert answer.status_code == 404 and answer.json()["error"] == "ui_not_built"


async def test_the_new_routes_are_in_the_openapi_document(env: Env) -> None:
    document = (await env.client.get("/openapi.json")).json()
    paths = document["paths"]
    assert paths["/api/whoami"]["get"]["security"] == [{}]
    assert "401" in paths["/api/whoami"]["get"]["responses"]
    leases = paths["/api/ips/{ip}/leases"]["get"]["responses"]["200"]
    schema = leases["content"]["application/json"]["schema"]["properties"]["leases"]
    assert schema["items"]["$ref"].rsplit("/", 1)[1] in document["components"]["schemas"]
    assert "unsynced" in str(paths["/api/pods"]["get"]["responses"]["200"])
    assert "identity" in document["components"]["schemas"]["DashboardPod"]["properties"]


def test_the_demo_makes_an_admin_token_and_prints_it_once_in_the_sign_in_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from podindex.api.auth import AccessFile, token_digest
    from podindex.cli import _demo_admin

    path = _demo_admin(tmp_path, Settings(listen="0.0.0.0:9090"))
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "signed in as admin" in printed.err
    found = re.search(r"http://127\.0\.0\.1:9090/ui/#signin=(\S+)", printed.err)
    assert found is not None, printed.err
    token = found.group(1)
    assert printed.err.count(token) == 1
    assert (Path(path).stat().st_mode & 0o777) == 0o600
    assert token not in Path(path).read_text(), "the file holds only the token's digest"
    principal = AccessFile(path).rules.tokens[token_digest(token)]
    assert principal.name == "demo-admin" and principal.role.name == "ADMIN"


async def test_every_cluster_list_names_the_clusters_not_synced_yet(tmp_path: Path) -> None:
    service = Service(Settings(store=f"sqlite:///{tmp_path}/h.db"))
    await service.add_cluster("later", explicit_access("http://127.0.0.1:9", token=TOKEN))
    app = create_app(service, run_background=False)  # nothing watches: never synced
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://podindex"
    ) as client:
        every = await client.get("/api/pods")
        assert every.status_code == 200
        assert every.json()["data"] == {
            "items": [],
            "total": 0,
            "page": 1,
            "pageSize": 20,
            "unsynced": ["later"],
        }
        one = await client.get("/api/clusters/later/pods")
        assert one.status_code == 503 and "not synced" in one.json()["message"]
