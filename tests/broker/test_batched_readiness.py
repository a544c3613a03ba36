"""Within a batch (a frame from another cluster member, ``broker.cluster.frames_in``) a QoS 0
message given a subscriber counts as written for the ``max_outgoing_buffer`` check: the
shared-subscription member choice (``MqttClient.can_send_now``) must count it as ``deliver``
does, or it picks a member whose batch is full and the message is dropped there while another
member could take it. Real broker, real paho subscriber over TLS; the batch is routed on the
broker's loop as a frame's is."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.client import MqttClient
from broker.router import LocalRouter, Message
from tests.e2e.harness import BrokerThread, application_client, running_broker

CAP = 64 * 1024
TOPIC = "devices/source/telemetry"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with running_broker(tmp_path / "data", max_outgoing_buffer=CAP) as running:
        yield running


def test_a_subscriber_whose_batch_fills_its_buffer_is_not_ready_for_qos0(
    broker: BrokerThread,
) -> None:
    subscriber = application_client(broker, "reader", "reader-pass", client_id="reader")
    try:
        assert subscriber.wait_connack() == 0
        assert subscriber.subscribe(TOPIC, qos=0) == [0]

        async def in_a_batch() -> tuple[bool, bool]:
            running = broker.running.broker
            client = next(c for c in running.clients() if c.peer and c.peer.client_id == "reader")
            local = running.router
            assert isinstance(local, LocalRouter)  # one process: no cluster around it
            later: set[MqttClient] = set()
            local.later = later
            try:
                before = client.can_send_now(0)
                local.deliver(Message(TOPIC, b"x" * (CAP + 1), 0))  # given, not written yet
                after = client.can_send_now(0)
            finally:
                local.later = None
                for given in later:
                    given.flush()
            return before, after

        before, after = broker.call(in_a_batch())
        assert before
        assert not after, "ready for QoS 0 with a batch past max_outgoing_buffer given it"
        assert len(subscriber.next_message().payload) == CAP + 1
    finally:
        subscriber.close()
