"""When the frames parked for a member go to it again (``broker.cluster.absences``), on the
machine's NATS: a member's registry (``MemberRegistry``) watching the members bucket, a
forwarder parking in JetStream, and another member's entries written to the bucket as its
heartbeats would be, run by run."""

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from broker.cluster.absences import Absences
from broker.cluster.forward import Forwarder
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.members import BUCKET, MISSED_BEATS, MemberRegistry
from broker.router import Message
from nanoiot.errors import ClusterError
from nanoiot.members import Figures, Member, decode_member, encode_member
from tests.broker.cluster.parking import WAIT, parking_forwarder

OWN_INTERVAL = 0.2  # this member's heartbeats: it keeps hearing itself
# The other member's: long enough for a test's steps to fit between its deadlines (it is
# taken as gone MISSED_BEATS of them after each entry written).
INTERVAL = 1.0
OTHER = "x"


@dataclass
class Parking:
    """This member's view: its registry, its forwarder, and who it took as gone."""

    registry: MemberRegistry
    forwarder: Forwarder
    bucket: KeyValue
    gone: "asyncio.Queue[Member]"

    async def write(self, entry: Member) -> None:
        """``entry`` written for the other member; once this member's registry applied it."""
        changed = asyncio.Event()
        self.registry.on_change(changed.set)  # after the absences' own: they acted by then
        await self.bucket.put(entry.name, encode_member(entry))
        async with asyncio.timeout(WAIT):
            while self.registry.entry(entry.name) != entry:
                await changed.wait()
                changed.clear()

    async def taken_as_gone(self) -> Member:
        async with asyncio.timeout(WAIT):
            return await self.gone.get()


@asynccontextmanager
async def parking(link: ClusterLink) -> AsyncIterator[Parking]:
    """A member (``link``'s) with its registry, forwarder and absences wired as a node's
    (``ClusterRouter.start_members``)."""
    absences: list[Absences] = []
    async with parking_forwarder(link, on_gone=lambda m: absences[0].gone(m)) as (forwarder, _):
        absences.append(Absences(forwarder, link.member))
        bucket = await link.key_value(BUCKET, ttl=INTERVAL * MISSED_BEATS)
        registry = MemberRegistry(link, bucket, OWN_INTERVAL, Figures)
        gone: asyncio.Queue[Member] = asyncio.Queue()
        registry.on_gone(gone.put_nowait)
        await registry.start()
        try:
            registry.on_silent(forwarder.silent)
            absences[0].watch(registry)
            yield Parking(registry, forwarder, bucket, gone)
        finally:
            await registry.stop()


def entry(run: int = 0, *, fenced: bool = False, pid: int = 4242, beat: int = 0) -> Member:
    """An entry of the other member: its ``beat``-th heartbeat of ``run``."""
    figures = Figures(messages_received=beat)  # each heartbeat's differ
    return Member(OTHER, "host", pid, 1.7e9, INTERVAL, figures, 1883, run, fenced)


async def test_a_member_taken_as_gone_is_parked_for_until_a_run_of_it_not_fenced_beats(
    link: ClusterLink,
) -> None:
    """A stopped process run again (SIGCONT) may write a heartbeat of the run the others
    took as gone before it finds it has to fence itself off, then writes its next run's
    fenced off: neither says it takes frames (it refuses them, and their publishers would be
    disconnected unacknowledged), only its next run's entry once it is back does."""
    async with parking(link) as member:
        await member.write(entry(beat=1))
        taken = await member.taken_as_gone()  # no heartbeat for MISSED_BEATS intervals
        assert (taken.name, taken.run) == (OTHER, 0)
        assert member.forwarder.parked == {OTHER}

        await member.write(entry(beat=2))  # the ended run's heartbeat, written late
        assert member.forwarder.parked == {OTHER}, "unparked for a run taken as gone"

        await member.write(entry(1, fenced=True, beat=3))  # the next run, fenced off
        assert member.forwarder.parked == {OTHER}, "unparked for a member fenced off"

        await member.write(entry(1, beat=4))  # back
        assert member.forwarder.parked == set()


async def test_a_restarted_member_is_parked_for_until_it_writes_its_entry(
    link: ClusterLink,
) -> None:
    async with parking(link) as member:
        await member.write(entry(beat=1))
        await member.taken_as_gone()
        assert member.forwarder.parked == {OTHER}
        await member.write(entry(pid=4243))  # another process, same name
        assert member.forwarder.parked == set()


async def test_a_member_back_on_nats_gets_its_frames_at_its_next_heartbeat(
    link: ClusterLink,
) -> None:
    """NATS said nobody listens for it (away from NATS for a moment, less than its missed
    heartbeats): its run goes on, and its next heartbeat says it is back."""
    async with parking(link) as member:
        await member.write(entry(beat=1))
        message = Message("t", b"m", 1)
        confirmed = member.forwarder.forward([OTHER], message, [OTHER], {})
        assert confirmed is not None
        await asyncio.wait_for(confirmed, WAIT)  # nobody listened: parked, then confirmed
        assert member.forwarder.parked == {OTHER}
        assert member.gone.empty()
        await member.write(entry(beat=2))
        assert member.forwarder.parked == set()


async def test_a_member_writes_whether_it_is_fenced_off_and_at_once_when_asked(
    link: ClusterLink,
) -> None:
    interval = 30.0  # no heartbeat falls due during the test: each is written on request
    bucket = await link.key_value(BUCKET, ttl=interval * MISSED_BEATS)
    registry = MemberRegistry(link, bucket, interval, Figures)
    await registry.start()
    try:
        own = registry.entry(link.member)
        assert own is not None
        assert (own.pid, own.fenced) == (os.getpid(), False)
        for fenced in (True, False):
            registry.fenced = fenced
            registry.beat_now()
            await asyncio.wait_for(_written(registry, fenced), WAIT)
    finally:
        await registry.stop()


async def _written(registry: MemberRegistry, fenced: bool) -> None:
    """Once the registry saw its own entry written with ``fenced``."""
    changed = asyncio.Event()
    registry.on_change(changed.set)
    while (own := registry.entry(registry.name)) is None or own.fenced is not fenced:
        await changed.wait()
        changed.clear()


def test_an_entry_says_whether_its_member_is_fenced_off() -> None:
    member = entry(1, fenced=True)
    assert decode_member(encode_member(member)) == member
    older = encode_member(dataclasses.replace(member, fenced=False)).replace(
        b',"fenced":false', b""
    )
    assert decode_member(older).fenced is False  # a member of an earlier version
    damaged = encode_member(member).replace(b'"fenced":true', b'"fenced":"false"')
    with pytest.raises(ClusterError, match="fenced is 'false', not true or false"):
        decode_member(damaged)
