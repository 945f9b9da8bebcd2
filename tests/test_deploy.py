"""The manifests in ``deploy/``: every overlay rendered by ``kubectl kustomize`` and checked.

Each rendered object must parse against the Kubernetes OpenAPI schemas (strictly:
no unknown field) shipped by the ``kubernetes-validate`` package; the pod must
meet the ``restricted`` Pod Security Standard and run as the image's user with
a read-only root; the RBAC bound to podindex's service account must grant
exactly what the overlay's features use; probes must name the service's real
routes; the NetworkPolicy, PodDisruptionBudget and Service must select the
pods they are for. kubectl is required: without it this fails, never skips.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml
from starlette.routing import Route

from podindex.settings import Settings
from tests.test_image import IMAGE_UID

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.32.0"
"""The schema version objects are checked against: the oldest Kubernetes still maintained
that the manifests target (every field used exists there)."""

Obj = dict[str, Any]
Rules = dict[tuple[str, str], set[str]]

WATCH: Rules = {
    ("", "pods"): {"get", "list", "watch"},
    ("apps", "replicasets"): {"get", "list", "watch"},
    ("batch", "jobs"): {"get", "list", "watch"},
}
TOKENREVIEW: Rules = {("authentication.k8s.io", "tokenreviews"): {"create"}}
DASHBOARD_ACTIONS: Rules = {
    ("", "pods"): {"delete"},
    ("", "pods/log"): {"get"},
    ("", "pods/exec"): {"create", "get"},
    ("", "events"): {"list"},
}


def merged(*parts: Rules) -> Rules:
    result: Rules = {}
    for part in parts:
        for key, verbs in part.items():
            result.setdefault(key, set()).update(verbs)
    return result


OVERLAYS: dict[str, Rules] = {
    "base": WATCH,
    "overlays/single": merged(WATCH, TOKENREVIEW),
    "overlays/dashboard": merged(WATCH, TOKENREVIEW, DASHBOARD_ACTIONS),
    "overlays/replicated": merged(WATCH, TOKENREVIEW),
}
"""Every kustomization that renders a whole install, and exactly the RBAC it must grant."""

# The restricted Pod Security Standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is not installed, and these tests render deploy/ with `kubectl kustomize`: "
            "install kubectl ≥ 1.27 (it ships kustomize), e.g. from the Kubernetes apt "
            "repository or the Google Cloud SDK, and run again",
            pytrace=False,
        )
    return found


@cache
def render(kustomization: str) -> tuple[Obj, ...]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl kustomize {kustomization}: {done.stderr}"
    return tuple(o for o in yaml.safe_load_all(done.stdout) if o)


def one(objects: tuple[Obj, ...], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects: tuple[Obj, ...]) -> Obj:
    spec: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: tuple[Obj, ...]) -> Obj:
    containers = pod_spec(objects)["containers"]
    assert len(containers) == 1
    found: Obj = containers[0]
    return found


def settings_env(objects: tuple[Obj, ...]) -> dict[str, Any]:
    """PODINDEX_* as the pod sees it: the ConfigMap (envFrom) overridden by ``env``."""
    env: dict[str, Any] = {}
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    for source in container(objects).get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for variable in container(objects).get("env", []):
        env[variable["name"]] = variable.get("value", variable.get("valueFrom"))
    return env


def mounted(objects: tuple[Obj, ...], path: str) -> Obj:
    """The volume mounted at the deepest mount point above ``path``."""
    mounts = sorted(
        (m for m in container(objects)["volumeMounts"] if path.startswith(m["mountPath"] + "/")),
        key=lambda m: len(m["mountPath"]),
    )
    assert mounts, f"{path} is on no mounted volume (the root filesystem is read-only)"
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    return {**volumes[mounts[-1]["name"]], "readOnly": mounts[-1].get("readOnly", False)}


every_overlay = pytest.mark.parametrize("kustomization", sorted(OVERLAYS))


@every_overlay
def test_every_object_parses_against_the_kubernetes_schemas(kustomization: str) -> None:
    objects = render(kustomization)
    kinds = {o["kind"] for o in objects}
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "podindex", obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "podindex"


def test_the_schema_check_has_teeth() -> None:
    deployment = copy.deepcopy(one(render("base"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["secuirtyContext"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = copy.deepcopy(one(render("base"), "Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@every_overlay
def test_the_pod_meets_the_restricted_pod_security_standard(kustomization: str) -> None:
    objects = render(kustomization)
    namespace = one(objects, "Namespace")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = pod_spec(objects)
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert spec.get(host, host == "hostUsers") is (host == "hostUsers"), host
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == IMAGE_UID != 0, "the image's own, non-root user"
    assert pod_security["runAsGroup"] == IMAGE_UID
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    for volume in spec["volumes"]:
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUME_TYPES, volume
    for c in spec["containers"] + spec.get("initContainers", []):
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security.get("privileged", False) is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert not security["capabilities"].get("add")
        assert security["readOnlyRootFilesystem"] is True
        assert security.get("runAsUser", IMAGE_UID) != 0
        assert security.get("seccompProfile", {"type": "RuntimeDefault"})["type"] in (
            "RuntimeDefault",
            "Localhost",
        )
        assert all("hostPort" not in port for port in c.get("ports", []))
    # A read-only root: what Python and granian write goes to /tmp, an emptyDir.
    assert "emptyDir" in mounted(objects, "/tmp/x")


@every_overlay
def test_probes_resources_and_settings(kustomization: str) -> None:
    objects = render(kustomization)
    c = container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = settings_env(objects)
    assert env["PODINDEX_LISTEN"] == f"0.0.0.0:{ports['http']}"
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    resources = c["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]
    assert "cpu" not in resources["limits"], "a CPU limit throttles the watch during a relist"
    mebibytes = {k: int(resources[k]["memory"].removesuffix("Mi")) for k in ("requests", "limits")}
    # BENCHMARKS.md "A whole podindex serve": 106 MB idle, 200 MB at 10k pods, 449 MB at 50k.
    assert 200 <= mebibytes["requests"] <= mebibytes["limits"]
    assert mebibytes["limits"] * 1.048576 >= 449 * 1.1, "the limit holds 50k pods, 10% spare"
    # Every PODINDEX_* variable is a real setting, and every file it names is mounted.
    known = {f"PODINDEX_{f.name.upper()}" for f in fields(Settings)}
    assert set(env) <= known, set(env) - known
    for name in ("PODINDEX_TOKENS_FILE", "PODINDEX_SECRET_KEY_FILE"):
        if name in env:
            volume = mounted(objects, env[name])
            assert "secret" in volume and volume["readOnly"], (name, volume)
    store = env["PODINDEX_STORE"]
    if isinstance(store, str):
        assert store.startswith("sqlite:////")
        volume = mounted(objects, store.removeprefix("sqlite:///"))
        assert not volume["readOnly"] and (
            "persistentVolumeClaim" in volume or kustomization == "base"
        )
    else:  # a PostgreSQL URL carries a password: from a Secret, never a ConfigMap
        assert set(store) == {"secretKeyRef"}


def test_the_probes_name_routes_the_service_answers_without_a_token() -> None:
    """The probe paths are GET routes of the running app, and open (no bearer token)."""
    from podindex.api.openapi import _OPEN_PATHS
    from podindex.api.podwatcher import routes

    served = {
        r.path
        for r in routes(cast(Any, None))  # building the routes does not touch the service
        if isinstance(r, Route) and "GET" in (r.methods or ())
    }
    for kustomization in OVERLAYS:
        c = container(render(kustomization))
        probed = {
            c[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe", "startupProbe")
        }
        assert probed <= served & set(_OPEN_PATHS), probed


def bound_rules(objects: tuple[Obj, ...]) -> Rules:
    """Everything the RBAC objects grant podindex's service account, (group, resource) → verbs."""
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
    granted: Rules = {}
    bound: set[str] = set()
    for binding in (o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "podindex", "namespace": "podindex"}
        ]
        assert binding["roleRef"]["kind"] == "ClusterRole"
        bound.add(binding["roleRef"]["name"])
        for rule in roles[binding["roleRef"]["name"]]["rules"]:
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    assert "*" not in (group, resource, *rule["verbs"]), rule
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert bound == set(roles), "every ClusterRole is bound, none dangles"
    assert not [o for o in objects if o["kind"] == "Role"]
    return granted


@every_overlay
def test_rbac_grants_exactly_what_the_overlay_uses(kustomization: str) -> None:
    objects = render(kustomization)
    assert bound_rules(objects) == OVERLAYS[kustomization]
    env = settings_env(objects)
    # TokenReviews only serve the access file's service-account roles.
    assert (("authentication.k8s.io", "tokenreviews") in bound_rules(objects)) == (
        "PODINDEX_TOKENS_FILE" in env
    )
    assert (
        one(objects, "ServiceAccount")["metadata"]["name"]
        == pod_spec(objects)["serviceAccountName"]
    )


def test_the_dashboard_actions_are_granted_only_in_their_overlay() -> None:
    for kustomization in OVERLAYS:
        granted = bound_rules(render(kustomization))
        has_actions = ("", "pods/exec") in granted or "delete" in granted.get(("", "pods"), ())
        assert has_actions == (kustomization == "overlays/dashboard"), kustomization


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@every_overlay
def test_service_networkpolicy_and_disruption_budget_select_the_pods(kustomization: str) -> None:
    objects = render(kustomization)
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    service = one(objects, "Service")
    assert service["spec"]["selector"] and selects(service["spec"]["selector"], labels)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]

    policy = one(objects, "NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], labels)
    assert policy["policyTypes"] == ["Ingress"]
    for rule in policy["ingress"]:
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        for peer in rule["from"]:  # only labelled clients: never everything
            assert peer["podSelector"]["matchLabels"] == {"podindex.io/client": "true"}

    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert selects(budget["selector"]["matchLabels"], labels)
    replicas = deployment["spec"]["replicas"]
    if replicas == 1:  # never block a node drain forever
        assert budget == {**budget, "maxUnavailable": 1} and "minAvailable" not in budget
    else:
        assert 1 <= budget["minAvailable"] < replicas


def test_the_replicated_overlay_runs_two_replicas_on_postgresql() -> None:
    objects = render("overlays/replicated")
    deployment = one(objects, "Deployment")["spec"]
    assert deployment["replicas"] >= 2
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = settings_env(objects)
    assert env["PODINDEX_STORE"]["secretKeyRef"] == {"name": "podindex-postgres", "key": "url"}
    # Every replica opens the tokens that another sealed: the same key, from one Secret.
    assert mounted(objects, env["PODINDEX_SECRET_KEY_FILE"])["secret"]["secretName"] == (
        "podindex-secret-key"
    )
    spread = one(objects, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"


def test_single_replica_sqlite_overlays_recreate_rather_than_share_the_file() -> None:
    for kustomization in ("overlays/single", "overlays/dashboard"):
        objects = render(kustomization)
        assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
        claim = one(objects, "PersistentVolumeClaim")
        volume = mounted(objects, "/var/lib/podindex/podindex.db")
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_every_kustomization_in_deploy_is_checked() -> None:
    found = {
        str(path.parent.relative_to(DEPLOY))
        for path in DEPLOY.rglob("kustomization.yaml")
        if "kind: Component" not in path.read_text()
    }
    assert found == set(OVERLAYS)
