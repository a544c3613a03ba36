"""A node stops while one of its loops waits for NATS: nats-py's wait (JetStream's publish, a
key-value put) can swallow the cancellation (CPython gh-86296, ``nanoiot.tasks``), and the
loop went on (the parker back to waiting for frames, the route writer through every write
still queued, then waiting for more), so the node's stop waited for it forever: seen as a node
stopped right after restoring 2,000 sessions (6,000 route writes queued), or as another member
left. Pure: NATS is a stand-in that loses the cancellation as nats-py's wait does."""

import asyncio

from broker.cluster.parking import Parker
from broker.cluster.routes import RouteAnnouncer, RouteTable

WAIT = 5.0


class LosingCancellation:
    """Parks and puts nothing; a cancellation that comes while its first call waits is
    swallowed, and the call returns as if JetStream had the frame or the value."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def park(self, _member: str, _frame: bytes) -> None:
        await self._wait()

    async def put(self, _key: str, _value: bytes) -> int:
        await self._wait()
        return 1

    async def _wait(self) -> None:
        if self.entered.is_set():
            return  # the first call only waits
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return


async def test_a_stop_while_a_frame_is_parked_ends_even_if_the_publish_lost_its_cancellation() -> (
    None
):
    parker = Parker(1 << 20, lambda _member: None)
    parking = LosingCancellation()
    parker.parking = parking  # type: ignore[assignment]
    parker._start_parker()
    parked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    parker._park("node-b", b"frame", parked)
    async with asyncio.timeout(WAIT):
        await parking.entered.wait()
    stopping = asyncio.create_task(parker._stop_parker())
    done, _ = await asyncio.wait({stopping}, timeout=WAIT)  # not awaited: the old parker never ends
    assert stopping in done, "the parker went on waiting for frames"
    assert parked.done()
    assert parked.exception() is None  # the publish returned: JetStream has it


async def test_a_stop_while_routes_are_written_ends_even_if_a_put_lost_its_cancellation() -> None:
    bucket = LosingCancellation()
    announcer = RouteAnnouncer(bucket, "node-a", RouteTable())  # type: ignore[arg-type]
    for n in range(3):  # queued behind the one on its way
        announcer.add(f"devices/d/in/{n}/+")
    writer = asyncio.create_task(announcer._write())
    async with asyncio.timeout(WAIT):
        await bucket.entered.wait()
    writer.cancel()
    done, _ = await asyncio.wait({writer}, timeout=WAIT)  # not awaited: the old one never ends
    assert writer in done, "the route writer went on"
