"""A device that floods PUBRELs while the store cannot write: the answers it makes the broker
hold are bounded, and none is lost.

A persistent session's PUBCOMP waits for the commit of its packet id's release, and every
answer keeps the order of the packets it answers (MQTT 3.1.1 §4.6), so a PUBREL for an id
never used waits too. A PUBREL is 4 bytes; its held PUBCOMP cost the broker about 150. Before,
nothing bounded them: while another process held the SQLite write lock, one device's 12 MB
of PUBRELs had the broker hold 1.6 million PUBCOMPs (250 MB) until ``ack_timeout``. Now the
broker stops reading a connection that holds ``broker.acks.most_held`` answers (TCP holds the
client back), and reads on as they go out.
"""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.acks import most_held
from broker.mqtt.codes import Reason
from broker.mqtt.intake import TURN_BUDGET
from broker.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Disconnect,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from broker.mqtt.properties import Properties, Property
from broker.server import RunningBroker
from tests.e2e.harness import WAIT
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import Raw
from tests.logwatch import watching
from tests.reliability.store_faults import SqliteLock

COUNT = 20_000  # PUBRELs for ids the session never used: 80 KB
KEEP = Properties([(Property.SESSION_EXPIRY_INTERVAL, 60)])  # an MQTT 5 persistent session


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path, ack_timeout=60)  # the lock outlasts no acknowledgement's wait
    try:
        yield made
    finally:
        made.broker.stop()


async def _held(running: RunningBroker) -> tuple[int, int]:
    """The answers the attacker's connection holds, and their bound."""
    (client,) = running.broker.registry.live_clients()
    return len(client._acks._held or ()), most_held(client)


def _attacker(fleet: Fleet, level: int) -> Raw:
    raw = Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile, level=level)
    properties = KEEP if level == MQTT_5 else Properties()
    raw.connect(Connect(level, "attacker", False, 0, properties=properties))
    return raw


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
def test_pubrels_while_the_store_is_locked_hold_a_bounded_number_of_answers(
    fleet: Fleet, tmp_path: Path, level: int
) -> None:
    engine = fleet.broker.running.broker
    lock = SqliteLock(tmp_path / "data" / "nanoiot.db")
    flood = b"".join(b"\x62\x02" + n.to_bytes(2, "big") for n in range(1, COUNT + 1))
    with _attacker(fleet, level) as raw, watching(WAIT, "broker.client") as log:
        fleet.broker.call(engine.store.flush())
        try:
            lock.begin()
            raw.send(Subscribe(1, (SubscribeRequest("v1/devices/me/x", 1),)))  # to be saved
            assert raw.read() == Suback(1, (1,))
            # Blocks once the broker stops reading and the socket buffers are full.
            sender = threading.Thread(target=raw.sock.sendall, args=(flood,), daemon=True)
            sender.start()
            if not log.saw("answers wait for the store: reading paused"):
                held, bound = fleet.broker.call(_held(fleet.broker.running))
                pytest.fail(f"not paused: {held} answers held (bound {bound})")
            held, bound = fleet.broker.call(_held(fleet.broker.running))
            assert bound <= held < bound + TURN_BUDGET  # a turn's packets go on
            assert fleet.hits("max_awaiting_pubrel") == 1
        finally:
            lock.end()
        sender.join(WAIT)
        assert not sender.is_alive()
        # Once saved, every PUBCOMP goes out, in order (§4.6); 5.0: the ids were unknown.
        code = Reason.PACKET_IDENTIFIER_NOT_FOUND if level == MQTT_5 else 0
        for packet_id in range(1, COUNT + 1):
            assert raw.read() == Pubcomp(packet_id, code)
        # And the session goes on as before.
        raw.send(Publish("v1/devices/me/telemetry", b"t", 2, packet_id=7))
        assert raw.read() == Pubrec(7)
        raw.send(Pubrel(7))
        assert raw.read() == Pubcomp(7)
        raw.send(Disconnect())
        assert raw.closed()
    fleet.bystander_round_trip()
