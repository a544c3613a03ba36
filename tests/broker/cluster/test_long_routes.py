"""A filter too long to be a NATS subject (``broker.cluster.frames.to_key``) announced,
withdrawn and left over like any other, between two members on the machine's NATS."""

import asyncio

from broker.cluster.frames import is_digest, to_key
from broker.cluster.link import ClusterLink
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable

WAIT = 10.0
LONG = "devices/" + "\U0001f600" * 1000 + "/#"  # 4,010 bytes: its key would be 5,347


async def test_a_long_filter_reaches_the_other_members_table_and_leaves_it(
    link: ClusterLink,
) -> None:
    bucket = await link.key_value(BUCKET)
    here, there = RouteTable(), RouteTable()
    announcer = RouteAnnouncer(bucket, link.member, here)
    other = RouteAnnouncer(bucket, "node-b", there)
    await announcer.start()
    await other.start()
    try:
        announcer.add(LONG)
        announcer.add("short/#")
        await asyncio.wait_for(announcer.written(), WAIT)
        await asyncio.wait_for(other.reached(announcer.revision), WAIT)
        assert set(there.members_for("devices/" + "\U0001f600" * 1000 + "/x")) == {link.member}
        keys = await bucket.values()
        assert any(is_digest(key.partition(".")[2]) for key in keys)
        assert max(len(key) for key in keys) < 100

        announcer.remove(LONG)
        announcer.add("later/#")  # written after the delete: seen after it too
        await asyncio.wait_for(announcer.written(), WAIT)
        await asyncio.wait_for(other.reached(announcer.revision), WAIT)
        assert not there.members_for("devices/" + "\U0001f600" * 1000 + "/x")
        assert there.counts() == {link.member: 2}
    finally:
        await announcer.stop()
        await other.stop()


async def test_a_long_filter_left_over_from_a_previous_run_is_deleted(link: ClusterLink) -> None:
    bucket = await link.key_value(BUCKET)
    before = RouteAnnouncer(bucket, link.member, RouteTable())
    await before.start()
    before.add(LONG)
    before.add("kept/#")
    await asyncio.wait_for(before.written(), WAIT)
    await before.stop()
    again = RouteAnnouncer(bucket, link.member, RouteTable())  # the next run
    await again.start()
    try:
        again.add("kept/#")
        again.drop_leftovers()
        await asyncio.wait_for(again.written(), WAIT)
        assert set(await bucket.values()) == {f"{link.member}.{to_key('kept/#')}"}
    finally:
        await again.stop()
