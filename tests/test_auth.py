"""The API's own authentication: the access file, roles, TokenReview, 401 against 403, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podindex.api.app import create_app
from podindex.api.auth import (
    AccessFile,
    AccessFileError,
    Authenticator,
    Role,
    parse_access,
    token_digest,
)
from podindex.api.errors import ApiProblem
from podindex.kube.client import KubeClient
from podindex.kube.config import explicit_access
from podindex.kube.errors import Forbidden, KubeError
from podindex.kube.tokenreview import ReviewedUser, review_token
from podindex.service import Service
from podindex.settings import Settings, SettingsError
from podindex.sim import POD, FakeCluster, populate
from podindex.sim.tls import make_tls_material
from tests.auth import ADMIN_TOKEN, READER_TOKEN, bearer, standard_tokens, write_tokens
from tests.test_e2e_serve import TOKEN, start_podindex, stop, wait_ready

DIGEST = token_digest("t")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tokens: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("token: []\n", "unknown key(s) ['token']"),
        ("tokens: {name: a}\n", "'tokens' must be a list of mappings"),
        (f"tokens:\n  - {{role: admin, sha256: {DIGEST}}}\n", "tokens[0]: 'name' is required"),
        ("tokens:\n  - {name: a, role: admin, sha256: abc}\n", "tokens[0]: sha256 must be 64 hex"),
        (f"tokens:\n  - {{name: a, role: root, sha256: {DIGEST}}}\n", "role must be 'reader' or"),
        (
            f"tokens:\n  - {{name: a, role: admin, sha256: {DIGEST}}}\n"
            f"  - {{name: b, role: reader, sha256: {DIGEST}}}\n",
            "tokens[1]: the same token is listed twice",
        ),
        (
            "serviceAccounts:\n  - {user: u, group: g, role: reader}\n",
            "serviceAccounts[0]: give exactly one of 'user' or 'group'",
        ),
    ],
)
def test_a_bad_access_file_is_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(AccessFileError) as caught:
        parse_access(text, "access.yaml")
    assert str(caught.value).startswith("access.yaml")
    assert message in str(caught.value)


def test_the_access_file_keeps_only_hashes_and_reloads_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_tokens(tmp_path / "access.yaml", {"first-token": "reader"})
    assert "first-token" not in path.read_text()
    now = [0.0]
    access = AccessFile(str(path), clock=lambda: now[0])
    assert list(access.current().tokens) == [token_digest("first-token")]

    write_tokens(path, {"first-token": "reader", "second-token": "admin"})
    assert len(access.current().tokens) == 1, "checked at most once a second"
    now[0] = 2.0
    assert access.current().tokens[token_digest("second-token")].role is Role.ADMIN

    path.write_text("tokens: [\n")  # a typo must not lock everyone out
    now[0] = 4.0
    with caplog.at_level(logging.ERROR):
        assert len(access.current().tokens) == 2
    assert "keeping the old rules" in caplog.text


def test_a_missing_access_file_is_an_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(AccessFileError, match="cannot read"):
        AccessFile(str(tmp_path / "nope.yaml"))


def test_settings_refuse_unknown_lookup_access_and_half_a_tls_pair() -> None:
    with pytest.raises(SettingsError, match="lookup_access"):
        Settings(lookup_access="anyone").validate()
    with pytest.raises(SettingsError, match="tls_cert and tls_key"):
        Settings(tls_cert="cert.pem").validate()


class Reviews:
    """A TokenReview stand-in for the unit tests: counts the questions it is asked."""

    def __init__(self, users: dict[str, ReviewedUser], fail: bool = False) -> None:
        self.users = users
        self.fail = fail
        self.asked = 0

    async def __call__(self, token: str) -> ReviewedUser | None:
        self.asked += 1
        if self.fail:
            raise KubeError("503 ServiceUnavailable: etcd is down")
        return self.users.get(token)


SA_RULES = """
serviceAccounts:
  - {user: "system:serviceaccount:monitoring:grafana", role: reader}
  - {group: "system:serviceaccounts:ops", role: admin}
"""


def sa_user(namespace: str, name: str) -> ReviewedUser:
    return ReviewedUser(
        f"system:serviceaccount:{namespace}:{name}",
        "uid",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
    )


async def test_service_account_roles_come_from_user_or_group_and_reviews_are_cached(
    tmp_path: Path,
) -> None:
    (tmp_path / "access.yaml").write_text(SA_RULES)
    reviews = Reviews(
        {
            "grafana": sa_user("monitoring", "grafana"),
            "deployer": sa_user("ops", "deployer"),
            "stranger": sa_user("default", "stranger"),
        }
    )
    now = [0.0]
    auth = Authenticator(AccessFile(str(tmp_path / "access.yaml")), reviews, clock=lambda: now[0])
    grafana = await auth.check("Bearer grafana", Role.READER)
    assert (grafana.name, grafana.role, grafana.via) == (
        "system:serviceaccount:monitoring:grafana",
        Role.READER,
        "serviceaccount",
    )
    assert (await auth.check("Bearer deployer", Role.ADMIN)).role is Role.ADMIN
    with pytest.raises(ApiProblem) as caught:
        await auth.check("Bearer grafana", Role.ADMIN)
    assert caught.value.status == 403
    with pytest.raises(ApiProblem) as caught:
        await auth.check("Bearer stranger", Role.READER)
    assert caught.value.status == 403, "authenticated, but no rule gives it a role"
    with pytest.raises(ApiProblem) as caught:
        await auth.check("Bearer forged", Role.READER)
    assert caught.value.status == 401
    assert reviews.asked == 4, "grafana's second check came from the cache"

    with pytest.raises(ApiProblem):
        await auth.check("Bearer forged", Role.READER)
    assert reviews.asked == 4, "a rejection is cached too"
    now[0] = 11.0
    with pytest.raises(ApiProblem):
        await auth.check("Bearer forged", Role.READER)
    assert reviews.asked == 5, "rejections are cached for seconds, not for good"
    now[0] = 70.0
    await auth.check("Bearer grafana", Role.READER)
    assert reviews.asked == 6


async def test_a_failed_token_review_is_503_not_a_false_401(tmp_path: Path) -> None:
    (tmp_path / "access.yaml").write_text(SA_RULES)
    auth = Authenticator(AccessFile(str(tmp_path / "access.yaml")), Reviews({}, fail=True))
    with pytest.raises(ApiProblem) as caught:
        await auth.check("Bearer some-token", Role.READER)
    assert caught.value.status == 503
    assert auth.outcomes["unavailable"] == 1


async def test_without_service_account_rules_no_token_is_sent_for_review(tmp_path: Path) -> None:
    reviews = Reviews({"x": sa_user("ops", "x")})
    auth = Authenticator(AccessFile(str(standard_tokens(tmp_path))), reviews)
    with pytest.raises(ApiProblem):
        await auth.check("Bearer x", Role.READER)
    assert reviews.asked == 0
    assert (await auth.check(f"bearer  {ADMIN_TOKEN} ", Role.ADMIN)).name.endswith("admin")


async def test_token_review_against_the_emulator() -> None:
    async with FakeCluster(token=TOKEN) as cluster:
        sa_token = cluster.service_account_token("ops", "deployer")
        client = KubeClient(explicit_access(cluster.url, token=TOKEN))
        try:
            user = await review_token(client, sa_token)
            assert user is not None and user.username == "system:serviceaccount:ops:deployer"
            assert "system:serviceaccounts:ops" in user.groups
            assert await review_token(client, "sa-forged") is None
            cluster.token_reviews_allowed = False
            with pytest.raises(Forbidden):
                await review_token(client, sa_token)
        finally:
            await client.close()


@pytest.fixture
async def reader_only(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        store=f"sqlite:///{tmp_path}/h.db",
        tokens_file=str(standard_tokens(tmp_path)),
        lookup_access="reader",
        watch=False,
    )
    service = Service(settings)
    task = asyncio.create_task(service.run())
    try:
        while not service.ready:
            await asyncio.sleep(0.01)
        app = create_app(service, run_background=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://podindex"
        ) as client:
            yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    "path", ["/pod?ip=10.0.0.1", "/pods", "/pod/info", "/pod/ip/10.0.0.1", "/metrics"]
)
async def test_reader_only_lookups_refuse_anonymous_callers(
    reader_only: httpx.AsyncClient, path: str
) -> None:
    anonymous = await reader_only.get(path)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="podindex"'
    reader = await reader_only.get(path, headers=bearer(READER_TOKEN))
    assert reader.status_code in (200, 404), reader.text
    # Probes stay open: the kubelet has no token.
    assert (await reader_only.get("/health")).status_code == 200


@pytest.mark.timeout(90)
async def test_serve_over_tls_with_service_account_and_file_tokens(tmp_path: Path) -> None:
    """A real process: HTTPS, lookups for readers only, TokenReview against the cluster,
    and no token in anything the process prints."""
    tls = make_tls_material("127.0.0.1")
    access = tmp_path / "access.yaml"
    access.write_text(
        f"tokens:\n  - {{name: alice, role: reader, sha256: {token_digest(READER_TOKEN)}}}\n"
        + SA_RULES
    )
    async with FakeCluster(token=TOKEN, bookmark_interval=0.5) as cluster:
        populate(cluster, 50, seed=3)
        deployer = cluster.service_account_token("ops", "deployer")
        stranger = cluster.service_account_token("default", "stranger")
        env = {
            "PODINDEX_SERVER": cluster.url,
            "PODINDEX_TOKEN_FILE": str(_write(tmp_path / "kube-token", TOKEN)),
            "PODINDEX_TOKENS_FILE": str(access),
            "PODINDEX_LOOKUP_ACCESS": "reader",
            "PODINDEX_TLS_CERT": str(tls.cert_file),
            "PODINDEX_TLS_KEY": str(tls.key_file),
            "PODINDEX_STORE": f"sqlite:///{tmp_path}/h.db",
        }
        process, base = start_podindex("serve", env=env)
        base = base.replace("http://", "https://")
        try:
            await wait_ready(base, process, verify=tls.client_context())
            pod = next(
                p["status"]["podIP"]
                for p in cluster.list_objects(POD)
                if p["status"].get("podIP")
                and not p["spec"].get("hostNetwork")
                and p["status"].get("phase") == "Running"
            )
            async with httpx.AsyncClient(base_url=base, verify=tls.client_context()) as client:
                assert (await client.get("/pod", params={"ip": pod})).status_code == 401
                for token in (READER_TOKEN, deployer):
                    found = await client.get("/pod", params={"ip": pod}, headers=bearer(token))
                    assert found.status_code == 200, found.text
                denied = await client.get("/pods", headers=bearer(stranger))
                assert denied.status_code == 403 and "stranger" in denied.json()["message"]
                push = {"pod_name": "agent-pod", "pod_namespace": "ops", "pod_ip": "10.9.9.9"}
                refused = await client.post("/pod/spec", json=push, headers=bearer(READER_TOKEN))
                assert refused.status_code == 403
                pushed = await client.post("/pod/spec", json=push, headers=bearer(deployer))
                assert pushed.status_code == 200, pushed.text
            with pytest.raises(httpx.TransportError):  # HTTPS only: no plain HTTP on the port
                async with httpx.AsyncClient() as plain:
                    await plain.get(base.replace("https://", "http://") + "/health")
        finally:
            output = stop(process)
        assert "serving on https://" in output
        for secret in (READER_TOKEN, deployer, stranger, TOKEN):
            assert secret not in output


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_serve_stops_on_a_broken_access_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from podindex.cli import main

    broken = tmp_path / "access.yaml"
    broken.write_text("tokens:\n  - {name: a, role: owner, sha256: x}\n")
    assert main(["serve", "--tokens-file", str(broken), "--watch", "false"]) == 2
    err = capsys.readouterr().err
    assert "tokens[0]" in err and "access.yaml" in err


async def test_a_grant_can_be_limited_to_namespaces(tmp_path: Path) -> None:
    (tmp_path / "access.yaml").write_text(
        f"tokens:\n  - {{name: team-a-ci, role: admin, namespaces: [team-a], "
        f"sha256: {token_digest('scoped')}}}\n"
        "serviceAccounts:\n"
        "  - {group: 'system:serviceaccounts:ops', role: reader, namespaces: [ops]}\n"
        "  - {user: 'system:serviceaccount:ops:deployer', role: reader, namespaces: [web]}\n"
    )
    auth = Authenticator(
        AccessFile(str(tmp_path / "access.yaml")),
        Reviews({"deployer": sa_user("ops", "deployer")}),
    )
    scoped = await auth.check("Bearer scoped", Role.ADMIN, "team-a")
    assert scoped.namespaces_for(Role.ADMIN) == frozenset({"team-a"})
    with pytest.raises(ApiProblem) as caught:
        await auth.check("Bearer scoped", Role.READER, "team-b")
    assert caught.value.status == 403 and "only in team-a" in caught.value.message
    # A route about no one namespace (a push, a lookup by IP, an IP set) is out of reach
    # of a grant limited to namespaces, unless the route filters by the grant itself.
    with pytest.raises(ApiProblem) as caught:
        await auth.check("Bearer scoped", Role.ADMIN)
    assert caught.value.status == 403 and "cluster-wide" in caught.value.message
    listing = await auth.check("Bearer scoped", Role.READER, any_namespace=True)
    assert listing.namespaces_for(Role.READER) == frozenset({"team-a"})
    deployer = await auth.check("Bearer deployer", Role.READER, "web")
    assert deployer.namespaces == frozenset({"ops", "web"}), "the union of matching grants"


async def test_a_broad_lower_grant_is_kept_beside_a_narrow_higher_one(tmp_path: Path) -> None:
    (tmp_path / "access.yaml").write_text(
        "serviceAccounts:\n"
        "  - {group: 'system:serviceaccounts:ops', role: reader}\n"
        "  - {user: 'system:serviceaccount:ops:deployer', role: admin, namespaces: [team-a]}\n"
    )
    auth = Authenticator(
        AccessFile(str(tmp_path / "access.yaml")),
        Reviews({"deployer": sa_user("ops", "deployer")}),
    )
    assert (await auth.check("Bearer deployer", Role.READER, "team-b")).name.endswith("deployer")
    await auth.check("Bearer deployer", Role.READER)  # reader everywhere
    await auth.check("Bearer deployer", Role.ADMIN, "team-a")
    with pytest.raises(ApiProblem) as caught:
        await auth.check("Bearer deployer", Role.ADMIN, "team-b")
    assert caught.value.status == 403


def test_namespaces_must_be_a_list_of_names() -> None:
    with pytest.raises(AccessFileError, match=r"tokens\[0\]: 'namespaces' must be"):
        parse_access(
            f"tokens:\n  - {{name: a, role: admin, namespaces: team-a, sha256: {DIGEST}}}\n", "f"
        )
