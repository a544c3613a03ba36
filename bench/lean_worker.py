"""The lean load generator: ``python -m bench.lean_worker SPEC.json``, for throughput runs.

Every stream is encoded before the timed phase (``bench.lean_stream``) and written a slice
at a time under a window; what comes back is checked a chunk at a time: no Python per
message while the broker is measured. Modes (``spec["mode"]``):

- ``pairs``: ``spec["pairs"]``, each a publisher and a subscriber on its own topic, QoS 0 or
  1, ``count`` messages a pair in all, each slice written by a pair with room (``Pairs``),
  at most ``window`` sent and not yet delivered per pair.
- ``fleet``: ``fleet_devices`` publishing ``count`` messages each to
  ``bench/telemetry/<n>``, and ``consumers`` members of one shared subscription
  ``$share/backend/bench/telemetry/#`` (``filter``: another filter); at most ``window``
  messages in flight to each member (``Lane``).

With ``cluster`` (a NATS URL and a cluster name) it asks the broker where each of its
clients is connected, as the web UI does (``<cluster>.clients.where``): ``place`` "kept"
puts each pair's publisher and subscriber on one member (half the pairs on each), and every
consumer of the fleet on its own member, by reconnecting until the broker says so;
otherwise it leaves them where the kernel's hash put them and reports where that was. It announces
``{"ready": ...}`` once connected and placed, waits for a command line, runs, announces
``{"done": true}`` with its clients still connected, waits for another command line (or the
end of its input), closes them, and prints its result with its own CPU over the timed phase.
It runs under SCHED_BATCH (``bench.worker_io.give_way``), so that its wake-ups do not take a
core from a broker in the middle of its work.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any, cast

from bench.lean_clients import Data, Lean, Setup, Where, subscribe
from bench.lean_stream import AckCount, FleetCheck, Slices, StreamCheck, checksum, layout, stream
from bench.worker_io import announce, give_way, next_command, own_cpu, run_worker

SHARED = "$share/backend/bench/telemetry/#"  # the fleet's consumers (``filter``: another)
SHARE = 2  # a pair's stream holds twice its share of the run: one pair may take that much


class Run:
    """The timed phase's state: writes under the window, checks, completion."""

    def __init__(self, total: int, window: int) -> None:
        self.total, self.window = total, window
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.finished = 0.0

    def counted(self) -> int:
        """Messages delivered and PUBACKs taken so far: progress."""
        raise NotImplementedError

    async def wait(self, quiet_s: float) -> None:
        """Until complete, or nothing came for ``quiet_s`` (something was lost)."""
        last = -1
        while not self.done.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.done), quiet_s)
            except TimeoutError:
                if self.counted() == last:
                    return
                last = self.counted()

    def elapsed(self, started: float) -> float:
        return self.finished - started if self.done.done() else time.perf_counter() - started

    def complete(self) -> None:
        if not self.done.done():
            self.finished = time.perf_counter()
            self.done.set_result(None)


class Pair:
    """A publisher's stream to its subscriber."""

    def __init__(self, run: "Pairs", publisher: Lean, subscriber: Lean, topic: bytes) -> None:
        spec = run.spec
        self.run, self.publisher, self.subscriber = run, publisher, subscriber
        self.qos, self.shape = spec["qos"], layout(topic, spec["qos"])
        self.count = spec["count"] * SHARE  # what its stream holds: more than its share
        data = stream(topic, self.qos, len(run.pairs), self.count)
        self.view, self.check = memoryview(data), StreamCheck(data, self.shape)
        self.acks, self.slices, self.sent = AckCount(), Slices(), 0
        publisher.on_data, subscriber.on_data = self.on_acks, self.on_delivery
        assert publisher.transport is not None
        assert subscriber.transport is not None
        self.publish, self.answer = publisher.transport.write, subscriber.transport.write
        self.size, self.window, self.step = self.shape.size, run.window, run.per_slice

    def pump(self) -> None:
        size, received, run = self.size, self.check.received, self.run
        while self.sent < self.count and run.left:
            end = min(self.sent + self.step, self.count, self.sent + run.left)
            if end - received > self.window:  # at most ``window`` in flight
                return
            self.publish(self.view[self.sent * size : end * size])
            run.left -= end - self.sent
            self.sent = end
            self.slices.wrote(end, time.monotonic_ns())
            if not run.left:
                run.spent()

    def on_delivery(self, data: bytes) -> None:
        check = self.check
        acks = check.feed(data)
        if acks:
            self.answer(acks)
        self.slices.passed(check.received, time.monotonic_ns())
        if check.received + self.window >= self.sent + self.step:
            self.pump()
        if check.received >= self.sent:
            self.run.changed(self)

    def on_acks(self, data: bytes) -> None:
        self.acks.feed(data)
        if self.acks.count >= self.sent:
            self.run.changed(self)

    def complete(self) -> bool:
        """Its part of the run written (none left to take) and delivered (and acknowledged)."""
        sent, check = self.sent, self.check
        return (
            not self.run.left
            and check.received >= sent
            and (not self.qos or self.acks.count >= sent)
        )


class Pairs(Run):
    """``count`` messages a pair in all, taken by whichever pair has room in its window: a
    pair whose worker has more of the machine takes more, so that every pair (and worker)
    stays busy until the last slice, instead of one worker idling while the other finishes
    its pairs' fixed share (``per_pair`` in the result says how they shared)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec["count"] * len(spec["pairs"]), spec["window"])
        self.spec, self.per_slice = spec, spec["slice"]
        self.left = self.total  # messages no pair has written yet
        self.pairs: list[Pair] = []
        self.pending: set[int] = set()
        self.placement: list[list[str]] = []

    async def connect(self, setup: Setup) -> None:
        kept = self.spec.get("place") == "kept"
        for index, pair in enumerate(self.spec["pairs"]):
            prefix = f"{self.spec['prefix']}{index}"
            publisher, at = await setup.client(pair["publisher"], pair["port"], f"{prefix}p",
                                               index if kept else None)  # fmt: skip
            target = setup.where.members.index(at) if kept and setup.where else None
            subscriber, sub_at = await setup.client(
                pair["subscriber"], pair["subscriber_port"], f"{prefix}s", target
            )
            await subscribe(subscriber, pair["topic"], self.spec["qos"])
            self.pairs.append(Pair(self, publisher, subscriber, pair["topic"].encode()))
            self.placement.append([at, sub_at])
        self.pending = set(range(len(self.pairs)))

    def start(self) -> None:
        for pair in self.pairs:
            pair.pump()

    def counted(self) -> int:
        return sum(pair.check.received + pair.acks.count for pair in self.pairs)

    def changed(self, pair: Pair) -> None:
        if pair.complete():
            self.pending.discard(self.pairs.index(pair))
            if not self.pending:
                self.complete()

    def spent(self) -> None:
        """Nothing left to write: a pair that had everything it wrote delivered is done."""
        for index in list(self.pending):
            self.changed(self.pairs[index])

    def result(self) -> dict[str, Any]:
        samples = Slices()
        for pair in self.pairs:
            samples.samples_ns += pair.slices.samples_ns
        return {
            "sent": sum(p.sent for p in self.pairs),
            "per_pair": [p.sent for p in self.pairs],
            "received": sum(p.check.received for p in self.pairs),
            "first_bad": [p.check.first_bad for p in self.pairs],
            "pubacks": sum(p.acks.count for p in self.pairs),
            "bad_pubacks": sum(p.acks.bad for p in self.pairs),
            "latency_ms": samples.percentiles(),
            "placement": self.placement,
            "crossing_pairs": sum(1 for a, b in self.placement if a != b),
        }


@dataclass
class Lane:
    """The devices on one member, and the member of the shared subscription there: at most
    ``window`` messages in flight to it, so that its session's queue (``max_queued_messages``)
    never fills however unevenly the kernel spread the devices. ``check`` None: devices not
    placed (no cluster to ask), bounded by the messages in flight over all."""

    jobs: list[tuple[int, int, int]]  # (device, first message, end) in the order written
    check: FleetCheck | None
    next: int = 0
    sent: int = 0


class Fleet(Run):
    """Devices writing their streams in turns, one slice each; a shared subscription's
    members taking them. ``count`` messages a device in all, as ``Pairs`` shares them: a
    lane (the devices on one member) whose member has more of the machine writes more, its
    devices past their share; ``per_lane`` in the result says how they shared."""

    def __init__(self, spec: dict[str, Any]) -> None:
        devices = spec["fleet_devices"]
        super().__init__(spec["count"] * len(devices), spec["window"])
        self.spec, self.qos = spec, spec["qos"]
        self.shape = layout(self.topic(0), self.qos)
        self.devices: list[Lean] = []
        self.views: list[memoryview] = []
        self.acks: list[AckCount] = []
        self.consumers: list[Lean] = []
        self.checks: list[FleetCheck] = []
        self.lanes: list[Lane] = []
        self.slices, self.sent, self.received, self.acked = Slices(), 0, 0, 0
        self.left = self.total  # messages no device has written yet
        self.written: list[int] = []  # per device: its stream written up to there
        self.placement: dict[str, Any] = {}

    @staticmethod
    def topic(index: int) -> bytes:
        return f"bench/telemetry/{index:05d}".encode()

    async def connect(self, setup: Setup) -> None:
        spec, members = self.spec, []
        for index in range(spec["consumers"]):
            named = spec["consumer_devices"][index % len(spec["consumer_devices"])]
            target = index if spec.get("place") == "kept" else None
            consumer, at = await setup.client(
                named, spec["port"], f"{spec['prefix']}c{index}", target
            )
            await subscribe(consumer, spec.get("filter", SHARED), self.qos)
            check = FleetCheck(self.shape)
            consumer.on_data = self._delivery(consumer, check)
            self.consumers.append(consumer)
            self.checks.append(check)
            members.append(at)
        self.placement["consumers"] = members
        gate = asyncio.Semaphore(32)

        async def device(index: int, named: list[str]) -> None:
            async with gate:
                client, _ = await setup.client(
                    [*named[:2], ""], spec["port"], f"{spec['prefix']}d{index}", None
                )
            acks = AckCount()
            client.on_data = self._acked(acks)
            self.devices[index], self.acks[index] = client, acks

        self.devices = [cast(Lean, None)] * len(spec["fleet_devices"])
        self.acks = [AckCount() for _ in self.devices]
        self.written = [0] * len(self.devices)
        self.views = [
            memoryview(stream(self.topic(n), self.qos, n, spec["count"] * SHARE))
            for n in range(len(self.devices))
        ]
        await asyncio.gather(*(device(n, d) for n, d in enumerate(spec["fleet_devices"])))
        await self._lanes(setup, members)

    async def _lanes(self, setup: Setup, consumers: list[str]) -> None:
        """A lane per member with a consumer, each device's slices in the lane of the
        member the broker says it is on."""
        ids = [named[2] if len(named) > 2 else "" for named in self.spec["fleet_devices"]]
        where = setup.where
        found = await where.members_of([i for i in ids if i]) if where and all(ids) else {}
        lane_of = [consumers.index(found[i]) if found.get(i) in consumers else -1 for i in ids]
        self.placement["devices"] = {m: lane_of.count(n) for n, m in enumerate(consumers)}
        self.placement["devices"]["unknown"] = lane_of.count(-1)
        count, step = self.spec["count"] * SHARE, self.spec["slice"]
        order = [
            (device, start, min(start + step, count))
            for start in range(0, count, step)
            for device in range(len(self.devices))
        ]
        self.lanes = [Lane([j for j in order if lane_of[j[0]] == n], check)
                      for n, check in enumerate(self.checks)]  # fmt: skip
        self.lanes.append(Lane([j for j in order if lane_of[j[0]] == -1], None))

    def _delivery(self, consumer: Lean, check: FleetCheck) -> Data:
        def on_data(data: bytes) -> None:
            acks = check.feed(data)
            if acks:
                consumer.write(acks)
            self.received = sum(c.received for c in self.checks)
            self.slices.passed(self.received, time.monotonic_ns())
            self.pump()
            self.changed()

        return on_data

    def _acked(self, acks: AckCount) -> Data:
        def on_data(data: bytes) -> None:
            before = acks.count
            acks.feed(data)
            self.acked += acks.count - before
            if self.acked >= self.total:
                self.changed()

        return on_data

    def pump(self) -> None:
        size, window = self.shape.size, self.window
        for lane in self.lanes:
            jobs, check = lane.jobs, lane.check
            while lane.next < len(jobs) and self.left:
                device, start, end = jobs[lane.next]
                end = min(end, start + self.left)
                queued = lane.sent - check.received if check else self.sent - self.received
                # Past the window, wait; unless nothing at all is in flight, should a
                # member's messages have gone to another's consumer.
                if queued + end - start > window and self.sent > self.received:
                    break
                self.devices[device].write(self.views[device][start * size : end * size])
                lane.next += 1
                lane.sent += end - start
                self.sent += end - start
                self.left -= end - start
                self.written[device] = end
                self.slices.wrote(self.sent, time.monotonic_ns())

    def start(self) -> None:
        self.pump()

    def counted(self) -> int:
        return self.received + self.acked

    def changed(self) -> None:
        if self.received >= self.total and (not self.qos or self.acked >= self.total):
            self.complete()

    def result(self) -> dict[str, Any]:
        expected = sum(checksum([n], count) for n, count in enumerate(self.written))
        return {
            "sent": self.sent,
            "per_lane": [lane.sent for lane in self.lanes],
            "received": self.received,
            "per_consumer": [c.received for c in self.checks],
            "checksum_ok": sum(c.total for c in self.checks) == expected,
            "bad_headers": sum(c.bad_headers for c in self.checks),
            "pubacks": sum(a.count for a in self.acks),
            "bad_pubacks": sum(a.bad for a in self.acks),
            "latency_ms": self.slices.percentiles(),
            "placement": self.placement,
        }


async def run_lean(spec: dict[str, Any]) -> dict[str, Any]:
    batch = give_way()
    where = None
    if spec.get("cluster"):
        where = Where(spec["nats_url"], spec["cluster"], spec["members"])
        await where.open()
        await where._ask([])  # who the members are
    try:
        setup = Setup(spec, where)
        job: Pairs | Fleet = Pairs(spec) if spec["mode"] == "pairs" else Fleet(spec)
        await job.connect(setup)
        announce({"ready": len(setup.clients), "tries": setup.tries})
        await next_command()  # "go": the benchmark has the brokers' figures before
        started, cpu = time.perf_counter(), own_cpu()
        job.start()
        await job.wait(spec.get("quiet_s", 10.0))
        wall, cpu = job.elapsed(started), own_cpu() - cpu
        # Said before the clients close: the benchmark reads the brokers' CPU now, so that
        # what a broker does for 1,024 disconnects (its store's thread included) is not
        # counted as the messages' work.
        announce({"done": True})
        await next_command()  # "close", or stdin closed
        await asyncio.gather(*(client.close() for client in setup.clients))
        return {**job.result(), "wall_s": wall, "phase_cpu_s": cpu, "tries": setup.tries,
                "sched_batch": batch}  # fmt: skip
    finally:
        if where is not None:
            await where.close()


if __name__ == "__main__":
    run_worker(lambda spec: run_lean)
