"""Forward-auth decisions: who is calling, which namespace it calls, and whether that is allowed.

A reverse proxy (Caddy ``forward_auth``, nginx ``auth_request``, Traefik
``ForwardAuth``) asks ``/authz`` before every request it passes on. This
module holds the three pure parts of the answer; :mod:`podindex.api.authz`
puts them on the hot path.

* :class:`ProxyTrust`: the caller's address. The connection's peer, unless the
  peer is a trusted proxy: then the right-most address of the forwarded chain
  that is not itself a trusted proxy. Headers from anyone else change nothing.
* :class:`TargetRules`: the target namespace, from the forwarded URI or host
  (presets for Fission routes and ``<svc>.<ns>.svc`` hosts, custom regexes) or
  an explicit header set by a trusted proxy.
* :class:`Policy`: a pod may call its own namespace; a YAML file adds allow and
  deny rules (deny wins); everything else is denied. Ambiguous callers (a node
  IP of hostNetwork pods, an IP held in two clusters, a pod deleted within the
  grace period) are denied unless a rule names them.

Pure: no I/O and no clock; the policy is parsed from text (the caller reads
the file) and errors name the line.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import yaml

from podindex.addresses import normalise_ip
from podindex.index import CallerKind, PodRecord
from podindex.selectors import Selector, SelectorError, parse_selector

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

AMBIGUOUS_KINDS: Final = ("node", "clusters", "terminating")
"""Caller kinds other than a single live pod, as a rule's ``ambiguous`` names them."""

FORWARDED_HEADERS: Final = ("x-forwarded-for", "x-real-ip", "forwarded")
"""The client-address headers understood, in the default order of preference."""


class PolicyError(ValueError):
    """The policy file (or a target rule) is not valid; the message names the line."""


# --- the caller's address ---------------------------------------------------------


def parse_cidrs(text: str | None) -> tuple[Network, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128); ValueError names the bad one."""
    networks: list[Network] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"{part!r} is not a CIDR ({exc})") from None
    return tuple(networks)


def _forwarded_for(value: str) -> list[str] | None:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` header, in order (quotes removed);
    None when the header does not parse (an unclosed quote, a pair without ``=``): a
    client could otherwise hide the proxy's own element inside its quote.

    An element without ``for=`` yields ``""`` (an unknown hop, never trusted).
    """
    found: list[str] = []
    elements = _split_quoted(value, ",")
    if elements is None:
        return None
    for element in elements:
        address = ""
        pairs = _split_quoted(element, ";")
        if pairs is None:
            return None
        for pair in pairs:
            name, sep, raw = pair.partition("=")
            if not sep or not name.strip():
                return None
            if name.strip().lower() == "for":
                address = raw.strip()
                if address.startswith('"'):
                    if len(address) < 2 or not address.endswith('"'):
                        return None
                    address = address[1:-1].replace('\\"', '"')
        found.append(address)
    return found


def _split_quoted(text: str, separator: str) -> list[str] | None:
    """``text`` split at ``separator`` outside quoted strings (with ``\\`` escapes);
    None when a quote is left open."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted or escaped:
        return None
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def strip_port(address: str) -> str:
    """``[v6]:port`` → ``v6``, ``v4:port`` → ``v4``; an IPv6 without brackets is left whole."""
    if address.startswith("["):
        end = address.find("]")
        return address[1:end] if end > 0 else address
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address


class ProxyTrust:
    """Which peers may tell podindex who the client is, and how they say it."""

    def __init__(
        self, networks: Sequence[Network] = (), headers: Sequence[str] = FORWARDED_HEADERS
    ) -> None:
        self.networks = tuple(networks)
        self.headers = tuple(h.lower() for h in headers)
        self._v4 = tuple(
            (int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4
        )
        self._v6 = tuple(
            (int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 6
        )

    @classmethod
    def parse(cls, cidrs: str | None, headers: str | None = None) -> ProxyTrust:
        names = [h.strip().lower() for h in (headers or "").split(",") if h.strip()]
        unknown = [h for h in names if h not in FORWARDED_HEADERS]
        if unknown:
            raise ValueError(f"unknown forwarded header(s) {unknown}; use {FORWARDED_HEADERS}")
        return cls(parse_cidrs(cidrs), names or FORWARDED_HEADERS)

    def trusts(self, canonical_ip: str) -> bool:
        """Whether a canonical address is inside a trusted-proxy CIDR.

        Integer masks, not ``ipaddress`` objects: every hop of every forwarded
        chain is checked, and callers are as many as pods (no cache would hold them).
        """
        if not self.networks:
            return False
        if ":" in canonical_ip:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, canonical_ip), "big")
            ranges = self._v6
        else:
            value = int.from_bytes(socket.inet_aton(canonical_ip), "big")
            ranges = self._v4
        return any(value & mask == network for network, mask in ranges)

    def client_ip(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """The canonical caller address, or None when it cannot be told (no peer, a bad hop).

        ``headers`` maps lower-case names to values (repeated headers joined by
        ``", "``). They count only when ``peer`` is trusted; then the first of
        :attr:`headers` present gives the chain, read from the right: each
        trusted hop is skipped, the first untrusted one is the client. If every
        hop is trusted, the left-most is.
        """
        canonical = normalise_ip(peer) if peer else None
        if canonical is None or not self.trusts(canonical):
            return canonical
        return self.forwarded_client(canonical, headers)

    def forwarded_client(self, proxy: str, headers: Mapping[str, str]) -> str | None:
        """:meth:`client_ip` for a request whose peer ``proxy`` is known to be trusted."""
        chain: list[str] | None = None
        for name in self.headers:
            value = headers.get(name)
            if value is None:
                continue
            if name == "forwarded":
                chain = _forwarded_for(value)
                if chain is None:
                    return None  # a header that does not parse names nobody
            elif "," not in value:
                chain = [value.strip()]  # the common case: the proxy saw the client itself
            else:
                chain = [p.strip() for p in value.split(",") if p.strip()]
            if chain and chain[0]:
                break
        if not chain:
            return proxy
        canonical = proxy
        for hop in reversed(chain):
            address = normalise_ip(strip_port(hop))
            if address is None:
                return None  # "unknown", an obfuscated id or garbage: who is behind it?
            if not self.trusts(address):
                return address
            canonical = address
        return canonical


# --- the target namespace ---------------------------------------------------------

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"

PRESETS: Final[Mapping[str, tuple[tuple[str, str, str | None], ...]]] = {
    # Fission's router: /fission-function/<namespace>/<function>[/…], and a function
    # of the default namespace at /fission-function/<function>.
    "fission": (
        ("uri", rf"^/fission-function/(?P<namespace>{_DNS_LABEL})/[^/?#]", None),
        ("uri", r"^/fission-function/[^/?#]+/?([?#]|$)", "default"),
    ),
    "service-host": (
        (
            "host",
            rf"^{_DNS_LABEL}\.(?P<namespace>{_DNS_LABEL})\.svc(\.cluster\.local)?\.?(:[0-9]+)?$",
            None,
        ),
    ),
}
"""Built-in target rules: (what they match, regex with a ``namespace`` group, or the fixed
namespace a match means)."""

_NAMESPACE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

Subject = Literal["uri", "host"]


@dataclass(frozen=True)
class TargetRule:
    subject: Subject
    pattern: re.Pattern[str]
    name: str
    fixed: str | None = None
    """The namespace a match means, for a pattern without a ``namespace`` group."""

    def namespace(self, uri: str, host: str) -> str | None:
        matched = self.pattern.search(uri if self.subject == "uri" else host.lower())
        if matched is None:
            return None
        if self.fixed is not None:
            return self.fixed
        found = matched.group("namespace")
        return found if isinstance(found, str) and _NAMESPACE.fullmatch(found) else None


def target_rule(subject: str, pattern: str, name: str, fixed: str | None = None) -> TargetRule:
    """A rule over the URI or the host; ValueError unless the regex has a ``namespace`` group
    (or ``fixed`` names the namespace)."""
    if subject not in ("uri", "host"):
        raise ValueError(f"a target rule matches 'uri' or 'host', not {subject!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    if fixed is None and "namespace" not in compiled.groupindex:
        raise ValueError(f"regex {pattern!r} has no named group 'namespace'")
    return TargetRule("uri" if subject == "uri" else "host", compiled, name, fixed)


@dataclass(frozen=True)
class TargetRules:
    """How a request names the namespace it wants: an explicit header, then rules in order."""

    rules: tuple[TargetRule, ...] = ()
    header: str | None = None
    """Lower-case name of a header that names the namespace (trusted proxies only)."""

    @classmethod
    def parse(cls, text: str | None) -> TargetRules:
        """``fission,service-host,header:X-Target-Namespace`` (the ``authz_targets`` setting)."""
        rules: list[TargetRule] = []
        header: str | None = None
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower().startswith("header:"):
                header = part[len("header:") :].strip().lower()
                if not re.fullmatch(r"[a-z0-9-]+", header):
                    raise ValueError(f"invalid header name in {part!r}")
                continue
            preset = PRESETS.get(part)
            if preset is None:
                raise ValueError(
                    f"unknown target preset {part!r}; use {sorted(PRESETS)} or header:NAME"
                )
            rules.extend(target_rule(*rule[:2], part, rule[2]) for rule in preset)
        return cls(tuple(rules), header)

    def namespace(
        self,
        uri: str,
        host: str,
        explicit: str | None,
        extra: Sequence[TargetRule] = (),
    ) -> tuple[str | None, str]:
        """(target namespace or None, which rule said so); ``extra`` rules go first."""
        if explicit is not None and self.header is not None:
            value = explicit.strip()
            return (value if _NAMESPACE.fullmatch(value) else None), "header"
        if _ambiguous_path(uri):
            return None, ""
        for rule in (*extra, *self.rules) if extra else self.rules:
            found = rule.namespace(uri, host)
            if found is not None:
                return found, rule.name
        return None, ""


_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")
_ENCODED = re.compile(r"%(2e|2f|5c|25)|\\", re.IGNORECASE)


def _ambiguous_path(uri: str) -> bool:
    """A path an upstream may read as another one: dot segments, encoded dots, slashes,
    backslashes or percents, a path that is not absolute. No target is read from it
    (denied as ``no_target``) rather than guessing how the upstream normalises it."""
    path = uri.split("?", 1)[0].split("#", 1)[0]
    if not path:
        return False
    return not path.startswith("/") or bool(_DOT_SEGMENT.search(path) or _ENCODED.search(path))


# --- the policy -------------------------------------------------------------------

Effect = Literal["allow", "deny"]


@dataclass(frozen=True)
class Rule:
    name: str
    effect: Effect
    line: int
    to: frozenset[str]
    """Target namespaces; ``*`` is any."""
    namespaces: frozenset[str] | None = None
    """Caller namespaces (``*``: any); None: not a condition."""
    selector: Selector | None = None
    identities: frozenset[str] | None = None
    clusters: frozenset[str] | None = None
    ambiguous: frozenset[str] = frozenset()
    """Ambiguous caller kinds this rule applies to (an allow needs every candidate to match)."""

    def targets(self, namespace: str) -> bool:
        return "*" in self.to or namespace in self.to

    def matches(self, record: PodRecord) -> bool:
        if self.namespaces is not None and not (
            "*" in self.namespaces or record.namespace in self.namespaces
        ):
            return False
        if self.clusters is not None and record.key[0] not in self.clusters:
            return False
        if self.identities is not None and record.workload.identity not in self.identities:
            return False
        return self.selector is None or self.selector.matches(record.pod.metadata.labels)

    def applies(self, kind: CallerKind, candidates: Sequence[PodRecord]) -> bool:
        """Whether the rule decides for this caller.

        A single live pod: the rule matches it. An ambiguous caller: a deny
        applies if any candidate matches (deny wins); an allow only if the rule
        names the caller's kind in ``ambiguous`` and every candidate matches.
        """
        if self.effect == "deny":
            return any(self.matches(r) for r in candidates)
        if kind != "pod" and kind not in self.ambiguous:
            return False
        return bool(candidates) and all(self.matches(r) for r in candidates)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    """A short code: ``same_namespace``, ``rule``, ``deny_rule``, ``other_namespace``, …"""
    rule: str = ""


@dataclass
class Policy:
    same_namespace: bool = True
    rules: tuple[Rule, ...] = ()
    targets: tuple[TargetRule, ...] = ()
    """Custom target rules, tried before the presets."""
    source: str = "(built-in)"
    _by_target: dict[str, tuple[tuple[Rule, ...], tuple[Rule, ...]]] = field(
        default_factory=dict, repr=False
    )

    def rules_for(self, namespace: str) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
        """(deny rules, allow rules) that target ``namespace``; cached per namespace."""
        found = self._by_target.get(namespace)
        if found is None:
            relevant = [r for r in self.rules if r.targets(namespace)]
            found = (
                tuple(r for r in relevant if r.effect == "deny"),
                tuple(r for r in relevant if r.effect == "allow"),
            )
            if len(self._by_target) > 10_000:
                self._by_target.clear()
            self._by_target[namespace] = found
        return found

    def decide(self, kind: CallerKind, candidates: Sequence[PodRecord], target: str) -> Decision:
        """Allow or deny a caller (one live pod, or the candidates of an ambiguous IP)."""
        denies, allows = self.rules_for(target)
        for rule in denies:
            if rule.applies(kind, candidates):
                return Decision(False, "deny_rule", rule.name)
        if kind == "pod" and self.same_namespace and candidates[0].namespace == target:
            return SAME_NAMESPACE
        for rule in allows:
            if rule.applies(kind, candidates):
                return Decision(True, "rule", rule.name)
        if kind != "pod":
            return Decision(False, AMBIGUOUS_REASONS[kind])
        return OTHER_NAMESPACE


SAME_NAMESPACE: Final = Decision(True, "same_namespace")
OTHER_NAMESPACE: Final = Decision(False, "other_namespace")
AMBIGUOUS_REASONS: Final[Mapping[str, str]] = {
    "node": "ambiguous_node",
    "clusters": "ambiguous_clusters",
    "terminating": "terminating",
}


# --- parsing the policy file ------------------------------------------------------

_TOP_KEYS: Final = {"same_namespace", "rules", "targets"}
_RULE_KEYS: Final = {"name", "effect", "from", "to", "ambiguous"}
_FROM_KEYS: Final = {"namespaces", "selector", "identities", "clusters"}
_TARGET_KEYS: Final = {"uri", "host", "name"}
_BOOL_TAG: Final = "tag:yaml.org,2002:bool"
_NULL_TAG: Final = "tag:yaml.org,2002:null"


class _Reader:
    """Walks a composed YAML tree, so every error can say the line it is about."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node | None, path: str, message: str) -> PolicyError:
        line = f" line {node.start_mark.line + 1}" if node is not None else ""
        where = f" ({path})" if path else ""
        return PolicyError(f"{self.source}{line}{where}: {message}")

    def mapping(
        self, node: yaml.Node, path: str, allowed: Iterable[str]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path, "expected a mapping")
        allowed = set(allowed)
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or key not in allowed:
                raise self.fail(
                    key_node, path, f"unknown key {key!r}; expected one of {sorted(allowed)}"
                )
            if key in found:
                raise self.fail(key_node, path, f"duplicate key {key!r}")
            found[key] = (key_node, value_node)
        return found

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, path, "expected a list")
        return list(node.value)

    def string(self, node: yaml.Node, path: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag in (_NULL_TAG, _BOOL_TAG):
            raise self.fail(node, path, "expected a string")
        return str(node.value)

    def boolean(self, node: yaml.Node, path: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL_TAG:
            raise self.fail(node, path, "expected true or false")
        return str(node.value).lower() in ("true", "yes", "on")

    def strings(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        """A string or a list of strings."""
        if isinstance(node, yaml.ScalarNode):
            return [(node, self.string(node, path))]
        return [
            (item, self.string(item, f"{path}[{i}]"))
            for i, item in enumerate(self.sequence(node, path))
        ]


def parse_policy(text: str, source: str = "policy") -> Policy:
    """The policy in ``text``; :class:`PolicyError` names ``source``, the line and the field.

    An empty document is the built-in policy (same namespace only).
    """
    reader = _Reader(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{source}{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if root is None:
        return Policy(source=source)
    top = reader.mapping(root, "", _TOP_KEYS)
    policy = Policy(source=source)
    if "same_namespace" in top:
        policy.same_namespace = reader.boolean(top["same_namespace"][1], "same_namespace")
    if "rules" in top:
        rules = [
            _parse_rule(reader, item, f"rules[{i}]")
            for i, item in enumerate(reader.sequence(top["rules"][1], "rules"))
        ]
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise PolicyError(f"{source} line {rule.line}: duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        policy.rules = tuple(rules)
    if "targets" in top:
        policy.targets = tuple(
            _parse_target(reader, item, f"targets[{i}]")
            for i, item in enumerate(reader.sequence(top["targets"][1], "targets"))
        )
    return policy


def _parse_rule(reader: _Reader, node: yaml.Node, path: str) -> Rule:
    fields = reader.mapping(node, path, _RULE_KEYS)
    line = node.start_mark.line + 1
    name = reader.string(fields["name"][1], f"{path}.name") if "name" in fields else f"line-{line}"
    effect: Effect = "allow"
    if "effect" in fields:
        text = reader.string(fields["effect"][1], f"{path}.effect")
        if text not in ("allow", "deny"):
            raise reader.fail(fields["effect"][1], f"{path}.effect", "expected allow or deny")
        effect = "allow" if text == "allow" else "deny"
    if "to" not in fields:
        raise reader.fail(node, path, "a rule needs 'to' (target namespaces, or '*')")
    to = frozenset(
        _namespace(reader, n, v, f"{path}.to")
        for n, v in reader.strings(fields["to"][1], f"{path}.to")
    )
    if not to:
        raise reader.fail(fields["to"][1], f"{path}.to", "name at least one namespace, or '*'")
    ambiguous: set[str] = set()
    if "ambiguous" in fields:
        for item, kind in reader.strings(fields["ambiguous"][1], f"{path}.ambiguous"):
            if kind not in AMBIGUOUS_KINDS:
                raise reader.fail(
                    item, f"{path}.ambiguous", f"{kind!r} is not one of {list(AMBIGUOUS_KINDS)}"
                )
            ambiguous.add(kind)
    if "from" not in fields:
        raise reader.fail(
            node, path, "a rule needs 'from' (namespaces, selector, identities, clusters)"
        )
    conditions = _parse_from(reader, fields["from"][1], f"{path}.from")
    return Rule(
        name=name,
        effect=effect,
        line=line,
        to=to,
        ambiguous=frozenset(ambiguous),
        **conditions,
    )


def _parse_from(reader: _Reader, node: yaml.Node, path: str) -> dict[str, Any]:
    fields = reader.mapping(node, path, _FROM_KEYS)
    if not fields:
        raise reader.fail(node, path, "name at least one of namespaces, selector, identities")
    out: dict[str, Any] = {}
    if "namespaces" in fields:
        value = fields["namespaces"][1]
        out["namespaces"] = frozenset(
            _namespace(reader, n, v, f"{path}.namespaces")
            for n, v in reader.strings(value, f"{path}.namespaces")
        )
    if "selector" in fields:
        value = fields["selector"][1]
        try:
            out["selector"] = parse_selector(reader.string(value, f"{path}.selector"))
        except SelectorError as exc:
            raise reader.fail(value, f"{path}.selector", str(exc)) from None
    if "identities" in fields:
        value = fields["identities"][1]
        out["identities"] = frozenset(
            v for _, v in reader.strings(value, f"{path}.identities") if v
        )
    if "clusters" in fields:
        value = fields["clusters"][1]
        out["clusters"] = frozenset(v for _, v in reader.strings(value, f"{path}.clusters"))
    return out


def _namespace(reader: _Reader, node: yaml.Node, value: str, path: str) -> str:
    if value != "*" and not _NAMESPACE.fullmatch(value):
        raise reader.fail(node, path, f"{value!r} is not a namespace name (or '*')")
    return value


def _parse_target(reader: _Reader, node: yaml.Node, path: str) -> TargetRule:
    fields = reader.mapping(node, path, _TARGET_KEYS)
    subjects = [s for s in ("uri", "host") if s in fields]
    if len(subjects) != 1:
        raise reader.fail(node, path, "a target rule has exactly one of 'uri' or 'host'")
    subject = subjects[0]
    value = fields[subject][1]
    pattern = reader.string(value, f"{path}.{subject}")
    name = (
        reader.string(fields["name"][1], f"{path}.name")
        if "name" in fields
        else f"{path}.{subject}"
    )
    try:
        return target_rule(subject, pattern, name)
    except ValueError as exc:
        raise reader.fail(value, f"{path}.{subject}", str(exc)) from None
