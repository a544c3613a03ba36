"""MQTT 3.1.1 §4.7 topic helpers, against the spec's own examples and a reference matcher."""

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from auth.topics import (
    compile_filters,
    filter_covers,
    is_plain_level,
    shared_problem,
    split_shared,
    topic_filter_problem,
    topic_matches,
    topic_name_problem,
    valid_topic_filter,
    valid_topic_name,
)
from tests.auth.topic_strategies import FILTER_LEVEL, TOPIC, filters, narrowings, topics_matching


def reference_matches(topic: str, topic_filter: str) -> bool:
    """A second, recursive reading of §4.7.1 and §4.7.2, written independently."""

    def match(names: list[str], wanted: list[str]) -> bool:
        if not wanted:
            return not names
        head, rest = wanted[0], wanted[1:]
        if head == "#":
            return True
        if not names:
            return False
        return head in ("+", names[0]) and match(names[1:], rest)

    if topic[0] == "$" and topic_filter[0] in "+#":
        return False
    return match(topic.split("/"), topic_filter.split("/"))


@pytest.mark.parametrize(
    ("topic", "topic_filter", "expected"),
    [
        # §4.7.1.2
        ("sport/tennis/player1", "sport/tennis/player1/#", True),
        ("sport/tennis/player1/ranking", "sport/tennis/player1/#", True),
        ("sport/tennis/player1/score/wimbledon", "sport/tennis/player1/#", True),
        ("sport", "sport/#", True),
        ("sport/tennis", "#", True),
        # §4.7.1.3
        ("sport/tennis/player1", "sport/tennis/+", True),
        ("sport/tennis/player1/ranking", "sport/tennis/+", False),
        ("sport", "sport/+", False),
        ("sport/", "sport/+", True),
        ("/finance", "+/+", True),
        ("/finance", "/+", True),
        ("/finance", "+", False),
        # §4.7.2
        ("$SYS/broker/clients", "#", False),
        ("$SYS/monitor/Clients", "+/monitor/Clients", False),
        ("$SYS/monitor/Clients", "$SYS/#", True),
        ("$SYS/monitor/Clients", "$SYS/monitor/+", True),
        # §4.7.3: case-sensitive, whole levels
        ("ACCOUNTS", "accounts", False),
        ("devices/ab", "devices/a", False),
        ("devices/a", "devices/ab", False),
    ],
)
def test_spec_examples(topic: str, topic_filter: str, expected: bool) -> None:
    assert topic_matches(topic, topic_filter) is expected
    assert (compile_filters([topic_filter]).fullmatch(topic) is not None) is expected


@given(TOPIC, filters())
def test_topic_matches_agrees_with_the_reference(topic: str, topic_filter: str) -> None:
    assert topic_matches(topic, topic_filter) == reference_matches(topic, topic_filter)


@given(TOPIC, st.lists(filters(), max_size=4))
def test_compiled_filters_agree_with_topic_matches(topic: str, topic_filters: list[str]) -> None:
    compiled = compile_filters(topic_filters)
    expected = any(topic_matches(topic, each) for each in topic_filters)
    assert (compiled.fullmatch(topic) is not None) == expected


@given(st.lists(FILTER_LEVEL, max_size=4), st.sampled_from(["+", "#", "a+", "x\x00"]))
def test_compiled_filters_refuse_what_is_not_a_topic_name(levels: list[str], bad: str) -> None:
    # Even '#' must not let a wildcard or NUL through as a PUBLISH topic (§3.3.2.1, §1.5.3).
    compiled = compile_filters(["#", "$s/#", "+/+"])
    assert compiled.fullmatch("/".join([*levels, bad])) is None
    assert compiled.fullmatch("") is None


def test_no_filters_match_nothing() -> None:
    assert compile_filters([]).fullmatch("a") is None


@given(filters().flatmap(lambda each: st.tuples(st.just(each), narrowings(each))), st.data())
def test_coverage_is_sound(pair: tuple[str, str], data: st.DataObject) -> None:
    """If ``pattern`` covers ``topic_filter``, every topic the filter matches, it matches."""
    pattern, topic_filter = pair
    assume(valid_topic_filter(topic_filter) and filter_covers(pattern, topic_filter))
    topic = data.draw(topics_matching(topic_filter))
    assume(topic_matches(topic, topic_filter))
    assert topic_matches(topic, pattern)


@pytest.mark.parametrize(
    ("pattern", "topic_filter", "expected"),
    [
        ("devices/N/#", "devices/N/#", True),
        ("devices/N/#", "devices/N", True),  # '#' covers the parent (§4.7.1.2)
        ("devices/N/#", "devices/N/+/x", True),
        ("devices/N/#", "devices/+/x", False),
        ("devices/N/#", "devices/#", False),
        ("devices/N/#", "#", False),
        ("devices/+", "devices/N", True),
        ("devices/+", "devices/+", True),
        ("devices/+", "devices/#", False),  # '#' also matches devices/a/b
        ("devices/+", "devices", False),
        ("devices/N", "devices/N/#", False),
        ("#", "$SYS/#", False),  # §4.7.2
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("#", "+/#", True),
    ],
)
def test_filter_coverage(pattern: str, topic_filter: str, expected: bool) -> None:
    assert filter_covers(pattern, topic_filter) is expected


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("", "must not be empty"),
        ("a/+", "wildcards"),
        ("a/#", "wildcards"),
        ("a\x00b", "NUL"),
        ("a\ud800", "UTF-8"),
        ("é" * 32768, "65536 bytes"),  # 2 bytes each: one too many (§1.5.3)
    ],
)
def test_invalid_topic_names(topic: str, problem: str) -> None:
    assert problem in (topic_name_problem(topic) or "")
    assert not valid_topic_name(topic)


@pytest.mark.parametrize("topic", ["a", "/", "a//b", "$SYS/x", " ", "a" * 65535])
def test_valid_topic_names(topic: str) -> None:
    assert valid_topic_name(topic)


@pytest.mark.parametrize(
    ("topic_filter", "problem"),
    [
        ("", "must not be empty"),
        ("a/#/b", "'#' must be the last level"),
        ("a#", "'#' must be the last level"),
        ("a/b#", "'#' must be the last level"),
        ("a/+b", "'+' must occupy a whole level"),
        ("+a/b", "'+' must occupy a whole level"),
        ("a/\x00", "NUL"),
    ],
)
def test_invalid_topic_filters(topic_filter: str, problem: str) -> None:
    assert problem in (topic_filter_problem(topic_filter) or "")
    assert not valid_topic_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", ["#", "+", "+/+", "a/+/#", "/#", "$SYS/#", "a//b"])
def test_valid_topic_filters(topic_filter: str) -> None:
    assert valid_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("dev-1", True),
        ("a$", True),
        ("", False),
        (None, False),
        ("a/b", False),
        ("+", False),
        ("a#", False),
        ("$SYS", False),
        ("a\x00", False),
    ],
)
def test_plain_levels(value: str | None, plain: bool) -> None:
    assert is_plain_level(value) is plain


@pytest.mark.parametrize(
    ("topic_filter", "problem"),
    [
        ("$share/group", "is $share/{share name}/{topic filter}"),
        ("$share/", "is $share/{share name}/{topic filter}"),
        ("$share//a", "share name must not be empty"),
        ("$share/g+/a", "must not contain '+' or '#'"),
        ("$share/#/a", "must not contain '+' or '#'"),
        ("$share/g/", "its topic filter must not be empty"),
        ("$share/g/a/#/b", "its topic filter '#' must be the last level"),
        ("$share/g/a+", "its topic filter '+' must occupy a whole level"),
    ],
)
def test_invalid_shared_subscriptions(topic_filter: str, problem: str) -> None:
    found = shared_problem(topic_filter)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    ("topic_filter", "parts"),
    [
        ("$share/workers/jobs/#", ("workers", "jobs/#")),
        ("$share/g/+", ("g", "+")),
        ("$share/g/$SYS/x", ("g", "$SYS/x")),  # the filter part may itself start with '$'
        ("$share/g/a//b", ("g", "a//b")),  # an empty level is a level (§4.7.1.1)
    ],
)
def test_valid_shared_subscriptions(topic_filter: str, parts: tuple[str, str]) -> None:
    assert shared_problem(topic_filter) is None
    assert split_shared(topic_filter) == parts


@pytest.mark.parametrize("topic_filter", ["a/b", "$share", "$shared/g/a", "$SYS/#", "share/g/a"])
def test_other_filters_are_not_shared(topic_filter: str) -> None:
    assert split_shared(topic_filter) is None
