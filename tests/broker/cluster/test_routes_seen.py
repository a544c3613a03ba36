"""What a SUBACK waits for in a cluster (``broker.cluster.routes_seen``): once a member's
filters are written, the other members say their route tables hold them. Two members on the
machine's NATS, each with its announcer and answers; a third named but not running."""

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from broker.cluster.link import ClusterLink
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable
from broker.cluster.routes_seen import RoutesSeen
from nanoiot.settings import Settings
from tests.broker.cluster.joined import joined

WAIT = 10.0
FILTERS = 50  # subscribed to at once


async def _member(link: ClusterLink, others: set[str]) -> tuple[RouteAnnouncer, RoutesSeen]:
    announcer = RouteAnnouncer(await link.key_value(BUCKET), link.member, RouteTable())
    seen = RoutesSeen(link, announcer, lambda: others)
    await seen.start()
    await announcer.start()
    return announcer, seen


@pytest.fixture
async def members(
    cluster_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[tuple[RouteAnnouncer, RoutesSeen], RouteTable]]:
    """Member a (asking b, and c, which does not run) and b's table."""
    async with (
        joined(cluster_settings(node_name="a")) as link_a,
        joined(cluster_settings(node_name="b")) as link_b,
    ):
        a = await _member(link_a, {"b", "c"})
        b = await _member(link_b, {"a"})
        try:
            yield a, b[0].table
        finally:
            for announcer, seen in (a, b):
                await seen.stop()
                await announcer.stop()


async def test_once_seen_the_other_members_table_has_every_filter(
    members: tuple[tuple[RouteAnnouncer, RoutesSeen], RouteTable],
) -> None:
    (announcer, seen), table_b = members
    filters = [f"devices/d{n}/in" for n in range(FILTERS)]
    for topic_filter in filters:
        announcer.add(topic_filter)
    async with asyncio.timeout(WAIT):
        await announcer.written()  # in the bucket: not yet in b's table, maybe
        waits = [seen.seen_for([topic_filter]) for topic_filter in filters]
        for topic_filter, waiting in zip(filters, waits, strict=True):
            assert waiting is not None
            await waiting
            # b's table has it as its SUBACK would go: a message published there reaches a.
            assert table_b.members_for(topic_filter) == {"a"}
    assert seen.rounds == 1  # shared: the waits that came while it was out took it
    assert seen.late == 0  # c runs nowhere: NATS said nobody listens, at once
    assert seen.seen_for(filters[:1]) is None  # seen already: nothing to wait for
