"""``/authz``: the forward-auth endpoint a reverse proxy asks before every request it passes on.

Caddy ``forward_auth``, nginx ``auth_request`` and Traefik ``ForwardAuth``
send the original request's method, URI, host and client address; podindex
answers ``200`` with ``X-Pod-*`` headers for the proxy to copy upstream, ``403``
with a JSON reason, or ``503`` before the index is ready (fail closed). The
decision itself is :mod:`podindex.authz`; this module reads the request,
keeps the policy file current (reloaded when it changes, a bad file keeps the
previous policy), counts every decision and optionally logs it.

Like ``GET /pod`` it is answered before the framework's routing: a hit is two
dict lookups for the caller, a cached regex answer for the target and a few
set lookups for the policy; the headers of an allowed answer are built once
per pod record. ``bench/bench_authz.py`` measures it against ``/pod?ip=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from podindex.addresses import normalise_ip
from podindex.authz import (
    AMBIGUOUS_REASONS,
    Decision,
    Policy,
    PolicyError,
    ProxyTrust,
    TargetRules,
    parse_policy,
)
from podindex.index import CallerKind, PodRecord
from podindex.model import PodKey
from podindex.service import Service
from podindex.settings import Settings

__all__ = ["Authz", "AuthzCollector", "PolicyError", "PolicyFile", "read_policy"]

log = logging.getLogger("podindex.authz")
audit_log = logging.getLogger("podindex.authz.audit")

Headers = list[tuple[bytes, bytes]]

_WANTED: Final = {
    name.encode(): name
    for name in (
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "x-forwarded-uri",
        "x-original-uri",
        "x-forwarded-host",
        "host",
        "x-forwarded-method",
        "x-original-method",
    )
}
"""The request headers read; every other (Authorization, Cookie, …) is never looked at."""

DENY_REASONS: Final = (
    "unknown_ip",
    "no_caller",
    "no_target",
    "conflicting_uri",
    "other_namespace",
    "deny_rule",
    *AMBIGUOUS_REASONS.values(),
)
ALLOW_REASONS: Final = ("same_namespace", "rule")

_JSON: Final = (b"content-type", b"application/json")
_EMPTY: Final = (b"content-length", b"0")
_NOT_READY: Final = msgspec.json.encode(
    {
        "error": "not_ready",
        "reason": "not_ready",
        "message": "initial sync has not finished; denying until it has (fail closed)",
    }
)
_MESSAGES: Final = {
    "unknown_ip": "no pod holds the caller's IP",
    "no_caller": "the caller's address cannot be told (a forwarded hop is not an IP address)",
    "no_target": "no target namespace in the forwarded URI, host or header",
    "conflicting_uri": "X-Forwarded-Uri and X-Original-URI disagree",
    "other_namespace": "the caller's pod is in another namespace and no rule allows it",
    "deny_rule": "a deny rule matches the caller",
    "ambiguous_node": "the caller's IP is a node's, shared by hostNetwork pods",
    "ambiguous_clusters": "the caller's IP is held by pods in several clusters",
    "terminating": "the caller's IP belongs to a pod that is gone (grace period)",
}


class Denial(msgspec.Struct, gc=False):
    error: str
    reason: str
    message: str
    caller_ip: str | None
    target_namespace: str | None
    rule: str | None = None


_encode = msgspec.json.Encoder().encode
_MISSING: Final = "\0missing"


def read_policy(path: str) -> Policy:
    """Read and parse a policy file; :class:`PolicyError` names the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from None
    return parse_policy(text, path)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PolicyFile:
    """The current policy, and the file it came from, re-read when its mtime, size or inode move.

    Requests always see a whole policy: the new one replaces the old in one
    assignment. A file that no longer parses (or is gone) keeps the old one.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.reloads = 0
        self.failures = 0
        self._stamp = _stamp(path) if path else None
        self._seen: tuple[int, int, int] | None = self._stamp
        self.policy = read_policy(path) if path else Policy()

    def reload_if_changed(self) -> bool:
        """Re-read the file once it changed and then held still for one poll (a file
        caught mid-write is often valid YAML, with its deny rules cut off); True when a
        new policy took effect. An emptied file is an error: write ``rules: []``."""
        if self.path is None:
            return False
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        if stamp != self._seen:
            self._seen = stamp  # changed since the last poll: wait for it to settle
            return False
        self._stamp = stamp
        try:
            if stamp is not None and stamp[1] == 0:
                raise PolicyError(f"{self.path}: the file is empty (write 'rules: []' for none)")
            policy = read_policy(self.path)
        except PolicyError as exc:
            self.failures += 1
            log.error("authz policy not reloaded, keeping the previous one: %s", exc)
            return False
        self.policy = policy
        self.reloads += 1
        log.info("authz policy reloaded from %s: %d rules", self.path, len(policy.rules))
        return True

    @contextlib.asynccontextmanager
    async def watching(self, interval: float = 1.0) -> AsyncIterator[None]:
        """Poll the file in the background while the context is open (the app's lifespan)."""
        if self.path is None:
            yield
            return
        task = asyncio.create_task(self.watch(interval), name="authz policy")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the file forever (the lifespan cancels it)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed()
            except Exception:  # never let a surprise here take the service down
                log.exception("authz policy check failed; retrying")


class Authz:
    """The ``/authz`` answer for one request: status, headers, body."""

    def __init__(self, service: Service, settings: Settings | None = None) -> None:
        s = settings or service.settings
        self.service = service
        self.trust = ProxyTrust.parse(s.trusted_proxies, s.forwarded_headers)
        self.targets = TargetRules.parse(s.authz_targets)
        self.policy_file = PolicyFile(s.authz_policy)
        self.audit = s.authz_audit
        if self.audit and audit_log.getEffectiveLevel() > logging.INFO:
            audit_log.setLevel(logging.INFO)
        self.counts: dict[tuple[str, str], int] = {("unavailable", "not_ready"): 0}
        """Decisions by (decision, reason). Plain ints, like the lookup outcomes."""
        for reason in ALLOW_REASONS:
            self.counts["allow", reason] = 0
        for reason in DENY_REASONS:
            self.counts["deny", reason] = 0
        self._pod_headers: dict[PodKey, tuple[PodRecord, Headers]] = {}
        """Allowed-answer headers per pod, valid while the index keeps that very record."""
        self._peers: dict[str, tuple[str | None, bool]] = {}
        self._targets: dict[tuple[str, str, str | None], str | None] = {}
        self._targets_of: Policy | None = None
        self._wanted = dict(_WANTED)
        if self.targets.header is not None:
            self._wanted[self.targets.header.encode()] = self.targets.header

    def answer(
        self, headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None
    ) -> tuple[int, Headers, bytes]:
        """Decide for one request, given its ASGI headers and peer: status, headers, body."""
        if not self.service.ready:
            self.counts["unavailable", "not_ready"] += 1
            if self.audit:
                peer = client[0] if client else None
                self._audit("unavailable", "not_ready", None, None, None, None, {}, peer)
            return 503, [_JSON, (b"content-length", b"%d" % len(_NOT_READY))], _NOT_READY
        wanted = self._wanted
        h: dict[str, str] = {}
        for raw_name, raw_value in headers:
            name = wanted.get(raw_name)
            if name is not None:
                value = raw_value.decode("latin-1")
                previous = h.get(name)
                h[name] = value if previous is None else f"{previous}, {value}"
        peer = client[0] if client else None
        peer_ip, trusted = self._peer(peer)
        caller_ip = self.trust.forwarded_client(peer_ip, h) if trusted and peer_ip else peer_ip
        uri = h.get("x-forwarded-uri")
        original = h.get("x-original-uri")
        if uri is not None and original is not None and uri != original:
            # One of them came from the client through a proxy that sets only the other.
            return self._deny("conflicting_uri", caller_ip, None, h, peer)
        if uri is None:
            uri = original or ""
        host = (h.get("x-forwarded-host") if trusted else None) or h.get("host", "")
        if "," in host:
            host = host.rpartition(",")[2].strip()
        header = self.targets.header
        explicit = h.get(header) if header is not None and trusted else None
        policy = self.policy_file.policy
        target = self._target(policy, uri, host, explicit)
        if caller_ip is None:
            return self._deny("no_caller", None, target, h, peer)
        if target is None:
            return self._deny("no_target", caller_ip, None, h, peer)
        resolved = self.service.index.caller(caller_ip, time.time())
        if resolved is None:
            return self._deny("unknown_ip", caller_ip, target, h, peer)
        kind, candidates = resolved
        decision = policy.decide(kind, candidates, target)
        if not decision.allowed:
            return self._deny(
                decision.reason, caller_ip, target, h, peer, decision, kind, candidates
            )
        self.counts["allow", decision.reason] += 1
        if self.audit:
            self._audit("allow", decision.reason, decision, caller_ip, target, candidates, h, peer)
        return 200, self._allow_headers(kind, candidates), b""

    def _peer(self, peer: str | None) -> tuple[str | None, bool]:
        """The peer's canonical address and whether it is a trusted proxy (cached per peer)."""
        if peer is None:
            return None, False
        found = self._peers.get(peer)
        if found is None:
            canonical = normalise_ip(peer)
            found = (canonical, canonical is not None and self.trust.trusts(canonical))
            if len(self._peers) > 4096:
                self._peers.clear()
            self._peers[peer] = found
        return found

    def _target(self, policy: Policy, uri: str, host: str, explicit: str | None) -> str | None:
        """The target namespace, cached per (URI, host, header) while the policy stays the same:
        a function's URI repeats on every call, and the rules are regexes."""
        if policy is not self._targets_of:
            self._targets.clear()
            self._targets_of = policy
        key = (uri, host, explicit)
        found = self._targets.get(key, _MISSING)
        if found is _MISSING:
            found = self.targets.namespace(uri, host, explicit, policy.targets)[0]
            if len(self._targets) > 16384:
                self._targets.clear()
            self._targets[key] = found
        return found

    def _allow_headers(self, kind: CallerKind, candidates: tuple[PodRecord, ...]) -> Headers:
        if len(candidates) != 1:  # an ambiguous caller a rule allowed: no one pod to name
            namespaces = {r.namespace for r in candidates}
            namespace = next(iter(namespaces)) if len(namespaces) == 1 else "-"
            return [
                _EMPTY,
                *((name, b"-") for name in _POD_HEADER_NAMES),
                (b"x-pod-namespace", namespace.encode()),
                (b"x-pod-caller", kind.encode()),
            ]
        record = candidates[0]
        cached = self._pod_headers.get(record.key)
        if cached is None or cached[0] is not record:
            if len(self._pod_headers) > 2 * len(self.service.index.pods) + 1024:
                self._pod_headers.clear()  # records of pods long gone
            cached = (record, pod_headers(record))
            self._pod_headers[record.key] = cached
        if kind == "pod":
            return cached[1]
        return [*cached[1][:-1], (b"x-pod-caller", kind.encode())]

    def _deny(
        self,
        reason: str,
        caller_ip: str | None,
        target: str | None,
        h: dict[str, str],
        peer: str | None,
        decision: Decision | None = None,
        kind: CallerKind | None = None,
        candidates: tuple[PodRecord, ...] | None = None,
    ) -> tuple[int, Headers, bytes]:
        self.counts["deny", reason] += 1
        if self.audit:
            self._audit("deny", reason, decision, caller_ip, target, candidates, h, peer)
        body = _encode(
            Denial(
                "forbidden",
                reason,
                _MESSAGES.get(reason, reason),
                caller_ip,
                target,
                decision.rule or None if decision is not None else None,
            )
        )
        return 403, [_JSON, (b"content-length", b"%d" % len(body))], body

    def _audit(
        self,
        decision: str,
        reason: str,
        verdict: Decision | None,
        caller_ip: str | None,
        target: str | None,
        candidates: tuple[PodRecord, ...] | None,
        h: dict[str, str],
        peer: str | None = None,
    ) -> None:
        """One line per decision: what was asked and why. Only the headers read are named, the
        URI without its query; Authorization, Cookie and the rest are never read."""
        uri = h.get("x-forwarded-uri") or h.get("x-original-uri") or ""
        path = uri.partition("?")[0]  # the path only: a query string may carry a token
        entry: dict[str, object] = {
            "decision": decision,
            "reason": reason,
            "peer": peer,
            "caller_ip": caller_ip,
            "target_namespace": target,
            "method": h.get("x-forwarded-method") or h.get("x-original-method"),
            "uri": path[:256] or None,
            "host": (h.get("x-forwarded-host") or h.get("host") or "")[:256] or None,
        }
        if verdict is not None and verdict.rule:
            entry["rule"] = verdict.rule
        if candidates:
            entry["pods"] = [f"{r.key[0]}/{r.namespace}/{r.name}" for r in candidates]
        audit_log.info(
            "authz %s %s: %s -> %s",
            decision,
            reason,
            caller_ip or peer,
            target,
            extra={"fields": entry},
        )


_POD_HEADER_NAMES: Final = (
    b"x-pod-name",
    b"x-pod-uid",
    b"x-pod-identity",
    b"x-pod-cluster",
    b"x-pod-workload",
)


def pod_headers(record: PodRecord) -> Headers:
    """The ``X-Pod-*`` headers of an allowed caller, ``X-Pod-Caller`` last.

    Every header is always sent and never empty: a proxy that copies only the
    headers present (Caddy's ``copy_headers``) must overwrite whatever the client
    sent under those names, never pass a client's value on.
    """
    workload = record.workload
    return [
        _EMPTY,
        (b"x-pod-name", _header_value(record.name)),
        (b"x-pod-namespace", _header_value(record.namespace)),
        (b"x-pod-uid", _header_value(record.key[1])),
        (b"x-pod-identity", _header_value(workload.identity)),
        (b"x-pod-cluster", _header_value(record.key[0])),
        (
            b"x-pod-workload",
            _header_value(f"{workload.kind}/{workload.name}" if workload.kind else "-"),
        ),
        (b"x-pod-caller", b"pod"),
    ]


def _header_value(text: str) -> bytes:
    value = text.encode("ascii", "replace").replace(b"\r", b"?").replace(b"\n", b"?")
    return value or b"-"


class AuthzCollector(Collector):
    """``podindex_authz_decisions_total{decision, reason}`` and the policy file's reloads."""

    def __init__(self, authz: Authz) -> None:
        self.authz = authz

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        family = CounterMetricFamily(
            "podindex_authz_decisions",
            "Forward-auth decisions by outcome and reason",
            labels=["decision", "reason"],
        )
        for (decision, reason), count in sorted(self.authz.counts.items()):
            family.add_metric([decision, reason], count)
        yield family
        policy = self.authz.policy_file
        reloads = CounterMetricFamily(
            "podindex_authz_policy_reloads", "Policy file reloads that took effect"
        )
        reloads.add_metric([], policy.reloads)
        yield reloads
        failures = CounterMetricFamily(
            "podindex_authz_policy_errors", "Policy file changes rejected (the old policy stayed)"
        )
        failures.add_metric([], policy.failures)
        yield failures
        rules = GaugeMetricFamily("podindex_authz_policy_rules", "Rules in the policy in effect")
        rules.add_metric([], len(policy.policy.rules))
        yield rules
