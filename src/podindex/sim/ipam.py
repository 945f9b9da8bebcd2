"""Pod and node address assignment that reuses freed pod IPs quickly, like a busy CNI.

podindex must cope with an IP moving from a finished pod to a new one (the
finished pod still shows the IP in its status); the emulator makes that happen
often by handing out recently freed addresses before fresh ones.
"""

from __future__ import annotations

from collections import deque


def node_ip(index: int) -> str:
    """Node n gets 10.0.0.(10+n) (node-1 = 10.0.0.11, as in the recordings)."""
    n = 10 + index
    return f"10.0.{n // 256}.{n % 256}"


DEFAULT_POD_NETWORK = "10.244.0.0/16"


def pod_cidr_prefix(index: int, network: str = DEFAULT_POD_NETWORK) -> str:
    """Node n gets the pod range 10.244.n.0/24 (spilling into 10.245+ past 255 nodes).

    Another ``network`` (``A.B.0.0/16``) moves the ranges to A.B.n.0/24: with
    ``127.1.0.0/16`` every pod IP is a loopback address a test client can bind
    to, so a proxy in front of podindex sees the pod itself calling.
    """
    first, second = _network_octets(network)
    n = second * 256 + index
    return f"{first}.{n // 256}.{n % 256}"


def _network_octets(network: str) -> tuple[int, int]:
    octets = network.partition("/")[0].split(".")
    if len(octets) != 4 or not all(o.isdigit() and int(o) < 256 for o in octets):
        raise ValueError(f"pod network must be an IPv4 A.B.0.0/16, got {network!r}")
    return int(octets[0]), int(octets[1])


class IpPool:
    """Per-node /24 pod ranges; released addresses are reused first, oldest first."""

    FIRST_HOST = 10
    LAST_HOST = 254

    def __init__(self, pod_network: str = DEFAULT_POD_NETWORK) -> None:
        _network_octets(pod_network)  # fail at construction, not at the first pod
        self.pod_network = pod_network
        self._node_index: dict[str, int] = {}
        self._next_host: dict[str, int] = {}
        self._free: dict[str, deque[str]] = {}
        self._owner_node: dict[str, str] = {}
        self.in_use: set[str] = set()

    def node_index(self, node: str) -> int:
        if node not in self._node_index:
            self._node_index[node] = len(self._node_index) + 1
        return self._node_index[node]

    def register_node(self, node: str, index: int) -> None:
        self._node_index.setdefault(node, index)

    def node_ip(self, node: str) -> str:
        return node_ip(self.node_index(node))

    def pod_cidr(self, node: str) -> str:
        return pod_cidr_prefix(self.node_index(node), self.pod_network) + ".0/24"

    def allocate(self, node: str, avoid: frozenset[str] = frozenset()) -> str:
        free = self._free.get(node)
        if free:
            for _ in range(len(free)):
                ip = free.popleft()
                if ip not in avoid and ip not in self.in_use:
                    return self._take(ip, node)
                free.append(ip)
        prefix = pod_cidr_prefix(self.node_index(node), self.pod_network)
        host = self._next_host.get(node, self.FIRST_HOST)
        while host <= self.LAST_HOST:
            ip = f"{prefix}.{host}"
            host += 1
            if ip not in self.in_use and ip not in avoid:
                self._next_host[node] = host
                return self._take(ip, node)
        raise RuntimeError(f"pod range of node {node} is exhausted")

    def reserve(self, ip: str, node: str | None = None) -> None:
        """Mark an explicitly chosen address as used."""
        self._take(ip, node or self._owner_node.get(ip, ""))

    def release(self, ip: str) -> None:
        if ip in self.in_use:
            self.in_use.discard(ip)
            node = self._owner_node.pop(ip, "")
            if node:
                self._free.setdefault(node, deque()).append(ip)

    def _take(self, ip: str, node: str) -> str:
        self.in_use.add(ip)
        if node:
            self._owner_node[ip] = node
        return ip
