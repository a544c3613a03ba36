"""SIGTERM stops ``nanoiot serve`` gracefully: bounded time, exit code 0, nothing lost.

With live clients connected and QoS 1 messages queued for a persistent session, the broker
refuses new connections, closes the live ones, saves the last session changes and exits 0
within SHUTDOWN_BOUND seconds; after a restart the session and its queue are all there.
"""

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import WAIT
from tests.reliability.serve_process import Fleet, connect, payloads, provision_device

SHUTDOWN_BOUND = 10.0  # seconds
RPC = "v1/devices/me/rpc/request/+"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path) as started:
        yield started


def test_sigterm_exits_0_in_bounded_time_and_keeps_the_queue(fleet: Fleet, tmp_path: Path) -> None:
    meter_pem = provision_device(fleet.data, "meter", tmp_path)
    broker = fleet.start()
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, False)
    assert sensor.subscribe(RPC) == [1]
    sensor.close()
    backend = fleet.backend(broker)
    sent = payloads(30)
    for n, payload in enumerate(sent):
        backend.paho.publish(f"devices/sensor/rpc/request/{n}", payload, qos=1)
    # A live device, busy round-tripping its own telemetry while the signal lands.
    meter = connect(broker, meter_pem, "meter", clean_session=True)
    fleet.clients.append(meter)
    assert meter.wait_connack() == (0, False)
    assert meter.subscribe("v1/devices/me/telemetry") == [1]
    meter.paho.publish("v1/devices/me/telemetry", b"before", qos=1)
    assert meter.receive(1)[0].payload == b"before"
    last = backend.paho.publish("devices/sensor/rpc/request/last", b"last", qos=1)
    last.wait_for_publish(WAIT)

    code, took = broker.terminate(within=SHUTDOWN_BOUND)
    assert code == 0, broker.log_tail()
    assert took < SHUTDOWN_BOUND
    print(f"SIGTERM to exit: {took:.2f} s")
    assert "shutting down" in broker.log_tail()
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT).close()

    broker = fleet.start()
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, True)
    received = sensor.receive(len(sent) + 1)
    assert [m.payload for m in received] == [*sent, b"last"]
    assert sensor.no_message()


def test_sigterm_keeps_what_an_online_persistent_subscriber_had_not_acknowledged(
    fleet: Fleet,
) -> None:
    """The old engine lost hundreds of messages in flight to a connected persistent client
    at a clean shutdown; they are in the store until PUBACK (§4.4)."""
    broker = fleet.start()
    silent = fleet.sensor_session(broker, manual_ack=True)  # online, acknowledges nothing
    assert silent.wait_connack() == (0, False)
    assert silent.subscribe(RPC) == [1]
    backend = fleet.backend(broker)
    sent = payloads(100)
    infos = [
        backend.paho.publish(f"devices/sensor/rpc/request/{n}", payload, qos=1)
        for n, payload in enumerate(sent)
    ]
    for info in infos:
        info.wait_for_publish(WAIT)
    code, _ = broker.terminate(within=SHUTDOWN_BOUND)
    assert code == 0, broker.log_tail()

    broker = fleet.start()
    sensor = fleet.sensor_session(broker)
    assert sensor.wait_connack() == (0, True)
    assert [m.payload for m in sensor.receive(len(sent))] == sent
    assert sensor.no_message()
