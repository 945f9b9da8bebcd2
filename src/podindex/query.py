"""The search query language of the pod search API: ``Label:v1,v2+Label2:v3``.

A query is pairs joined by ``+``; a ``+`` splits only where another
``Label:`` follows (outside quotes), so values may contain ``+``. Labels are
case-insensitive and AND'd; a pair's comma-separated values are OR'd. Each
value is one of:

- ``"text"``: exactly ``text``, case-sensitive (quotes protect ``,`` and ``+``);
- ``text``: a case-insensitive prefix;
- ``r/regex``: a case-insensitive regular expression (searched, not anchored);
- ``*``: the field is set; ``-``: the field is not set;
- ``!`` before any of these: its negation (``!r/…``, ``!"x"``, ``!web``);
- on dates (``Created``): ``>3d``, ``<12h``, ``>=90m``, ``<=30s`` for ages
  (``>3d``: created more than three days ago), ``>2026-01-02``,
  ``<=2026-01-02T10:00:00Z``, ``2026-01-02`` for times (a day, or an instant);
- on ``Pod Label``: ``key=value`` (the value by the rules above, the key
  exact), or ``key`` alone for "has the label";
- on ``Deleted``: ``true`` or ``false``.

A field with several values (IPs, container names) matches when any of them
does; a negated value matches when none does. Unknown labels, bad regexes,
bad dates and empty values are :class:`QueryError` naming what is wrong,
never a silent match-all.

Pure: no I/O; the time of day comes from the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Kind = Literal["text", "date", "label", "bool"]

FIELDS: dict[str, Kind] = {
    "pod name": "text",
    "pod id": "text",
    "pod uid": "text",
    "namespace": "text",
    "cluster": "text",
    "cluster id": "text",
    "deployment": "text",
    "deployment id": "text",
    "pod label": "label",
    "container name": "text",
    "container image digest": "text",
    "node": "text",
    "pod ip": "text",
    "created": "date",
    "deleted": "bool",
}
"""Every label the language knows (lower case), with how its values compare."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_LABEL_AHEAD = re.compile(r"\s*([A-Za-z][A-Za-z ]*?)\s*:")


class QueryError(ValueError):
    """The query cannot be used; the message names the label or value at fault."""


Values = Callable[[str], Sequence[str]]
"""A document: for a field (lower-case label), its values ("" for none)."""


@dataclass(frozen=True)
class Term:
    """One value of a pair, compiled."""

    test: Callable[[Sequence[str], float], bool]
    negated: bool
    text: str
    label_key: str | None = None
    """On ``Pod Label``: the key a pod must have for this (not negated) term to match."""

    def matches(self, values: Sequence[str], now: float) -> bool:
        found = self.test(values, now)
        return not found if self.negated else found


@dataclass(frozen=True)
class Pair:
    field: str
    terms: tuple[Term, ...]

    def matches(self, document: Values, now: float) -> bool:
        values = document(self.field)
        return any(term.matches(values, now) for term in self.terms)


@dataclass(frozen=True)
class Query:
    pairs: tuple[Pair, ...] = ()

    def matches(self, document: Values, now: float) -> bool:
        return all(pair.matches(document, now) for pair in self.pairs)


def field_name(label: str) -> str:
    """The canonical (lower-case) field of a label; QueryError when there is none."""
    name = " ".join(label.split()).lower()
    if name not in FIELDS:
        known = ", ".join(sorted(k.title() for k in FIELDS))
        raise QueryError(f"unknown search label {label.strip()!r}; known: {known}")
    return name


def parse(text: str | None) -> Query:
    """The query ``text`` (empty or None: everything)."""
    if text is None or not text.strip():
        return Query()
    return Query(tuple(_pair(raw) for raw in _split_pairs(text)))


def _split_pairs(text: str) -> list[str]:
    """Split on ``+`` outside quotes where another ``Label:`` follows."""
    pairs: list[str] = []
    start, quoted = 0, False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == "+" and not quoted and _LABEL_AHEAD.match(text, i + 1):
            pairs.append(text[start:i])
            start = i + 1
    if quoted:
        raise QueryError("unbalanced double quote in the query")
    pairs.append(text[start:])
    return pairs


def _pair(raw: str) -> Pair:
    label, sep, rest = raw.partition(":")
    if not sep:
        raise QueryError(f"expected Label:value, got {raw.strip()[:60]!r}")
    field = field_name(label)
    values = _split_values(rest)
    if not values:
        raise QueryError(f"{label.strip()}: no value")
    return Pair(field, tuple(_term(field, value) for value in values))


def _split_values(text: str) -> list[str]:
    """Comma-separated, commas inside quotes kept; blanks around a value dropped."""
    values: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            values.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    values.append("".join(current).strip())
    if any(not v for v in values) and any(values):
        raise QueryError(f"empty value in {text.strip()[:60]!r}")
    return [v for v in values if v]


def _term(field: str, value: str) -> Term:
    negated = value.startswith("!")
    body = value[1:] if negated else value
    if not body:
        raise QueryError(f"{field.title()}: '!' needs a value after it")
    kind = FIELDS[field]
    if body == "*":
        return Term(lambda vs, now: any(vs), negated, body)
    if body == "-":
        return Term(lambda vs, now: not any(vs), negated, body)
    if kind == "date":
        return Term(_date_test(field, body), negated, body)
    if kind == "bool":
        if body.lower() not in ("true", "false"):
            raise QueryError(f"{field.title()}: expected true or false, got {body!r}")
        want = body.lower()
        return Term(lambda vs, now: want in vs, negated, body)
    if kind == "label":
        test = _label_test(field, body)
        key = (body[1:-1] if len(body) >= 2 and body[0] == body[-1] == '"' else body).partition(
            "="
        )[0]
        return Term(test, negated, body, None if negated else key)
    return Term(_text_test(field, body), negated, body)


def _text_test(field: str, body: str) -> Callable[[Sequence[str], float], bool]:
    if body.startswith("r/"):
        try:
            pattern = re.compile(body[2:], re.IGNORECASE)
        except re.error as exc:
            raise QueryError(f"{field.title()}: bad regex {body[2:]!r}: {exc}") from None
        return lambda vs, now: any(pattern.search(v) for v in vs if v)
    if len(body) >= 2 and body[0] == body[-1] == '"':
        exact = body[1:-1]
        return lambda vs, now: exact in vs
    if '"' in body:
        raise QueryError(f"{field.title()}: a quote must enclose the whole value: {body!r}")
    prefix = body.lower()
    return lambda vs, now: any(v.lower().startswith(prefix) for v in vs if v)


def _label_test(field: str, body: str) -> Callable[[Sequence[str], float], bool]:
    """``key=value`` against ``key=value`` strings (the document's labels)."""
    quoted = len(body) >= 2 and body[0] == body[-1] == '"'
    inner = body[1:-1] if quoted else body
    key, sep, value = inner.partition("=")
    if not key:
        raise QueryError(f"{field.title()}: expected key=value, got {body!r}")
    if not sep:
        return lambda vs, now: any(v.partition("=")[0] == key for v in vs)
    value_test = _text_test(field, f'"{value}"' if quoted else value) if value else None

    def test(vs: Sequence[str], now: float) -> bool:
        for v in vs:
            k, _, actual = v.partition("=")
            if k != key:
                continue
            if value_test is None:
                if actual == "":
                    return True
            elif value_test([actual], now):
                return True
        return False

    return test


def _date_test(field: str, body: str) -> Callable[[Sequence[str], float], bool]:
    op = next((o for o in (">=", "<=", ">", "<") if body.startswith(o)), "")
    operand = body[len(op) :].strip()
    duration = _DURATION.fullmatch(operand)
    if duration is not None:
        if not op:
            raise QueryError(f"{field.title()}: a duration needs >, <, >= or <=, got {body!r}")
        age = float(duration[1]) * _UNITS[duration[2]]
        # An age: '>3d' is older than three days, i.e. created before now - 3d.
        older = op.startswith(">")
        inclusive = op.endswith("=")

        def by_age(vs: Sequence[str], now: float) -> bool:
            for v in vs:
                t = _instant(v)
                if t is None:
                    continue
                limit = now - age
                if older and (t < limit or (inclusive and t == limit)):
                    return True
                if not older and (t > limit or (inclusive and t == limit)):
                    return True
            return False

        return by_age
    start, end = _time_range(field, operand)

    def by_time(vs: Sequence[str], now: float) -> bool:
        for v in vs:
            t = _instant(v)
            if t is None:
                continue
            if (
                (op == ">" and t >= end)
                or (op == ">=" and t >= start)
                or (op == "<" and t < start)
                or (op == "<=" and t < end)
                or (op == "" and start <= t < end)
            ):
                return True
        return False

    return by_time


def _time_range(field: str, operand: str) -> tuple[float, float]:
    """[start, end) of a day (``2026-01-02``) or of one second (an RFC 3339 instant)."""
    if _DAY.fullmatch(operand):
        try:
            day = datetime.strptime(operand, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise QueryError(f"{field.title()}: bad date {operand!r}") from None
        return day.timestamp(), day.timestamp() + 86400.0
    instant = _instant(operand)
    if instant is None:
        raise QueryError(
            f"{field.title()}: expected a duration (3d, 12h), a date (2026-01-02) or an RFC 3339 time, "
            f"got {operand!r}"
        )
    return instant, instant + 1.0


def _instant(text: str) -> float | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
