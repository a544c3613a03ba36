"""A restarted member writes only the routes the bucket does not hold already, and a route a
survivor deletes, whenever it does, is written again while a session here uses it
(``RouteAnnouncer._announce``, ``_seen``): on the machine's NATS."""

import asyncio

from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.own_entries import OwnEntries
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable

# Plain filters, and one longer than a key may be (its key a digest, its value the filter).
FILTERS = [f"devices/fleet-{n}/in/+" for n in range(200)] + ["long/" + "x" * 3000 + "/#"]
HELD_WITHIN = 10.0  # seconds for the bucket to hold every route again


async def last_revision(link: ClusterLink, bucket: KeyValue) -> int:
    """The bucket's last revision: unchanged, nothing was written to it."""
    info = await link.client.jetstream().stream_info(f"KV_{bucket.bucket}")
    return info.state.last_seq


async def held(bucket: KeyValue, member: str) -> int:
    """Once the bucket holds a route of ``member`` for each of ``FILTERS``; its revision then."""
    present: set[str] = set()
    watch = await bucket.watch(f"{member}.>")
    try:
        async with asyncio.timeout(HELD_WITHIN):
            while len(present) < len(FILTERS):
                change = await watch.next()
                if change is not None:
                    key, there = change
                    (present.add if there else present.discard)(key)
        return watch.revision
    finally:
        await watch.stop()


async def previous_run(bucket: KeyValue, member: str) -> None:
    """``member``'s previous run: it wrote the routes of its sessions, then stopped."""
    announcer = RouteAnnouncer(bucket, member, RouteTable())
    await announcer.start()
    try:
        for topic_filter in FILTERS:
            announcer.add(topic_filter)
        await announcer.written()
    finally:
        await announcer.stop()


async def restarted(bucket: KeyValue, member: str) -> RouteAnnouncer:
    """``member`` again, its sessions restored (their routes added ``later``)."""
    announcer = RouteAnnouncer(bucket, member, RouteTable())
    await announcer.start()
    for topic_filter in FILTERS:
        announcer.add(topic_filter, later=True)
    announcer.drop_leftovers()
    await announcer.written()
    return announcer


async def test_a_restart_writes_none_of_the_routes_its_previous_run_left(
    link: ClusterLink,
) -> None:
    bucket = await link.key_value(BUCKET)
    await previous_run(bucket, link.member)
    before = await last_revision(link, bucket)
    announcer = await restarted(bucket, link.member)
    try:
        assert await last_revision(link, bucket) == before  # 201 puts before
        assert announcer.skipped == len(FILTERS)
        assert await held(bucket, link.member) <= before
    finally:
        await announcer.stop()


async def test_a_route_a_survivor_deletes_after_the_restart_read_it_is_written_again(
    link: ClusterLink,
) -> None:
    """The survivor that adopted the member's sessions while it was away deletes its routes
    late: after the restart read them and decided not to write them."""
    bucket = await link.key_value(BUCKET)
    await previous_run(bucket, link.member)
    announcer = await restarted(bucket, link.member)
    try:
        assert announcer.skipped == len(FILTERS)
        survivor = RouteAnnouncer(bucket, "node-s", RouteTable())
        await survivor.forget(link.member)
        deleted = await last_revision(link, bucket)
        assert await held(bucket, link.member) > deleted  # written after the deletions
        assert announcer.rewritten == len(FILTERS)
    finally:
        await announcer.stop()


async def test_routes_a_survivor_deleted_before_the_restart_are_written(
    link: ClusterLink,
) -> None:
    bucket = await link.key_value(BUCKET)
    await previous_run(bucket, link.member)
    survivor = RouteAnnouncer(bucket, "node-s", RouteTable())
    await survivor.forget(link.member)
    announcer = await restarted(bucket, link.member)
    try:
        assert announcer.skipped == 0
        await held(bucket, link.member)
    finally:
        await announcer.stop()


async def test_a_survivors_deletion_racing_the_restore_leaves_every_route_written(
    link: ClusterLink,
) -> None:
    """The deletions and the restore's decisions interleave (the watch gives some deletions
    before the restore's adds, some after)."""
    bucket = await link.key_value(BUCKET)
    await previous_run(bucket, link.member)
    announcer = RouteAnnouncer(bucket, link.member, RouteTable())
    await announcer.start()
    try:
        survivor = RouteAnnouncer(bucket, "node-s", RouteTable())
        forgetting = asyncio.create_task(survivor.forget(link.member))
        for topic_filter in FILTERS:
            announcer.add(topic_filter, later=True)
            await asyncio.sleep(0)  # a turn of the loop: the survivor deletes meanwhile
        announcer.drop_leftovers()
        await forgetting
        await held(bucket, link.member)
    finally:
        await announcer.stop()


def test_a_late_older_change_does_not_hide_a_newer_one() -> None:
    """The watch may give a change after the writer learnt of a newer one (its answer came
    first): the newer stands; this member's own deletion is let go once the watch gives it."""
    own = OwnEntries()
    own.seen("m.a", b"", 10, watched=False)  # written here
    assert not own.seen("m.a", None, 9, watched=True)  # an older deletion, given late
    assert own.holds("m.a", b"")
    own.seen("m.a", None, 11, watched=False)  # deleted here
    assert not own.seen("m.a", b"", 10, watched=True)  # the older write, given late
    assert not own.holds("m.a", b"")
    assert not own.seen("m.a", None, 11, watched=True)  # its own deletion: nobody else's
    assert not own  # bounded: nothing older can come now


def test_a_deletion_by_another_member_is_told() -> None:
    own = OwnEntries()
    own.seen("m.a", b"", 5, watched=True)  # left by the previous run
    assert own.holds("m.a", b"")
    assert not own.holds("m.a", b"other")
    assert own.seen("m.a", None, 7, watched=True)  # a survivor's: written again if wanted
    assert not own.holds("m.a", b"")
