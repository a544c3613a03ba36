"""SIGKILL right after PUBCOMP does not cost the client's next QoS 2 message.

MQTT 3.1.1 §4.3.3: once the client has PUBCOMP, the packet id is free and the client may use
it for a new message, sent with DUP 0. A persistent session's broker keeps the ids awaiting
PUBREL in its store, so that a PUBLISH sent again after a restart is not routed twice; if
PUBCOMP went out before the store let the id go, the new message would be taken for the old
one sent again after the restart: answered and never routed. A raw client, so that the same
packet id is used again as a client may.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.mqtt.packets import Connack, Connect, Pubcomp, Publish, Pubrec, Pubrel
from tests.e2e.peers import Raw
from tests.reliability.serve_process import Fleet, ServeProcess, Session

TELEMETRY = "v1/devices/me/telemetry"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path) as started:
        yield started


def publish_qos2(raw: Raw, payload: bytes, packet_id: int) -> None:
    raw.send(Publish(TELEMETRY, payload, 2, packet_id=packet_id))
    assert raw.read() == Pubrec(packet_id)
    raw.send(Pubrel(packet_id))
    assert raw.read() == Pubcomp(packet_id)


def test_a_packet_id_completed_before_sigkill_is_free_after_it(fleet: Fleet) -> None:
    broker = fleet.start()
    with Raw(broker.port, broker.server_cert, fleet.sensor) as raw:
        raw.send(Connect(4, "sensor", False, 60))
        assert raw.read() == Connack(False, 0)
        publish_qos2(raw, b"first", 5)
        broker.kill()  # at once: nothing written after PUBCOMP is committed any more

    broker = fleet.start()
    backend = watch_telemetry(fleet, broker)
    with Raw(broker.port, broker.server_cert, fleet.sensor) as raw:
        raw.send(Connect(4, "sensor", False, 60))
        assert raw.read() == Connack(True, 0)
        publish_qos2(raw, b"second", 5)  # a new message (DUP 0) with the id used again
    assert [m.payload for m in backend.receive(1)] == [b"second"]
    assert backend.no_message()


def watch_telemetry(fleet: Fleet, broker: ServeProcess) -> Session:
    backend = fleet.backend(broker)
    assert backend.subscribe("devices/+/telemetry", qos=2) == [2]
    return backend
