"""Aggregating repeated refusals: the counts, the intervals and the bound on addresses."""

from broker.repeats import OTHERS, RepeatCounter, Summary


def test_the_first_few_are_reported_and_the_rest_summed_per_interval() -> None:
    counter = RepeatCounter(repeats=2, interval=10.0)
    assert [counter.report("10.0.0.1", "unknown_token", 0.0) for _ in range(5)] == [
        True, True, False, False, False,
    ]  # fmt: skip
    assert counter.report("10.0.0.1", "unknown_key", 1.0)  # another reason counts apart
    assert counter.due(9.0) == []
    assert counter.due(10.0) == [Summary("10.0.0.1", "unknown_token", 3, 10.0)]
    assert counter.report("10.0.0.1", "unknown_token", 10.5)  # a new interval
    assert not counter.pending()


def test_addresses_past_the_bound_share_one_count() -> None:
    counter = RepeatCounter(repeats=1, interval=10.0, max_keys=3)
    reported = [counter.report(f"10.0.0.{n}", "unknown_token", 0.0) for n in range(10)]
    assert reported == [True] * 3 + [False] * 7
    assert len(counter) == 4
    assert counter.due(10.0) == [Summary(OTHERS, "unknown_token", 7, 10.0)]
