"""When a member cut off from NATS fences itself off: strictly before any other member may
take it as gone, with one heartbeat interval left for closing its clients."""

import pytest

from broker.cluster.fence import (
    FENCE_AFTER_BEATS,
    fence_deadline,
    last_chance,
    must_fence,
    seen_gone_at,
)
from broker.cluster.members import MISSED_BEATS

INTERVALS = [0.1, 0.5, 2.0, 5.0, 60.0]  # cluster_heartbeat_interval's range and default


@pytest.mark.parametrize("interval", INTERVALS)
def test_a_member_fences_itself_one_interval_before_the_others_may_act(interval: float) -> None:
    renewed = 1000.0
    assert fence_deadline(renewed, interval) < seen_gone_at(renewed, interval)
    assert seen_gone_at(renewed, interval) - fence_deadline(renewed, interval) == pytest.approx(
        interval
    )


@pytest.mark.parametrize("interval", INTERVALS)
def test_a_member_renewing_on_time_never_fences(interval: float) -> None:
    """Heartbeats begin one interval apart: one written within its interval, or begun
    late (after a stall) and written half an interval later, is within the deadline."""
    renewed = 50.0
    next_beat = renewed + interval + 0.5 * interval
    assert not must_fence(next_beat, renewed, interval)


@pytest.mark.parametrize("interval", INTERVALS)
def test_a_member_silent_for_the_fencing_delay_fences(interval: float) -> None:
    renewed = 50.0
    deadline = fence_deadline(renewed, interval)
    assert not must_fence(deadline - 1e-6, renewed, interval)
    assert must_fence(deadline, renewed, interval)
    assert must_fence(renewed + 10 * interval, renewed, interval)  # a late timer: at once


def test_the_fencing_delay_needs_the_others_to_wait_more_than_one_beat() -> None:
    assert MISSED_BEATS >= 2
    assert FENCE_AFTER_BEATS == MISSED_BEATS - 1


@pytest.mark.parametrize("interval", INTERVALS)
def test_a_write_under_way_is_waited_for_until_half_an_interval_before_the_others_act(
    interval: float,
) -> None:
    renewed = 50.0
    chance = last_chance(renewed, interval)
    assert fence_deadline(renewed, interval) < chance < seen_gone_at(renewed, interval)
    assert seen_gone_at(renewed, interval) - chance == pytest.approx(interval / 2)
