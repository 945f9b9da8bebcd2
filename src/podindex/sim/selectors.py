"""Label and field selector parsing and matching with kube-apiserver semantics.

The emulator filters LIST and WATCH results itself (including the watch-cache
rule that an object leaving a selector is sent as DELETED), so it needs the
same selector language as the real server: equality, inequality, set-based
``in``/``notin``, existence and ``!`` non-existence for labels, and ``=``,
``==``, ``!=`` on a fixed set of supported field labels per resource.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class SelectorError(ValueError):
    """A selector the real server would reject with 400 BadRequest; str() is its message."""


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_NOT_EXISTS = re.compile(rf"^!\s*({_KEY})$")
_SET_OP = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_BINARY_OP = re.compile(rf"^({_KEY})\s*(==|=|!=|>|<)\s*(.*)$")
_EXISTS = re.compile(rf"^({_KEY})$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")

LabelTest = Callable[[Mapping[str, str]], bool]


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised value set."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _checked_value(value: str, term: str) -> str:
    if not _VALUE_RE.match(value) or len(value) > 63:
        raise SelectorError(
            f"unable to parse requirement: invalid label value: {value!r} in {term!r}"
        )
    return value


def _parse_label_term(term: str) -> LabelTest:
    if m := _NOT_EXISTS.match(term):
        key = m.group(1)
        return lambda labels: key not in labels
    if m := _SET_OP.match(term):
        key, op = m.group(1), m.group(3)
        values = frozenset(_checked_value(v.strip(), term) for v in m.group(4).split(","))
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _BINARY_OP.match(term):
        key, op, raw = m.group(1), m.group(3), m.group(4).strip()
        if op in (">", "<"):
            try:
                bound = int(raw)
            except ValueError:
                raise SelectorError(
                    f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {term!r}"
                ) from None
            return _numeric_test(key, bound, greater=op == ">")
        value = _checked_value(raw, term)
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS.match(term):
        key = m.group(1)
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: found '{term}', expected: identifier")


def _numeric_test(key: str, bound: int, *, greater: bool) -> LabelTest:
    def test(labels: Mapping[str, str]) -> bool:
        try:
            n = int(labels[key])
        except (KeyError, ValueError):
            return False
        return n > bound if greater else n < bound

    return test


@dataclass(frozen=True, slots=True)
class LabelSelector:
    tests: tuple[LabelTest, ...]

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text or not text.strip():
            return cls(())
        return cls(tuple(_parse_label_term(t.strip()) for t in _split_top_level(text.strip())))

    @property
    def empty(self) -> bool:
        return not self.tests

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(test(labels) for test in self.tests)


def _unescape_field_value(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _split_unescaped(text: str, sep: str) -> list[str]:
    return re.split(rf"(?<!\\){re.escape(sep)}", text)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...]  # (field, must_equal, value)

    @classmethod
    def parse(cls, text: str | None, supported: frozenset[str]) -> FieldSelector:
        if not text or not text.strip():
            return cls(())
        terms: list[tuple[str, bool, str]] = []
        for term in _split_unescaped(text.strip(), ","):
            m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", term.strip())
            if not m:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
            name, op, value = m.group(1).strip(), m.group(2), m.group(3)
            if name not in supported:
                raise SelectorError(f"field label not supported: {name}")
            terms.append((name, op != "!=", _unescape_field_value(value)))
        return cls(tuple(terms))

    @property
    def empty(self) -> bool:
        return not self.terms

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all((fields.get(name, "") == value) == equal for name, equal, value in self.terms)
