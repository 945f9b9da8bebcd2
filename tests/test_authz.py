"""Forward-auth: the caller's address, the target namespace, the policy, and ``/authz`` in process."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from podindex.api.app import create_app
from podindex.api.authz import PolicyFile
from podindex.api.lookup import LookupFastPath
from podindex.authz import (
    Policy,
    PolicyError,
    ProxyTrust,
    TargetRules,
    parse_policy,
)
from podindex.cluster import ClusterSync
from podindex.index import Index
from podindex.kube.client import KubeClient
from podindex.kube.config import explicit_access
from podindex.logs import JsonFormatter
from podindex.model import ObjectMeta, Pod, PodIP, PodSpec, PodStatus
from podindex.service import Service
from podindex.settings import Settings, SettingsError

T0 = 1_000.0


def make_pod(
    namespace: str,
    name: str,
    ip: str,
    *,
    labels: dict[str, str] | None = None,
    host_network: bool = False,
    node: str = "node-1",
    uid: str | None = None,
    created: str = "2026-11-30T10:00:00Z",
) -> Pod:
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            uid=uid or f"uid-{namespace}-{name}",
            resourceVersion="1",
            creationTimestamp=created,
            labels=labels or {},
        ),
        spec=PodSpec(nodeName=node, hostNetwork=host_network),
        status=PodStatus(
            phase="Running",
            podIP=ip,
            hostIP=ip if host_network else "10.0.0.11",
            podIPs=(PodIP(ip),),
        ),
    )


# --- the caller's address -----------------------------------------------------------

TRUST = ProxyTrust.parse("10.0.0.0/24, fd00::/64")


def test_an_untrusted_peer_is_the_caller_whatever_its_headers_say() -> None:
    spoofed = {
        "x-forwarded-for": "10.244.1.5",
        "x-real-ip": "10.244.1.5",
        "forwarded": "for=10.244.1.5",
    }
    assert TRUST.client_ip("10.244.9.9", spoofed) == "10.244.9.9"
    assert ProxyTrust.parse(None).client_ip("10.0.0.2", spoofed) == "10.0.0.2"  # trust none


def test_x_forwarded_for_is_read_from_the_right_skipping_trusted_hops() -> None:
    headers = {"x-forwarded-for": "6.6.6.6, 10.244.1.5, 10.0.0.7"}
    # 10.0.0.7 is a trusted proxy in front of the peer; 6.6.6.6 is what the client claimed.
    assert TRUST.client_ip("10.0.0.2", headers) == "10.244.1.5"
    assert TRUST.client_ip("10.0.0.2", {"x-forwarded-for": "10.0.0.9, 10.0.0.7"}) == "10.0.0.9"
    assert TRUST.client_ip("10.0.0.2", {}) == "10.0.0.2"
    assert TRUST.client_ip("::ffff:10.0.0.2", {"x-forwarded-for": "010.244.001.005"}) == (
        "10.244.1.5"
    )


def test_forwarded_rfc7239_with_quoted_ipv6_and_ports() -> None:
    value = 'for=192.0.2.60;proto=http;by=10.0.0.2, For="[2001:db8:cafe::17]:4711"'
    assert TRUST.client_ip("10.0.0.2", {"forwarded": value}) == "2001:db8:cafe::17"
    assert TRUST.client_ip("10.0.0.2", {"forwarded": 'for="10.244.1.5:8080"'}) == "10.244.1.5"
    assert TRUST.client_ip("fd00::2", {"forwarded": 'for="[fd00::7]", for=10.244.1.5'}) == (
        "10.244.1.5"
    )
    # A hop that is not an address: who is behind it cannot be told.
    assert TRUST.client_ip("10.0.0.2", {"forwarded": "for=unknown"}) is None
    assert TRUST.client_ip("10.0.0.2", {"forwarded": "for=_hidden, for=10.0.0.7"}) is None


@pytest.mark.parametrize(
    "value",
    [
        'for=10.244.1.5;x=", for=10.244.1.6',  # a client's open quote swallowing the proxy's
        'for="10.244.1.5, for=10.244.1.6',
        "for=10.244.1.5;junk, for=10.244.1.6",  # a pair without '='
        'for="10.244.1.5\\", for=10.244.1.6',  # an escaped closing quote
    ],
)
def test_a_forwarded_header_that_does_not_parse_names_nobody(value: str) -> None:
    assert TRUST.client_ip("10.0.0.2", {"forwarded": value}) is None
    assert TRUST.client_ip("10.0.0.2", {"forwarded": 'for="a\\"b"'}) is None, "not an IP"


@pytest.mark.parametrize(
    "uri",
    [
        "/fission-function/team-a/../victim/fn",
        "/fission-function/team-a/x/../../victim/fn",
        "/fission-function/team-a/%2e%2e/victim/fn",
        "/fission-function/team-a%2F..%2Fvictim/fn",
        "/fission-function/team-a/..\\victim/fn",
        "fission-function/team-a/fn",
    ],
)
def test_a_path_an_upstream_may_read_otherwise_has_no_target(uri: str) -> None:
    rules = TargetRules.parse("fission")
    assert rules.namespace(uri, "", None) == (None, "")
    assert rules.namespace("/fission-function/team-a/fn?next=../x%2F", "", None)[0] == "team-a"


def test_the_first_configured_header_present_wins() -> None:
    headers = {"x-forwarded-for": "10.244.1.5", "x-real-ip": "10.244.2.2"}
    assert TRUST.client_ip("10.0.0.2", headers) == "10.244.1.5"
    only_real = ProxyTrust.parse("10.0.0.0/24", "x-real-ip")
    assert only_real.client_ip("10.0.0.2", headers) == "10.244.2.2"
    assert only_real.client_ip("10.0.0.2", {"x-forwarded-for": "10.244.1.5"}) == "10.0.0.2"
    with pytest.raises(ValueError, match="x-client-ip"):
        ProxyTrust.parse("10.0.0.0/24", "x-client-ip")


def test_bad_trusted_proxies_are_a_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"10\.0\.0\.300"):
        Settings(trusted_proxies="10.0.0.300/24").validate()
    with pytest.raises(SettingsError, match="authz_targets"):
        Settings(authz_targets="fission,knative").validate()
    Settings(trusted_proxies="127.0.0.1, ::1/128", authz_targets="header:X-Ns").validate()


# --- the target namespace -----------------------------------------------------------


def test_presets_read_fission_routes_and_service_hosts() -> None:
    rules = TargetRules.parse("fission,service-host")
    assert rules.namespace("/fission-function/team-a/hello", "", None) == ("team-a", "fission")
    assert rules.namespace("/fission-function/team-a/hello/sub?x=1", "", None)[0] == "team-a"
    # A function of the default namespace has one segment.
    assert rules.namespace("/fission-function/hello", "", None) == ("default", "fission")
    assert rules.namespace("/fission-function/hello/?x=1", "", None)[0] == "default"
    assert rules.namespace("/fission-function/Bad_NS/hello", "", None)[0] is None
    assert rules.namespace("/fission-functionx/team-a/f", "", None)[0] is None
    assert rules.namespace("/", "web.team-b.svc", None) == ("team-b", "service-host")
    assert rules.namespace("/", "web.team-b.svc.cluster.local:8080", None)[0] == "team-b"
    assert rules.namespace("/", "Web.Team-B.svc.cluster.local.", None)[0] == "team-b"
    assert rules.namespace("/", "team-b.example.com", None)[0] is None
    assert rules.namespace("/", "web.team-b.svc", "team-c")[0] == "team-b"  # header not enabled


def test_an_explicit_header_wins_when_configured() -> None:
    rules = TargetRules.parse("fission,header:X-Target-Namespace")
    assert rules.header == "x-target-namespace"
    assert rules.namespace("/fission-function/a/f", "", "team-c") == ("team-c", "header")
    assert rules.namespace("/fission-function/a/f", "", "Not A Namespace")[0] is None


def test_custom_target_rules_from_the_policy_go_first() -> None:
    policy = parse_policy(
        "targets:\n"
        "  - uri: '^/api/(?P<namespace>[a-z0-9-]+)/'\n"
        "  - host: '^(?P<namespace>[a-z0-9-]+)\\.apps\\.example\\.com$'\n"
        "    name: apps\n"
    )
    rules = TargetRules.parse("fission")
    assert rules.namespace("/api/team-d/x", "", None, policy.targets) == (
        "team-d",
        "targets[0].uri",
    )
    assert rules.namespace("/", "team-e.apps.example.com", None, policy.targets) == (
        "team-e",
        "apps",
    )
    assert rules.namespace("/fission-function/a/f", "", None, policy.targets)[0] == "a"


# --- the policy file ----------------------------------------------------------------

GOOD_POLICY = """\
# podindex forward-auth policy
rules:
  - name: monitoring-scrapes-everyone
    from:
      namespaces: [monitoring]
      selector: app.kubernetes.io/name=prometheus
    to: "*"
  - name: frontend-calls-api
    from: {identities: [frontend]}
    to: [team-api]
  - name: nobody-calls-vault
    effect: deny
    from: {namespaces: "*"}
    to: [vault]
  - name: node-agents
    ambiguous: [node]
    from: {namespaces: [kube-system]}
    to: [metrics]
"""


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("rules:\n  - to: [a]\n    frm: {namespaces: [b]}\n", 3, "unknown key 'frm'"),
        ("rules:\n  - from: {namespaces: [b]}\n", 2, "needs 'to'"),
        ("rules:\n  - to: [a]\n    from:\n      selector: 'app in (x'\n", 4, "unbalanced"),
        ("rules:\n  - to: [a]\n    from: {namespaces: [Team_B]}\n", 3, "'Team_B'"),
        (
            "rules:\n  - to: [a]\n    effect: maybe\n    from: {namespaces: [b]}\n",
            3,
            "allow or deny",
        ),
        ("rules:\n  - to: [a]\n    ambiguous: [pods]\n    from: {namespaces: [b]}\n", 3, "'pods'"),
        ("rules:\n  - to: [a]\n    from: {}\n", 3, "at least one"),
        ("same_namespace: maybe\n", 1, "true or false"),
        ("targets:\n  - uri: '^/api/(?P<ns>[a-z]+)'\n", 2, "no named group 'namespace'"),
        ("targets:\n  - uri: '^/api/('\n", 2, "invalid regex"),
        ("rules: [\n  {to: [a]\n", 3, "not valid YAML"),
        (
            "rules:\n  - name: x\n    to: [a]\n    from: {namespaces: [b]}\n  - name: x\n"
            "    to: [a]\n    from: {namespaces: [b]}\n",
            5,
            "duplicate rule name",
        ),
    ],
)
def test_policy_errors_name_the_file_and_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "/etc/podindex/policy.yaml")
    message = str(caught.value)
    assert message.startswith(f"/etc/podindex/policy.yaml line {line}"), message
    assert needle in message, message


def test_an_empty_policy_is_same_namespace_only() -> None:
    policy = parse_policy("# nothing yet\n")
    assert policy.same_namespace and policy.rules == ()


def _index_with(*pods: tuple[str, Pod]) -> Index:
    index = Index(grace_seconds=30.0)
    for cluster, pod in pods:
        index.upsert_pod(cluster, pod, T0)
    return index


def test_same_namespace_is_allowed_other_namespaces_need_a_rule() -> None:
    index = _index_with(
        ("c1", make_pod("team-a", "caller", "10.244.1.5")),
        (
            "c1",
            make_pod(
                "monitoring", "prom", "10.244.1.6", labels={"app.kubernetes.io/name": "prometheus"}
            ),
        ),
        (
            "c1",
            make_pod(
                "web", "frontend-1", "10.244.1.7", labels={"app.kubernetes.io/name": "frontend"}
            ),
        ),
        ("c1", make_pod("vault", "vault-0", "10.244.1.8")),
    )
    policy = parse_policy(GOOD_POLICY)

    def decide(ip: str, target: str) -> tuple[bool, str, str]:
        found = index.caller(ip, T0)
        assert found is not None
        d = policy.decide(*found, target)
        return d.allowed, d.reason, d.rule

    assert decide("10.244.1.5", "team-a") == (True, "same_namespace", "")
    assert decide("10.244.1.5", "team-b") == (False, "other_namespace", "")
    assert decide("10.244.1.6", "team-b") == (True, "rule", "monitoring-scrapes-everyone")
    assert decide("10.244.1.7", "team-api") == (True, "rule", "frontend-calls-api")
    assert decide("10.244.1.7", "team-b") == (False, "other_namespace", "")
    # Explicit deny wins, even over the same namespace and an allow-everywhere rule.
    assert decide("10.244.1.8", "vault") == (False, "deny_rule", "nobody-calls-vault")
    assert decide("10.244.1.6", "vault") == (False, "deny_rule", "nobody-calls-vault")
    off = parse_policy("same_namespace: false\n")
    found = index.caller("10.244.1.5", T0)
    assert found is not None
    assert off.decide(*found, "team-a").reason == "other_namespace"


# --- ambiguous callers --------------------------------------------------------------


def test_a_node_ip_shared_by_host_network_pods_is_denied_unless_a_rule_names_it() -> None:
    index = _index_with(
        ("c1", make_pod("kube-system", "kube-proxy-x", "10.0.0.11", host_network=True)),
        ("c1", make_pod("kube-system", "node-exporter-x", "10.0.0.11", host_network=True)),
    )
    found = index.caller("10.0.0.11", T0)
    assert found is not None and found[0] == "node" and len(found[1]) == 2
    assert Policy().decide(*found, "kube-system").reason == "ambiguous_node"
    policy = parse_policy(GOOD_POLICY)
    assert policy.decide(*found, "metrics").allowed  # node-agents: every pod is kube-system
    assert policy.decide(*found, "kube-system").reason == "ambiguous_node"
    # One pod of another namespace on the node and the rule no longer covers the IP.
    index.upsert_pod("c1", make_pod("team-a", "agent", "10.0.0.11", host_network=True), T0)
    found = index.caller("10.0.0.11", T0)
    assert found is not None
    assert policy.decide(*found, "metrics").reason == "ambiguous_node"


def test_an_ip_held_in_two_clusters_is_denied_unless_a_rule_names_it() -> None:
    index = _index_with(
        ("c1", make_pod("team-a", "one", "10.244.1.5")),
        ("c2", make_pod("team-a", "two", "10.244.1.5")),
    )
    found = index.caller("10.244.1.5", T0)
    assert found is not None and found[0] == "clusters"
    assert Policy().decide(*found, "team-a").reason == "ambiguous_clusters"
    policy = parse_policy(
        "rules:\n  - ambiguous: [clusters]\n    from: {namespaces: [team-a]}\n    to: [team-a]\n"
    )
    assert policy.decide(*found, "team-a").allowed
    assert not policy.decide(*found, "team-b").allowed


def test_a_pod_in_its_deletion_grace_is_denied_unless_a_rule_names_it() -> None:
    pod = make_pod("team-a", "gone", "10.244.1.5")
    index = _index_with(("c1", pod))
    index.delete_pod("c1", pod, T0 + 1)
    found = index.caller("10.244.1.5", T0 + 2)
    assert found is not None and found[0] == "terminating"
    assert Policy().decide(*found, "team-a").reason == "terminating"
    policy = parse_policy(
        "rules:\n  - ambiguous: [terminating]\n    from: {namespaces: [team-a]}\n    to: [team-a]\n"
    )
    assert policy.decide(*found, "team-a").allowed
    assert index.caller("10.244.1.5", T0 + 40) is None  # past the grace period: nobody


# --- the endpoint, in process -------------------------------------------------------

PROXY = "10.0.0.2"


@pytest.fixture
def service(tmp_path: Path) -> Service:
    svc = Service(
        Settings(
            store=f"sqlite:///{tmp_path}/history.db",
            trusted_proxies="10.0.0.0/24",
            authz_audit=True,
        )
    )
    svc.clusters["default"] = ClusterSync(
        "default", KubeClient(explicit_access("http://127.0.0.1:1", token=None)), svc.index
    )
    return svc


def mark_synced(service: Service) -> None:
    pods = [
        make_pod("team-a", "caller", "10.244.1.5", labels={"app.kubernetes.io/name": "caller"}),
        make_pod("team-b", "other", "10.244.1.6"),
    ]
    service.index.replace_pods("default", pods, time.time())
    service.clusters["default"].pods.synced.set()
    service.history.loaded = True


Client = Callable[[str], httpx.AsyncClient]


@pytest.fixture
async def clients(service: Service) -> AsyncIterator[Client]:
    """A client factory: each connects from the given peer address."""
    app = create_app(service, run_background=False)
    opened: list[httpx.AsyncClient] = []

    def connect(peer: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://podindex")
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.aclose()


FISSION_A = {"X-Forwarded-Uri": "/fission-function/team-a/hello", "X-Forwarded-Method": "POST"}


async def test_authz_fails_closed_before_the_initial_sync(clients: Client) -> None:
    response = await clients("10.244.1.5").get("/authz", headers=FISSION_A)
    assert response.status_code == 503
    assert response.json()["error"] == "not_ready"


async def test_authz_allows_the_same_namespace_with_pod_headers(
    clients: Client, service: Service
) -> None:
    mark_synced(service)
    for method in ("GET", "POST", "HEAD", "PUT"):
        response = await clients("10.244.1.5").request(method, "/authz", headers=FISSION_A)
        assert response.status_code == 200, response.text
        assert response.headers["x-pod-name"] == "caller"
        assert response.headers["x-pod-namespace"] == "team-a"
        assert response.headers["x-pod-uid"] == "uid-team-a-caller"
        assert response.headers["x-pod-identity"] == "caller"
        assert response.headers["x-pod-cluster"] == "default"
        assert response.headers["x-pod-workload"] == "-"  # a bare pod: never empty
        assert response.headers["x-pod-caller"] == "pod"
    denied = await clients("10.244.1.6").get("/authz", headers=FISSION_A)
    assert denied.status_code == 403
    assert denied.json() == {
        "error": "forbidden",
        "reason": "other_namespace",
        "message": "the caller's pod is in another namespace and no rule allows it",
        "caller_ip": "10.244.1.6",
        "target_namespace": "team-a",
        "rule": None,
    }
    unknown = await clients("10.244.9.9").get("/authz", headers=FISSION_A)
    assert unknown.status_code == 403 and unknown.json()["reason"] == "unknown_ip"
    no_target = await clients("10.244.1.5").get("/authz", headers={"X-Forwarded-Uri": "/x"})
    assert no_target.status_code == 403 and no_target.json()["reason"] == "no_target"


async def test_authz_reads_the_caller_from_trusted_proxies_only(
    clients: Client, service: Service
) -> None:
    mark_synced(service)
    proxy = clients(PROXY)
    via_proxy = await proxy.get("/authz", headers={**FISSION_A, "X-Forwarded-For": "10.244.1.5"})
    assert via_proxy.status_code == 200 and via_proxy.headers["x-pod-name"] == "caller"
    # The client put a team-a address in front; the proxy appended the real one.
    spoofed_chain = await proxy.get(
        "/authz", headers={**FISSION_A, "X-Forwarded-For": "10.244.1.5, 10.244.1.6"}
    )
    assert spoofed_chain.status_code == 403
    assert spoofed_chain.json()["caller_ip"] == "10.244.1.6"
    # An untrusted peer's forwarded headers change nothing.
    spoofed = await clients("10.244.1.6").get(
        "/authz",
        headers={
            **FISSION_A,
            "X-Forwarded-For": "10.244.1.5",
            "X-Real-IP": "10.244.1.5",
            "Forwarded": "for=10.244.1.5",
        },
    )
    assert spoofed.status_code == 403 and spoofed.json()["caller_ip"] == "10.244.1.6"
    # Two URI headers that disagree: one came from the client.
    conflict = await proxy.get(
        "/authz",
        headers={
            "X-Forwarded-For": "10.244.1.5",
            "X-Original-URI": "/fission-function/team-b/f",
            "X-Forwarded-Uri": "/fission-function/team-a/f",
        },
    )
    assert conflict.status_code == 403 and conflict.json()["reason"] == "conflicting_uri"
    # nginx names the URI X-Original-URI, the host X-Forwarded-Host (only a proxy's counts).
    nginx = await proxy.get(
        "/authz",
        headers={
            "X-Forwarded-For": "10.244.1.5",
            "X-Forwarded-Host": "web.team-a.svc.cluster.local",
            "X-Original-URI": "/",
        },
    )
    assert nginx.status_code == 200
    direct = await clients("10.244.1.5").get(
        "/authz", headers={"X-Forwarded-Host": "web.team-a.svc", "Host": "web.team-b.svc"}
    )
    assert direct.status_code == 403 and direct.json()["target_namespace"] == "team-b"


async def test_authz_decisions_are_counted_and_audited_without_credentials(
    clients: Client, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    secret = {"Authorization": "Bearer s3cr3t-token", "Cookie": "session=s3cr3t-cookie"}
    with caplog.at_level(logging.INFO, logger="podindex.authz.audit"):
        await clients("10.244.1.5").get("/authz", headers=FISSION_A)  # 503
        mark_synced(service)
        leaky = {**FISSION_A, "X-Forwarded-Uri": FISSION_A["X-Forwarded-Uri"] + "?token=s3cr3t"}
        await clients("10.244.1.5").get("/authz", headers={**leaky, **secret})
        await clients("10.244.1.6").get("/authz", headers={**FISSION_A, **secret})
    records = [r for r in caplog.records if r.name == "podindex.authz.audit"]
    assert len(records) == 3
    lines = [JsonFormatter().format(r) for r in records]
    assert '"decision":"unavailable"' in lines.pop(0)
    assert '"decision":"allow"' in lines[0] and '"pods":["default/team-a/caller"]' in lines[0]
    assert '"reason":"other_namespace"' in lines[1] and '"method":"POST"' in lines[1]
    assert records[2].getMessage() == "authz deny other_namespace: 10.244.1.6 -> team-a"
    assert not any("s3cr3t" in line for line in lines)
    metrics = (await clients("127.0.0.1").get("/metrics")).text
    assert 'podindex_authz_decisions_total{decision="allow",reason="same_namespace"} 1.0' in metrics
    assert 'podindex_authz_decisions_total{decision="deny",reason="other_namespace"} 1.0' in metrics
    assert (
        'podindex_authz_decisions_total{decision="unavailable",reason="not_ready"} 1.0' in metrics
    )


async def test_authz_is_in_the_openapi_document(clients: Client) -> None:
    document = (await clients("127.0.0.1").get("/openapi.json")).json()
    assert "/authz" in document["paths"]


# --- reloading the policy file ------------------------------------------------------


def _touch_later(path: Path) -> None:
    """Move the mtime forward, so a rewrite within the clock's granularity is seen."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def settled(watched: PolicyFile) -> bool:
    """Two polls: a change is read once it held still for one."""
    assert not watched.reload_if_changed(), "a change is not read on the poll that sees it"
    return watched.reload_if_changed()


def test_a_changed_policy_file_is_reloaded_and_a_bad_one_keeps_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD_POLICY)
    watched = PolicyFile(str(path))
    assert len(watched.policy.rules) == 4
    assert not watched.reload_if_changed()  # unchanged
    path.write_text("rules: []\n")
    _touch_later(path)
    assert settled(watched) and watched.policy.rules == ()
    assert watched.reloads == 1
    before = watched.policy
    path.write_text("rules:\n  - to: [a]\n    from: {namespaces: [BAD]}\n")
    _touch_later(path)
    with caplog.at_level(logging.ERROR, logger="podindex.authz"):
        assert not settled(watched)
    assert watched.policy is before and watched.failures == 1
    assert "line 3" in caplog.text and "keeping the previous one" in caplog.text
    path.unlink()
    assert not watched.reload_if_changed() and watched.policy is before
    path.write_text(GOOD_POLICY)
    assert settled(watched) and len(watched.policy.rules) == 4


def test_a_file_caught_mid_write_or_emptied_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD_POLICY)
    watched = PolicyFile(str(path))
    rules = len(watched.policy.rules)
    # Half written (still valid YAML, deny rules cut off), then complete: only the
    # complete file is read.
    path.write_text(GOOD_POLICY[: GOOD_POLICY.index("rules:") + 7])
    _touch_later(path)
    assert not watched.reload_if_changed()
    path.write_text(GOOD_POLICY + "\n")
    _touch_later(path)
    assert not watched.reload_if_changed(), "still moving"
    assert watched.reload_if_changed() and len(watched.policy.rules) == rules
    path.write_text("")
    _touch_later(path)
    assert not settled(watched) and len(watched.policy.rules) == rules, "empty is an error"


def test_a_bad_policy_file_stops_the_start_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - to: [a]\n    from:\n      selector: '=x'\n")
    with pytest.raises(PolicyError, match=r"policy.yaml line 4 \(rules\[0\].from.selector\)"):
        PolicyFile(str(path))


async def test_the_running_app_picks_up_a_new_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules: []\n")
    svc = Service(Settings(store=f"sqlite:///{tmp_path}/history.db", authz_policy=str(path)))
    svc.clusters["default"] = ClusterSync(
        "default", KubeClient(explicit_access("http://127.0.0.1:1", token=None)), svc.index
    )
    mark_synced(svc)
    app = create_app(svc, run_background=False)
    transport = httpx.ASGITransport(app=app, client=("10.244.1.6", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://podindex") as client:
        assert (await client.get("/authz", headers=FISSION_A)).status_code == 403
        path.write_text("rules:\n  - from: {namespaces: [team-b]}\n    to: [team-a]\n")
        _touch_later(path)
        # ASGITransport runs no lifespan, so no poller: check the file as the poller would.
        assert isinstance(app, LookupFastPath) and app.authz is not None
        assert settled(app.authz.policy_file)
        assert (await client.get("/authz", headers=FISSION_A)).status_code == 200


# --- the README's examples ----------------------------------------------------------


def _readme_block(language: str, starting: str) -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for block in readme.split("```" + language + "\n")[1:]:
        text = block.split("```", 1)[0]
        if text.startswith(starting):
            return text
    raise AssertionError(f"no ```{language} block starting with {starting!r} in README.md")


def test_the_readme_policy_example_parses_and_means_what_it_says() -> None:
    policy = parse_policy(_readme_block("yaml", "# --authz-policy"), "README.md")
    assert [r.name for r in policy.rules] == [
        "prometheus-scrapes-everything",
        "frontend-calls-the-api",
        "nobody-calls-vault",
        "node-agents",
    ]
    rules = TargetRules.parse("fission")
    assert rules.namespace("/", "team-x.apps.example.com", None, policy.targets)[0] == "team-x"


async def test_an_ambiguous_caller_a_rule_allows_is_answered_as_such(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rules:\n"
        "  - ambiguous: [node, terminating]\n"
        "    from: {namespaces: [kube-system, team-a]}\n"
        "    to: [team-a]\n"
    )
    svc = Service(Settings(store=f"sqlite:///{tmp_path}/history.db", authz_policy=str(policy)))
    svc.clusters["default"] = ClusterSync(
        "default", KubeClient(explicit_access("http://127.0.0.1:1", token=None)), svc.index
    )
    mark_synced(svc)
    now = time.time()
    for name in ("kube-proxy-1", "node-exporter-1"):
        svc.index.upsert_pod(
            "default", make_pod("kube-system", name, "10.0.0.11", host_network=True), now
        )
    svc.index.delete_pod("default", make_pod("team-a", "caller", "10.244.1.5"), now)
    app = create_app(svc, run_background=False)

    async def ask(peer: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://podindex") as client:
            return await client.get("/authz", headers=FISSION_A)

    node = await ask("10.0.0.11")
    assert node.status_code == 200, node.text
    assert node.headers["x-pod-caller"] == "node"
    assert node.headers["x-pod-namespace"] == "kube-system"
    assert node.headers["x-pod-name"] == "-"  # several pods: none is named
    gone = await ask("10.244.1.5")
    assert gone.status_code == 200, gone.text
    assert gone.headers["x-pod-caller"] == "terminating"
    assert gone.headers["x-pod-name"] == "caller"
    assert gone.headers["x-pod-namespace"] == "team-a"


def test_an_address_that_is_something_else_in_another_cluster_is_ambiguous() -> None:
    index = Index(grace_seconds=30.0)
    index.upsert_pod("c1", make_pod("team-a", "pod-in-c1", "10.0.0.11"), 1000.0)
    index.upsert_pod("c2", make_pod("kube-system", "agent", "10.0.0.11", host_network=True), 1000.0)
    kind, pods = index.caller("10.0.0.11", 1000.0) or ("", ())
    assert kind == "clusters" and [p.cluster for p in pods] == ["c1", "c2"]
    assert not Policy().decide(kind, pods, "team-a").allowed

    gone = make_pod("team-b", "gone", "10.244.1.5")
    index.upsert_pod("c2", gone, 1000.0)
    index.delete_pod("c2", gone, 1001.0)
    index.upsert_pod("c1", make_pod("team-a", "live", "10.244.1.5"), 1002.0)
    kind, pods = index.caller("10.244.1.5", 1003.0) or ("", ())
    assert kind == "clusters" and {p.name for p in pods} == {"live", "gone"}
    assert index.caller("10.244.1.5", 1040.0)[0] == "pod", "once the grace is over"  # type: ignore[index]
