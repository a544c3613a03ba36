"""A reader of parked frames whose consumer is on a copy of the stream that lags
(``broker.cluster.parked.Reader``): the frames the stream's leader has are asked of it, in
order and each once. On the machine's single NATS server no copy lags, so the lagging
consumer here is one that gives nothing (it reads another member's frames, of which there
are none), and a consumer that catches up late is one whose frames were read already."""

from nats.js import api

from broker.cluster.barriers import READ_WITHIN
from broker.cluster.link import REQUEST_TIMEOUT, ClusterLink
from broker.cluster.parked import LAGGING, ParkedFrames, PushSubscription, Reader

FRAMES = [b"0", b"1", b"2"]


async def _consumer(parked: ParkedFrames, member: str) -> PushSubscription:
    """An ordered consumer of ``member``'s frames from the first (as ``reading`` makes)."""
    js = parked.link.client.jetstream(timeout=REQUEST_TIMEOUT)
    return await js.subscribe(
        parked.subject(member), stream=parked.name, ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
    )  # fmt: skip


async def _parked(link: ClusterLink) -> ParkedFrames:
    parked = ParkedFrames(link, 1024 * 1024)
    await parked.start()
    for frame in FRAMES:
        await parked.park("gone", frame)
    return parked


async def test_frames_the_consumer_does_not_give_are_asked_of_the_leader(
    link: ClusterLink,
) -> None:
    parked = await _parked(link)
    last = await parked.last("gone")
    silent = await _consumer(parked, "other")
    try:
        reader = Reader(parked, "gone", silent)
        got: list[tuple[int, bytes]] = []
        for _ in FRAMES:
            frame = await reader.next(READ_WITHIN, there=last)
            assert frame is not None, got
            got.append(frame)
        assert [frame for _, frame in got] == FRAMES
        assert [sequence for sequence, _ in got] == sorted({s for s, _ in got})  # each once
        assert got[-1][0] == last
        # Parked later, while the consumer still gives none: asked of the leader too.
        await parked.park("gone", b"3")
        assert await reader.next(READ_WITHIN) == (last + 1, b"3")
        assert await reader.next(2 * LAGGING) is None
    finally:
        await silent.unsubscribe()


async def test_frames_read_from_the_leader_are_not_given_again(link: ClusterLink) -> None:
    """The consumer's copy caught up: it gives the frames from the first, and those the
    reader had from the leader are passed over."""
    parked = await _parked(link)
    last = await parked.last("gone")
    subscription = await _consumer(parked, "gone")
    try:
        reader = Reader(parked, "gone", subscription)
        reader.sequence = last - 1  # all but the last read from the leader
        assert await reader.next(READ_WITHIN) == (last, FRAMES[-1])
        assert await reader.next(LAGGING) is None
    finally:
        await subscription.unsubscribe()
