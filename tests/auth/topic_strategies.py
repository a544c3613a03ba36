"""Hypothesis strategies for MQTT 3.1.1 §4.7 topic names and filters, shared by the topic and
ACL tests: random topics and filters over a few levels, topics a filter matches, and filters
mostly inside another."""

from hypothesis import assume
from hypothesis import strategies as st

# Few distinct levels, so random topics and filters often match each other.
LEVEL = st.sampled_from(["a", "b", "", "$s", "dev-1", "é", " "])
TOPIC = st.lists(LEVEL, min_size=1, max_size=5).map("/".join).filter(bool)
FILTER_LEVEL = st.one_of(LEVEL, st.just("+"))


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=0, max_size=5))
    if not levels or draw(st.booleans()):
        levels.append("#")
    result = "/".join(levels)
    assume(result)
    return result


def topics_matching(topic_filter: str) -> st.SearchStrategy[str]:
    """Topic names ``topic_filter`` matches (mostly: §4.7.2 cases are filtered by callers)."""
    parts: list[st.SearchStrategy[list[str]]] = []
    for index, level in enumerate(topic_filter.split("/")):
        if level == "#":
            parts.append(st.lists(LEVEL, min_size=int(index == 0), max_size=3))
        elif level == "+":
            parts.append(LEVEL.map(lambda each: [each]))
        else:
            parts.append(st.just([level]))
    return _joined(parts)


def narrowings(pattern: str) -> st.SearchStrategy[str]:
    """Filters mostly inside ``pattern`` (wildcards narrowed), sometimes not (a literal widened)."""
    parts: list[st.SearchStrategy[list[str]]] = []
    for level in pattern.split("/"):
        if level == "#":
            parts.append(st.just([]) | filters().map(lambda each: each.split("/")))
        elif level == "+":
            parts.append(FILTER_LEVEL.map(lambda each: [each]))
        else:
            parts.append(st.sampled_from([[level], [level], [level], ["+"], ["#"]]))
    return _joined(parts)


def _joined(parts: list[st.SearchStrategy[list[str]]]) -> st.SearchStrategy[str]:
    return (
        st.tuples(*parts)
        .map(lambda lists: "/".join(level for each in lists for level in each))
        .filter(bool)
    )
