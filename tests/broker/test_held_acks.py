"""Acknowledgements held for a commit or a cluster confirmation: sent in the order of their
PUBLISHes once what they wait for is done, however many share one future (MQTT 3.1.1 §4.6)."""

import asyncio
from types import SimpleNamespace

from broker.acks import HeldAcks
from broker.journal_entries import Ref
from broker.mqtt.codes import Reason
from broker.mqtt.limits import Limits
from broker.mqtt.session import Outgoing
from nanoiot.errors import ClusterFullError, ClusterUnavailableError
from tests.unretrieved import never_retrieved


class Connection:
    """What ``HeldAcks`` uses of a connection: the acknowledgements it sends, in order."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.flushes = 0
        self.ended = False
        self.reason: object = None
        self.closed = asyncio.Event()
        self.label = "test"
        self._loop = asyncio.get_running_loop()
        self.core = SimpleNamespace(
            acknowledge=lambda packet_id, qos, code: self.sent.append(packet_id)
        )
        self.broker = SimpleNamespace(
            config=SimpleNamespace(ack_timeout=30.0, max_subacks_waiting=16),
            limits=Limits(),
            store=None,
        )

    def _flush(self) -> None:
        self.flushes += 1

    def _end(self, will: bool, reason: object = None) -> None:
        self.ended = True
        self.reason = reason
        self.closed.set()


async def test_acknowledgements_sharing_a_future_go_in_order_in_one_release() -> None:
    loop = asyncio.get_running_loop()
    connection = Connection()
    acks = HeldAcks(connection)  # type: ignore[arg-type]
    frame_a, frame_b = loop.create_future(), loop.create_future()
    for packet_id in range(1, 101):  # one frame's messages, then the next frame's
        acks.acknowledge(packet_id, 1, durable=frame_a if packet_id <= 60 else frame_b)
    frame_b.set_result(None)  # the later frame first: its messages wait behind frame_a's
    await asyncio.sleep(0)
    assert connection.sent == []
    frame_a.set_result(None)
    await asyncio.sleep(0)
    assert connection.sent == list(range(1, 101))
    assert connection.flushes <= 2  # a release per future, not one per message
    acks.cancel()


async def test_an_acknowledgement_added_after_its_future_completed_is_still_sent() -> None:
    loop = asyncio.get_running_loop()
    connection = Connection()
    acks = HeldAcks(connection)  # type: ignore[arg-type]
    frame = loop.create_future()
    acks.acknowledge(1, 1, durable=frame)
    frame.set_result(None)
    acks.acknowledge(2, 1, durable=frame)  # before the release callback ran
    await asyncio.sleep(0)
    assert connection.sent == [1, 2]
    acks.acknowledge(3, 1, durable=frame)  # done, and nothing held: released on its own
    await asyncio.sleep(0)
    assert connection.sent == [1, 2, 3]
    acks.cancel()


async def test_a_confirmation_failing_after_its_connection_closed_is_not_left_unretrieved() -> None:
    """The acknowledgement waited ``ack_timeout`` (closed unacknowledged: the client sends
    the message again); the other member's refusal that comes later decides nothing more."""
    loop = asyncio.get_running_loop()
    connection = Connection()
    connection.broker = SimpleNamespace(
        config=SimpleNamespace(ack_timeout=0.0, max_subacks_waiting=16),
        limits=Limits(),
        metrics=SimpleNamespace(publishers_closed_unsaved=0),
        store=SimpleNamespace(status=lambda: SimpleNamespace(problem=None)),
    )
    acks = HeldAcks(connection)  # type: ignore[arg-type]
    with never_retrieved() as reports:
        frame: asyncio.Future[None] = loop.create_future()
        acks.acknowledge(1, 1, durable=frame)
        await asyncio.wait_for(connection.closed.wait(), 5.0)  # overdue: closed without its PUBACK
        frame.set_exception(ClusterUnavailableError("max_forward_buffer 0 bytes exceeded"))
        await asyncio.sleep(0)  # its callbacks run
        del frame
    assert reports == []
    assert connection.sent == []


def _closing_at_once(connection: Connection) -> SimpleNamespace:
    """The broker of ``connection`` with an ``ack_timeout`` of 0: an acknowledgement that
    waits is overdue at once. Its metrics."""
    metrics = SimpleNamespace(publishers_closed_unsaved=0, subscribers_closed_unsaved=0)
    connection.broker = SimpleNamespace(
        config=SimpleNamespace(ack_timeout=0.0, max_subacks_waiting=16),
        limits=Limits(),
        metrics=metrics,
        store=SimpleNamespace(status=lambda: SimpleNamespace(problem="database is locked")),
    )
    return metrics


async def test_a_pubrel_waiting_past_ack_timeout_closes_a_subscriber_not_a_publisher() -> None:
    """The release of a message sent to the client could not be saved: that client
    published nothing that is lost, and gets the PUBREL again on its next connection."""
    loop = asyncio.get_running_loop()
    connection = Connection()
    metrics = _closing_at_once(connection)
    acks = HeldAcks(connection)  # type: ignore[arg-type]
    message = Outgoing("t", b"m", 2)
    message.packet_id = 1
    ref = message.stored = Ref("c", message)
    ref.released = loop.create_future()  # the release's commit, pending
    acks.release(message)
    await asyncio.wait_for(connection.closed.wait(), 5.0)
    assert (metrics.subscribers_closed_unsaved, metrics.publishers_closed_unsaved) == (1, 0)
    assert connection.sent == []


async def test_a_puback_waiting_past_ack_timeout_closes_a_publisher() -> None:
    connection = Connection()
    metrics = _closing_at_once(connection)
    acks = HeldAcks(connection)  # type: ignore[arg-type]
    acks.acknowledge(1, 1, durable=asyncio.get_running_loop().create_future())
    await asyncio.wait_for(connection.closed.wait(), 5.0)
    assert (metrics.subscribers_closed_unsaved, metrics.publishers_closed_unsaved) == (0, 1)


async def test_a_publisher_whose_message_was_not_routed_is_told_why_before_it_is_closed() -> None:
    """Closed unacknowledged (it sends the message again), an MQTT 5 publisher reads why in
    the DISCONNECT (5.0 §3.14.2.1): 0x97 when a cluster bound refused the message (the parked
    stream full at ``cluster_max_parked_bytes``), 0x89 otherwise."""
    loop = asyncio.get_running_loop()
    for error, code in (
        (ClusterFullError("stream nanoiot_parked is full (cluster_max_parked_bytes)"),
         Reason.QUOTA_EXCEEDED),
        (ClusterUnavailableError("member b did not confirm within 5 s"), Reason.SERVER_BUSY),
    ):  # fmt: skip
        connection = Connection()
        acks = HeldAcks(connection)  # type: ignore[arg-type]
        frame = loop.create_future()
        acks.acknowledge(1, 1, durable=frame)
        frame.set_exception(error)
        await asyncio.wait_for(connection.closed.wait(), 1.0)
        assert connection.sent == []
        assert connection.reason == (code, f"a message could not be routed: {error}")
        acks.cancel()
