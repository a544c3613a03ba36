"""The revision a member's route table is as of (``RouteAnnouncer.revision``), which every
message published is stamped with (``broker.cluster.handover``): the later of the last change
its watch gave and its own last filter written, whatever wrote or deleted what. Two members
on the machine's NATS."""

import asyncio
from collections.abc import Callable

from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable
from nanoiot.settings import Settings
from tests.broker.cluster.joined import joined

WAIT = 10.0


async def test_the_revision_follows_writes_and_deletions_of_every_member(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with (
        joined(cluster_settings(node_name="a")) as link_a,
        joined(cluster_settings(node_name="b")) as link_b,
        asyncio.timeout(WAIT),
    ):
        a = RouteAnnouncer(await link_a.key_value(BUCKET), "a", RouteTable())
        b = RouteAnnouncer(await link_b.key_value(BUCKET), "b", RouteTable())
        await a.start()
        await b.start()
        try:
            assert a.revision == b.revision == 0  # an empty bucket
            b.add("t/b")  # another member's filter: a's watch gives it
            await b.written()
            await a.reached(b.revision)
            assert a.revision == b.revision == 1
            assert a.table.members_for("t/b") == {"b"}
            a.add("t/a")  # its own: as of its write, before its watch gives it back
            await a.written()
            assert a.revision == 2
            b.remove("t/b")  # a deletion is a revision of the bucket too
            await b.written()
            await a.reached(3)
            assert a.revision == 3
            assert a.table.members_for("t/b") == frozenset()
            a.remove("t/a")  # its own deletion: as of its watch giving it
            await a.written()
            await a.reached(4)
            assert a.revision == 4
            b.add("t/b")
            await b.written()
            await a.reached(5)
            assert (a.revision, b.revision) == (5, 5)
        finally:
            await a.stop()
            await b.stop()
