"""IP normalisation: every spelling of an address finds the same pod."""

from __future__ import annotations

import pytest

from podindex.addresses import is_ipv6, normalise_ip


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("10.42.0.5", "10.42.0.5"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        # Leading zeros are decimal, as Kubernetes' ParseIPSloppy reads them.
        ("010.042.000.005", "10.42.0.5"),
        ("10.42.0.05", "10.42.0.5"),
        (" 10.42.0.5\n", "10.42.0.5"),
        ("fd00:10:244::1b", "fd00:10:244::1b"),
        ("FD00:10:244::1B", "fd00:10:244::1b"),
        ("fd00:0010:0244:0000:0000:0000:0000:001b", "fd00:10:244::1b"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("::1", "::1"),
        ("::ffff:10.42.0.5", "10.42.0.5"),
        ("::FFFF:10.42.0.5", "10.42.0.5"),
        ("::ffff:a2a:5", "10.42.0.5"),
        ("0:0:0:0:0:ffff:10.42.0.5", "10.42.0.5"),
        ("fe80::1%eth0", "fe80::1"),
        ("fe80::1%25eth0", "fe80::1"),
        ("[fd00::1b]", "fd00::1b"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("[::ffff:10.42.0.5]", "10.42.0.5"),
    ],
)
def test_normalise(text: str, canonical: str) -> None:
    assert normalise_ip(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "[]",
        "pod",
        "10.42.0",
        "10.42.0.5.1",
        "10.42.0.256",
        "10.42.0.-1",
        "10.42..5",
        "10.42.0.0005",
        "0x0a.42.0.5",
        "10.42.0.5:8080",
        "10.42.0.5/32",
        "fd00::1/64",
        "fd00::1::2",
        "fd00::g",
        "[fd00::1",
        "%eth0",
        "\u0661\u0660.42.0.5",  # Arabic-Indic digits
        "1" * 100,
        ":" * 46,
    ],
)
def test_garbage_is_none(text: str) -> None:
    assert normalise_ip(text) is None


def test_is_ipv6_on_canonical_text() -> None:
    assert is_ipv6("fd00::1")
    assert not is_ipv6("10.0.0.1")
    mapped = normalise_ip("::ffff:10.0.0.1")
    assert mapped is not None
    assert not is_ipv6(mapped)
