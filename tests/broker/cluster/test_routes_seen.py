"""What a SUBACK waits for in a cluster (``broker.cluster.routes_seen``): once a member's
filters are written, the other members say their route tables hold them. Two members on the
machine's NATS, each with its announcer and answers; a third named but not running; and a
member that has just started, not known yet to the one asking."""

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from broker.cluster import routes_seen
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.members import BUCKET as MEMBERS
from broker.cluster.router import ClusterRouter
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable
from broker.cluster.routes_seen import RoutesSeen
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.router import LocalRouter
from broker.session_store import MemorySessionStore
from nanoiot.settings import Settings
from tests.broker.cluster.joined import joined

WAIT = 10.0
FILTERS = 50  # subscribed to at once
SILENT_FOR = 0.2  # SEEN_WITHIN here: a member that never answers is passed over this soon


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


def _counted(router: ClusterRouter, name: str) -> float:
    """``name``'s value in the cluster's ``/metrics`` text."""
    registry = CollectorRegistry()
    registry.register(router.collector())
    scraped = generate_latest(registry).decode()
    found = re.search(rf"^nanoiot_cluster_routes_seen_{name}_total (\S+)$", scraped, re.M)
    assert found is not None, name
    return float(found.group(1))


async def test_rounds_and_members_passed_over_are_in_the_metrics(
    members: tuple[tuple[RouteAnnouncer, RoutesSeen], RouteTable],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (announcer, seen), _table_b = members
    monkeypatch.setattr(routes_seen, "SEEN_WITHIN", SILENT_FOR)
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, seen.link, local.store, 1024 * 1024)
    router.routes_seen = seen
    assert (_counted(router, "rounds"), _counted(router, "late")) == (0, 0)
    # c listens, as a member that stalled would, and never answers.
    silent = await seen.link.client.subscribe(seen.link.subject("routes", "c"))
    try:
        announcer.add("devices/d1/in")
        async with asyncio.timeout(WAIT):
            await announcer.written()
            waiting = seen.seen_for(["devices/d1/in"])
            assert waiting is not None
            await waiting  # b answered; c was passed over after SILENT_FOR
    finally:
        await silent.unsubscribe()
    assert (seen.rounds, seen.late) == (1, 1)
    assert (_counted(router, "rounds"), _counted(router, "late")) == (1, 1)


class Reading(RouteAnnouncer):
    """A member's announcer that says when it is first asked how far its table is."""

    def __init__(self, bucket: KeyValue, member: str, table: RouteTable) -> None:
        super().__init__(bucket, member, table)
        self.asked = asyncio.Event()

    async def reached(self, revision: int) -> None:
        self.asked.set()
        await super().reached(revision)


async def test_a_member_whose_heartbeat_was_not_read_yet_is_asked_too(
    cluster_settings: Callable[..., Settings],
) -> None:
    """Member b has just started: its heartbeat entry is in the members bucket, a has not
    read it yet (its view names nobody), and b's table is not read yet. a's SUBACK waits for
    b's table to hold the route; before, a asked nobody and a message published on b right
    after the SUBACK went nowhere."""
    async with (
        joined(cluster_settings(node_name="a")) as link_a,
        joined(cluster_settings(node_name="b")) as link_b,
    ):
        announcer = RouteAnnouncer(await link_a.key_value(BUCKET), "a", RouteTable())
        seen = RoutesSeen(link_a, announcer, set)  # nobody known yet
        seen.entries = (await link_a.key_value(MEMBERS)).keys_now
        late = Reading(await link_b.key_value(BUCKET), "b", RouteTable())
        late_seen = RoutesSeen(link_b, late, lambda: {"a"})
        await announcer.start()
        await seen.start()
        await late_seen.start()  # b listens, then writes its heartbeat
        await (await link_b.key_value(MEMBERS)).put("b", b"{}")
        try:
            announcer.add("devices/d1/in")
            async with asyncio.timeout(WAIT):
                await announcer.written()
                waiting = seen.seen_for(["devices/d1/in"])
                assert waiting is not None
                await late.asked.wait()  # b was asked
                assert not waiting.done()  # b's table does not have it yet
                await late.start()  # b reads the bucket
                await waiting
            assert late.table.members_for("devices/d1/in") == {"a"}
            assert seen.late == 0
        finally:
            for one, its_seen in ((announcer, seen), (late, late_seen)):
                await its_seen.stop()
                await one.stop()
