"""Parking on the machine's NATS: frames for a member nobody listens for go to JetStream, in
order, their publishers confirmed once JetStream has them, and a barrier for such a member
behind them; a full stream refuses them; a member back gets its frames again
(``broker.cluster.forward``, ``broker.cluster.parked``)."""

import asyncio

import pytest

from broker.cluster.forward import Forwarder
from broker.cluster.link import ClusterLink
from broker.cluster.parked import ParkedFrames
from broker.router import Message
from nanoiot.errors import ClusterUnavailableError
from tests.broker.cluster.parking import (
    WAIT,
    parked_payloads,
    parked_records,
    parking_forwarder,
)


async def _forward(forwarder: Forwarder, member: str, payload: bytes) -> "asyncio.Future[None]":
    """One message, in a frame of its own (sent at the end of the loop turn)."""
    confirmed = forwarder.forward([member], Message("t", payload, 1), [member], {})
    assert confirmed is not None
    await asyncio.sleep(0)  # the turn ends: the frame leaves
    return confirmed


async def test_frames_for_a_member_nobody_listens_for_are_parked_in_order(
    link: ClusterLink,
) -> None:
    gone: list[str] = []
    async with parking_forwarder(link, on_gone=gone.append) as (forwarder, parked):
        first = await _forward(forwarder, "dead", b"0")
        await asyncio.wait_for(first, WAIT)  # nobody listened: parked, then confirmed
        assert (gone, forwarder.parked) == (["dead"], {"dead"})
        later = [await _forward(forwarder, "dead", str(n).encode()) for n in range(1, 20)]
        await asyncio.wait_for(asyncio.gather(*later), WAIT)  # not asking NATS again
        assert await parked_payloads(parked, "dead") == [str(n).encode() for n in range(20)]
        assert forwarder.frames_parked == 20

        forwarder.unpark("dead")  # back: nothing queued, so at once
        assert forwarder.parked == set()
        await parked.purge("dead", await parked.last("dead"))
        assert await parked.last("dead") == 0


async def test_a_full_parked_stream_refuses_the_frame(link: ClusterLink) -> None:
    async with parking_forwarder(link, 64 * 1024) as (forwarder, _):
        big = b"x" * 30_000
        kept = [await _forward(forwarder, "dead", big) for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*kept), WAIT)
        refused = await _forward(forwarder, "dead", big)
        with pytest.raises(ClusterUnavailableError, match="parking a frame for member dead"):
            await asyncio.wait_for(refused, WAIT)
        assert forwarder.frames_parked == 2


async def test_a_barrier_for_a_gone_member_is_parked_behind_its_frames(
    link: ClusterLink,
) -> None:
    """Whether or not the forwarder knew the member gone yet, a barrier for it
    (``parked=True``) goes into its parked frames behind what was sent to it before, in the
    order sent (``broker.cluster.replay`` reads it there)."""
    async with parking_forwarder(link) as (forwarder, parked):
        for member in ("unknown", "known"):
            if member == "known":
                await asyncio.wait_for(await _forward(forwarder, member, b"first"), WAIT)
                assert member in forwarder.parked
            before = await _forward(forwarder, member, b"0")
            forwarder.barrier(member, "me", ("device", "client"), relayed=False, parked=True)
            await asyncio.sleep(0)  # the turn ends: a frame of its own leaves
            later = await _forward(forwarder, member, b"1")
            await asyncio.wait_for(asyncio.gather(before, later), WAIT)
            records = await _records(parked, member)
            assert records[-3:] == [b"0", ("me", ("device", "client")), b"1"], member


async def _records(parked: ParkedFrames, member: str) -> list[bytes | tuple[str, object]]:
    """What was parked for ``member``, in order: payloads, and barriers as (from, session)."""
    return [
        (record.message.topic, record.session) if record.barrier else record.message.payload
        for record in await parked_records(parked, member)
    ]
