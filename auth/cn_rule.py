"""A trusted CA's CN rule (``cnRegex``): which device name a leaf's CN gives, in bounded time.

The rule runs on the broker's event loop at every connect of a CA-signed device, on a CN the
device chose. Python's ``re`` backtracks: ``(a+)+b`` or ``(a|aa)*c`` against forty 'a's holds
the loop for minutes, and every device of the node stalls with it. Two ways out were weighed:

- refuse, when the rule is stored, the Python patterns that can backtrack badly. That subset is
  hard to draw: nested quantifiers are only one shape; ``(a|aa)*`` (overlapping alternatives)
  and ``a*a*a*a*a*b`` (polynomial) are others, and one shape missed is an outage;
- match with RE2 (Google's engine, PyPI ``google-re2``): it never backtracks, so every pattern
  it accepts matches in time linear in the CN. The bound is the engine's, not our analysis's.

RE2 it is. Its cost: no backreferences or lookarounds, ``\\Z`` is spelt ``\\z``, and ``\\d``,
``\\w``, ``\\s`` are ASCII only. A rule RE2 cannot compile is refused with RE2's one-line reason
when it is stored (API, web UI and CLI all call ``cn_rule_problem``); one stored before this
check (it used Python's syntax) makes ``name_from_cn`` return its problem, so that CA's devices
are refused with that reason instead of the broker failing (broker/authn.py logs it once).

Bounds besides the engine's: the rule's length (``MAX_CN_RULE_LENGTH``), RE2's compiled-program
memory (``_MAX_PROGRAM_BYTES``) and the CN's length (``MAX_CN_LENGTH``, RFC 5280's own). Pure:
no I/O; the module ``re2`` is untyped, so it is used here only, behind typed functions.
"""

import functools
from dataclasses import dataclass
from typing import Any, Final

import re2

from nanoiot.text import printable

# RFC 5280 Appendix A: ub-common-name INTEGER ::= 64. A longer CN breaks the profile; it is
# refused before any rule sees it.
MAX_CN_LENGTH: Final = 64
# A rule that names devices fits on a line ("(?:plant-[0-9]+-)?(sensor-[a-z0-9]+)" is 38);
# four times that is room for an odd PKI while a pasted file or a generated monster is refused.
MAX_CN_RULE_LENGTH: Final = 256
# RE2's compiled program for a 256-character rule is a few KiB, except for counted repeats
# ("(x{100}){100}"), which RE2 refuses ("pattern too large") past this much memory.
_MAX_PROGRAM_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class CnRule:
    """A rule RE2 compiled; ``groups`` is how many capturing groups it has."""

    pattern: str
    groups: int
    _compiled: Any


@dataclass(frozen=True)
class NoMatch:
    """The CN does not follow the rule."""


@dataclass(frozen=True)
class CnRuleUnusable:
    """A stored rule that RE2 cannot compile (stored before the rule was checked)."""

    problem: str


def cn_rule_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a CA's CN rule, as one line naming it, or None."""
    compiled = _compile(pattern)
    if isinstance(compiled, str):
        return f"CN rule '{printable(pattern, 60)}' {compiled}"
    return None


def name_from_cn(pattern: str, cn: str) -> str | NoMatch | CnRuleUnusable:
    """The device name ``cn`` gives under ``pattern``: group 1, or the whole CN when the rule
    has no group. The caller bounds ``cn`` to ``MAX_CN_LENGTH`` first."""
    compiled = _compile(pattern)
    if isinstance(compiled, str):
        return CnRuleUnusable(f"CN rule '{printable(pattern, 60)}' {compiled}")
    match = compiled._compiled.fullmatch(cn)
    if match is None:
        return NoMatch()
    name = match.group(1) if compiled.groups else match.group(0)
    return str(name) if name is not None else ""


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> CnRule | str:
    """The compiled rule or why not (a predicate); cached: each connect would compile it."""
    if len(pattern) > MAX_CN_RULE_LENGTH:
        return f"is {len(pattern)} characters long, at most {MAX_CN_RULE_LENGTH} are allowed"
    options = re2.Options()
    options.log_errors = False  # the reason is returned; RE2 would also print it to stderr
    options.max_mem = _MAX_PROGRAM_BYTES
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        return (
            f"is not a valid regular expression for RE2 ({printable(text, 80)}); RE2 matches "
            "in linear time and has no backreferences or lookarounds"
        )
    return CnRule(pattern, int(compiled.groups), compiled)
