"""Parking on the machine's NATS: frames for a member nobody listens for go to JetStream, in
order, their publishers confirmed once JetStream has them, and a barrier for such a member
behind them; a full stream refuses them; a member back gets its frames again
(``broker.cluster.forward``, ``broker.cluster.parked``)."""

import asyncio
from collections.abc import Callable

import pytest

from broker.cluster.forward import Forwarder
from broker.cluster.frames import decode
from broker.cluster.link import ClusterLink
from broker.cluster.parked import ParkedFrames
from broker.router import Message
from nanoiot.errors import ClusterUnavailableError
from nanoiot.settings import Settings

WAIT = 10.0


async def parked_payloads(parked: ParkedFrames, member: str) -> list[bytes]:
    """The payloads of the messages parked for ``member``, in order."""
    last = await parked.last(member)
    payloads: list[bytes] = []
    async with parked.reading(member) as reader:
        sequence = 0
        while sequence < last:
            got = await reader.next(WAIT)
            assert got is not None
            sequence, frame = got
            payloads += [r.message.payload for r in decode(frame, 0.0)]
    return payloads


async def _forward(forwarder: Forwarder, member: str, payload: bytes) -> "asyncio.Future[None]":
    """One message, in a frame of its own (sent at the end of the loop turn)."""
    confirmed = forwarder.forward([member], Message("t", payload, 1), [member], {})
    assert confirmed is not None
    await asyncio.sleep(0)  # the turn ends: the frame leaves
    return confirmed


async def test_frames_for_a_member_nobody_listens_for_are_parked_in_order(
    cluster_settings: Callable[..., Settings],
) -> None:
    link = await ClusterLink.connect(cluster_settings())
    gone: list[str] = []
    parked = ParkedFrames(link, 1024 * 1024)
    forwarder = Forwarder(link, 8 * 1024 * 1024, gone.append)
    forwarder.parking = parked
    try:
        await parked.start()
        await forwarder.start()
        first = await _forward(forwarder, "dead", b"0")
        await asyncio.wait_for(first, WAIT)  # nobody listened: parked, then confirmed
        assert (gone, forwarder.parked) == (["dead"], {"dead"})
        later = [await _forward(forwarder, "dead", str(n).encode()) for n in range(1, 20)]
        await asyncio.wait_for(asyncio.gather(*later), WAIT)  # not asking NATS again
        assert await parked_payloads(parked, "dead") == [str(n).encode() for n in range(20)]
        assert forwarder.frames_parked == 20

        forwarder.unpark("dead")  # back: nothing queued, so at once
        assert forwarder.parked == set()
        await parked.purge("dead")
        assert await parked.last("dead") == 0
    finally:
        await forwarder.stop()
        await link.close()


async def test_a_full_parked_stream_refuses_the_frame(
    cluster_settings: Callable[..., Settings],
) -> None:
    link = await ClusterLink.connect(cluster_settings())
    parked = ParkedFrames(link, 64 * 1024)
    forwarder = Forwarder(link, 8 * 1024 * 1024, lambda _member: None)
    forwarder.parking = parked
    try:
        await parked.start()
        await forwarder.start()
        big = b"x" * 30_000
        kept = [await _forward(forwarder, "dead", big) for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*kept), WAIT)
        refused = await _forward(forwarder, "dead", big)
        with pytest.raises(ClusterUnavailableError, match="parking a frame for member dead"):
            await asyncio.wait_for(refused, WAIT)
        assert forwarder.frames_parked == 2
    finally:
        await forwarder.stop()
        await link.close()


async def test_a_barrier_for_a_gone_member_is_parked_behind_its_frames(
    cluster_settings: Callable[..., Settings],
) -> None:
    """Whether or not the forwarder knew the member gone yet, a barrier for it
    (``parked=True``) goes into its parked frames behind what was sent to it before, in the
    order sent (``broker.cluster.replay`` reads it there)."""
    link = await ClusterLink.connect(cluster_settings())
    parked = ParkedFrames(link, 1024 * 1024)
    forwarder = Forwarder(link, 8 * 1024 * 1024, lambda _member: None)
    forwarder.parking = parked
    try:
        await parked.start()
        await forwarder.start()
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
    finally:
        await forwarder.stop()
        await link.close()


async def _records(parked: ParkedFrames, member: str) -> list[bytes | tuple[str, object]]:
    """What was parked for ``member``, in order: payloads, and barriers as (from, session)."""
    last = await parked.last(member)
    records: list[bytes | tuple[str, object]] = []
    async with parked.reading(member) as reader:
        sequence = 0
        while sequence < last:
            got = await reader.next(WAIT)
            assert got is not None
            sequence, frame = got
            for record in decode(frame, 0.0):
                barrier = (record.message.topic, record.session)
                records.append(barrier if record.barrier else record.message.payload)
    return records
