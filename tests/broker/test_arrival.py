"""A session that moved between cluster members counts the messages that may reach it
twice (``broker.sessions.Arrival``): pure logic, the routing that uses it is tested in
tests/cluster/test_handover.py."""

from broker.router import Message
from broker.sessions import Arrival


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
    assert [m.id for m in arrival.release()] == [c | 1, c | 2, d | 1]
    assert arrival.held is None
    assert not released.done()  # the caller settles it once they are delivered


async def test_no_more_than_its_bound_is_held() -> None:
    arrival = Arrival(max_ids=3)
    for message_id in range(1, 6):
        arrival.hold(message(message_id, routed_at=0), sent_on=False)
    assert [m.id for m in arrival.release()] == [1, 2, 3]
