"""Which member gets a shared subscription's copy (``broker.cluster.shared_turns``): pure
logic, one member per group cluster-wide (MQTT 5.0 §4.8.2). The cluster cases are
tests/cluster/test_shared_kill.py and test_handover.py."""

import pytest

from broker.cluster import shared_turns
from broker.cluster.moves import MovedGroups
from broker.cluster.shared_turns import SharedTurns

GROUP = ("backends", "devices/+/telemetry")
OTHER = ("billing", "devices/+/telemetry")


def test_each_group_takes_turns_among_its_members_in_order() -> None:
    turns = SharedTurns()
    remote = {GROUP: ["c", "a", "b"], OTHER: ["b"]}
    chosen = [turns.choose(remote, (), None, 0.0, ()) for _ in range(4)]
    assert chosen[0] == {"a": [GROUP], "b": [OTHER]}
    assert [next(m for m, gs in c.items() if GROUP in gs) for c in chosen] == ["a", "b", "c", "a"]


def test_a_group_served_here_is_not_sent_to_another_member() -> None:
    assert SharedTurns().choose({GROUP: ["a"], OTHER: ["b"]}, {GROUP}, None, 0.0, ()) == {
        "b": [OTHER]
    }


def test_a_gone_member_gets_the_copy_only_when_no_other_is_listed() -> None:
    turns = SharedTurns()
    assert [turns.choose({GROUP: ["a", "b"]}, (), None, 0.0, {"a"}) for _ in range(2)] == [
        {"b": [GROUP]}
    ] * 2
    assert turns.choose({GROUP: ["a"]}, (), None, 0.0, {"a"}) == {"a": [GROUP]}


def test_not_the_member_a_session_of_the_group_just_left() -> None:
    moved = MovedGroups(10.0)
    moved.moved([GROUP], "a", "b", visible=40, now=0.0)
    turns = SharedTurns()
    assert [turns.choose({GROUP: ["a", "b"]}, (), moved, 1.0, ()) for _ in range(2)] == [
        {"b": [GROUP]}
    ] * 2


def test_the_turns_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_turns, "TURNS_KEPT", 2)
    turns = SharedTurns()
    two = {("g", str(n)): ["a", "b"] for n in range(2)}
    assert turns.choose(two, (), None, 0.0, ()) == {"a": list(two)}
    assert turns.choose(two, (), None, 0.0, ()) == {"b": list(two)}  # remembered
    three = {("g", str(n)): ["a", "b"] for n in range(3)}
    assert turns.choose(three, (), None, 0.0, ()) == {"a": list(three)}
    # Three remembered, past the bound: each message now starts every turn over.
    assert turns.choose(three, (), None, 0.0, ()) == {"a": list(three)}
