"""Take-over cannot be raced (MQTT 3.1.1 §3.1.4): concurrent connects for one session while
the previous connection does not read, then a revocation: no connection survives.

The old engine left an earlier connection alive and out of its live table in this race, where
it survived revoke, disable and delete and kept publishing as the device.
"""

import threading
from pathlib import Path

import pytest

from broker.mqtt.packets import Connack, Connect, Subscribe, SubscribeRequest
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, mqtt_client, write_pem
from tests.e2e.peers import Raw

CONCURRENT = 6


async def _live_count(broker: BrokerThread, device_id: str) -> int:
    return len(broker.running.broker.live.get(device_id, ()))


async def _still_open(broker: BrokerThread, port: int) -> bool:
    """Whether the broker still holds a TLS connection from this client port."""
    return any(p._remote[1] == port for p in broker.running.listener.protocols)


async def _buffered_for(broker: BrokerThread, client_id: str) -> int:
    for client in broker.running.broker.clients():
        if client.peer is not None and client.peer.client_id == client_id:
            return client.tls.buffered()
    return -1


def _stalled(broker: BrokerThread, certfile: Path) -> Raw:
    """A connection of the session that subscribed and then stopped reading."""
    raw = Raw(broker.port, broker.server_cert, certfile, receive_buffer=4096)
    raw.send(Connect(4, "shared", False, 0))
    assert raw.read() == Connack(False, 0)
    raw.send(Subscribe(1, (SubscribeRequest("v1/devices/me/rpc/request/+", 0),)))
    raw.read()  # the SUBACK; from now on nothing is read
    return raw


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
def test_concurrent_connects_while_the_old_one_does_not_read_then_revoke(
    tmp_path: Path, clean: bool
) -> None:
    broker = BrokerThread(broker_settings(tmp_path / "data", max_outgoing_buffer=64 * 1024))
    try:
        device, issued = broker.provision("racer")
        certfile = write_pem(tmp_path, issued, "racer")
        broker.application("backend", "backend", "backend-pass")
        backend = mqtt_client(broker.port, broker.server_cert, None, client_id="backend",
                              username="backend", password="backend-pass")  # fmt: skip
        assert backend.wait_connack() == 0
        stalled = _stalled(broker, certfile)
        while broker.call(_buffered_for(broker, "shared")) <= 0:  # until the broker holds bytes
            for _ in range(64):
                backend.paho.publish("devices/racer/rpc/request/1", bytes(1024), qos=0)
            backend.publish("devices/racer/rpc/request/2", b"sync", qos=1)

        connections: list[Raw] = []
        connacks: list[object] = []
        lock = threading.Lock()

        def connect() -> None:
            raw = Raw(broker.port, broker.server_cert, certfile)
            raw.send(Connect(4, "shared", clean, 0))
            answer = raw.read()
            with lock:
                connections.append(raw)
                connacks.append(answer)

        threads = [threading.Thread(target=connect) for _ in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        # Each was accepted in turn, taking the session from the one before it.
        assert connacks == [Connack(not clean, 0)] * CONCURRENT
        assert broker.call(_live_count(broker, str(device.id))) == 1
        # The stalled one was aborted before the first new CONNACK, not left to linger.
        assert not broker.call(_still_open(broker, stalled.sock.getsockname()[1]))
        assert stalled.closed()

        broker.call(broker.running.store.set_device_enabled(device.id, False))
        broker.running.follower.wake()
        for raw in connections:
            assert raw.closed()  # every one of them: none survives the revocation
        assert broker.call(_live_count(broker, str(device.id))) == 0
        backend.close()
        for raw in (stalled, *connections):
            raw.close()
    finally:
        broker.stop()
