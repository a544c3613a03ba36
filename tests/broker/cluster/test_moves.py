"""Which members may get a shared subscription's copy while a member session of it moves
between cluster members (``broker.cluster.moves``): pure logic. The cluster case it keeps in
order is tests/cluster/test_handover.py (``mqtt5-qos2-shared-publisher-on-c``)."""

import pytest

from broker.cluster import moves
from broker.cluster.moves import MovedGroups

GROUP = ("backends", "devices/+/telemetry")
OTHER = ("billing", "devices/+/telemetry")
WINDOW = 10.0


def test_the_member_a_session_left_is_passed_over_while_the_one_it_joined_is_listed() -> None:
    """Between a member's barrier and the deletion of the old member's entry reaching its
    table, a copy given to the old member would be sent on one hop behind later copies given
    to the new one directly (MQTT 5.0 §4.6)."""
    groups = MovedGroups(WINDOW)
    groups.moved([GROUP], "a", "b", visible=40, now=0.0)
    assert groups.candidates(GROUP, ["a", "b"], now=1.0) == ["b"]
    assert groups.candidates(GROUP, ["a", "b", "c"], now=1.0) == ["b", "c"]
    assert groups.candidates(OTHER, ["a", "b"], now=1.0) == ["a", "b"]  # not that group's


def test_before_the_new_member_is_listed_the_old_one_still_gets_the_copy() -> None:
    """A table that does not list the new member yet routes to the old one, which sends the
    copy on (behind it comes this member's barrier): never to nobody."""
    groups = MovedGroups(WINDOW)
    groups.moved([GROUP], "a", "b", visible=40, now=0.0)
    assert groups.candidates(GROUP, ["a"], now=1.0) == ["a"]
    assert groups.candidates(GROUP, ["a", "c"], now=1.0) == ["a", "c"]


def test_a_move_back_supersedes_the_one_before() -> None:
    """A to B, then B to A: the member it left last is passed over, never both."""
    groups = MovedGroups(WINDOW)
    groups.moved([GROUP], "a", "b", visible=40, now=0.0)
    groups.moved([GROUP], "b", "a", visible=55, now=1.0)
    assert groups.candidates(GROUP, ["a", "b"], now=2.0) == ["a"]
    groups.moved([GROUP], "a", "b", visible=40, now=2.0)  # an old notice, late: ignored
    assert groups.candidates(GROUP, ["a", "b"], now=2.0) == ["a"]


def test_a_move_is_forgotten_after_the_window() -> None:
    """The old member sends on for ``cluster_handover_window`` seconds, then lists nothing
    for the session: a member it still lists for the group has members of its own there."""
    groups = MovedGroups(WINDOW)
    groups.moved([GROUP], "a", "b", visible=40, now=0.0)
    assert groups.candidates(GROUP, ["a", "b"], now=WINDOW) == ["a", "b"]
    assert len(groups) == 0


def test_no_more_than_its_bound_of_groups_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moves, "MOVES_KEPT", 3)
    groups = MovedGroups(WINDOW)
    for index in range(5):
        groups.moved([(f"g{index}", "t")], "a", "b", visible=index, now=0.0)
    assert len(groups) == 3
    assert groups.candidates(("g0", "t"), ["a", "b"], now=1.0) == ["a", "b"]  # the oldest went
    assert groups.candidates(("g4", "t"), ["a", "b"], now=1.0) == ["b"]


def test_a_move_away_from_a_gone_member_lasts_while_the_table_lists_it() -> None:
    """A dead member's entries stay until whoever took its sessions read what was parked
    for it; a copy parked for it after that would reach nobody. Past the window, as long as
    the table lists it, it is still passed over; once its entries are gone, the move ends."""
    groups = MovedGroups(WINDOW)
    groups.moved([GROUP], "a", "b", visible=40, now=0.0, gone=True)
    assert groups.candidates(GROUP, ["a", "b"], now=WINDOW + 50) == ["b"]
    assert groups.candidates(GROUP, ["b"], now=WINDOW + 51) == ["b"]  # a's entries deleted
    assert len(groups) == 0
    groups.moved([GROUP], "a", "b", visible=41, now=0.0, gone=True)
    assert groups.candidates(GROUP, ["a", "b"], now=moves.GONE_KEPT) == ["a", "b"]


def test_a_restarted_member_taking_its_own_session_back_is_not_passed_over_for_long() -> None:
    groups = MovedGroups(WINDOW)
    groups.moved([GROUP], "a", "a", visible=40, now=0.0, gone=True)
    assert groups.candidates(GROUP, ["a", "b"], now=WINDOW + 1) == ["a", "b"]
