"""The lean generator's pairs, and a fleet's lanes, share the run's messages: one whose path
is slow takes less of them, so that the others keep their workers busy until the end. Pure
logic: a wire that gives a publisher's bytes to its subscriber (QoS 0: the same bytes),
soon or when told."""

import asyncio
from typing import Any, cast

from bench.cluster_lean import shares
from bench.lean_clients import Lean
from bench.lean_stream import AckCount, FleetCheck, stream
from bench.lean_worker import SHARE, Fleet, Lane, Pair, Pairs


class Wire:
    """A transport standing in for the broker: what the publisher writes goes to its
    subscriber at once, or, while ``held``, once ``release`` is called."""

    def __init__(self) -> None:
        self.subscriber: Lean | None = None
        self.held: list[bytes] | None = None

    def write(self, data: bytes | memoryview) -> None:
        if self.held is not None:
            self.held.append(bytes(data))
        elif self.subscriber is not None and self.subscriber.on_data is not None:
            asyncio.get_running_loop().call_soon(self.subscriber.on_data, bytes(data))

    def release(self) -> None:
        held, self.held = self.held or [], None
        for data in held:
            self.write(data)


class Watched(Pairs):
    """Pairs that say when nothing is left to write."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.written = asyncio.Event()

    def spent(self) -> None:
        self.written.set()
        super().spent()


def pair_of(run: Pairs, wire: Wire, index: int) -> Pair:
    publisher, subscriber = Lean(), Lean()
    publisher.transport = cast(Any, wire)
    subscriber.transport = cast(Any, Wire())  # what the subscriber answers: nothing at QoS 0
    wire.subscriber = subscriber
    run.pairs.append(Pair(run, publisher, subscriber, f"bench/pair{index}".encode()))
    return run.pairs[-1]


async def shared(count: int) -> tuple[list[int], list[int], bool, bool]:
    """Two pairs, the second's deliveries held until the first stopped writing."""
    spec = {"count": count, "pairs": [{}, {}], "window": 40, "slice": 10, "qos": 0}
    run = Watched(spec)
    fast, slow = Wire(), Wire()
    slow.held = []
    pairs = [pair_of(run, fast, 0), pair_of(run, slow, 1)]
    run.pending = {0, 1}
    run.start()
    async with asyncio.timeout(10):
        await run.written.wait()
        done_before = run.done.done()
        slow.release()
        await run.done
    received = [pair.check.received for pair in pairs]
    bad = [pair.check.first_bad for pair in pairs]
    return [pair.sent for pair in pairs], received, done_before, bad == [-1, -1]


def test_a_pair_whose_deliveries_wait_leaves_the_run_to_the_others() -> None:
    sent, received, done_before, done = asyncio.run(shared(count=500))
    # The slow pair wrote its window (40) and no more; the fast one took the rest of the
    # run's 1,000 messages, and everything each wrote was delivered, in order.
    assert (sent, received, done_before, done) == ([960, 40], [960, 40], False, True)


class WatchedFleet(Fleet):
    """A fleet that says when nothing is left to write (its devices' last write)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.written_all = asyncio.Event()

    def pump(self) -> None:
        super().pump()
        if not self.left:
            self.written_all.set()


async def fleet_shared(count: int) -> tuple[list[int], list[int], list[int], bool, bool]:
    """Two devices, each on its own member with a consumer there; the second member's
    deliveries held until the first device stopped writing."""
    spec = {"fleet_devices": [[], []], "count": count, "window": 40, "slice": 10, "qos": 0}
    fleet = WatchedFleet(spec)
    wires = [Wire(), Wire()]
    wires[1].held = []
    fleet.checks = [FleetCheck(fleet.shape), FleetCheck(fleet.shape)]
    fleet.written, fleet.acks = [0, 0], [AckCount(), AckCount()]
    for n, wire in enumerate(wires):
        device, consumer = Lean(), Lean()
        device.transport, consumer.transport = cast(Any, wire), cast(Any, Wire())
        wire.subscriber = consumer
        consumer.on_data = fleet._delivery(consumer, fleet.checks[n])
        fleet.devices.append(device)
        fleet.consumers.append(consumer)
        fleet.views.append(memoryview(stream(fleet.topic(n), 0, n, count * SHARE)))
        jobs = [(n, start, start + 10) for start in range(0, count * SHARE, 10)]
        fleet.lanes.append(Lane(jobs, fleet.checks[n]))
    fleet.lanes.append(Lane([], None))
    fleet.start()
    async with asyncio.timeout(10):
        await fleet.written_all.wait()
        done_before = fleet.done.done()
        wires[1].release()
        await fleet.done
    result = fleet.result()
    received = [check.received for check in fleet.checks]
    return result["per_lane"], fleet.written, received, done_before, result["checksum_ok"]


def test_a_member_whose_deliveries_wait_leaves_the_fleet_to_the_others() -> None:
    per_lane, written, received, done_before, summed = asyncio.run(fleet_shared(count=50))
    # The second member took its window (40); the first device wrote the rest of the 100,
    # past its share; the sum of what came is that of what each device wrote.
    assert (per_lane, written, received, done_before, summed) == (
        [60, 40, 0], [60, 40], [60, 40], False, True,
    )  # fmt: skip


def test_the_report_says_how_the_members_shared_the_messages() -> None:
    pairs = {"per_pair": [300, 100, 300, 300], "placement": [["a", "a"], ["b", "b"]] * 2}
    fleet = {"per_lane": [30, 60, 10], "placement": {"consumers": ["w1", "w2"]}}
    one = {"per_pair": [5, 5], "placement": [["", ""], ["", ""]]}
    assert [shares(pairs), shares(fleet), shares(one)] == [
        "a 60%, b 40%", "not placed 10%, w1 30%, w2 60%", "",
    ]  # fmt: skip
