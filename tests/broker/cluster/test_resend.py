"""The pure parts of routing a QoS 2 message again for its publisher's resend
(``broker.cluster.resend``); the whole is tested in tests/cluster/test_qos2_resend.py."""

import asyncio

from broker.cluster.resend import (
    DeliveredIds,
    Unrouted,
    groups_again,
    handed_over,
    read_handed_over,
    remember_unless_routed,
)
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from nanoiot.errors import ClusterUnavailableError


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


async def test_a_failed_routing_is_kept_with_its_packet_id_until_one_succeeds() -> None:
    loop = asyncio.get_running_loop()
    session = persistent("c")
    session.awaiting_pubrel.add(5)
    record = Unrouted(42, {("g", "t"): "m1"})
    first: asyncio.Future[None] = loop.create_future()
    remember_unless_routed(session, 5, record, first)
    first.set_exception(ClusterUnavailableError("member m1 did not confirm"))
    await asyncio.sleep(0)  # its callbacks run
    assert session.unrouted == {5: record}

    again: asyncio.Future[None] = loop.create_future()  # routed again: fails again
    remember_unless_routed(session, 5, record, again)
    again.cancel()
    await asyncio.sleep(0)
    assert session.unrouted == {5: record}

    last: asyncio.Future[None] = loop.create_future()
    remember_unless_routed(session, 5, record, last)
    last.set_result(None)
    await asyncio.sleep(0)
    assert session.unrouted == {}


async def test_a_routing_that_succeeds_keeps_nothing() -> None:
    session = persistent("c")
    session.awaiting_pubrel.add(5)
    routed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remember_unless_routed(session, 5, Unrouted(1), routed)
    routed.set_result(None)
    await asyncio.sleep(0)
    assert not session.unrouted


async def test_nothing_is_kept_for_a_packet_id_released_meanwhile() -> None:
    """No resend follows a PUBREL (§4.3.3): at most one record per id awaiting PUBREL."""
    session = persistent("c")
    routed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remember_unless_routed(session, 5, Unrouted(1), routed)
    routed.set_exception(ClusterUnavailableError("refused"))
    await asyncio.sleep(0)
    assert not session.unrouted


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
    assert read_handed_over(answer) == ({3, 5}, {5: record})
    assert read_handed_over(handed_over([], None)) == (set(), {})


def test_a_garbled_or_earlier_answer_names_no_record() -> None:
    assert read_handed_over(b"1") == (set(), {})  # a member that did not hold the session
    assert read_handed_over(b'{"awaiting_pubrel": [4]}') == ({4}, {})  # an earlier version
    garbled = b'{"awaiting_pubrel": [4], "unrouted": {"4": [1, [["g"]]]}}'
    assert read_handed_over(garbled) == ({4}, {})
    not_awaited = b'{"awaiting_pubrel": [4], "unrouted": {"9": [1, []]}}'
    assert read_handed_over(not_awaited) == ({4}, {})
