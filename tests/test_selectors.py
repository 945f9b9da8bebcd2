"""Label selectors: every operator of the Kubernetes syntax, and clear errors for bad text."""

from __future__ import annotations

import pytest

from podindex.selectors import (
    Requirement,
    SelectorError,
    parse_selector,
    selector_from_labels,
)

LABELS = {"app": "web", "tier": "frontend", "app.kubernetes.io/name": "shop"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("app=web", True),
        ("app==web", True),
        ("app = web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),  # != matches when the key is absent, as in Kubernetes
        ("app in (web, db)", True),
        ("app in (db,cache)", False),
        ("missing in (x)", False),
        ("app notin (db, cache)", True),
        ("app notin (web)", False),
        ("missing notin (x)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("! app", False),
        ("app.kubernetes.io/name=shop", True),
        ("app=web,tier=frontend", True),
        ("app=web,tier=backend", False),
        ("app in (web),tier notin (backend),!missing,app.kubernetes.io/name", True),
        ("  app=web ,  tier  ", True),
        ("app=", False),  # an empty value is a value: only matches app=""
    ],
)
def test_operators(text: str, matches: bool) -> None:
    assert parse_selector(text).matches(LABELS) is matches


def test_empty_value_matches_empty_label() -> None:
    assert parse_selector("app=").matches({"app": ""})
    assert parse_selector("app in ()").matches({"app": ""})


@pytest.mark.parametrize("text", [None, "", "   "])
def test_empty_selector_matches_everything(text: str | None) -> None:
    selector = parse_selector(text)
    assert selector.empty
    assert selector.matches({})
    assert selector.matches(LABELS)


def test_parsed_requirements() -> None:
    selector = parse_selector("a=1,b!=2,c in (3,4),d notin (5),e,!f")
    assert selector.requirements == (
        Requirement("a", "=", frozenset({"1"})),
        Requirement("b", "!=", frozenset({"2"})),
        Requirement("c", "in", frozenset({"3", "4"})),
        Requirement("d", "notin", frozenset({"5"})),
        Requirement("e", "exists"),
        Requirement("f", "!"),
    )


def test_equalities_are_the_index_keys_every_match_carries() -> None:
    selector = parse_selector("a=1,b in (2),c in (3,4),d!=5,e")
    assert selector.equalities() == [("a", "1"), ("b", "2")]


def test_selector_from_labels_round_trips() -> None:
    selector = selector_from_labels({"b": "2", "a": "1"})
    assert [r.key for r in selector.requirements] == ["a", "b"]
    assert selector.matches({"a": "1", "b": "2", "c": "3"})
    assert not selector.matches({"a": "1"})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("app=web,,tier", "'app=web,,tier'"),
        ("app=web,", "'app=web,'"),
        ("app in (web", "unbalanced '('"),
        ("app in web)", "unbalanced ')'"),
        ("=web", "invalid label key ''"),
        ("!", "invalid label key ''"),
        ("a b=c", "invalid label key 'a b'"),
        ("-app=web", "invalid label key '-app'"),
        ("app=we b", "invalid label value 'we b'"),
        ("app=a=b", "invalid label value 'a=b'"),
        ("app in (a b)", "invalid label value 'a b'"),
        ("app=-web", "invalid label value '-web'"),
        ("app=" + "v" * 64, "invalid label value"),
        ("Example.com/app=web", "invalid label key 'Example.com/app'"),
        ("k" * 64, "invalid label key"),
        ("p" * 254 + "/k", "invalid label key"),
        ("!app=web", "invalid label key '!app'"),
        ("app>1", "invalid label key 'app>1'"),
    ],
)
def test_bad_syntax_names_the_part(text: str, named: str) -> None:
    with pytest.raises(SelectorError) as raised:
        parse_selector(text)
    assert named in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_longest_valid_key_and_value() -> None:
    key = "p" * 253 + "/" + "k" * 63
    selector = parse_selector(f"{key}={'v' * 63}")
    assert selector.matches({key: "v" * 63})


# --- the builder --------------------------------------------------------------


def test_builder_makes_the_documented_example() -> None:
    from podindex.selectors import build_selector

    built = build_selector([("app", "=", ["backend"]), ("env", "in", ["prod", "staging"])])
    assert built == "app=backend,env in (prod,staging)"


def test_builder_round_trips_every_operator() -> None:
    from podindex.selectors import build_selector

    built = build_selector(
        [
            ("a", "==", ["1"]),
            ("b", "!=", ["2"]),
            ("c", "notin", ["x", "y"]),
            ("app.kubernetes.io/name", "exists", []),
            ("d", "!exists", []),
        ]
    )
    assert built == "a=1,b!=2,c notin (x,y),app.kubernetes.io/name,!d"
    selector = parse_selector(built)
    assert selector.matches({"a": "1", "c": "z", "app.kubernetes.io/name": "web"})
    assert not selector.matches({"a": "1", "c": "x", "app.kubernetes.io/name": "web"})
    assert not selector.matches({"a": "1", "app.kubernetes.io/name": "web", "d": ""})
    assert build_selector([]) == ""


@pytest.mark.parametrize(
    ("requirements", "index", "text"),
    [
        ([("app", "~", ["x"])], 0, "unknown operator"),
        ([("app", "=", ["x"]), ("env", "=", [])], 1, "exactly one"),
        ([("app", "=", ["x", "y"])], 0, "exactly one"),
        ([("a", "exists", []), ("env", "in", [])], 1, "at least one"),
        ([("env", "exists", ["x"])], 0, "no values"),
        ([("bad key!", "=", ["x"])], 0, "invalid label key"),
        ([("a", "=", ["x"]), ("b", "=", ["x"]), ("c", "in", ["ok", "not ok"])], 2, "value"),
    ],
)
def test_builder_names_the_bad_requirement(
    requirements: list[tuple[str, str, list[str]]], index: int, text: str
) -> None:
    from podindex.selectors import RequirementError, build_selector

    with pytest.raises(RequirementError) as caught:
        build_selector(requirements)
    assert caught.value.index == index
    assert f"requirements[{index}]" in str(caught.value) and text in str(caught.value)
