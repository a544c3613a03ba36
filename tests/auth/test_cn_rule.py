"""A CA's CN rule matched by RE2: linear time whatever the rule, bounded rule and CN, and
a stored rule RE2 cannot use refusing that CA's devices with its reason."""

import datetime as dt
import time

import pytest

from auth.chain import ChainMatch, TrustAnchor, match_chain
from auth.cn_rule import (
    MAX_CN_LENGTH,
    MAX_CN_RULE_LENGTH,
    CnRuleUnusable,
    NoMatch,
    cn_rule_problem,
    name_from_cn,
)
from auth.decision import Decision, Reason
from tests.certgen import issue

CA = issue("Fleet CA", ca=True)
# Each backtracks exponentially in Python's re on a CN of 'a's with no match at the end: at
# 40 characters, hours of one core on the broker's event loop.
CATASTROPHIC = [r"(a+)+b", r"(a|aa)*c", r"(a*)*b", r"(?:a|a)*b", r"(\w+\w*)+!"]


def anchor(cn_regex: str | None) -> TrustAnchor:
    return TrustAnchor("ca-1", "fleet", CA.cert, cn_regex=cn_regex)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_patterns_that_backtrack_in_python_match_in_linear_time(pattern: str) -> None:
    assert cn_rule_problem(pattern) is None
    started = time.perf_counter()
    for _ in range(100):
        assert isinstance(name_from_cn(pattern, "a" * MAX_CN_LENGTH), NoMatch)
    # Python's re takes about a second at 24 characters and doubles with each one more.
    assert time.perf_counter() - started < 0.5


def test_group_one_or_the_whole_cn_names_the_device() -> None:
    assert name_from_cn(r"device-(\w+)\.fleet", "device-abc.fleet") == "abc"
    assert name_from_cn(r"sensor-[0-9]+", "sensor-17") == "sensor-17"
    assert name_from_cn(r"(?:x-)?(é.)", "x-éü") == "éü"  # UTF-8 in and out
    assert isinstance(name_from_cn(r"sensor-[0-9]+", "sensor-17x"), NoMatch)  # matched whole
    assert name_from_cn(r"a(b)?", "a") == ""  # group 1 took no part


@pytest.mark.parametrize(
    ("pattern", "phrase"),
    [
        (r"(a)\1", "is not a valid regular expression for RE2 (invalid escape sequence: \\1)"),
        (r"(?=dev)(.+)", "(invalid perl operator: (?=)"),
        (r"(?<!x)dev", "invalid perl operator"),
        (r"dev-(.+)\Z", "invalid escape sequence: \\Z"),
        ("device-(", "missing )"),
        ("(x{100}){100}", "invalid repetition size: {100}"),
        (r".{1000}" * 30, "(pattern too large - compile failed)"),
        ("x" * (MAX_CN_RULE_LENGTH + 1), f"is 257 characters long, at most {MAX_CN_RULE_LENGTH}"),
    ],
)
def test_rules_re2_cannot_use_are_refused_in_one_line(pattern: str, phrase: str) -> None:
    problem = cn_rule_problem(pattern)
    assert problem is not None
    assert problem.startswith("CN rule '")
    assert phrase in problem
    assert "\n" not in problem
    assert len(problem) < 300  # a pasted file is not echoed whole


def test_a_stored_rule_re2_refuses_refuses_that_cas_devices_with_its_reason() -> None:
    # Stored before rules were checked: Python's lookahead syntax.
    rule = r"(?=device-)device-(.+)"
    assert isinstance(name_from_cn(rule, "device-1"), CnRuleUnusable)
    leaf = issue("device-1", issuer=CA)
    result = match_chain(leaf.cert, [], [anchor(rule)], now=now())
    assert isinstance(result, Decision)
    assert result.reason is Reason.NAME_NOT_ALLOWED
    assert "CA 'fleet' has an unusable CN rule, so its devices are refused" in result.detail


def test_a_cn_past_rfc_5280s_bound_is_refused_before_any_rule() -> None:
    # RFC 5280 Appendix A: ub-common-name 64.
    long_cn = issue("a" * (MAX_CN_LENGTH + 1), issuer=CA)
    # cryptography warns as it first reads such a name; the broker goes on all the same.
    with pytest.warns(UserWarning, match="length must be >= 1 and <= 64"):
        results = [match_chain(long_cn.cert, [], [anchor(r)], now=now()) for r in (None, "(a+)+b")]
    for result in results:
        assert isinstance(result, Decision)
        assert result.reason is Reason.NAME_NOT_ALLOWED
        assert "the CN is 65 characters long, RFC 5280 allows at most 64" in result.detail
    fits = issue("a" * MAX_CN_LENGTH, issuer=CA)
    assert isinstance(match_chain(fits.cert, [], [anchor(None)], now=now()), ChainMatch)
