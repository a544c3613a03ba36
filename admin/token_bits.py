"""How many guesses a token would take: ``estimated_bits``, a guesser's view without a dictionary.

The estimate is the token's length in bits under the cheapest of a few codes a guesser would
try, each a probability over strings: uniform characters from a common alphabet (hex,
base64, letters and digits, ...); the steps from each byte to the next (runs, "abab",
"12345"); the steps between keys on a US keyboard ("qwerty", "1qaz2wsx"); or character
classes that change rarely ("Password1234567!": a capital, letters, a count, a sign). Naming
the code takes ``log2`` of their number more. The adaptive codes give a step or class seen
before more of the probability the more often it was seen, so a pattern costs little once it
repeats, and a new step costs as much as a new character or more.

Being codes, they need no tuning against random tokens: fewer than ``2^b`` strings of one
length have an estimate under ``b`` bits (their probabilities add up to at most one), so the
output of a generator of 128 random bits (``openssl rand -hex 16``) falls under 96 bits with
a probability below ``2^-32`` whatever its encoding. The rule of thumb this replaces
(characters the previous one does not predict, times the bits of the smaller of the
alphabet and the token's distinct characters) refused such a token once in 12,500 draws.

Everything is computed from counts over the token's bytes (``bytes.translate``,
``bytes.count``, a set of the steps), so that the check costs microseconds.
"""

import functools
import math
from operator import sub
from typing import Final

_LN2: Final = math.log(2)
_STEPS: Final = 511  # a step between two bytes: -255 ... 255


def _classes_table(classes: dict[str, bytes], other: bytes, rest: bytes) -> bytes:
    """A ``bytes.translate`` table: each byte to the class it is in."""
    table = bytearray(rest * 256)
    for printable in range(0x20, 0x7F):
        table[printable] = other[0]
    for members, name in classes.items():
        for char in members:
            table[ord(char)] = name[0]
    return bytes(table)


# The alphabets the uniform code knows, by the classes of characters they are made of:
# d digits, h a-f, l g-z, H A-F, U G-Z, p "+/", m "-_", e "=", o the other printable
# characters (space and punctuation), x anything else (a byte of UTF-8 beyond ASCII, a control).
_KINDS: Final = _classes_table(
    {
        "0123456789": b"d", "abcdef": b"h", "ghijklmnopqrstuvwxyz": b"l", "ABCDEF": b"H",
        "GHIJKLMNOPQRSTUVWXYZ": b"U", "+/": b"p", "-_": b"m", "=": b"e",
    },
    b"o",
    b"x",
)  # fmt: skip
_ALPHANUMERIC: Final = "dhlHU"
_ALPHABETS: Final = tuple(
    (frozenset(kinds.encode()), size)
    for kinds, size in (
        ("d", 10), ("dh", 16), ("dH", 16), ("hl", 26), ("HU", 26), ("dhl", 36), ("dHU", 36),
        ("hlHU", 52), (_ALPHANUMERIC, 62), (_ALPHANUMERIC + "pe", 65),
        (_ALPHANUMERIC + "me", 65), (_ALPHANUMERIC + "pmeo", 95), (_ALPHANUMERIC + "pmeox", 256),
    )
)  # fmt: skip
# The codes: the uniform one over each alphabet, steps, keys, classes.
_NAMING_BITS: Final = math.log2(len(_ALPHABETS) + 3)

# Keys of a US keyboard: row * 16 + column, 64 more with shift; the space bar where no key is.
# All below 128, as ASCII is: a step between two fits a byte (``_steps``).
_ROWS: Final = ("`1234567890-=", "qwertyuiop[]\\", "asdfghjkl;'", "zxcvbnm,./")
_SHIFTED: Final = ("~!@#$%^&*()_+", "QWERTYUIOP{}|", 'ASDFGHJKL:"', "ZXCVBNM<>?")
_KEYS_TABLE = bytearray(256)
for _shift, _rows in enumerate((_ROWS, _SHIFTED)):
    for _row, _chars in enumerate(_rows):
        for _column, _char in enumerate(_chars):
            _KEYS_TABLE[ord(_char)] = _shift * 64 + _row * 16 + _column
_KEYS_TABLE[ord(" ")] = 3 * 16 + 13
_KEYS: Final = bytes(_KEYS_TABLE)
_KEY_BITS: Final = math.log2(95)  # every printable ASCII character is a key

# The classes code: L lower case, U upper case, D digits, O the rest of printable ASCII.
_CLASSES: Final = _classes_table(
    {"abcdefghijklmnopqrstuvwxyz": b"L", "ABCDEFGHIJKLMNOPQRSTUVWXYZ": b"U", "0123456789": b"D"},
    b"O",
    b"O",  # not used: the code applies to printable ASCII only
)
_DIGIT_RUNS: Final = _classes_table({"D": b"1"}, b"0", b"0")  # of the classes: a digit or not
_LETTER_BITS: Final = math.log2(26)
_DIGIT_BITS: Final = math.log2(10)
_OTHER_BITS: Final = math.log2(33)
_COUNTING: Final = tuple(f"{digit}{digit + 1}" for digit in range(9))
_UP: Final = 128 + 1  # a step of one, as ``_steps`` has it


def estimated_bits(token: str, enough: float = math.inf) -> float:
    """Bits a guesser needs for ``token`` (see the module docstring): 0 for ''. Past
    ``enough``, maybe only a bound that is past it too (cheaper to tell)."""
    data = token.encode()
    if not data:
        return 0.0
    enough -= _NAMING_BITS
    kinds = frozenset(data.translate(_KINDS))
    best = len(data) * _uniform_bits(kinds)
    steps = _steps(data)
    best = min(best, _steps_bits(steps, 8.0, min(best, enough)))
    if b"x"[0] not in kinds:  # printable ASCII
        key_steps = _steps(data.translate(_KEYS))
        best = min(best, _steps_bits(key_steps, _KEY_BITS, min(best, enough)))
        ups = steps.count(_UP)
        classes = data.translate(_CLASSES)
        best = min(best, _classes_bits(token, classes, ups, min(best, enough)))
    return best + _NAMING_BITS


def _steps(data: bytes) -> bytes | list[int]:
    """The step from each byte to the next; of ASCII, as bytes (128 each more), worked out
    at once in one integer: no byte of the difference borrows from the next."""
    if not data.isascii():
        return list(map(sub, data[1:], data))
    count = len(data) - 1
    shifted = int.from_bytes(data[1:]) + _offsets(count) - int.from_bytes(data[:-1])
    return shifted.to_bytes(count)


@functools.cache
def _offsets(count: int) -> int:
    """128 in each of ``count`` bytes."""
    return int.from_bytes(b"\x80" * count)


@functools.cache
def _uniform_bits(kinds: frozenset[int]) -> float:
    """Bits a character of the smallest alphabet holding these kinds of character."""
    return min(math.log2(size) for allowed, size in _ALPHABETS if kinds <= allowed)


@functools.cache
def _steps_bound(count: int, distinct: int) -> tuple[float, float]:
    """What ``distinct`` new steps cost, and at least their order among ``count``:
    log2(n! / (n - k)!), as if every repeat were of one step."""
    news = (math.lgamma(_STEPS + 1) - math.lgamma(_STEPS + 1 - distinct)) / _LN2
    return news, (math.lgamma(count + 1) - math.lgamma(count - distinct + 1)) / _LN2


def _steps_bits(steps: bytes | list[int], first: float, enough: float) -> float:
    """The first byte's ``first`` bits, then each step to the next byte by an adaptive code
    (a step seen ``c`` times in the ``n`` so far has probability ``c / (n + 1)``, a new one
    ``1 / (n + 1)`` shared among the steps not seen yet). Past ``enough``, maybe a bound."""
    news, order = _steps_bound(len(steps), len(set(steps)))
    if first + news + order >= enough:
        return first + news + order
    seen: dict[int, int] = {}
    for step in steps:
        seen[step] = seen.get(step, 0) + 1
    repeats = sum(math.lgamma(times) for times in seen.values())
    return first + news + (math.lgamma(len(steps) + 1) - repeats) / _LN2


def _classes_bits(token: str, classes: bytes, ups: int, enough: float) -> float:
    """Each character's class (lower, upper, digit, other): the first's 2 bits, then whether
    it changes, adaptively, and to which of the other three; then the character among its
    class's, uniform, but for a digit one more than the digit before it, adaptively. Past
    ``enough``, maybe a bound (``ups``: steps of one, of which those digits are)."""
    length, digits = len(classes), classes.count(b"D")
    letters = classes.count(b"L") + classes.count(b"U")
    uniform = letters * _LETTER_BITS + digits * _DIGIT_BITS
    uniform += (length - letters - digits) * _OTHER_BITS
    if 2.0 + uniform - ups * _DIGIT_BITS >= enough:
        return 2.0 + uniform - ups * _DIGIT_BITS
    counting = sum(map(token.count, _COUNTING))
    uniform -= counting * _DIGIT_BITS
    changes = sum(map(int.__ne__, classes[1:], classes))
    runs = classes.translate(_DIGIT_RUNS)
    after_digits = digits - runs.count(b"01") - (runs[:1] == b"1")
    return (
        2.0
        + _adaptive(changes, length - 1 - changes) + changes * math.log2(3)
        + uniform + _adaptive(counting, after_digits - counting)
    )  # fmt: skip


def _adaptive(ones: int, zeros: int) -> float:
    """Bits of a sequence of ``ones`` ones and ``zeros`` zeros under the Krichevsky-Trofimov
    code (each count starts at one half)."""
    half = math.lgamma(0.5)
    return (
        math.lgamma(ones + zeros + 1.0) - math.lgamma(ones + 0.5) - math.lgamma(zeros + 0.5)
        + 2 * half
    ) / _LN2  # fmt: skip
