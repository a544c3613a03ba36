"""Which member settles a departure, on the machine's NATS: the one its entry names, also
when that member's own create was made at NATS but its answer lost."""

import asyncio
from collections.abc import Callable

import pytest

from broker.cluster.departure import (
    DONE,
    creator,
    departure_done,
    departure_won,
    left_unsettled,
    owner,
    waiting,
)
from broker.cluster.link import ClusterLink
from broker.cluster.wills import DEPARTURES
from nanoiot.settings import Settings


def test_each_process_creates_departures_with_a_value_of_its_own() -> None:
    first, second = creator("b.1"), creator("b.1")  # a restarted process may get the same pid
    assert first != second
    assert first.startswith(b"b.1 ")
    assert DONE not in (first, second)


async def test_the_departures_entry_says_who_won(
    cluster_settings: Callable[..., Settings],
) -> None:
    link = await ClusterLink.connect(cluster_settings())
    try:
        departures = await link.key_value(DEPARTURES)
        b, c = creator("b.1"), creator("c.1")
        assert await departure_won(departures, "a.41", b) is True
        # B's create again, as when its first answer was lost: the entry names B.
        assert await departure_won(departures, "a.41", b) is True
        assert await departure_won(departures, "a.41", c) is False
        await departures.put("a.41", DONE)
        assert await departure_won(departures, "a.41", b) is False  # done: nothing left
    finally:
        await link.close()


def test_a_departures_value_names_the_process_its_work_is_left_to() -> None:
    made = creator("b.12-3400")
    assert owner(made) == "b.12-3400"
    assert owner(waiting(made)) == "b.12-3400"  # its delayed wills wait there
    assert owner(DONE) is None


async def test_a_departure_left_by_a_process_gone_is_taken_over_by_one_survivor(
    cluster_settings: Callable[..., Settings],
) -> None:
    link = await ClusterLink.connect(cluster_settings())
    try:
        departures = await link.key_value(DEPARTURES)
        killed, b, c = creator("k.1-0"), creator("b.1-0"), creator("c.1-0")
        await departures.create("a.41-0", killed)
        await departures.create("a.42-0", waiting(killed))
        await departures.create("a.43-0", creator("c.1-0"))
        await departures.create("a.44-0", DONE)
        assert sorted(await left_unsettled(departures, "k.1-0")) == ["a.41-0", "a.42-0"]

        def live(process: str) -> bool:
            return process in ("b.1-0", "c.1-0")

        assert await departure_won(departures, "a.41-0", b, live) is True
        assert await departure_won(departures, "a.41-0", c, live) is False  # names B now
        assert await departure_won(departures, "a.41-0", b, live) is True  # a lost answer
        assert await departure_won(departures, "a.42-0", c, live) is True
        assert await departure_won(departures, "a.43-0", b, live) is False  # C is live
        assert await departure_won(departures, "a.44-0", b, live) is False  # done
        assert await departure_won(departures, "a.43-0", b) is False  # all live unless told
    finally:
        await link.close()


async def test_a_member_back_from_fencing_waits_for_its_sessions_not_its_delayed_wills(
    cluster_settings: Callable[..., Settings],
) -> None:
    link = await ClusterLink.connect(cluster_settings())
    try:
        departures = await link.key_value(DEPARTURES)
        survivor = creator("b.1-0")
        await departures.create("a.41-0", survivor)
        done = asyncio.ensure_future(departure_done(departures, "a.41-0"))
        with pytest.raises(TimeoutError):  # the survivor is at work
            await asyncio.wait_for(asyncio.shield(done), 0.5)
        await departures.put("a.41-0", waiting(survivor))  # sessions adopted
        await asyncio.wait_for(done, 10.0)
    finally:
        await link.close()
