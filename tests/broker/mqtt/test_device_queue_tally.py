"""The queues of one device's sessions counted together (``QueueTally``), and what
``Session.enqueue`` drops past the device's bounds: the pure logic; the broker's use of it is
tried end to end in ``tests/e2e/test_device_queues.py``."""

from broker.mqtt.limits import Limits
from broker.mqtt.session import Outgoing, QueueTally, Session

LIMITS = Limits(max_queued_bytes_per_device=300, max_queued_messages_per_device=4)


def _message(name: str, qos: int = 1) -> Outgoing:
    return Outgoing(name, bytes(100 - len(name)), qos)  # counted as 100 bytes


def _sessions(count: int) -> tuple[QueueTally, list[Session]]:
    tally = QueueTally()
    sessions = [Session(n, persistent=True) for n in range(count)]
    for session in sessions:
        session.attach(tally)
    return tally, sessions


def _names(session: Session) -> list[str]:
    return [m.topic for m in session.queue]


def test_past_the_device_bytes_the_queue_that_grows_drops_qos0_then_its_oldest() -> None:
    tally, (a, b) = _sessions(2)
    assert a.enqueue(_message("a1"), LIMITS) == []
    assert b.enqueue(_message("b1", qos=0), LIMITS) == []
    assert b.enqueue(_message("b2"), LIMITS) == []
    assert (tally.messages, tally.bytes) == (3, 300)
    dropped = b.enqueue(_message("b3"), LIMITS)
    assert [(m.topic, limit) for m, limit in dropped] == [("b1", "max_queued_bytes_per_device")]
    dropped = b.enqueue(_message("b4"), LIMITS)
    assert [(m.topic, limit) for m, limit in dropped] == [("b2", "max_queued_bytes_per_device")]
    assert (_names(a), _names(b)) == (["a1"], ["b3", "b4"])
    assert (tally.messages, tally.bytes) == (3, 300)


def test_a_session_whose_device_is_full_without_it_drops_the_new_message() -> None:
    tally, (a, b) = _sessions(2)
    for n in range(3):
        assert a.enqueue(_message(f"a{n}"), LIMITS) == []
    [(message, limit)] = b.enqueue(_message("b0"), LIMITS)
    assert (message.topic, limit) == ("b0", "max_queued_bytes_per_device")
    assert (_names(a), _names(b)) == (["a0", "a1", "a2"], [])  # another's queue is its own
    big = Outgoing("big", bytes(400), 1)  # alone past the device's bound
    assert b.enqueue(big, LIMITS) == [(big, "max_queued_bytes_per_device")]
    assert (tally.messages, tally.bytes) == (3, 300)


def test_past_the_device_messages_the_same() -> None:
    limits = Limits(max_queued_messages_per_device=2)
    tally, (a, b) = _sessions(2)
    assert a.enqueue(_message("a0"), limits) == []
    assert b.enqueue(_message("b0"), limits) == []
    [(message, limit)] = b.enqueue(_message("b1"), limits)
    assert (message.topic, limit) == ("b0", "max_queued_messages_per_device")
    assert tally.messages == 2
    limits = Limits(max_queued_messages_per_device=0)
    c = Session("c", persistent=True)
    c.attach(QueueTally())
    only = _message("c0")
    assert c.enqueue(only, limits) == [(only, "max_queued_messages_per_device")]


def test_sending_and_the_sessions_end_give_back_and_attach_counts_what_it_holds() -> None:
    tally, (a, b) = _sessions(2)
    a.enqueue(_message("a0", qos=0), LIMITS)
    a.enqueue(_message("a1"), LIMITS)
    b.enqueue(_message("b0"), LIMITS)
    sent = a.next_to_send(window=10)
    assert sent is not None
    assert sent.topic == "a0"
    assert (tally.messages, tally.bytes) == (2, 200)
    assert a.next_to_send(window=10) is not None  # a1, in flight: not queued any more
    assert (tally.messages, tally.bytes) == (1, 100)
    b.clear()
    assert (tally.messages, tally.bytes) == (0, 0)
    assert b.tally is None  # gone from the broker: counts nothing more
    restored = Session("r", persistent=True)
    restored.restore(_message("r0"))  # read back before it is counted, whatever the bounds
    restored.attach(tally)
    assert (tally.messages, tally.bytes) == (1, 100)


def test_a_session_without_a_tally_has_only_its_own_bounds() -> None:
    session = Session("alone", persistent=True)
    for n in range(5):
        assert session.enqueue(_message(f"m{n}"), LIMITS) == []


def _restored(session: Session, count: int, tally: QueueTally) -> None:
    """``count`` messages read back from the store into ``session`` (whatever the bounds),
    then counted in its device's ``tally``, as ``Registry.restore`` does."""
    for n in range(count):
        session.restore(_message(f"r{n}"))
    session.attach(tally)


def test_a_queue_read_back_past_the_device_bound_keeps_it_and_drops_the_new_message() -> None:
    """Read back past a lowered bound (3.1.1 §4.1: those were acknowledged to their
    publishers), a queue keeps them all: one new message is dropped itself, not as many of
    the old as would bring the device back within its bound."""
    tally = QueueTally()
    session = Session("restored", persistent=True)
    _restored(session, 10, tally)  # 1,000 bytes, 10 messages: past both device bounds
    new = _message("new")
    assert session.enqueue(new, LIMITS) == [(new, "max_queued_messages_per_device")]
    assert len(session.queue) == 10
    assert (tally.messages, tally.bytes) == (10, 1000)
    for _ in range(8):  # delivered: the device is within its bounds again
        assert session.next_to_send(window=10) is not None
    assert session.enqueue(_message("n1"), LIMITS) == []
    assert _names(session) == ["r8", "r9", "n1"]
    [(oldest, limit)] = session.enqueue(_message("n2"), LIMITS)  # at it: the oldest goes
    assert (oldest.topic, limit) == ("r8", "max_queued_bytes_per_device")
    assert (tally.messages, tally.bytes) == (3, 300)


def test_a_queue_read_back_past_its_own_bound_keeps_it_too() -> None:
    session = Session("restored", persistent=True)
    for n in range(5):
        session.restore(_message(f"r{n}"))
    new = _message("new")
    limits = Limits(max_queued_messages=2)
    assert session.enqueue(new, limits) == [(new, "max_queued_messages")]
    assert _names(session) == [f"r{n}" for n in range(5)]
