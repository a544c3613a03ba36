"""A session that moved between cluster members counts the messages that may reach it
twice (``broker.sessions.Arrival``), and holds what reaches it until its barriers came: pure
logic, and the local router's use of it; the cluster routing that uses it is tested in
tests/cluster/test_handover.py."""

from broker.cluster.arrivals import _forget_arrival
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from broker.sessions import Arrival, BrokerSession
from nanoiot.errors import ClusterUnavailableError

FILTER = "devices/+/telemetry"
GROUP = ("backends", FILTER)
SHARED = f"$share/backends/{FILTER}"


def message(message_id: int, routed_at: int) -> Message:
    return Message("t", b"", 2, id=message_id, routed_at=routed_at)


async def test_before_its_filters_are_visible_each_message_is_taken_once() -> None:
    arrival = Arrival(max_ids=10)
    assert arrival.first(message(1, routed_at=50))
    assert not arrival.first(message(1, routed_at=50))
    assert not arrival.first_sent_on(message(1, routed_at=50))  # the copy sent on
    assert arrival.first_sent_on(message(2, routed_at=50))
    assert not arrival.first(message(2, routed_at=50))  # then directly


async def test_a_message_routed_once_its_filters_were_visible_came_directly() -> None:
    """Routed at or after ``visible``: its router sent it here, so a copy sent on by the
    member the session left is the second one, and the direct one is not counted."""
    arrival = Arrival(max_ids=10)
    arrival.visible = 100
    assert arrival.first(message(3, routed_at=100))
    assert arrival.first(message(3, routed_at=100))  # not counted: never sent on
    assert not arrival.first_sent_on(message(4, routed_at=100))
    assert arrival.first_sent_on(message(5, routed_at=99))
    assert not arrival.first(message(5, routed_at=99))


async def test_a_message_without_a_cluster_id_is_never_dropped() -> None:
    arrival = Arrival(max_ids=10)
    assert arrival.first(message(0, routed_at=1))
    assert arrival.first(message(0, routed_at=1))


async def test_past_its_bound_the_oldest_ids_are_forgotten() -> None:
    arrival = Arrival(max_ids=3)
    for message_id in range(1, 6):
        assert arrival.first(message(message_id, routed_at=0))
    assert arrival.first(message(1, routed_at=0))  # forgotten: taken again
    assert not arrival.first(message(5, routed_at=0))  # still known


async def test_what_is_held_comes_out_once_in_each_publishers_order() -> None:
    """Held until every barrier came, then sorted by id: an id is its routing member's part
    then a count, so two publishers' messages each come in the order they were published
    (MQTT 3.1.1 §4.6), a second copy (sent on, then directly) left out."""
    arrival = Arrival(max_ids=10)
    arrival.visible = 100
    c, d = 7 << 32, 9 << 32
    released = arrival.hold(message(c | 2, routed_at=99), sent_on=False)
    arrival.hold(message(d | 1, routed_at=100), sent_on=False)
    arrival.hold(message(c | 1, routed_at=98), sent_on=True)  # sent on, came later
    arrival.hold(message(c | 2, routed_at=99), sent_on=True)  # the second copy
    arrival.hold(message(d | 1, routed_at=100), sent_on=True)  # routed to here directly
    assert [m.id for m, _group in arrival.release()] == [c | 1, c | 2, d | 1]
    assert arrival.held is None
    assert not released.done()  # the caller settles it once they are delivered


async def test_no_more_than_its_bound_is_held() -> None:
    arrival = Arrival(max_ids=3)
    for message_id in range(1, 6):
        arrival.hold(message(message_id, routed_at=0), sent_on=False)
    assert [m.id for m, _group in arrival.release()] == [1, 2, 3]


def arriving_session(router: LocalRouter, *filters: str) -> BrokerSession:
    """A persistent session read from the store on the member it moves to, its client not
    connected yet, holding what reaches it."""
    session = BrokerSession(("device", "backend"), "backend", persistent=True)
    for topic_filter in filters:
        session.subscriptions[topic_filter] = Subscription(2)
        router.subscribe(session, topic_filter, Subscription(2))
    session.arrival = Arrival(max_ids=10)
    return session


def numbered(message_id: int) -> Message:
    return Message("devices/d1/telemetry", str(message_id & 0xFFFF).encode(), 2, id=message_id)


async def test_a_shared_subscriptions_copies_are_held_and_come_out_in_publishing_order() -> None:
    """While the session moves, the routing member picks, message by message, either its old
    member (which sends the group's copy on) or its new one (directly) for the group (MQTT 5.0
    §4.8.2), so a copy sent on may come after a later one that came directly. Held with the
    rest and released sorted by id, they reach the session in the order they were published
    (§4.6), not re-queued behind newer ones."""
    router = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    session = arriving_session(router, SHARED)
    c = 7 << 32
    router.deliver_forwarded(numbered(c | 2), plain=False, groups=[GROUP])  # directly
    router.deliver_to_group(session, numbered(c | 1), GROUP)  # sent on, came later
    router.deliver_forwarded(numbered(c | 3), plain=False, groups=[GROUP])
    assert [out.payload for out in session.queue] == []  # held
    assert len(router.waits) == 3  # their acknowledgements wait for the release
    assert session.arrival is not None
    router.deliver_released(session, session.arrival.release())
    assert [out.payload for out in session.queue] == [b"1", b"2", b"3"]


async def test_a_message_for_a_plain_and_a_shared_subscription_is_held_for_both() -> None:
    """The group's copy is not a second copy of the plain subscription's (§4.8.2: a shared
    subscription gets its own): both are held, and both delivered."""
    router = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    session = arriving_session(router, FILTER, SHARED)
    c = 7 << 32
    router.deliver_forwarded(numbered(c | 1), plain=True, groups=[GROUP])
    assert session.arrival is not None
    router.deliver_released(session, session.arrival.release())
    assert [out.payload for out in session.queue] == [b"1", b"1"]


async def test_what_a_session_held_when_it_moves_on_is_refused_not_acknowledged() -> None:
    """Handed over again before its barriers came: its held messages' publishers are not
    acknowledged (they send them again, to its new member; MQTT 3.1.1 §4.3.2)."""
    arrival = Arrival(max_ids=10)
    released = arrival.hold(message(1, routed_at=0), sent_on=False)
    arrival.refuse()
    assert arrival.held is None
    assert released.done()
    assert isinstance(released.exception(), ClusterUnavailableError)
    arrival.refuse()  # once


async def test_a_session_still_holding_past_the_window_keeps_its_arrival() -> None:
    """Its barriers or parked frames took longer than twice the window: what it holds stays
    held (before, the arrival was dropped and what it held with it), and is forgotten only a
    window after its release."""
    session = BrokerSession(("device", "backend"), "backend", persistent=True)
    arrival = session.arrival = Arrival(max_ids=10)
    arrival.hold(message(1, routed_at=0), sent_on=False)
    _forget_arrival(session, arrival, 0.0)
    assert session.arrival is arrival
    assert arrival.held is not None
    arrival.release()
    _forget_arrival(session, arrival, 0.0)  # as the timer it set again does
    assert session.arrival is None


async def test_given_a_part_at_a_time_what_comes_meanwhile_takes_its_place_in_order() -> None:
    """A large backlog is given a part at a time (``broker.cluster.releasing``): the session
    holds until the last part is given, so a message that comes in between goes behind
    its publisher's earlier ones (MQTT 3.1.1 §4.6), never ahead of those still held."""
    arrival = Arrival(max_ids=10)
    c, d = 7 << 32, 9 << 32
    for message_id in (c | 3, c | 1, d | 1, c | 2):
        arrival.hold(message(message_id, routed_at=0), sent_on=False)
    assert [m.id for m, _group in arrival.release(2)] == [c | 1, c | 2]
    assert arrival.held is not None  # still holding
    arrival.hold(message(c | 4, routed_at=0), sent_on=False)
    arrival.hold(message(d | 2, routed_at=0), sent_on=False)
    assert [m.id for m, _group in arrival.release(2)] == [c | 3, c | 4]
    assert [m.id for m, _group in arrival.release(2)] == [d | 1, d | 2]  # the last part
    assert arrival.held is None
