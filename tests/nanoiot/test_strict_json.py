"""JSON as RFC 8259 defines it (nanoiot.strict_json): what Python's json module reads beyond it
is refused with one line, and a refusal costs no more than reading the text."""

import contextlib
import json
import time

import pytest

from nanoiot.strict_json import (
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    JsonRefused,
    loads,
)

REFUSED = [
    ("NaN", "NaN is not a JSON number (RFC 8259 §6)"),
    ('{"a": [Infinity]}', "Infinity is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number"),
    ('{"name": "a", "name": "b"}', 'the name "name" appears twice in one object'),
    ('[{"x": {"k": 1, "j": 2, "k": 3}}]', 'the name "k" appears twice'),
    ('"\\ud800"', "lone UTF-16 surrogate"),
    ('["ok", "\\udc00 after"]', "lone UTF-16 surrogate"),
    ('{"\\udbff": 1}', "lone UTF-16 surrogate"),
    ('"\\ud83d\\ud83d"', "lone UTF-16 surrogate"),  # two highs are no pair
    ("1e999", "the number 1e999 is out of range"),
    ("-1E400", "out of range"),
    ("9" * 10_000, "a number of 10,000 characters"),
    ("0." + "1" * 100, "a number of 102 characters"),
    ("1" * (MAX_NUMBER_CHARS + 1), f"a number of {MAX_NUMBER_CHARS + 1} characters"),
    ("[" * 5_000, f"nested more than {MAX_DEPTH} deep"),  # past the parser's recursion
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested more than"),
    ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "nested more than"),
    ("[" + "[]," * MAX_CONTAINERS + "[]]", f"more than {MAX_CONTAINERS:,} arrays and objects"),
    ('{"name": "a"', "Expecting ',' delimiter at line 1 column 13"),
    ("", "Expecting value at line 1 column 1"),
]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_what_is_not_rfc_8259_json_is_refused_in_one_line(text: str, reason: str) -> None:
    with pytest.raises(JsonRefused) as refused:
        loads(text)
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value)
    assert len(str(refused.value)) < 200
    with pytest.raises(JsonRefused):
        loads(text.encode())  # the same as bytes


def test_bytes_must_be_utf8() -> None:
    text = '{"name": "meter"}'
    for encoding in ("utf-16", "utf-16-le", "utf-32"):  # json.loads reads all of these
        with pytest.raises(JsonRefused, match=r"not UTF-8 \(RFC 8259 §8.1\): byte"):
            loads(text.encode(encoding))
    with pytest.raises(JsonRefused, match="not UTF-8"):
        loads(b'"\xed\xa0\x80"')  # a surrogate encoded as UTF-8 bytes (CESU-8)


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "meter-1", "labels": [1, -0, 1.5e3, 0.25, true, false, null]}',
        '"\\ud83d\\ude00 and \\\\ud800"',  # a pair, and an escaped backslash before "ud800"
        "[" * MAX_DEPTH + "]" * MAX_DEPTH,
        "9" * MAX_NUMBER_CHARS,
        "-" + "9" * (MAX_NUMBER_CHARS - 1),
        '{"a": {"a": {"a": 1}}}',  # one name in several objects
        '"\\u00e9t\\u00e9 \\u20ac"',
        "[" + "[]," * (MAX_CONTAINERS - 2) + "[]]",
        # Brackets in strings open nothing: counted only as the text's count passes the bound.
        "[" + ", ".join(['"[{ \\" [ {"'] * MAX_CONTAINERS) + "]",
    ],
)
def test_json_still_reads_as_it_did(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        "[" + "[]," * 5_000_000 + "[]]",  # 15 MB of containers: refused before the parse
        "[" * MAX_CONTAINERS + '"' + '\\"' * 2_000_000,  # strings never closed, many quotes
        "[" + "[[1], 1], " * (MAX_CONTAINERS // 3) + "1]",  # each walked for its depth
        '["\\ud83d\\ude00", ' * 60_000 + "1" + "]" * 60_000,  # nested: refused at once
        "{" + ",".join(f'"k{n}": 0' for n in range(100_000)) + ', "k5": 1}',
        "[" * 1_000_000,
    ],
)
def test_large_texts_are_read_or_refused_in_bounded_time(text: str) -> None:
    started = time.perf_counter()
    with contextlib.suppress(JsonRefused):
        loads(text)
    # Linear work: under 0.5 s on an idle machine; a quadratic scan would take hours.
    assert time.perf_counter() - started < 5.0
