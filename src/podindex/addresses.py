"""IP address normalisation, so that every spelling of an address finds the same pod.

Kubernetes writes canonical addresses into ``status.podIPs``, but callers do
not: proxies hand over IPv4-mapped IPv6 (``::ffff:10.0.0.1``), zone ids
(``fe80::1%eth0``), brackets, uppercase or zero-padded IPv6. Leading zeros in
IPv4 octets are read as decimal, as Kubernetes' own ``ParseIPSloppy`` does.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def normalise_ip(text: str) -> str | None:
    """The canonical text of an IP address, or ``None`` if ``text`` is not one.

    An address already canonical (every pod IPv4 the API server writes) is
    returned as the same object, so the index shares the pod's string.
    """
    if _CANONICAL_V4.fullmatch(text):
        return text
    if len(text) > 64:  # no address is this long; keep garbage out of the cache
        return None
    return _normalise_other(text)


@lru_cache(maxsize=65536)
def _normalise_other(text: str) -> str | None:
    # Cached: the same spellings arrive again and again, and the parse costs
    # more than the lookup it guards.
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    candidate = candidate.split("%", 1)[0]
    if not candidate or len(candidate) > 45:
        return None
    if ":" not in candidate:
        return _normalise_v4(candidate)
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


def _normalise_v4(text: str) -> str | None:
    octets = text.split(".")
    if len(octets) != 4:
        return None
    values = []
    for octet in octets:
        if not octet.isascii() or not octet.isdigit() or len(octet) > 3:
            return None
        value = int(octet)
        if value > 255:
            return None
        values.append(str(value))
    return ".".join(values)


def is_ipv6(canonical: str) -> bool:
    return ":" in canonical
