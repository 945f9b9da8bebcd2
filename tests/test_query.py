"""The search query language, table-tested: each operator, quoting, '+', case, every error."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from podindex.query import QueryError, parse

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()

POD: dict[str, Sequence[str]] = {
    "pod name": ["web-7d9c-abcde"],
    "namespace": ["Team-A"],
    "cluster": ["prod+eu"],
    "pod ip": ["10.1.2.3", "fd00::3"],
    "container name": ["app", "envoy"],
    "pod label": ["app=web", "tier=front", "empty="],
    "node": [""],
    "created": ["2026-11-27T10:00:00Z"],  # 3 days 2 hours before NOW
    "deleted": ["false"],
    "deployment": ["web"],
}


def document(field: str) -> Sequence[str]:
    return POD.get(field, [""])


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        ("", True),
        ("Pod Name:web", True),  # prefix
        ("pod name:WEB", True),  # labels and prefixes ignore case
        ("Pod Name:eb", False),  # a prefix, not a substring
        ('Pod Name:"web-7d9c-abcde"', True),  # exact
        ('Pod Name:"WEB-7d9c-abcde"', False),  # exact is case-sensitive
        ("Pod Name:db,web", True),  # values OR'd
        ("Pod Name:db,api", False),
        ("Pod Name:web+Namespace:team-a", True),  # pairs AND'd
        ("Pod Name:web+Namespace:team-b", False),
        ("Cluster:prod+eu", True),  # '+' not followed by a label is part of the value
        ('Cluster:"prod+eu"+Namespace:team', True),
        ('Pod Name:"a,b",web', True),  # a quoted comma is not a separator
        ("Pod Name:!db", True),  # negation
        ("Pod Name:!web", False),
        ("Pod Name:r/7D9C", True),  # regex, case-insensitive, searched
        ("Pod Name:!r/^db", True),
        ("Pod Name:r/^api", False),
        ("Pod IP:fd00", True),  # any of several values
        ("Pod IP:!10.1", False),  # negated: none may match
        ("Container Name:envoy", True),
        ("Node:*", False),  # set / unset
        ("Node:-", True),
        ("Namespace:*", True),
        ("Deployment ID:-", True),
        ("Pod Label:app=web", True),
        ("Pod Label:app=WE", True),  # the value by the prefix rule
        ('Pod Label:"app=WE"', False),  # quoted: exact
        ("Pod Label:app=r/^w.b$", True),
        ("Pod Label:tier", True),  # has the key
        ("Pod Label:zone", False),
        ("Pod Label:empty=", True),
        ("Pod Label:!app=db", True),
        ("Created:>3d", True),  # older than three days
        ("Created:>4d", False),
        ("Created:<4d", True),
        ("Created:<=74h", True),
        ("Created:>=75h", False),
        ("Created:2026-11-27", True),  # that day
        ("Created:>2026-11-27", False),  # after that day
        ("Created:>=2026-11-27", True),
        ("Created:<2026-11-28", True),
        ("Created:<=2026-11-26", False),
        ("Created:2026-11-27T10:00:00Z", True),
        ("Deleted:false", True),
        ("Deleted:TRUE", False),
    ],
)
def test_matching(query: str, matches: bool) -> None:
    assert parse(query).matches(document, NOW) is matches


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("Colour:red", "unknown search label 'Colour'"),
        ("Pod Name:web+Colour:red", "unknown search label 'Colour'"),
        ("web", "expected Label:value"),
        ("Pod Name:", "Pod Name: no value"),
        ("Pod Name:a,,b", "empty value"),
        ("Pod Name:!", "'!' needs a value"),
        ("Pod Name:r/(unclosed", "bad regex '(unclosed'"),
        ('Pod Name:"open', "unbalanced double quote"),
        ('Pod Name:we"b"', "a quote must enclose the whole value"),
        ("Created:3d", "a duration needs >, <, >= or <="),
        ("Created:>yesterday", "expected a duration"),
        ("Created:2026-13-45", "bad date '2026-13-45'"),
        ("Deleted:maybe", "expected true or false"),
        ("Pod Label:=web", "expected key=value"),
    ],
)
def test_errors_name_what_is_wrong(query: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse(query)
    assert message in str(caught.value)


def test_labels_ignore_case_and_spacing() -> None:
    assert parse("  pod   NAME :web").pairs[0].field == "pod name"
