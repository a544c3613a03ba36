"""A member fenced off keeps the routes of the sessions it forgets until it restored the ones
still its own (``RouteAnnouncer.keep``, ``broker.cluster.fence``): on the machine's NATS."""

from broker.cluster.frames import from_key
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable


async def _routes(bucket: KeyValue, member: str) -> set[str]:
    """The filters the bucket has a route of ``member`` for (read as ``forget`` reads them)."""
    found, watch = set(), await bucket.watch(f"{member}.>")
    try:
        while (change := await watch.next()) is not None:
            key, present = change
            if present:
                found.add(from_key(key.removeprefix(f"{member}.")))
    finally:
        await watch.stop()
    return found


async def test_a_fenced_members_routes_stay_until_its_sessions_are_restored(
    link: ClusterLink,
) -> None:
    bucket = await link.key_value(BUCKET)
    announcer = RouteAnnouncer(bucket, link.member, RouteTable())
    await announcer.start()
    try:
        for topic_filter in ("restored/#", "taken/#"):
            announcer.add(topic_filter)
        announcer.keep()  # fenced off: it forgets both sessions
        for topic_filter in ("restored/#", "taken/#"):
            announcer.remove(topic_filter)
        await announcer.written()
        assert await _routes(bucket, link.member) == {"restored/#", "taken/#"}
        announcer.add("restored/#")  # back: one session is still its own, restored
        announcer.drop_leftovers()
        await announcer.written()
        assert await _routes(bucket, link.member) == {"restored/#"}
        announcer.remove("restored/#")  # kept no more once restored
        await announcer.written()
        assert await _routes(bucket, link.member) == set()
    finally:
        await announcer.stop()
