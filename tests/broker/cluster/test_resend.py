"""The pure parts of routing a QoS 2 message again for its publisher's resend
(``broker.cluster.resend``); the whole is tested in tests/cluster/test_qos2_resend.py."""

import asyncio
from typing import TYPE_CHECKING, cast

from broker.cluster.resend import (
    DeliveredIds,
    Unrouted,
    groups_again,
    handed_over,
    read_handed_over,
    remember_unless_routed,
    route_again,
    taken_over,
)
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from nanoiot.errors import ClusterUnavailableError

if TYPE_CHECKING:
    from broker.cluster.router import ClusterRouter


def test_an_id_delivered_before_says_when() -> None:
    delivered = DeliveredIds(most=10)
    assert delivered.first(7, now=1.0) is None
    assert delivered.first(7, now=2.0) == 1.0  # the first time, not counted again
    assert delivered.first(8, now=3.0) is None
    assert len(delivered) == 2


def test_past_its_bound_the_oldest_ids_are_forgotten() -> None:
    delivered = DeliveredIds(most=3)
    for message_id in range(1, 6):
        assert delivered.first(message_id, now=float(message_id)) is None
    assert len(delivered) == 3
    assert delivered.first(5, now=9.0) == 5.0  # still known
    assert delivered.first(1, now=9.0) is None  # forgotten: taken as new


def test_a_groups_copy_goes_again_to_the_member_that_had_it() -> None:
    """5.0 §4.8.2: one copy per group. The member that had it delivers it once; another is
    chosen only if it left the group; a group with no other member now gets none."""
    chosen = {("g", "a/#"): "m2", ("h", "a/#"): "gone", ("k", "a/#"): "m1"}
    now = {("g", "a/#"): ["m1", "m2"], ("h", "a/#"): ["m3", "m1"]}
    assert groups_again(chosen, now) == {"m2": [("g", "a/#")], "m1": [("h", "a/#")]}


def persistent(client_id: str) -> BrokerSession:
    return BrokerSession(("device", client_id), "device", persistent=True)


class Recorded(MemorySessionStore):
    """A store that remembers what it was told of records (pure logic: ``broker.journal``
    and the SQL are tested on their own)."""

    def __init__(self) -> None:
        self.told: list[tuple[int, Unrouted | None]] = []

    def unrouted(self, session: BrokerSession, packet_id: int, record: Unrouted | None) -> None:
        self.told.append((packet_id, record))


async def test_a_record_is_kept_while_pending_and_after_failures_until_one_succeeds() -> None:
    loop = asyncio.get_running_loop()
    session, store = persistent("c"), Recorded()
    session.awaiting_pubrel.add(5)
    record = Unrouted(42, {("g", "t"): "m1"})
    first: asyncio.Future[None] = loop.create_future()
    remember_unless_routed(session, 5, record, first, store)
    assert session.unrouted == {5: record}  # pending: a resend waits for it
    assert record.pending is first
    first.set_exception(ClusterUnavailableError("member m1 did not confirm"))
    await asyncio.sleep(0)  # its callbacks run
    assert session.unrouted == {5: record}
    assert record.pending is None  # failed: a resend routes it again

    again: asyncio.Future[None] = loop.create_future()  # routed again: fails again
    remember_unless_routed(session, 5, record, again, store)
    again.cancel()
    await asyncio.sleep(0)
    assert session.unrouted == {5: record}
    assert store.told == []  # the store has it since the first routing (``route_first``)

    last: asyncio.Future[None] = loop.create_future()
    remember_unless_routed(session, 5, record, last, store)
    last.set_result(None)
    await asyncio.sleep(0)
    assert session.unrouted == {}
    assert store.told == [(5, None)]  # nothing to route again any more


async def test_a_routing_that_succeeds_keeps_nothing() -> None:
    session, store = persistent("c"), Recorded()
    session.awaiting_pubrel.add(5)
    routed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remember_unless_routed(session, 5, Unrouted(1), routed, store)
    routed.set_result(None)
    await asyncio.sleep(0)
    assert not session.unrouted
    assert store.told == [(5, None)]


async def test_nothing_is_kept_for_a_packet_id_released_meanwhile() -> None:
    """No resend follows a PUBREL (§4.3.3), which drops the record (``broker.client``):
    at most one record per id awaiting PUBREL, whatever the routing's outcome."""
    loop = asyncio.get_running_loop()
    for outcome in (None, ClusterUnavailableError("refused")):
        session, store = persistent("c"), Recorded()
        session.awaiting_pubrel.add(5)
        routed: asyncio.Future[None] = loop.create_future()
        remember_unless_routed(session, 5, Unrouted(1), routed, store)
        session.awaiting_pubrel.discard(5)
        assert session.unrouted is not None
        session.unrouted.pop(5)
        if outcome is None:
            routed.set_result(None)
        else:
            routed.set_exception(outcome)
        await asyncio.sleep(0)
        assert not session.unrouted
        assert store.told == []


async def test_a_session_given_up_meanwhile_leaves_the_store_to_its_new_member() -> None:
    """Handed over while its routing was pending (``Registry.forget`` clears it): the new
    member's copy of the record is not this member's to clear."""
    session, store = persistent("c"), Recorded()
    session.awaiting_pubrel.add(5)
    routed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remember_unless_routed(session, 5, Unrouted(1), routed, store)
    session.clear()
    routed.set_result(None)
    await asyncio.sleep(0)
    assert store.told == []


async def test_a_resend_while_the_first_routing_is_pending_waits_for_it() -> None:
    """Not routed a second time meanwhile: its PUBREC waits for the first routing's
    outcome (tests/cluster/test_qos2_resend.py shows it with real members)."""
    session = persistent("c")
    session.awaiting_pubrel.add(5)
    first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remember_unless_routed(session, 5, Unrouted(1), first, Recorded())
    not_used = cast("ClusterRouter", None)  # nothing is routed
    assert route_again(not_used, Message("t", b"", 2), session, 5) is first
    assert route_again(not_used, Message("t", b"", 2), session, 6) is None
    first.set_result(None)


def test_a_record_is_stored_as_text_and_read_back() -> None:
    record = Unrouted(2**64 - 1, {("g", "a/#"): "m2", ("h", "+"): "m1"})
    stored = record.stored()
    assert stored is not None
    assert Unrouted.read(stored) == record
    assert Unrouted(0).stored() is None  # routed on its member alone: nothing to keep
    assert Unrouted.read("[1, [[2]]]") is None
    assert Unrouted.read("not json") is None


async def test_a_message_delivered_here_before_goes_only_to_sessions_that_came_since() -> None:
    store = MemorySessionStore()
    router = LocalRouter(store, Limits(), BrokerMetrics())
    before, after = persistent("before"), persistent("after")
    message = Message("a/b", b"x", 2, id=9)
    router.subscribe(before, "a/#", Subscription(2))
    delivered_at = before.since + 0.001
    after.since = delivered_at + 0.001  # it moved here later
    router.subscribe(after, "a/+", Subscription(2))

    assert router.deliver_since(message, delivered_at) is True  # queued: the store written
    assert [out.payload for out in after.queue] == [b"x"]
    assert not before.queue
    assert router.deliver_since(Message("x/y", b"", 2, id=10), delivered_at) is False


def test_what_a_hand_over_answer_carries_is_read_back() -> None:
    record = Unrouted(2**63 + 5, {("g", "a/#"): "m2"})
    answer = handed_over([3, 5], {5: record})
    assert read_handed_over(answer) == ({3, 5}, {5: record}, None)
    assert read_handed_over(handed_over([], None)) == (set(), {}, None)
    # Not given a gone member's parked frames yet: that member, and the pin on them.
    taking = handed_over([], None, ("a", "taking_1"))
    assert read_handed_over(taking) == (set(), {}, ("a", "taking_1"))


def test_a_garbled_or_earlier_answer_names_no_record() -> None:
    assert read_handed_over(b"1") == (set(), {}, None)  # a member that did not hold it
    assert read_handed_over(b'{"awaiting_pubrel": [4]}') == ({4}, {}, None)  # earlier version
    garbled = b'{"awaiting_pubrel": [4], "unrouted": {"4": [1, [["g"]]]}, "parked": [1]}'
    assert read_handed_over(garbled) == ({4}, {}, None)
    not_awaited = b'{"awaiting_pubrel": [4], "unrouted": {"9": [1, []]}}'
    assert read_handed_over(not_awaited) == ({4}, {}, None)


def test_records_a_take_over_named_join_those_the_store_had() -> None:
    """Those the store had (this version) stay; one only the answer named (a member of an
    earlier version kept it in memory only) is stored now."""
    session, store = persistent("c"), Recorded()
    stored, named = Unrouted(1), Unrouted(2)
    session.unrouted = {4: stored}
    taken_over(session, {4: Unrouted(1), 5: named}, store)
    assert session.unrouted == {4: stored, 5: named}
    assert store.told == [(5, named)]
