"""Kubernetes label selectors: parse the string syntax, match label sets.

Grammar as ``k8s.io/apimachinery/pkg/labels``: comma-separated requirements,
each ``key``, ``!key``, ``key=value``, ``key==value``, ``key!=value``,
``key in (a,b)`` or ``key notin (a,b)``. Keys may carry a DNS prefix
(``app.kubernetes.io/name``). An empty selector matches everything.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")


class SelectorError(ValueError):
    """The selector text is not valid label-selector syntax; the message says where."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        value = labels.get(self.key)
        if op in ("=", "in"):
            return value is not None and value in self.values
        # != and notin also match when the key is absent, as in Kubernetes.
        return value is None or value not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def equalities(self) -> list[tuple[str, str]]:
        """The (key, value) pairs every match must carry: usable as index keys."""
        return [
            (r.key, next(iter(r.values)))
            for r in self.requirements
            if r.operator in ("=", "in") and len(r.values) == 1
        ]

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SelectorError(f"unbalanced '(' in {text!r}")
    parts.append("".join(current))
    return parts


def _check_key(key: str) -> str:
    # A qualified name: an optional DNS-subdomain prefix (at most 253) and a name (at most 63).
    prefix, _, name = key.rpartition("/")
    if not key or len(name) > 63 or len(prefix) > 253 or not _KEY_RE.match(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


def _parse_requirement(text: str, selector: str) -> Requirement:
    part = text.strip()
    if not part:
        raise SelectorError(f"empty requirement in {selector!r} (stray comma?)")
    set_match = _SET_RE.match(part)
    if set_match:
        key, op, values = set_match.groups()
        items = frozenset(_check_value(v.strip()) for v in values.split(","))
        return Requirement(_check_key(key), "in" if op == "in" else "notin", items)
    operators: tuple[tuple[str, Operator], ...] = (("!=", "!="), ("==", "="), ("=", "="))
    for token, operator in operators:
        if token in part:
            key, _, value = part.partition(token)
            return Requirement(
                _check_key(key.strip()), operator, frozenset({_check_value(value.strip())})
            )
    if part.startswith("!"):
        return Requirement(_check_key(part[1:].strip()), "!")
    return Requirement(_check_key(part), "exists")


def parse_selector(text: str | None) -> Selector:
    """Parse a label selector; raise :class:`SelectorError` naming the bad part."""
    if text is None or not text.strip():
        return Selector()
    return Selector(tuple(_parse_requirement(p, text) for p in _split_top_level(text)))


def selector_from_labels(labels: Mapping[str, str]) -> Selector:
    return Selector(tuple(Requirement(k, "=", frozenset({v})) for k, v in sorted(labels.items())))


# --- building a selector from structured requirements (the integrations UI) ----

BUILDER_OPERATORS = ("=", "==", "!=", "in", "notin", "exists", "!exists")


class RequirementError(SelectorError):
    """One structured requirement is invalid; ``index`` says which (0-based)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"requirements[{index}]: {message}")
        self.index = index


def build_selector(requirements: Sequence[tuple[str, str, Sequence[str]]]) -> str:
    """``(key, operator, values)`` triples as a selector string (AND of all; empty: everything).

    Operators: ``=``/``==``/``!=`` take one value, ``in``/``notin`` one or
    more, ``exists``/``!exists`` none. The result parses back with
    :func:`parse_selector` to the same requirements.
    """
    parts: list[str] = []
    for i, (key, operator, values) in enumerate(requirements):
        try:
            _check_key(key)
            for value in values:
                _check_value(value)
        except SelectorError as exc:
            raise RequirementError(i, str(exc)) from None
        if operator not in BUILDER_OPERATORS:
            raise RequirementError(
                i, f"unknown operator {operator[:20]!r}; use one of {', '.join(BUILDER_OPERATORS)}"
            )
        if operator in ("=", "==", "!="):
            if len(values) != 1:
                raise RequirementError(i, f"operator {operator!r} takes exactly one value")
            parts.append(f"{key}{'!=' if operator == '!=' else '='}{values[0]}")
        elif operator in ("in", "notin"):
            if not values:
                raise RequirementError(i, f"operator {operator!r} takes at least one value")
            parts.append(f"{key} {operator} ({','.join(sorted(set(values)))})")
        else:
            if values:
                raise RequirementError(i, f"operator {operator!r} takes no values")
            parts.append(key if operator == "exists" else f"!{key}")
    return ",".join(parts)
