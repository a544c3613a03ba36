"""Which members' barriers are waited for past ``HOLD_WITHIN``, and until when: a live member
(its heartbeats keep coming) up to the hand-over window from the asking, one that died once
its next heartbeat is overdue, one gone at once; and the same for a replay's barriers
(``Awaited``), where a member heard from is bound by ``READ_WITHIN`` instead."""

import pytest

from broker.cluster.arrivals import HOLD_WITHIN
from broker.cluster.barriers import READ_WITHIN, Awaited
from broker.cluster.liveness import LATE_BEAT, Heard, sort_out, unheard, waited_until

WINDOW = 10.0  # cluster_handover_window's default
INTERVAL = 2.0  # cluster_heartbeat_interval's default
ASKED = 100.0  # loop time the barriers were asked for
CHECK = ASKED + HOLD_WITHIN


def test_a_member_not_live_is_not_waited_for() -> None:
    assert waited_until(ASKED, None, WINDOW) is None
    assert unheard("c") is None


def test_a_member_heard_after_the_asking_is_waited_for_until_its_next_beat_is_overdue() -> None:
    heard = Heard(at=ASKED + 1.0, interval=INTERVAL)
    assert waited_until(ASKED, heard, WINDOW) == ASKED + 1.0 + LATE_BEAT * INTERVAL


def test_a_member_that_keeps_beating_is_waited_for_up_to_the_window_and_no_longer() -> None:
    beats = [Heard(at=ASKED + n * INTERVAL, interval=INTERVAL) for n in range(1, 8)]
    untils = [waited_until(ASKED, heard, WINDOW) for heard in beats]
    assert untils[:3] == [ASKED + (n + LATE_BEAT) * INTERVAL for n in range(1, 4)]
    assert untils[-1] == ASKED + WINDOW


def test_a_member_killed_just_before_the_asking_is_given_up_soon_after_hold_within() -> None:
    """Its last beat came just before: waited for until the next one is overdue, half an
    interval after it was due, then given up."""
    heard = Heard(at=ASKED - 0.1, interval=INTERVAL)
    until = waited_until(ASKED, heard, WINDOW)
    assert until == pytest.approx(ASKED - 0.1 + LATE_BEAT * INTERVAL)
    assert until is not None
    assert until - ASKED < 2 * HOLD_WITHIN


def test_a_member_killed_long_before_is_given_up_at_hold_within() -> None:
    heard = Heard(at=ASKED - 2.0, interval=INTERVAL)
    late, again = sort_out(["c"], ASKED, CHECK, lambda _m: heard, WINDOW)
    assert (late, again) == (["c"], None)


def test_of_the_missing_members_the_live_ones_are_waited_for_the_others_given_up() -> None:
    heard = {
        "a": Heard(at=CHECK - 0.5, interval=INTERVAL),  # beating
        "c": Heard(at=CHECK - 0.2, interval=5.0),  # beating, slower
        "d": Heard(at=ASKED - 3.0, interval=INTERVAL),  # silent
    }
    late, again = sort_out(["a", "c", "d", "e"], ASKED, CHECK, heard.get, WINDOW)
    assert late == ["d", "e"]  # e: gone
    assert again == CHECK - 0.5 + LATE_BEAT * INTERVAL  # a's next beat overdue, the first


def test_past_the_window_no_member_is_waited_for() -> None:
    heard = Heard(at=ASKED + WINDOW, interval=INTERVAL)
    assert sort_out(["c"], ASKED, ASKED + WINDOW, lambda _m: heard, WINDOW) == (["c"], None)


def test_a_window_shorter_than_hold_within_waits_hold_within_only() -> None:
    heard = Heard(at=CHECK, interval=INTERVAL)
    assert sort_out(["c"], ASKED, CHECK, lambda _m: heard, 0.5) == (["c"], None)


# --- a replay's barriers ------------------------------------------------------------------


def awaited(heard: dict[str, Heard]) -> Awaited:
    return Awaited(("", "b 1"), ["b", "c", "d"], "b", ASKED, window=WINDOW, heard=heard.get)


def test_a_replay_waits_for_a_live_member_not_heard_from_past_hold_within() -> None:
    heard = {"c": Heard(at=CHECK - 0.1, interval=INTERVAL), "b": Heard(CHECK, INTERVAL)}
    waiting = awaited(heard)
    waiting.read("b", ASKED + 0.1)  # this member's own, read
    waiting.give_up(CHECK)
    assert waiting.left(CHECK) == pytest.approx(LATE_BEAT * INTERVAL - 0.1)  # c; d given up
    heard["c"] = Heard(at=CHECK + 2.0, interval=INTERVAL)
    waiting.give_up(CHECK + 2.9)  # c's beat came, and c is waited for still
    assert waiting.left(CHECK + 2.9) == pytest.approx(2.0 + LATE_BEAT * INTERVAL - 2.9)
    waiting.read("c", CHECK + 3.0)  # its barrier among the parked frames
    assert waiting.left(CHECK + 3.0) is None


def test_a_replay_gives_a_live_member_up_at_the_window() -> None:
    heard = {"c": Heard(at=ASKED + WINDOW - 0.5, interval=INTERVAL)}
    waiting = awaited(heard)
    waiting.read("b", ASKED)
    waiting.give_up(CHECK)  # d given up
    waiting.give_up(ASKED + WINDOW)
    assert waiting.left(ASKED + WINDOW) is None


def test_a_replay_bounds_a_member_heard_from_by_read_within_live_or_not() -> None:
    """A direct barrier says the parked one is queued behind its frames: that is bound by
    READ_WITHIN, not by the member being live."""
    heard = {m: Heard(at=ASKED + 6.0, interval=INTERVAL) for m in ("b", "c", "d")}
    waiting = awaited(heard)
    waiting.answered("c", ASKED + 0.5)
    waiting.read("b", ASKED)
    waiting.read("d", ASKED + 0.5)
    waiting.give_up(ASKED + 0.5 + READ_WITHIN)
    assert waiting.left(ASKED + 0.5 + READ_WITHIN) is None
