"""Expired messages take no room from live ones (MQTT 5.0 §3.3.2.3.3 [MQTT-3.3.2-5]): at a
queue's bound (``max_queued_messages``, ``max_queued_bytes``) or its device's, the messages
whose Message Expiry Interval passed go first, before QoS 0 and the oldest live ones; and
what that costs is bounded (``broker.mqtt.queues``). The pure logic, on a clock passed in;
the broker's use of it is tried end to end in ``tests/e2e/test_queue_expiry.py``."""

import pytest

from broker.mqtt.limits import Limits
from broker.mqtt.queues import NEVER, SCAN_EVERY, QueueTally, next_expiry
from broker.mqtt.session import Outgoing, Session

T = 1000.0  # the broker's clock when the short-lived messages were queued


def _message(name: str, qos: int = 1, expires_at: float | None = None) -> Outgoing:
    return Outgoing(name, bytes(100 - len(name)), qos, expires_at=expires_at)  # 100 bytes


def _names(session: Session) -> list[str]:
    return [m.topic for m in session.queue]


def _drops(dropped: list[tuple[Outgoing, str]]) -> list[tuple[str, str]]:
    return [(message.topic, limit) for message, limit in dropped]


@pytest.mark.parametrize(
    ("limits", "limit"),
    [(Limits(max_queued_messages=4), "max_queued_messages"),
     (Limits(max_queued_bytes=400), "max_queued_bytes")],
)  # fmt: skip
def test_at_the_bound_expired_messages_go_before_live_ones(limits: Limits, limit: str) -> None:
    """A live QoS 0 message and the oldest live ones stay: the expired go."""
    session = Session("s", persistent=True)
    for message in (
        _message("live0", qos=0),
        _message("live1"),
        _message("short0", expires_at=T + 1),
        _message("short1", expires_at=T + 1),
    ):
        assert session.enqueue(message, limits, T) == []  # fmt: skip
    later = T + 1  # the deadline itself: expired (as ``broker.mqtt.expiry.expired``)
    assert _drops(session.enqueue(_message("new0"), limits, later)) == [
        ("short0", "message_expiry"), ("short1", "message_expiry"),
    ]  # fmt: skip
    assert session.enqueue(_message("new1"), limits, later) == []
    assert _names(session) == ["live0", "live1", "new0", "new1"]
    assert (session.queued_bytes, session.queued_qos0) == (400, 1)
    # Full of live messages: QoS 0 first, then the oldest, as before.
    assert _drops(session.enqueue(_message("new2"), limits, later)) == [("live0", limit)]


def test_before_their_deadline_they_are_live() -> None:
    limits = Limits(max_queued_messages=2)
    session = Session("s", persistent=True)
    session.enqueue(_message("short0", expires_at=T + 1), limits, T)
    session.enqueue(_message("short1", expires_at=T + 1), limits, T)
    dropped = session.enqueue(_message("new"), limits, T + 0.999)
    assert _drops(dropped) == [("short0", "max_queued_messages")]
    # Without the clock (no caller of the core passes none), as before this change.
    dropped = session.enqueue(_message("newer"), limits)
    assert _drops(dropped) == [("short1", "max_queued_messages")]


def test_a_message_that_fits_costs_no_look_at_the_expired() -> None:
    """Below the bound nothing is purged: an expired message waits for its turn (dropped
    then, ``Outbound._send_first``) or for a bound."""
    limits = Limits(max_queued_messages=3)
    session = Session("s", persistent=True)
    session.enqueue(_message("short", expires_at=T + 1), limits, T)
    assert session.enqueue(_message("new"), limits, T + 5) == []
    assert _names(session) == ["short", "new"]
    assert next_expiry(session) == T + 1


def _device(count: int) -> tuple[QueueTally, list[Session]]:
    tally = QueueTally()
    sessions = [Session(n, persistent=True) for n in range(count)]
    for session in sessions:
        session.attach(tally)
    return tally, sessions


def test_at_the_device_bound_its_other_sessions_expired_messages_go() -> None:
    """The device's other sessions hold its bound with expired messages only: before, the
    new message was dropped itself (this session had nothing to make room with)."""
    limits = Limits(max_queued_messages_per_device=3, max_queued_bytes_per_device=300)
    tally, (a, b) = _device(2)
    for n in range(3):
        assert a.enqueue(_message(f"a{n}", expires_at=T + 1), limits, T) == []
    assert tally.expiry_due == T + 1
    dropped = b.enqueue(_message("b0"), limits, T + 2)
    assert _drops(dropped) == [(f"a{n}", "message_expiry") for n in range(3)]
    assert b.enqueue(_message("b1"), limits, T + 2) == []
    assert b.enqueue(_message("b2"), limits, T + 2) == []
    assert (_names(a), _names(b)) == ([], ["b0", "b1", "b2"])
    assert (tally.messages, tally.bytes) == (3, 300)
    assert (a.queued_bytes, a.expiry_due) == (0, NEVER)
    assert tally.expiry_due == NEVER


def test_at_the_device_bound_within_its_own_queue_the_others_go_too() -> None:
    """Past ``max_queued_messages_per_device`` with some of it its own: another session's
    expired messages make the room, not this queue's oldest live one."""
    limits = Limits(max_queued_messages_per_device=3)
    tally, (a, b) = _device(2)
    a.enqueue(_message("a0", expires_at=T + 1), limits, T)
    a.enqueue(_message("a1", expires_at=T + 1), limits, T)
    b.enqueue(_message("b0"), limits, T)
    dropped = b.enqueue(_message("b1"), limits, T + 1)
    assert _drops(dropped) == [("a0", "message_expiry"), ("a1", "message_expiry")]
    assert (_names(a), _names(b), tally.messages) == ([], ["b0", "b1"], 2)


def test_an_expired_message_out_of_queue_order_goes_and_scans_are_rate_limited() -> None:
    """Mixed intervals: an expired message behind a live one needs a scan of the queue,
    which runs at most once per SCAN_EVERY (each would cost the queue's length)."""
    limits = Limits(max_queued_messages=3)
    session = Session("s", persistent=True)
    session.enqueue(_message("long", expires_at=T + 3600), limits, T)
    session.enqueue(_message("short0", expires_at=T + 1), limits, T)
    session.enqueue(_message("short1", expires_at=T + 1.05), limits, T)
    now = T + 1
    assert _drops(session.enqueue(_message("new0"), limits, now)) == [("short0", "message_expiry")]
    assert session.expiry_due == now + SCAN_EVERY  # short1's deadline is sooner: not scanned
    now = T + 1.05  # short1 expired, but the last scan was 50 ms ago: the oldest goes
    assert _drops(session.enqueue(_message("new1"), limits, now)) == [
        ("long", "max_queued_messages")
    ]
    now = T + 1 + SCAN_EVERY
    assert _drops(session.enqueue(_message("new2"), limits, now)) == [("short1", "message_expiry")]
    assert _names(session) == ["new0", "new1", "new2"]
    assert session.expiry_due == NEVER


def test_a_device_is_walked_at_most_once_per_scan_interval() -> None:
    limits = Limits(max_queued_messages_per_device=4)
    tally, (a, b, c) = _device(3)
    a.enqueue(_message("a0", expires_at=T + 3600), limits, T)
    for name, expires in (("b0", T + 3600), ("b1", T + 1), ("b2", T + 1.05)):
        b.enqueue(_message(name, expires_at=expires), limits, T)
    assert _drops(c.enqueue(_message("c0"), limits, T + 1)) == [("b1", "message_expiry")]
    assert tally.expiry_due == T + 1 + SCAN_EVERY
    # b2 expired 50 ms after the walk: not walked again yet, c's own oldest makes room.
    assert _drops(c.enqueue(_message("c1"), limits, T + 1.05)) == [
        ("c0", "max_queued_messages_per_device")
    ]
    assert _drops(c.enqueue(_message("c2"), limits, T + 1 + SCAN_EVERY)) == [
        ("b2", "message_expiry")
    ]
    assert (_names(a), _names(b), _names(c)) == (["a0"], ["b0"], ["c1", "c2"])
    assert tally.expiry_due == T + 3600
    a.restore(_message("a1", expires_at=T + 1))  # an old one, read back: due at once
    assert tally.expiry_due == T + 1
    assert _drops(c.enqueue(_message("c3"), limits, T + 1.2)) == [
        ("a1", "message_expiry"), ("c1", "max_queued_messages_per_device"),  # 5 were held
    ]  # fmt: skip


def test_a_restored_queue_is_purged_and_an_ended_session_leaves_its_device() -> None:
    tally, (a, b) = _device(2)
    for name, expires in (("old", T - 1), ("kept", None), ("later", T + 1)):
        a.restore(_message(name, expires_at=expires))
    assert (next_expiry(a), a.expiry_due) == (T - 1, NEVER)  # in order: no scan due
    assert [m.topic for m in a.purge_expired(T)] == ["old"]
    assert (_names(a), a.queued_bytes, tally.messages, tally.bytes) == (["kept", "later"], 200,
                                                                        2, 200)  # fmt: skip
    assert a.purge_expired(T) == []  # the next scan is not due yet
    a.clear()
    assert tally.sessions == [b]
    assert (tally.messages, tally.bytes, a.expiry_due) == (0, 0, NEVER)
