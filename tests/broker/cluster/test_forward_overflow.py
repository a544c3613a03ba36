"""A full forwarding buffer (``max_forward_buffer``) on the machine's NATS: every message
whose frame is dropped or refused fails its publisher (who sends it again), and no failed
confirmation is left for the event loop to report as never retrieved, whether the frame was
for a member, for a gone member's parked frames, sent on after a hand-over, or for a will
nobody acknowledges (``broker.cluster.forward``, ``broker.cluster.confirmations``)."""

import asyncio

import pytest

from broker.cluster.confirmations import all_of
from broker.cluster.departing import Departures
from broker.cluster.forward import Forwarder
from broker.cluster.link import ClusterLink
from broker.cluster.router import ClusterRouter
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable
from broker.cluster.will_entries import StoredWill
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.retained import RetainedStore, RetainLimits
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from broker.will_routing import publish_stored_will
from nanoiot.errors import ClusterUnavailableError
from tests.broker.cluster.parking import MIB, parking_forwarder
from tests.unretrieved import never_retrieved

WAIT = 10.0
FULL = "max_forward_buffer 0 bytes exceeded"


async def _refused(confirmed: "asyncio.Future[None] | None") -> None:
    """The publisher's side: its confirmation fails, for the buffer."""
    assert confirmed is not None
    with pytest.raises(ClusterUnavailableError, match=FULL):
        await asyncio.wait_for(confirmed, WAIT)


async def test_frames_dropped_for_several_members_leave_no_failure_unretrieved(
    link: ClusterLink,
) -> None:
    forwarder = Forwarder(link, 0, lambda _member: None)
    await forwarder.start()
    try:
        with never_retrieved() as reports:
            members = ["b", "c", "d"]
            await _refused(forwarder.forward(members, Message("t", b"x", 1), members, {}))
        assert reports == []
        assert forwarder.frames_dropped == 3
    finally:
        await forwarder.stop()


async def test_frames_refused_for_gone_members_leave_no_failure_unretrieved(
    link: ClusterLink,
) -> None:
    async with parking_forwarder(link, max_buffer=MIB) as (forwarder, _):
        for member in ("gone-1", "gone-2"):  # nobody listens: parked from now on
            first = forwarder.forward([member], Message("t", b"0", 1), [member], {})
            assert first is not None
            await asyncio.wait_for(first, WAIT)
        assert forwarder.parked == {"gone-1", "gone-2"}
        forwarder.max_buffer = 0
        with never_retrieved() as reports:
            members = ["gone-1", "gone-2"]
            await _refused(forwarder.forward(members, Message("t", b"1", 2), members, {}))
        assert reports == []
        assert (forwarder.frames_parked, forwarder.frames_dropped) == (2, 2)


async def test_copies_sent_on_after_hand_overs_leave_no_failure_unretrieved(
    link: ClusterLink,
) -> None:
    """Two sessions that left for two members: a message for both is sent on to each, and
    both frames are dropped; the publisher waits for both (``ClusterRouter.publish``,
    ``broker.cluster.departing``)."""
    forwarder = Forwarder(link, 0, lambda _member: None)
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    announcer = RouteAnnouncer(await link.key_value(BUCKET), link.member, RouteTable())
    departures = Departures(forwarder, announcer, local, 60.0)
    await forwarder.start()
    try:
        for client_id, member in (("s1", "b"), ("s2", "c")):
            session = BrokerSession(("device", client_id), "device", persistent=True)
            session.subscriptions["t/#"] = Subscription(1)
            departures.depart(session, member)
        with never_retrieved() as reports:
            sent_on = departures.send_on_published(Message("t/1", b"x", 1), {})
            assert len(sent_on) == 2
            await _refused(all_of(sent_on))
            del sent_on
        assert reports == []
        assert departures.sent_on == 2
    finally:
        for departure in departures.departures.values():
            if departure.timer is not None:
                departure.timer.cancel()
        await forwarder.stop()


async def test_a_will_forwarded_into_a_full_buffer_is_not_left_unretrieved(
    link: ClusterLink, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody acknowledges a will (MQTT 3.1.1 §3.1.2.5): its routing's failure is logged."""
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    router = ClusterRouter(local, link, local.store, 0)
    router.table.add("b", "wills/#")
    await router.forwarder.start()
    try:
        will = StoredWill(("device", "c"), 1, "wills/c", b"gone", 1, False, b"", 0)
        with never_retrieved() as reports:
            publish_stored_will(router, RetainedStore(RetainLimits()), will)
            await asyncio.sleep(0)  # the turn ends: the frame is dropped
            await asyncio.sleep(0)  # ... and its failure reaches the will's callback
        assert reports == []
        assert router.forwarder.frames_dropped == 1
        assert "a will for wills/c was not routed to every member" in caplog.text
    finally:
        await router.forwarder.stop()
