"""A forwarder that parks the frames of members nobody listens for, on the machine's NATS
(``broker.cluster.forward``, ``broker.cluster.parked``), and what was parked, for tests."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from broker.cluster.forward import Forwarder
from broker.cluster.frames import Routed, decode
from broker.cluster.link import ClusterLink
from broker.cluster.parked import ParkedFrames

WAIT = 10.0
MIB = 1024 * 1024


@asynccontextmanager
async def parking_forwarder(
    link: ClusterLink,
    max_parked: int = MIB,
    *,
    max_buffer: int = 8 * MIB,
    on_gone: Callable[[str], None] = lambda _member: None,
) -> AsyncIterator[tuple[Forwarder, ParkedFrames]]:
    """A started forwarder (``max_buffer``: its ``max_forward_buffer``) parking in a stream of
    ``max_parked`` bytes at most; ``on_gone`` told of each member it starts parking for.
    Stopped after."""
    parked = ParkedFrames(link, max_parked)
    forwarder = Forwarder(link, max_buffer, on_gone)
    forwarder.parking = parked
    try:
        await parked.start()
        await forwarder.start()
        yield forwarder, parked
    finally:
        await forwarder.stop()


async def parked_records(parked: ParkedFrames, member: str) -> list[Routed]:
    """The records parked for ``member`` (messages and barriers), in order."""
    last = await parked.last(member)
    records: list[Routed] = []
    async with parked.reading(member) as reader:
        sequence = 0
        while sequence < last:
            got = await reader.next(WAIT)
            assert got is not None
            sequence, frame = got
            records += decode(frame, 0.0)
    return records


async def parked_payloads(parked: ParkedFrames, member: str) -> list[bytes]:
    """The payloads of the messages parked for ``member``, in order."""
    return [record.message.payload for record in await parked_records(parked, member)]
