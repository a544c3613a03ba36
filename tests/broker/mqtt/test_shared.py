"""Shared subscriptions (MQTT 5.0 §4.8.2): groups found by topic, members chosen round robin."""

from collections import Counter

from broker.mqtt.session import Subscription
from broker.mqtt.shared import Rank, SharedGroup, SharedSubscriptions, naming

QOS1 = Subscription(1)


def ready(_member: str, _sub: Subscription) -> int | None:
    return 0


def ranked(ranks: dict[str, int | None]) -> Rank[str]:
    return lambda member, _sub: ranks[member]


def picks(group: SharedGroup[str], count: int, rank: Rank[str] = ready) -> list[str]:
    chosen: list[str] = []
    for _ in range(count):
        picked = group.pick(rank)
        assert picked is not None
        chosen.append(picked[0])
    return chosen


def group_of(*members: str) -> SharedGroup[str]:
    group: SharedGroup[str] = SharedGroup("g", "a/#")
    for member in members:
        group.add(member, QOS1)
    return group


def test_round_robin_gives_each_member_its_share_in_turn() -> None:
    group = group_of("a", "b", "c")
    assert picks(group, 7) == ["a", "b", "c", "a", "b", "c", "a"]


def test_a_member_that_cannot_take_it_now_is_passed_over_for_the_next() -> None:
    group = group_of("a", "b", "c")
    busy_b = ranked({"a": 0, "b": 1, "c": 0})
    assert picks(group, 4, busy_b) == ["a", "c", "a", "c"]


def test_when_every_member_is_busy_the_turn_still_goes_round() -> None:
    group = group_of("a", "b")
    assert picks(group, 4, ranked({"a": 1, "b": 1})) == ["a", "b", "a", "b"]


def test_the_best_rank_wins_over_the_turn() -> None:
    group = group_of("away", "busy")
    rank = ranked({"away": 2, "busy": 1})
    assert picks(group, 3, rank) == ["busy", "busy", "busy"]


def test_a_member_that_must_not_get_it_is_never_chosen() -> None:
    group = group_of("a", "denied")
    assert picks(group, 3, ranked({"a": 1, "denied": None})) == ["a", "a", "a"]
    assert group_of("denied").pick(ranked({"denied": None})) is None


def test_leaving_keeps_the_turn_fair() -> None:
    group = group_of("a", "b", "c")
    assert picks(group, 2) == ["a", "b"]  # c's turn
    assert group.remove("a")
    assert picks(group, 3) == ["c", "b", "c"]
    assert group.remove("c")  # it had the turn: it passes to the one after it, wrapping round
    assert picks(group, 2) == ["b", "b"]
    assert not group.remove("c")
    assert group.remove("b")
    assert group.pick(ready) is None


def test_joining_again_changes_the_options_not_the_order() -> None:
    group = group_of("a", "b")
    assert not group.add("a", Subscription(2))
    picked = group.pick(ready)
    assert picked == ("a", Subscription(2))
    assert picks(group, 3) == ["b", "a", "b"]


def test_one_copy_per_group_and_per_filter() -> None:
    shared: SharedSubscriptions[str] = SharedSubscriptions()
    assert shared.add("g1", "jobs/#", "a", QOS1)
    assert shared.add("g1", "jobs/#", "b", QOS1)
    assert not shared.add("g1", "jobs/#", "b", QOS1)
    assert shared.add("g2", "jobs/+", "c", QOS1)
    assert shared.add("g1", "jobs/+", "a", QOS1)  # same share name, another filter: a group
    assert len(shared) == 4
    groups = list(shared.match("jobs/1"))
    assert sorted((g.name, g.topic_filter) for g in groups) == [
        ("g1", "jobs/#"), ("g1", "jobs/+"), ("g2", "jobs/+"),
    ]  # fmt: skip
    assert list(shared.match("other")) == []
    assert [g.topic_filter for g in shared.match("jobs")] == ["jobs/#"]  # §4.7.1.2


def test_groups_follow_the_wildcard_rules() -> None:
    shared: SharedSubscriptions[str] = SharedSubscriptions()
    shared.add("g", "#", "a", QOS1)
    assert list(shared.match("$SYS/x")) == []  # §4.7.2
    shared.add("g", "$SYS/#", "a", QOS1)
    assert [g.topic_filter for g in shared.match("$SYS/x")] == ["$SYS/#"]


def test_an_empty_group_is_forgotten() -> None:
    shared: SharedSubscriptions[str] = SharedSubscriptions()
    shared.add("g", "a/b", "m", QOS1)
    assert shared.remove("g", "a/b", "m")
    assert not shared.remove("g", "a/b", "m")
    assert not shared.remove("nope", "a/b", "m")
    assert len(shared) == 0
    assert shared.group("g", "a/b") is None
    assert list(shared.match("a/b")) == []
    assert not shared._trie._root.children  # the trie's nodes went with it


def test_messages_spread_evenly_over_many_members() -> None:
    group = group_of(*(f"m{i}" for i in range(7)))
    counts = Counter(picks(group, 700))
    assert set(counts.values()) == {100}


def test_groups_are_counted_against_each_owner_with_a_member_in_them_once() -> None:
    # Members "d1/a", "d1/b" belong to d1, "d2/a" to d2.
    shared: SharedSubscriptions[str] = SharedSubscriptions(lambda member: member.split("/")[0])
    one, two = naming("g", "jobs/#"), naming("longer", "jobs/+")
    shared.add("g", "jobs/#", "d1/a", QOS1)
    shared.add("g", "jobs/#", "d1/b", QOS1)  # a second member of d1: counted once
    shared.add("longer", "jobs/+", "d1/a", QOS1)
    assert (shared.named_by("d1"), shared.named_by("d2"), shared.named) == (one + two, 0, one + two)
    assert shared.holds("d1", "g", "jobs/#")
    assert not shared.holds("d2", "g", "jobs/#")
    shared.add("g", "jobs/#", "d2/a", QOS1)  # joining counts against d2 too
    assert (shared.named_by("d1"), shared.named_by("d2"), shared.named) == (
        one + two,
        one,
        one + two,
    )
    shared.remove("g", "jobs/#", "d1/a")
    assert shared.named_by("d1") == one + two  # d1/b is still in it
    shared.remove("g", "jobs/#", "d1/b")
    assert shared.named_by("d1") == two
    assert not shared.holds("d1", "g", "jobs/#")
    assert shared.named == one + two  # the group stays: d2's member is in it, against d2
    shared.remove("longer", "jobs/+", "d1/a")
    shared.remove("g", "jobs/#", "d2/a")
    assert (shared.named_by("d1"), shared.named_by("d2"), shared.named) == (0, 0, 0)
    assert not shared._owned
    assert not shared._owned_named


def test_the_turn_is_whom_pick_would_choose_of_members_that_can_take_it() -> None:
    """``turn`` then ``passed`` (the router's way when that member can take the message)
    choose as ``pick`` does, through joins, new options, leaves and ranked picks."""
    by_pick, by_turn = group_of("a", "b", "c"), group_of("a", "b", "c")
    steps: list[tuple[str, str]] = [
        ("ready", ""), ("ready", ""), ("add", "d"), ("ready", ""), ("ready", ""),
        ("options", "a"), ("ready", ""), ("ranked", "b"), ("remove", "c"), ("ready", ""),
        ("remove", "a"), ("ready", ""), ("ready", ""), ("add", "a"), ("ranked", "d"),
        ("remove", "b"), ("remove", "d"), ("ready", ""), ("ready", ""),
    ]  # fmt: skip
    for step, member in steps:
        if step == "ready":
            turn = by_turn.turn
            by_turn.passed()
            assert turn == by_pick.pick(ready)
        elif step == "ranked":  # only ``member`` can take it now: both rank the members
            rank = ranked({m: 0 if m == member else 1 for m in by_pick.members})
            assert by_pick.pick(rank) == by_turn.pick(rank)
        elif step == "remove":
            assert by_pick.remove(member)
            assert by_turn.remove(member)
        else:
            options = Subscription(2 if step == "options" else 1)
            by_pick.add(member, options)
            by_turn.add(member, options)
        assert by_turn.turn == by_pick.turn


def test_the_turn_has_the_options_its_member_joined_again_with() -> None:
    group = group_of("a", "b")
    group.add("a", Subscription(2))
    assert group.turn == ("a", Subscription(2))


def test_an_empty_group_has_no_turn() -> None:
    group = group_of("a")
    assert group.turn == ("a", QOS1)
    group.remove("a")
    assert not hasattr(group, "turn")
    group.add("b", QOS1)
    assert group.turn == ("b", QOS1)
