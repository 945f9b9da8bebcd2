"""Who is calling the API, and may they: bearer tokens mapped to the roles reader and admin.

Two kinds of token are accepted, both as ``Authorization: Bearer <token>``:

- tokens listed in the access file (``--tokens-file``), stored there only as
  their SHA-256, so the file is no secret worth stealing;
- Kubernetes service-account tokens, checked with a TokenReview against the
  watched cluster and mapped to a role by user or group in the same file.
  Answers are cached briefly (a minute when accepted, ten seconds when not),
  keyed by the token's hash.

No token (or one nobody knows) is 401; a known caller without the role is
403. Lookups are open unless ``--lookup-access reader``; anything that
changes state needs ``admin``, and with no access file nobody has it.
Tokens are never logged: messages name the caller, never the credential.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response

from podindex.api.errors import ApiProblem
from podindex.kube.errors import KubeError
from podindex.kube.tokenreview import ReviewedUser

log = logging.getLogger("podindex.auth")

Reviewer = Callable[[str], Awaitable[ReviewedUser | None]]

_ACCEPTED_TTL = 60.0
_REJECTED_TTL = 10.0
_CACHE_LIMIT = 10_000
_RELOAD_CHECK = 1.0
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="podindex"'}


class Role(enum.IntEnum):
    """Ordered: a role may do everything the roles below it may."""

    NONE = 0
    READER = 1
    ADMIN = 2


@dataclass(frozen=True)
class Grant:
    role: Role
    namespaces: frozenset[str] | None = None
    """Where the role holds; None: every namespace."""


@dataclass(frozen=True)
class Principal:
    name: str
    via: str
    """``token`` (the access file), ``serviceaccount`` (TokenReview) or ``anonymous``."""
    grants: tuple[Grant, ...] = ()

    @property
    def role(self) -> Role:
        """The highest role held anywhere."""
        return max((g.role for g in self.grants), default=Role.NONE)

    def namespaces_for(self, role: Role) -> frozenset[str] | None:
        """Where the caller holds ``role`` (or more): None for every namespace."""
        if role is Role.NONE:
            return None
        found: frozenset[str] = frozenset()
        for grant in self.grants:
            if grant.role >= role:
                if grant.namespaces is None:
                    return None
                found |= grant.namespaces
        return found

    @property
    def namespaces(self) -> frozenset[str] | None:
        """Where the caller holds its highest role."""
        return self.namespaces_for(self.role)


ANONYMOUS = Principal("anonymous", "anonymous")


class AccessFileError(ValueError):
    """The access file cannot be used; the message names the file and the entry."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A random token for the access file: 256 bits, URL-safe."""
    return "pi_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AccessRules:
    tokens: dict[str, Principal] = field(default_factory=dict)
    """Principal by the SHA-256 (hex) of its token."""
    users: dict[str, Grant] = field(default_factory=dict)
    groups: dict[str, Grant] = field(default_factory=dict)

    @property
    def reviews_tokens(self) -> bool:
        return bool(self.users or self.groups)

    def principal_of(self, user: ReviewedUser) -> Principal:
        """The reviewed user with every grant its user name and groups match."""
        grants = [self.users.get(user.username)]
        grants += [self.groups.get(group) for group in user.groups]
        return Principal(user.username, "serviceaccount", tuple(g for g in grants if g is not None))


_ROLES = {"reader": Role.READER, "admin": Role.ADMIN}


def parse_access(text: str, source: str) -> AccessRules:
    """Rules from the access file's YAML::

    tokens:
      - {name: alice, role: admin, sha256: <64 hex digits>}
    serviceAccounts:
      - {user: "system:serviceaccount:monitoring:grafana", role: reader}
      - {group: "system:serviceaccounts:ops", role: admin}
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AccessFileError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AccessFileError(f"{source}: expected a mapping with 'tokens' and 'serviceAccounts'")
    unknown = set(data) - {"tokens", "serviceAccounts"}
    if unknown:
        raise AccessFileError(f"{source}: unknown key(s) {sorted(unknown)}")
    rules = AccessRules()
    for i, entry in enumerate(_entries(data, "tokens", source)):
        where = f"{source}: tokens[{i}]"
        name = _text(entry, "name", where)
        digest = _text(entry, "sha256", where).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise AccessFileError(f"{where}: sha256 must be 64 hex digits (`podindex token`)")
        if digest in rules.tokens:
            raise AccessFileError(f"{where}: the same token is listed twice")
        rules.tokens[digest] = Principal(
            name, "token", (Grant(_role(entry, where), _namespaces(entry, where)),)
        )
    for i, entry in enumerate(_entries(data, "serviceAccounts", source)):
        where = f"{source}: serviceAccounts[{i}]"
        kinds = [k for k in ("user", "group") if k in entry]
        if len(kinds) != 1:
            raise AccessFileError(f"{where}: give exactly one of 'user' or 'group'")
        table = rules.users if kinds[0] == "user" else rules.groups
        grant = Grant(_role(entry, where), _namespaces(entry, where))
        table[_text(entry, kinds[0], where)] = grant
    return rules


def _namespaces(entry: dict[str, Any], where: str) -> frozenset[str] | None:
    """The optional ``namespaces`` list scoping a grant; absent means every namespace."""
    if "namespaces" not in entry:
        return None
    value = entry["namespaces"]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(n, str) and n.strip() for n in value)
    ):
        raise AccessFileError(f"{where}: 'namespaces' must be a non-empty list of names")
    return frozenset(n.strip() for n in value)


def _entries(data: dict[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    entries = data.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise AccessFileError(f"{source}: '{key}' must be a list of mappings")
    return entries


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AccessFileError(f"{where}: '{key}' is required (a non-empty string)")
    return value.strip()


def _role(entry: dict[str, Any], where: str) -> Role:
    role = _ROLES.get(str(entry.get("role", "")))
    if role is None:
        raise AccessFileError(
            f"{where}: role must be 'reader' or 'admin', got {entry.get('role')!r}"
        )
    return role


class AccessFile:
    """The access file, re-read when it changes (checked at most once a second).

    A change that does not parse keeps the rules in force and logs why, so a
    typo cannot lock every caller out; a file that does not parse at start
    stops the service instead.
    """

    def __init__(self, path: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self.rules = AccessRules()
        if path is not None:
            self.rules = self._read()

    def _read(self) -> AccessRules:
        assert self.path is not None
        try:
            stat = os.stat(self.path)
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise AccessFileError(f"{self.path}: cannot read: {exc.strerror}") from None
        rules = parse_access(text, self.path)
        self._stamp = (stat.st_mtime, stat.st_size)
        return rules

    def current(self) -> AccessRules:
        if self.path is None:
            return self.rules
        now = self.clock()
        if now - self._checked < _RELOAD_CHECK:
            return self.rules
        self._checked = now
        try:
            stat = os.stat(self.path)
            changed = (stat.st_mtime, stat.st_size) != self._stamp
        except OSError:
            changed = False
        if changed:
            try:
                self.rules = self._read()
                log.info("access file %s reloaded", self.path)
            except AccessFileError as exc:
                log.error("access file changed but is not usable; keeping the old rules: %s", exc)
        return self.rules


_OUTCOMES = ("allowed", "unauthenticated", "forbidden", "unavailable")


class Authenticator:
    """Checks a request's ``Authorization`` header against the access rules."""

    def __init__(
        self,
        access: AccessFile,
        reviewer: Reviewer | None = None,
        *,
        lookups_open: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.access = access
        self.reviewer = reviewer
        self.lookup_role = Role.NONE if lookups_open else Role.READER
        self.clock = clock
        self._reviewed: dict[str, tuple[float, Principal | None]] = {}
        self.outcomes: dict[str, int] = dict.fromkeys(_OUTCOMES, 0)

    async def check(
        self,
        authorization: str | None,
        role: Role,
        namespace: str | None = None,
        *,
        any_namespace: bool = False,
    ) -> Principal:
        """The caller, if it holds ``role`` where the route acts; otherwise raise the
        401/403/503 ApiProblem.

        ``namespace``: the route is about that namespace. None: it is not about
        one namespace, so a grant limited to namespaces does not reach it,
        unless ``any_namespace`` (the route itself shows only what the caller's
        namespaces allow: :meth:`Principal.namespaces_for`).
        """
        if role is Role.NONE:
            return ANONYMOUS
        token = _bearer(authorization)
        if token is None:
            self.outcomes["unauthenticated"] += 1
            raise ApiProblem(
                401,
                "unauthenticated",
                "this endpoint needs 'Authorization: Bearer <token>'",
                headers=_CHALLENGE,
            )
        principal = await self.identify(token)
        if principal is None:
            self.outcomes["unauthenticated"] += 1
            raise ApiProblem(
                401, "unauthenticated", "the bearer token is not known", headers=_CHALLENGE
            )
        if principal.role < role:
            self.outcomes["forbidden"] += 1
            raise ApiProblem(
                403,
                "forbidden",
                f"{principal.name} has role {principal.role.name.lower()}; "
                f"this needs {role.name.lower()}",
            )
        where = principal.namespaces_for(role)
        if where is not None and (
            namespace not in where if namespace is not None else not any_namespace
        ):
            self.outcomes["forbidden"] += 1
            place = f"not in {namespace}" if namespace else "and this route is cluster-wide"
            raise ApiProblem(
                403,
                "forbidden",
                f"{principal.name} has role {role.name.lower()} only in "
                f"{', '.join(sorted(where))}, {place}",
            )
        self.outcomes["allowed"] += 1
        return principal

    async def caller(self, authorization: str | None) -> Principal:
        """Who sends ``authorization``, whatever role it holds: :data:`ANONYMOUS` without
        the header; the 401 ApiProblem for a malformed header or a token nobody knows."""
        if not authorization:
            return ANONYMOUS
        token = _bearer(authorization)
        principal = None if token is None else await self.identify(token)
        if principal is None:
            self.outcomes["unauthenticated"] += 1
            raise ApiProblem(
                401, "unauthenticated", "the bearer token is not known", headers=_CHALLENGE
            )
        self.outcomes["allowed"] += 1
        return principal

    async def identify(self, token: str) -> Principal | None:
        digest = token_digest(token)
        rules = self.access.current()
        known = rules.tokens.get(digest)
        if known is not None or not rules.reviews_tokens:
            return known
        now = self.clock()
        cached = self._reviewed.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await self._review(token, rules)
        ttl = _ACCEPTED_TTL if principal is not None else _REJECTED_TTL
        if len(self._reviewed) >= _CACHE_LIMIT:
            self._reviewed = {k: v for k, v in self._reviewed.items() if v[0] > now}
            while len(self._reviewed) >= _CACHE_LIMIT:
                del self._reviewed[next(iter(self._reviewed))]
        self._reviewed[digest] = (now + ttl, principal)
        return principal

    async def _review(self, token: str, rules: AccessRules) -> Principal | None:
        if self.reviewer is None:
            return None
        try:
            user = await self.reviewer(token)
        except KubeError as exc:
            # The message is the API server's, about the review request, never the token.
            log.warning("TokenReview failed: %s", exc)
            self.outcomes["unavailable"] += 1
            raise ApiProblem(
                503,
                "auth_unavailable",
                "service-account tokens cannot be checked right now (TokenReview failed)",
            ) from None
        if user is None:
            return None
        return rules.principal_of(user)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def require(
    request: Request, role: Role, namespace: str | None = None, *, any_namespace: bool = False
) -> Principal:
    """The caller of ``request`` if it holds ``role`` where the route acts (see
    :meth:`Authenticator.check`); raises the 401/403 ApiProblem."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.check(
        request.headers.get("authorization"), role, namespace, any_namespace=any_namespace
    )


async def require_lookup(request: Request) -> Principal:
    """The caller, for a read of the index: anyone when lookups are open, else a reader."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.check(
        request.headers.get("authorization"), authenticator.lookup_role
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint, role: Role | None = None) -> Endpoint:
    """``endpoint`` behind a role check; ``None`` means the role lookups need (configured)."""

    @wraps(endpoint)
    async def checked(request: Request) -> Response:
        if role is None:
            await require_lookup(request)
        else:
            await require(request, role)
        return await endpoint(request)

    return checked
