"""MQTT 3.1.1 topic names and topic filters: validity, matching, coverage (§4.7).

Pure string functions with no state and no I/O; the broker's matching lives here rather than
as a broker method (amqtt's does) so every rule is tested on its own. Imports only the stdlib.

Vocabulary, MQTT 3.1.1 §4.7:

* a *topic name* is what a PUBLISH carries: no wildcards (§3.3.2.1, §4.7.3);
* a *topic filter* is what a SUBSCRIBE carries: it may contain '+' (one whole level,
  §4.7.1.3) and '#' (the whole rest, only as the last level, §4.7.1.2);
* levels are separated by '/' (§4.7.1.1) and compared whole and case-sensitively (§4.7.3);
* topics starting with '$' are the server's: filters starting with a wildcard do not match
  them (§4.7.2).

Functions taking a filter assume a valid one (check with ``valid_topic_filter`` first).

A *shared subscription* (MQTT 5.0 §4.8.2, offered to 3.1.1 clients too, as Mosquitto 2, EMQX
and HiveMQ do) is written ``$share/{share name}/{topic filter}``: each message matching the
filter goes to one member of the group, not to all. ``shared_problem`` checks its form and
``split_shared`` takes it apart.
"""

import re
from collections.abc import Sequence
from typing import TypeGuard

SEPARATOR = "/"  # §4.7.1.1
MULTI_LEVEL = "#"  # §4.7.1.2
SINGLE_LEVEL = "+"  # §4.7.1.3
SHARE_PREFIX = "$share/"  # MQTT 5.0 §4.8.2
# The broker's own topics (§4.7.2): no client publishes there, whatever the rules allow; nor
# does its will.
SYSTEM_PREFIX = "$SYS/"
# §1.5.3: a UTF-8 string is at most 65535 bytes and must not contain U+0000.
MAX_TOPIC_BYTES = 65535

# What may appear inside a level of a topic name once the filter's own text is matched.
_NAME_CHAR = r"[^+#\x00]"
_LEVEL_CHAR = r"[^/+#\x00]"
# §4.7.2: a wildcard as the first level never matches a topic starting with '$'.
_NOT_DOLLAR = r"(?!\$)"


def topic_name_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be a PUBLISH topic name (one short phrase), or None if it can."""
    if not topic:
        return "must not be empty (§4.7.3)"
    if SINGLE_LEVEL in topic or MULTI_LEVEL in topic:
        return "must not contain the wildcards '+' or '#' (§3.3.2.1)"
    return _string_problem(topic)


def topic_filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` cannot be a SUBSCRIBE topic filter, or None if it can."""
    if not topic_filter:
        return "must not be empty (§4.7.3)"
    levels = topic_filter.split(SEPARATOR)
    for index, level in enumerate(levels):
        if MULTI_LEVEL in level and (level != MULTI_LEVEL or index != len(levels) - 1):
            return "'#' must be the last level and stand alone in it (§4.7.1.2)"
        if SINGLE_LEVEL in level and level != SINGLE_LEVEL:
            return "'+' must occupy a whole level (§4.7.1.3)"
    return _string_problem(topic_filter)


def shared_problem(topic_filter: str) -> str | None:
    """Why a ``$share/...`` filter cannot be a shared subscription, or None if it can.

    MQTT 5.0 §4.8.2: a share name of at least one character with no '/', '+' or '#', then a
    '/', then a valid topic filter.
    """
    name, separator, inner = topic_filter[len(SHARE_PREFIX) :].partition(SEPARATOR)
    if not separator:
        return "a shared subscription is $share/{share name}/{topic filter} (MQTT 5.0 §4.8.2)"
    if not name:
        return "the share name must not be empty (MQTT 5.0 §4.8.2)"
    if SINGLE_LEVEL in name or MULTI_LEVEL in name:
        return "the share name must not contain '+' or '#' (MQTT 5.0 §4.8.2)"
    problem = topic_filter_problem(inner)
    return None if problem is None else f"its topic filter {problem}"


def split_shared(topic_filter: str) -> tuple[str, str] | None:
    """``(share name, topic filter)`` of a shared subscription, None for any other filter.

    Assumes ``shared_problem`` found nothing wrong with it.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    name, _, inner = topic_filter[len(SHARE_PREFIX) :].partition(SEPARATOR)
    return name, inner


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain the NUL character (§1.5.3)"
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8 at all (§1.5.3)
        return "must be valid UTF-8 (§1.5.3)"
    if size > MAX_TOPIC_BYTES:
        return f"is {size} bytes of UTF-8, at most {MAX_TOPIC_BYTES} fit (§1.5.3)"
    return None


def valid_topic_name(topic: str) -> bool:
    """True if ``topic`` may be published to (MQTT 3.1.1 §4.7.3, §3.3.2.1)."""
    return topic_name_problem(topic) is None


def valid_topic_filter(topic_filter: str) -> bool:
    """True if ``topic_filter`` may be subscribed to (MQTT 3.1.1 §4.7.1, §4.7.3)."""
    return topic_filter_problem(topic_filter) is None


def is_plain_level(value: str | None) -> TypeGuard[str]:
    """True if ``value`` can stand as one literal, non-server topic level.

    That is: not empty, no separator or wildcard (§4.7.1), no NUL (§1.5.3) and no leading '$'
    (§4.7.2). A device name or certificate CN must pass this before it is put into a topic,
    or it could add levels, widen a filter or reach the server's topics.
    """
    # Spelt out rather than any(...): this runs for every `me` topic on the hot path.
    return (
        bool(value)
        and value is not None
        and value[0] != "$"
        and "/" not in value
        and "+" not in value
        and "#" not in value
        and "\x00" not in value
    )


def topic_matches(topic: str, topic_filter: str) -> bool:
    """True if the topic name ``topic`` matches ``topic_filter`` (MQTT 3.1.1 §4.7)."""
    # §4.7.2: '#' and '+' as the first level do not match '$SYS/...' and friends.
    if topic.startswith("$") and topic_filter[:1] in (SINGLE_LEVEL, MULTI_LEVEL):
        return False
    topic_levels = topic.split(SEPARATOR)
    for index, level in enumerate(topic_filter.split(SEPARATOR)):
        # §4.7.1.2: '#' matches the parent as well ("sport/#" matches "sport").
        if level == MULTI_LEVEL:
            return True
        if index >= len(topic_levels):
            return False
        if level not in (SINGLE_LEVEL, topic_levels[index]):
            return False
    return len(topic_levels) == len(topic_filter.split(SEPARATOR))


def filter_covers(pattern: str, topic_filter: str) -> bool:
    """True if every topic name ``topic_filter`` matches is also matched by ``pattern``.

    Level by level: '#' in ``pattern`` covers whatever is left; '+' covers a literal level or
    '+', never '#'; a literal covers only the same literal. A '$' first level is covered only
    by the same literal, as no wildcard matches it there (§4.7.2).
    """
    pattern_levels = pattern.split(SEPARATOR)
    filter_levels = topic_filter.split(SEPARATOR)
    if filter_levels[0].startswith("$") and pattern_levels[0] != filter_levels[0]:
        return False
    for index, wanted in enumerate(pattern_levels):
        if wanted == MULTI_LEVEL:
            return True
        if index >= len(filter_levels):
            return False  # the filter stops short: only a '#' could match its parent
        level = filter_levels[index]
        if level == MULTI_LEVEL or (wanted != SINGLE_LEVEL and wanted != level):
            return False
    return len(filter_levels) == len(pattern_levels)


def compile_filters(topic_filters: Sequence[str]) -> re.Pattern[str]:
    """One precompiled pattern whose ``fullmatch(topic)`` says if any filter matches ``topic``.

    For the hot path: built once, then one C-level call per message. It also refuses anything
    that is not a topic name (wildcards, NUL: §3.3.2.1, §1.5.3; empty: §4.7.3), so a malformed
    PUBLISH topic is never allowed. Agrees with ``topic_matches`` on valid topic names.
    """
    if not topic_filters:
        return re.compile(r"(?!)")  # matches nothing: no filter, nothing allowed
    alternatives = "|".join(_filter_regex(each) for each in dict.fromkeys(topic_filters))
    return re.compile(f"(?=.)(?:{alternatives})", re.DOTALL)


def _filter_regex(topic_filter: str) -> str:
    parts: list[str] = []
    for index, level in enumerate(topic_filter.split(SEPARATOR)):
        first = index == 0
        if level == MULTI_LEVEL:
            # §4.7.1.2: the separator before '#' is optional, as '#' matches the parent too.
            parts.append(f"{_NOT_DOLLAR}{_NAME_CHAR}*" if first else f"(?:/{_NAME_CHAR}*)?")
        elif level == SINGLE_LEVEL:
            parts.append(f"{_NOT_DOLLAR}{_LEVEL_CHAR}*" if first else f"/{_LEVEL_CHAR}*")
        else:
            parts.append(("" if first else "/") + re.escape(level))
    return "".join(parts)
