"""Cluster access from kubeconfig, in-cluster files and flags; settings from env and flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podindex.cli import build_parser, describe_answer, settings_from
from podindex.kube.config import (
    TokenFile,
    explicit_access,
    in_cluster_access,
    kubeconfig_access,
    kubeconfig_path,
)
from podindex.kube.errors import ConfigError
from podindex.settings import Settings, SettingsError

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: sim
  cluster: {server: "http://127.0.0.1:6443"}
- name: other
  cluster: {server: "http://127.0.0.2:6443"}
users:
- name: admin
  user: {token: "s3cr3t-token"}
- name: viewer
  user: {token: "viewer-token"}
contexts:
- name: sim
  context: {cluster: sim, user: admin}
- name: other
  context: {cluster: other, user: viewer}
current-context: sim
"""


async def test_kubeconfig_current_and_named_context(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    access = await kubeconfig_access(str(path), None)
    assert access.server == "http://127.0.0.1:6443"
    assert await access.credentials.authorization() == "Bearer s3cr3t-token"
    assert "s3cr3t" not in access.source and "s3cr3t" not in repr(access.credentials)
    other = await kubeconfig_access(str(path), "other")
    assert other.server == "http://127.0.0.2:6443"
    assert await other.credentials.authorization() == "Bearer viewer-token"


async def test_broken_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    with pytest.raises(ConfigError, match="context"):
        await kubeconfig_access(str(path), "no-such-context")


def test_kubeconfig_path_prefers_flag_then_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a{os.pathsep}{tmp_path}/b")
    assert kubeconfig_path("/explicit") == "/explicit"
    assert kubeconfig_path(None) == f"{tmp_path}/a"


async def test_token_file_is_reread_when_rotated(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    credentials = TokenFile(path)
    assert await credentials.authorization() == "Bearer first"
    # The kubelet swaps the projected file atomically (a new inode).
    replacement = tmp_path / "token.new"
    replacement.write_text("second")
    os.replace(replacement, path)
    assert await credentials.authorization() == "Bearer second"
    assert "second" not in repr(credentials)


async def test_in_cluster_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("sa-token")
    ca = Path(__file__).parent / "data" / "ca.pem"
    (tmp_path / "ca.crt").write_bytes(ca.read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    access = in_cluster_access(tmp_path)
    assert access.server == "https://10.96.0.1:443"
    assert access.ssl_context is not None
    assert await access.credentials.authorization() == "Bearer sa-token"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster_access(tmp_path)


def test_explicit_access_requires_an_http_url() -> None:
    with pytest.raises(ConfigError, match="https://"):
        explicit_access("ftp://example", token="x")


def test_settings_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODINDEX_GRACE_PERIOD", "12.5")
    monkeypatch.setenv("PODINDEX_NAMESPACE", "team-a")
    monkeypatch.setenv("PODINDEX_LISTEN", "0.0.0.0:9000")
    args = build_parser().parse_args(["serve", "--listen", "127.0.0.1:9100"])
    settings = settings_from(args)
    assert settings.grace_period == 12.5
    assert settings.namespace == "team-a"
    assert (settings.host, settings.port) == ("127.0.0.1", 9100)
    assert Settings.from_env(settings.to_env()) == settings


def test_durations_and_switches_read_as_operators_write_them() -> None:
    settings = Settings.from_env(
        {"PODINDEX_RETENTION": "7d", "PODINDEX_GRACE_PERIOD": "1m", "PODINDEX_WATCH": "false"}
    )
    assert (settings.retention, settings.grace_period, settings.watch) == (604800.0, 60.0, False)
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PODINDEX_GRACE_PERIOD": "soon"}, "PODINDEX_GRACE_PERIOD"),
        ({"PODINDEX_LISTEN": "8080"}, "listen"),
        ({"PODINDEX_PAGE_SIZE": "0"}, "page_size"),
        ({"PODINDEX_LOG_LEVEL": "loud"}, "log_level"),
        ({"PODINDEX_CLUSTER_ID": 'prod"east'}, "cluster_id"),
        ({"PODINDEX_STORE": "mysql://db/podindex"}, "store"),
        ({"PODINDEX_RETENTION": "a week"}, "PODINDEX_RETENTION"),
        ({"PODINDEX_WATCH": "maybe"}, "PODINDEX_WATCH"),
    ],
)
def test_bad_settings_name_the_option(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_describe_answer_reads_like_kubectl() -> None:
    pod = {
        "state": "live",
        "namespace": "team-a",
        "name": "db-0",
        "phase": "Running",
        "cluster": "default",
        "uid": "u",
        "pod_ips": ["10.0.0.5"],
        "node_name": "node-1",
        "identity": "db",
        "identity_source": "label:app.kubernetes.io/name",
        "workload": {"kind": "StatefulSet", "name": "db"},
    }
    text = describe_answer(200, pod)
    assert text.startswith("team-a/db-0  (live, Running)")
    assert "StatefulSet/db" in text
    node = {"state": "node", "ip": "10.0.0.1", "node_name": "n1", "cluster": "c", "pods": []}
    assert "node n1" in describe_answer(200, node)
    assert describe_answer(404, {"error": "not_found", "message": "no pod"}).startswith("not_found")


def test_serve_refuses_a_bad_cluster_configuration_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from podindex.cli import main

    assert main(["serve", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--server", "ftp://example"]) == 2
    assert "https://" in capsys.readouterr().err


def test_serve_refuses_a_missing_or_malformed_secret_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from podindex.cli import main

    assert main(["serve", "--secret-key-file", str(tmp_path / "missing.key")]) == 2
    assert "cannot read secret_key_file" in capsys.readouterr().err
    bad = tmp_path / "bad.key"
    bad.write_text("not a fernet key")
    assert main(["serve", "--secret-key-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a Fernet key" in err and "not a fernet key" not in err
