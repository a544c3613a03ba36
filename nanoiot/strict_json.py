"""JSON as RFC 8259 defines it, not Python's superset of it, for text a client sends.

``json.loads`` reads ``NaN``, ``Infinity`` and ``-Infinity`` (no JSON numbers: RFC 8259 §6),
keeps the last of two members with the same name (§4: names SHOULD be unique; which one a
reader keeps differs between readers, so a check made by one can be passed to another),
returns strings holding lone surrogates (``"\\ud800"``: no Unicode text, §8.2, and not
encodable as UTF-8), raises ``ValueError`` for an integer of more than 4,300 digits and
``RecursionError`` for arrays nested a thousand deep, and reads bytes in UTF-16 or UTF-32
(§8.1: JSON exchanged between systems MUST be UTF-8). ``loads`` refuses each of these with a
``JsonRefused`` of one line, and bounds the length of a number, the depth of nesting and the
number of arrays and objects, so the work for a refusal is bounded by the text's length.

Pure: no I/O, no imports from ``broker/``, ``admin/`` or ``storage/``.
"""

import json
import math
import re
from typing import Any, Final

# Arrays and objects inside each other: the API's bodies and an import's rows nest three deep.
MAX_DEPTH: Final = 32
# Characters of one number: an int64 has 19 digits, a double's shortest form 24 characters.
MAX_NUMBER_CHARS: Final = 40
# Arrays and objects in one text: the API's bodies and an import's rows hold a handful. Each
# costs the parser an object, made without a pause: a 16 MiB body of 5.6 million "[]" held the
# interpreter (and the event loop with it) for 2 s.
MAX_CONTAINERS: Final = 10_000
# A string, or what an unterminated one leaves: it never fails to match, so it runs in linear
# time over any text (a pattern that can fail is retried from each later quote).
_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
# A \u escape of a UTF-16 surrogate (D800-DFFF); only such an escape can put one in a string.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class JsonRefused(ValueError):
    """Text that is not JSON, or not JSON this project reads; the message is one line."""


def loads(data: bytes | str) -> Any:
    """The value of the JSON text ``data``, or ``JsonRefused`` saying what is wrong with it."""
    text = _utf8(data) if isinstance(data, bytes) else data
    containers = _containers(text)
    if containers > MAX_CONTAINERS:
        raise JsonRefused(f"more than {MAX_CONTAINERS:,} arrays and objects")
    try:
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_int=_integer,
            parse_float=_finite_float,
            object_pairs_hook=_unique_names,
        )
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # deeper than the parser recurses (it stops before a crash)
        raise JsonRefused(_too_deep()) from None
    # The walk is skipped for what cannot hold its problems: few brackets, no escapes.
    deep = containers > MAX_DEPTH
    escaped = _SURROGATE_ESCAPE.search(text) is not None
    if deep or escaped:
        _check_members(value, strings=escaped)
    return value


def _containers(text: str) -> int:
    """How many arrays and objects ``text`` opens, at most (a bracket in a string is not one)."""
    brackets = text.count("[") + text.count("{")
    if brackets <= MAX_CONTAINERS:
        return brackets
    outside_strings = _STRING.sub("", text)
    return outside_strings.count("[") + outside_strings.count("{")


def _utf8(data: bytes) -> str:
    # A NUL byte is valid UTF-8 but never JSON (§7: control characters are escaped): UTF-16
    # and UTF-32 text of ASCII is full of them.
    nul = data.find(b"\x00")
    if nul >= 0:
        raise JsonRefused(f"not UTF-8 (RFC 8259 §8.1): byte {nul} is 0x00 (UTF-16 or UTF-32?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(
            f"not UTF-8 (RFC 8259 §8.1): byte {exc.start} is {data[exc.start]:#04x}"
        ) from None


def _no_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number (RFC 8259 §6)")


def _integer(digits: str) -> int:
    _bounded(digits)
    return int(digits)


def _finite_float(digits: str) -> float:
    _bounded(digits)
    value = float(digits)
    if not math.isfinite(value):  # 1e999: past a double's range, float() gives inf
        raise JsonRefused(f"the number {digits} is out of range")
    return value


def _bounded(number: str) -> None:
    if len(number) > MAX_NUMBER_CHARS:
        raise JsonRefused(
            f"a number of {len(number):,} characters (at most {MAX_NUMBER_CHARS} are read)"
        )


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        shown = json.dumps(_repeated(pairs))[:60]
        raise JsonRefused(f"the name {shown} appears twice in one object")
    return members


def _repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            return name
        seen.add(name)
    raise AssertionError("no name repeated")


def _check_members(value: Any, *, strings: bool) -> None:
    """Refuse nesting past ``MAX_DEPTH``, and (``strings``) a string with a lone surrogate.
    Iterative: the value may nest as deep as the parser recursed."""
    pending: list[tuple[list[Any] | dict[str, Any], int]] = []
    if isinstance(value, list | dict):
        pending.append((value, 1))
    elif strings:
        _check_string(value)
    while pending:
        container, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise JsonRefused(_too_deep())
        members = container if isinstance(container, list) else [*container, *container.values()]
        for member in members:
            if isinstance(member, list | dict):
                pending.append((member, depth + 1))
            elif strings:
                _check_string(member)


def _check_string(value: Any) -> None:
    if isinstance(value, str) and _SURROGATE.search(value):
        raise JsonRefused("a string holds a lone UTF-16 surrogate (RFC 8259 §8.2)")


def _too_deep() -> str:
    return f"arrays and objects nested more than {MAX_DEPTH} deep"
