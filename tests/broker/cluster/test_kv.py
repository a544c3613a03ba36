"""JetStream key-value on the machine's NATS: create-once, compare-and-set and a bucket TTL,
the three things take-over locks, session owners and node liveness are built from."""

import asyncio
from collections.abc import Callable

import pytest

from broker.cluster.link import ClusterLink
from nanoiot.errors import ClusterConflictError
from nanoiot.settings import Settings

WAIT = 10.0


async def test_create_once_then_compare_and_set(cluster_settings: Callable[..., Settings]) -> None:
    node = await ClusterLink.connect(cluster_settings())
    try:
        owners = await node.key_value("owners")
        assert owners.bucket == f"{node.cluster}_owners"
        first = await owners.create("device-1", b"node-a")
        with pytest.raises(ClusterConflictError, match="owners/device-1: the key exists"):
            await owners.create("device-1", b"node-b")
        second = await owners.update("device-1", b"node-b", first)
        assert second > first
        with pytest.raises(ClusterConflictError):
            await owners.update("device-1", b"node-c", first)  # stale: someone wrote since
        entry = await owners.get("device-1")
        assert entry is not None
        assert (entry.value, entry.revision) == (b"node-b", second)
        with pytest.raises(ClusterConflictError):
            await owners.delete("device-1", revision=first)
        await owners.delete("device-1", revision=second)
        assert await owners.get("device-1") is None
        assert await owners.create("device-1", b"node-c") > second  # free again
        # The same bucket, opened again, is the same data.
        again = await node.key_value("owners")
        assert (await again.get("device-1")) is not None
    finally:
        await node.close()


async def test_racing_creators_have_exactly_one_winner(
    cluster_settings: Callable[..., Settings],
) -> None:
    nodes = [await ClusterLink.connect(cluster_settings(), worker=i) for i in range(3)]
    try:
        buckets = [await node.key_value("locks") for node in nodes]
        results = await asyncio.gather(
            *(
                bucket.create("device-9", node.member.encode())
                for bucket, node in zip(buckets, nodes, strict=True)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, int)]
        losers = [r for r in results if isinstance(r, ClusterConflictError)]
        assert (len(winners), len(losers)) == (1, 2), results
    finally:
        for node in nodes:
            await node.close()


async def test_bucket_ttl_forgets_entries_not_rewritten(
    cluster_settings: Callable[..., Settings],
) -> None:
    """NATS 2.9 has no per-key TTL: liveness uses a bucket whose entries age out."""
    node = await ClusterLink.connect(cluster_settings())
    try:
        alive = await node.key_value("alive", ttl=1.0)
        await alive.put("node-a", b"up")
        assert await alive.get("node-a") is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while await alive.get("node-a") is not None:  # expiry has no event to wait on
            assert loop.time() < deadline, "the entry outlived its bucket's TTL"
            await asyncio.sleep(0.1)
    finally:
        await node.close()
