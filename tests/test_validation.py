"""Phased validation of an integration against the HTTPS emulator: each phase's failure."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from podindex.kube.validation import (
    EndpointError,
    check_certificate,
    check_endpoint,
    validate_connection,
)
from podindex.sealing import Sealer, SealingError
from podindex.sim import FakeCluster, populate
from tests.tls_certs import ca_pem

TOKEN = "validation-secret-token-0123456789"


@pytest.fixture
async def secure() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(token=TOKEN, tls=True)
    populate(cluster, 5, seed=1)
    await cluster.start()
    yield cluster
    await cluster.stop()


def the_ca(cluster: FakeCluster) -> str:
    pem = cluster.ca_pem
    assert pem is not None
    return pem.decode()


async def test_a_good_endpoint_passes_every_phase(secure: FakeCluster) -> None:
    result = await validate_connection(secure.url, the_ca(secure), TOKEN, namespace="default")
    assert result.ok, result
    assert result.server_version.startswith("v1.")
    assert result.phase is None


@pytest.mark.parametrize(
    ("pem", "expected"),
    [
        ("not a certificate", "not valid PEM"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not valid PEM"),
        (ca_pem(valid_from_days=-30, valid_until_days=-1), "expired"),
        (ca_pem(valid_from_days=2, valid_until_days=30), "not valid before"),
    ],
    ids=["garbage", "bad-base64", "expired", "not-yet-valid"],
)
async def test_certificate_phase(secure: FakeCluster, pem: str, expected: str) -> None:
    result = await validate_connection(secure.url, pem, TOKEN)
    assert (result.ok, result.phase) == (False, "certificate")
    assert expected in result.message
    assert TOKEN not in result.message


async def test_a_ca_that_did_not_sign_the_server_fails_reachability(secure: FakeCluster) -> None:
    result = await validate_connection(secure.url, ca_pem(name="stranger"), TOKEN)
    assert (result.ok, result.phase) == (False, "reachability")
    assert "verif" in result.message.lower()


async def test_an_unreachable_endpoint_fails_reachability(secure: FakeCluster) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await validate_connection(f"https://127.0.0.1:{port}", the_ca(secure), TOKEN)
    assert (result.ok, result.phase) == (False, "reachability")
    assert f"127.0.0.1:{port}" in result.message


async def test_a_rejected_token_fails_authentication(secure: FakeCluster) -> None:
    result = await validate_connection(secure.url, the_ca(secure), "wrong-" + TOKEN)
    assert (result.ok, result.phase) == (False, "authentication")
    assert "401" in result.message
    assert TOKEN not in result.message


@pytest.mark.parametrize(
    "endpoint",
    ["http://10.0.0.1:6443", "10.0.0.1:6443", "https://", "https://u:p@h:1", "https://h/api?x=1"],
)
def test_only_https_urls_are_endpoints(endpoint: str) -> None:
    with pytest.raises(EndpointError):
        check_endpoint(endpoint)


def test_check_endpoint_defaults_the_port() -> None:
    assert check_endpoint("https://api.example:6443/") == ("api.example", 6443)
    assert check_endpoint("https://api.example") == ("api.example", 443)


def test_a_valid_ca_passes_the_certificate_check() -> None:
    assert check_certificate(ca_pem()) is None


def test_sealed_tokens_open_only_with_their_key(tmp_path: object) -> None:
    from cryptography.fernet import Fernet

    sealer = Sealer(Fernet.generate_key())
    sealed = sealer.seal(TOKEN)
    assert TOKEN.encode() not in sealed
    assert sealer.open(sealed) == TOKEN
    with pytest.raises(SealingError, match="does not open"):
        Sealer(Fernet.generate_key()).open(sealed)
    with pytest.raises(SealingError, match="not a Fernet key"):
        Sealer(b"short")
    assert "****" in repr(sealer)


def test_a_kubeconfig_that_is_not_yaml_never_echoes_the_token() -> None:
    from podindex.kube.config import kubeconfig_cluster
    from podindex.kube.errors import ConfigError

    token = "s3cr3t-TOKEN-abcdef0123456789"
    text = f"apiVersion: v1\nusers:\n- name: u\n  user:\n    token: {token}: oops\n"
    with pytest.raises(ConfigError) as caught:
        kubeconfig_cluster(text, None)
    assert token not in str(caught.value) and "line 5" in str(caught.value)
