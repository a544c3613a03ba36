"""A departure whose winner died before settling it, on the machine's NATS: the entry a killed
winner leaves (naming its process, not ``DONE``) is taken over by exactly one survivor, which
publishes the wills left and adopts the sessions; whether the survivors see that process go
after it made the entry or lose the creation race to it afterwards."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from broker.cluster.claim_value import holder_of
from broker.cluster.departure import DONE, creator, waiting
from broker.cluster.link import ClusterLink
from broker.cluster.wills import DEPARTURES
from nanoiot.members import Figures, Member
from nanoiot.settings import Settings
from tests.broker.cluster.survivors import (
    AGE,
    DEAD,
    GONE,
    KILLED,
    SETTLE_WITHIN,
    WAIT,
    WINNER,
    Buckets,
    changed,
    claim_key,
    open_buckets,
    winner_waiting,
)
from tests.cluster.proxy import nats_proxy


@pytest.fixture
async def buckets(cluster_settings: Callable[..., Settings]) -> AsyncIterator[Buckets]:
    async with open_buckets(cluster_settings(), None) as made:
        yield made


@pytest.fixture
async def aging_buckets(cluster_settings: Callable[..., Settings]) -> AsyncIterator[Buckets]:
    """Departures kept ``AGE`` seconds after their last write (``DEPARTURES_KEPT``: 24 h)."""
    async with open_buckets(cluster_settings(), AGE) as made:
        yield made


async def test_the_departure_of_a_winner_killed_before_settling_it_is_taken_over_once(
    buckets: Buckets,
) -> None:
    """The winner made the departure, published one will (its entry deleted) and was killed:
    the survivors that see it go take the departure over, one of them publishes the will
    left and adopts the sessions."""
    await buckets.will("left")
    await buckets.departures.create(DEAD, creator(KILLED))
    survivors = [buckets.survivor("b"), buckets.survivor("d")]
    for survivor in survivors:
        survivor.member_gone(WINNER)
    await buckets.settled()
    for survivor in survivors:
        await survivor.settle(WAIT)
    assert [client for _, client in buckets.published] == ["left"]
    adopters = [survivor for survivor, member in buckets.adopted if member == "a"]
    assert adopters == [buckets.published[0][0]]  # once, by the survivor that published
    assert await buckets.wills.get(f"{DEAD}.{claim_key('left')}") is None


async def test_a_survivor_losing_the_creation_race_to_a_process_gone_since_takes_it_over(
    buckets: Buckets,
) -> None:
    """The winner was killed before this survivor noticed the first death (it never sees the
    winner go after that): losing the race to it, it takes the departure over."""
    await buckets.will("left")
    await buckets.departures.create(DEAD, creator(KILLED))
    survivor = buckets.survivor("b")
    survivor.member_gone(GONE)
    await buckets.settled()
    assert buckets.published == [("b", "left")]
    assert buckets.adopted == [("b", "a")]


async def test_delayed_wills_a_killed_winner_left_waiting_are_published_after_the_take_over(
    buckets: Buckets,
) -> None:
    """The winner adopted the sessions (``waiting``) and was killed during a Will Delay
    Interval (MQTT 5 §3.1.3.2.2) before its entry said when it is due: the delayed will
    comes, its delay counted again."""
    await buckets.will("delayed", delay=1)
    await buckets.departures.create(DEAD, waiting(creator(KILLED)))
    survivor = buckets.survivor("b")
    loop = asyncio.get_running_loop()
    taken = loop.time()
    survivor.member_gone(WINNER)
    await buckets.settled()
    assert buckets.published == [("b", "delayed")]
    assert loop.time() - taken >= 1.0


async def test_a_delayed_will_taken_over_during_its_delay_comes_when_its_delay_ends(
    buckets: Buckets,
) -> None:
    """The winner started a will's delay (MQTT 5 §3.1.3.2.2) and was killed halfway through
    it: the survivor that takes the departure over publishes the will when the delay the
    winner started ends, not a whole delay after the take-over."""
    delay = 6
    winner, noticed = await winner_waiting(buckets, delay)
    await asyncio.sleep(delay / 2)  # the delay runs on the winner, which is killed then
    await winner.stop()
    taker = buckets.survivor("d", live=("d.1-0",))  # to which b is gone
    taken = asyncio.get_running_loop().time()
    taker.member_gone(Member("b", "host", 1, 0.0, 1.0, Figures()))
    await buckets.settled()
    assert buckets.published == [("d", "delayed")]
    published = buckets.published_at[0]
    assert published - noticed >= delay - 0.1  # not before the delay ends
    assert published - taken < delay - 1.0  # nor a whole delay after the take-over


async def test_a_departure_whose_process_is_live_or_that_is_done_is_not_taken_over(
    buckets: Buckets,
) -> None:
    await buckets.will("left")
    live = creator("d.1-0")  # a live member's, busy adopting perhaps
    await buckets.departures.create(DEAD, live)
    survivor = buckets.survivor("b")
    survivor.member_gone(GONE)
    survivor.member_gone(Member("d", "host", 1, 0.0, 1.0, Figures(), run=1))  # a fencing
    await survivor.settle(WAIT)
    entry = await buckets.departures.get(DEAD)
    assert entry is not None
    assert entry.value == live
    await buckets.departures.put(DEAD, DONE)
    survivor.member_gone(WINNER)
    await survivor.settle(WAIT)
    assert buckets.published == []
    assert ("b", "a") not in buckets.adopted


async def test_a_delayed_will_of_a_departure_taken_over_meanwhile_is_left_to_the_taker(
    buckets: Buckets,
) -> None:
    """A winner cut off from NATS long enough to be taken as gone had its departure taken
    over during a will's delay: the will is published by the taker only, though the
    winner's own delay ends first."""
    await buckets.will("delayed", delay=1)
    winner = buckets.survivor("b")
    winner.member_gone(GONE)
    async with asyncio.timeout(WAIT):
        while (entry := await buckets.departures.get(DEAD)) is None or entry.value == (
            winner.creator
        ):
            await changed(buckets.departures, DEAD, entry.revision if entry else 0)
    assert entry.value == waiting(winner.creator)
    taker = buckets.survivor("d", live=("d.1-0",))  # to which b is gone
    taker.member_gone(Member("b", "host", 1, 0.0, 1.0, Figures()))
    await buckets.settled()  # by the taker, after the winner's own delay ended
    await winner.settle(WAIT)
    assert buckets.published == [("d", "delayed")]


@pytest.mark.parametrize("again", ["before", "meanwhile", "never"])
async def test_a_delayed_will_whose_session_the_winner_adopted_comes_when_due_after_a_take_over(
    buckets: Buckets, again: str
) -> None:
    """The winner started a will's delay, adopted its session and was killed during the
    delay: the taker publishes the will when the delay ends (MQTT 5 §3.1.3.2.2), though the
    session's claim changed since the will's connection made it. An adoption is not its
    client connecting again, whether the taker adopts the winner's sessions in turn (before
    it takes the departure over, or meanwhile, as it sees the winner go) or not (a frozen
    winner keeps its sessions)."""
    delay = 3
    winner, noticed = await winner_waiting(buckets, delay)
    claim = await buckets.claims.get(claim_key("delayed"))
    assert claim is not None
    assert holder_of(claim.value) == "b"  # adopted
    await winner.stop()
    taker = buckets.survivor("d", live=("d.1-0",), adopts=again != "never")  # b is gone to d
    if again == "before":
        await buckets.claimed_by_adoption("d", "b")
    taker.member_gone(Member("b", "host", 1, 0.0, 1.0, Figures()))
    await buckets.settled()
    assert buckets.published == [("d", "delayed")]
    assert buckets.published_at[0] - noticed >= delay - 0.1  # when due, not before


async def test_a_survivor_marks_the_departure_it_settled_done_once(
    buckets: Buckets, caplog: pytest.LogCaptureFixture
) -> None:
    """No delayed will: the departure is marked ``DONE`` in one write, and the survivor does
    not then read its own ``DONE`` as a take-over by another process."""
    await buckets.will("left")
    survivor = buckets.survivor("b")
    with caplog.at_level(logging.INFO, logger="broker.cluster.survivor"):
        survivor.member_gone(GONE)
        await buckets.settled()
        await survivor.settle(WAIT)
    assert buckets.adopted == [("b", "a")]
    assert not [r.message for r in caplog.records if "taken over" in r.message]


async def test_a_member_back_from_fencing_takes_its_run_over_from_a_settler_that_died(
    buckets: Buckets,
) -> None:
    """Member ``a`` is back after fencing itself off; the survivor that made the departure of
    its ended run was live then, and was killed before settling it. ``a`` sees it gone at
    its next heartbeat and settles the run itself (publishing the will left; its sessions
    are its own to restore, not adopted), long before its wait for that survivor is over."""
    await buckets.will("left")
    await buckets.departures.create(DEAD, creator(KILLED))
    back = buckets.survivor("a")
    back.survivor.every = 0.2  # its heartbeat interval
    asked, alive = asyncio.Event(), {KILLED}

    def live(process: str) -> bool:
        asked.set()
        return process in alive

    back.live = live
    ending = asyncio.create_task(back.run_ended(DEAD, SETTLE_WITHIN))
    await asked.wait()  # the departure's process was found live
    alive.clear()  # then killed
    async with asyncio.timeout(WAIT):
        await ending
    assert buckets.published == [("a", "left")]
    assert buckets.adopted == []
    entry = await buckets.departures.get(DEAD)
    assert entry is not None
    assert entry.value == DONE


async def test_a_member_back_from_fencing_waits_for_a_live_settler(buckets: Buckets) -> None:
    """The survivor that made the departure stays live: ``a`` waits for it, publishes
    nothing, and goes on once that survivor marked the departure done."""
    await buckets.will("left")
    await buckets.departures.create(DEAD, creator("d.1-0"))
    back = buckets.survivor("a")
    back.survivor.every = 0.05
    ending = asyncio.create_task(back.run_ended(DEAD, SETTLE_WITHIN))
    await asyncio.wait({ending}, timeout=0.5)  # several heartbeats: still waiting
    assert not ending.done()
    await buckets.departures.put(DEAD, DONE)  # the settler is done
    async with asyncio.timeout(WAIT):
        await ending
    assert buckets.published == []


@pytest.mark.parametrize("heartbeat", ["back", "mark_again"])
async def test_a_settler_that_could_not_mark_the_departure_done_marks_it_at_its_next_heartbeat(
    buckets: Buckets, cluster_settings: Callable[..., Settings], heartbeat: str
) -> None:
    """Survivor b settles the dead run (its will published, its sessions taken care of) and
    loses NATS as it marks the departure done. At its next heartbeat written (``back``; or,
    fenced off itself, ``mark_again``), once NATS is back, it marks it: the member back from
    fencing whose run it is goes on then, not after ``SETTLE_WITHIN`` (b stays live)."""
    await buckets.will("left")
    waiter = buckets.survivor("a")
    waiter.survivor.every = 0.2
    with nats_proxy() as proxy:
        link = await ClusterLink.connect(cluster_settings(nats_url=proxy.url, node_name="b"))
        lost, reconnected = asyncio.Event(), asyncio.Event()
        link.on_lost(lost.set)
        link.on_reconnected(reconnected.set)
        reached = Buckets(
            await link.key_value("wills"), await link.key_value(DEPARTURES),
            await link.key_value("clients"),
        )  # fmt: skip
        settler = reached.survivor("b")
        adopting, adopted = asyncio.Event(), asyncio.Event()

        async def adopt(_member: str) -> int:
            adopting.set()
            await adopted.wait()  # NATS is lost meanwhile
            return 0

        settler.adopt = adopt
        settler.member_gone(GONE)
        await asyncio.wait_for(adopting.wait(), WAIT)  # b made the departure
        ending = asyncio.create_task(waiter.run_ended(DEAD, SETTLE_WITHIN))
        try:
            proxy.cut()
            await asyncio.wait_for(lost.wait(), WAIT)
            adopted.set()
            await settler.survivor.settle(WAIT)  # its marking failed
            assert not ending.done()
            proxy.restore()
            await asyncio.wait_for(reconnected.wait(), WAIT)
            getattr(settler, heartbeat)()
            async with asyncio.timeout(WAIT):
                await ending
        finally:
            ending.cancel()
            await settler.stop()
            await link.close()
    assert reached.published == [("b", "left")]
    assert buckets.published == []
    entry = await buckets.departures.get(DEAD)
    assert entry is not None
    assert entry.value == DONE


async def test_a_will_delayed_past_the_departures_age_is_published_after_its_winner_dies(
    aging_buckets: Buckets,
) -> None:
    """A Will Delay Interval longer than a departure's entry is kept (MQTT 5 §3.1.3.2.2 allows
    days; the bucket keeps an entry 24 h after its last write, ``AGE`` here): the winner
    writes the entry again while the will waits, so that the survivor taking over from the
    winner, killed after that age, still finds the departure and publishes the will when
    due. Before, the entry aged out and the will was never published."""
    buckets, delay = aging_buckets, 4 * AGE
    await buckets.will("delayed", delay=int(delay))
    winner = buckets.survivor("b")
    winner.survivor.marks.keep_every = AGE / 4
    noticed = asyncio.get_running_loop().time()
    winner.member_gone(GONE)
    await asyncio.sleep(2.5 * AGE)  # the will waits on the winner, past the entry's age
    entry = await buckets.departures.get(DEAD)
    assert entry is not None
    assert entry.value == waiting(winner.creator)
    await winner.stop()  # killed
    taker = buckets.survivor("d", live=("d.1-0",))  # to which b is gone
    taker.survivor.marks.keep_every = AGE / 4
    taker.member_gone(Member("b", "host", 1, 0.0, 1.0, Figures()))
    await buckets.settled()
    assert buckets.published == [("d", "delayed")]
    assert buckets.published_at[0] - noticed >= delay - 0.1  # when due, not before


async def test_a_delayed_will_whose_claim_is_of_an_unknown_form_is_published_when_due(
    buckets: Buckets,
) -> None:
    """During a rolling upgrade a node of a later version rewrote the session's claim in a
    form this version does not read (``broker.cluster.claim_value``): the survivor cannot tell
    whether the device came back, so the will is published when its delay ends, not dropped."""
    delay = 2
    _, noticed = await winner_waiting(buckets, delay)
    await buckets.claims.put(claim_key("delayed"), b"d resumed 3 v9")
    await buckets.settled()
    assert buckets.published == [("b", "delayed")]
    assert buckets.published_at[0] - noticed >= delay - 0.1
