"""``max_outgoing_buffer`` bounds what a persistent subscriber that does not read makes the
broker hold, while the store is slow too.

A QoS 1/2 message sent to a persistent session leaves only once the store records its packet
id (MQTT 3.1.1 §4.4), so the connection's output waits for that commit attempt
(``broker.held_output``). That output was not counted: while another process held the SQLite
write lock (the attempt lasts the 5 s busy timeout), a device publishing QoS 0 messages to its
own persistent subscription that does not read had the broker hold every copy, 1.4 GB in
3.5 s. Now they count as unsent output, and past ``max_outgoing_buffer`` the QoS 0 ones are
dropped (§4.3.1: at most once), as for a subscriber whose socket is full.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.held_output import unsent
from broker.mqtt.packets import (
    Connect,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from broker.server import RunningBroker
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import Raw
from tests.reliability.store_faults import SqliteLock

BUFFER = 1024 * 1024  # max_outgoing_buffer, the default
PAYLOAD = b"y" * 200_000
COUNT = 100  # QoS 0 messages of 200 KB: 20 MB, twenty times the buffer


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path, ack_timeout=60)  # the lock outlasts no acknowledgement's wait
    try:
        yield made
    finally:
        made.broker.stop()


async def _unsent(running: RunningBroker, client_id: str) -> int:
    clients = running.broker.registry.live_clients()
    (client,) = (c for c in clients if c.peer is not None and c.peer.client_id == client_id)
    return unsent(client)


def test_qos0_copies_waiting_for_a_locked_store_stop_at_max_outgoing_buffer(
    fleet: Fleet, tmp_path: Path
) -> None:
    engine = fleet.broker.running.broker
    port, server_cert = fleet.broker.port, fleet.broker.server_cert
    lock = SqliteLock(tmp_path / "data" / "nanoiot.db")
    with (
        Raw(port, server_cert, fleet.certfile, receive_buffer=4096) as sink,
        Raw(port, server_cert, fleet.certfile) as source,
    ):
        sink.connect(Connect(4, "sink", False, 0))  # persistent, and it will not read
        sink.send(Subscribe(1, (SubscribeRequest("v1/devices/me/#", 1),)))
        assert sink.read() == Suback(1, (1,))
        source.connect(Connect(4, "source", True, 0))
        fleet.broker.call(engine.store.flush())
        try:
            lock.begin()
            # A QoS 1 message to the persistent session: its output waits for the store.
            source.send(Publish("v1/devices/me/q", b"1", 1, packet_id=1), Pingreq())
            assert source.read() == Pingresp()  # answered in order: the PUBLISH was routed
            flood = [Publish("v1/devices/me/t", PAYLOAD, 0) for _ in range(COUNT)]
            source.send(*flood, Pingreq())
            assert source.read() == Pingresp()  # every one was routed
            assert fleet.broker.call(_unsent(fleet.broker.running, "sink")) <= BUFFER + len(PAYLOAD)
            dropped = engine.metrics.messages_dropped
            assert dropped >= COUNT - BUFFER // len(PAYLOAD) - 1
            assert fleet.hits("max_outgoing_buffer") == dropped
        finally:
            lock.end()
        assert source.read() == Puback(1)  # once the store has it
        # The sink reads at last: the QoS 1 message, then the QoS 0 ones kept, in order.
        first = sink.read()
        assert isinstance(first, Publish)
        assert (first.topic, first.payload, first.qos) == ("v1/devices/me/q", b"1", 1)
        kept = COUNT - dropped
        for _ in range(kept):
            packet = sink.read()
            assert isinstance(packet, Publish)
            assert packet.payload == PAYLOAD
    fleet.bystander_round_trip()
