"""Retained messages published at once on two members by one device near its limits: every
member ends up keeping what the cluster's bucket holds, the same messages everywhere.

A member checks a device's retained limits against what it knows, its own and the others'
(replicated a millisecond later): two members each accepting a device's messages within
that millisecond may together pass a limit, and the bucket then holds them all. A member
that refused the others' copies kept a different set from its peers for good (a subscriber
got different retained messages, or an older value of one, depending on the node it reached).
Two members with their own ``RetainedStore`` on one real NATS bucket; the race is made
certain by retaining on both before either's watch can deliver.
"""

import asyncio
import functools
from collections.abc import Callable

from broker.cluster.link import ClusterLink
from broker.cluster.retained import BUCKET, RetainedReplica
from broker.mqtt.properties import NO_PROPERTIES, Properties
from broker.retained import RetainedStore, RetainLimits
from nanoiot.settings import Settings
from tests.broker.cluster.joined import joined

WAIT = 10.0
DEVICE = "device-1"
OTHER = "device-2"  # publishes the markers: no limit of DEVICE's applies to them


class WatchedStore(RetainedStore):
    """A retained store whose changes a test can wait on."""

    def __init__(self, limits: RetainLimits) -> None:
        super().__init__(limits)
        self.changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    def retain(
        self, topic: str, payload: bytes, qos: int, owner: str | None,
        properties: Properties = NO_PROPERTIES, expires_at: float | None = None,
        *, replicate: bool = True,
    ) -> str | None:  # fmt: skip
        refused = super().retain(
            topic, payload, qos, owner, properties, expires_at, replicate=replicate
        )
        task = asyncio.get_running_loop().create_task(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return refused

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def until(self, holds: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(holds), WAIT)

    def topics(self) -> dict[str, bytes]:
        return {kept.topic: kept.payload for kept in self.matching("#") if kept.owner == DEVICE}


def both_markers(store: RetainedStore) -> bool:
    return len(store.matching("devices/e/+")) == 2


async def replica(link: ClusterLink, limits: RetainLimits) -> tuple[WatchedStore, RetainedReplica]:
    store = WatchedStore(limits)
    replicated = RetainedReplica(await link.key_value(BUCKET), store)
    await replicated.start()
    return store, replicated


async def test_members_racing_past_a_device_limit_keep_the_same_retained_messages(
    cluster_settings: Callable[..., Settings],
) -> None:
    limits = RetainLimits(max_messages_per_device=3, max_bytes_per_device=1000)
    async with (
        joined(cluster_settings(node_name="a")) as link_a,
        joined(cluster_settings(node_name="b")) as link_b,
    ):
        store_a, replica_a = await replica(link_a, limits)
        store_b, replica_b = await replica(link_b, limits)
        try:
            # Within one turn of the loop: neither member has seen the other's yet.
            for n in range(3):
                assert store_a.retain(f"devices/d/a{n}", b"from a", 1, DEVICE) is None
                assert store_b.retain(f"devices/d/b{n}", b"from b", 1, DEVICE) is None
            # Each member's marker comes after its own writes: once both members have both
            # markers, each has been offered everything the other wrote.
            store_a.retain("devices/e/marker-a", b"m", 1, OTHER)
            store_b.retain("devices/e/marker-b", b"m", 1, OTHER)
            for store in (store_a, store_b):
                await store.until(functools.partial(both_markers, store))

            assert store_a.topics() == store_b.topics()
            assert len(store_a.topics()) == 6  # both members' three: what the bucket holds
            assert store_a.owned_by(DEVICE) == store_b.owned_by(DEVICE) == 6
            # Over its limit everywhere now: neither member takes one more of this device's.
            assert store_a.retain("devices/d/c", b"x", 1, DEVICE) == (
                "max_retained_messages_per_device"
            )
            assert store_b.retain("devices/d/a0", b"newer", 1, DEVICE) == (
                "max_retained_messages_per_device"
            )
            # A deletion is never refused, and reaches the other member.
            store_a.retain("devices/d/b0", b"", 1, DEVICE)
            await store_b.until(lambda: "devices/d/b0" not in store_b.topics())
        finally:
            await replica_a.stop()
            await replica_b.stop()
