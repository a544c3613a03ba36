"""``max_unsaved_session_changes``, tried past: while the database is locked by another
process, a device re-subscribing to the same filters in a loop can no longer grow the changes
waiting for the store (before: one per filter, without bound), and what would add more is
refused in the protocol's words until the store catches up."""

from pathlib import Path

from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from broker.session_store import SessionStore
from tests.e2e.harness import WAIT
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import Raw
from tests.reliability.store_faults import SqliteLock

LIMIT = 1000
# 100 filters of about 1 KB, as many as one SUBSCRIBE may carry: each a change to save.
FILTERS = tuple(SubscribeRequest(f"v1/devices/me/{n}/" + "x" * 900, 1) for n in range(100))


async def _saved(store: SessionStore) -> int:
    pending = store.pending_commit()  # done once every change so far is committed
    if pending is not None:
        await pending
    return store.unsaved


def test_changes_waiting_for_a_locked_store_stop_at_the_limit(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, max_unsaved_session_changes=LIMIT)
    engine = fleet.broker.running.broker
    port, server_cert = fleet.broker.port, fleet.broker.server_cert
    lock = SqliteLock(tmp_path / "data" / "nanoiot.db")
    try:
        with fleet.raw("hoarder") as raw:  # a persistent session: its subscriptions are saved
            fleet.broker.call(engine.store.flush())
            lock.begin()
            codes: list[int] = []
            for packet_id in range(1, 31):  # the same 100 filters, 30 times
                raw.send(Subscribe(packet_id, FILTERS))
                suback = raw.read()
                assert isinstance(suback, Suback)
                codes.extend(suback.codes)
            assert codes.count(1) == LIMIT
            assert codes.count(0x80) == 3000 - LIMIT  # 3.1.1 §3.9.3: failure
            assert engine.store.unsaved == LIMIT  # 3,000 before
            _refused_while_full(port, server_cert, fleet.certfile)
            assert fleet.hits("max_unsaved_session_changes") == 3000 - LIMIT + 2
            lock.end()
            assert fleet.broker.call(_saved(engine.store), timeout=3 * WAIT) == 0
            raw.send(Subscribe(31, FILTERS))  # the store caught up: saved again
            assert raw.read() == Suback(31, (1,) * 100)
        fleet.bystander_round_trip()
    finally:
        lock.end()
        fleet.broker.stop()


def _refused_while_full(port: int, server_cert: Path, certfile: Path) -> None:
    """A session to save is refused (CONNACK 3); a clean one connects, and publishes QoS 0,
    but its QoS 1 PUBLISH, which persistent sessions would queue, closes it unacknowledged
    (5.0 DISCONNECT 0x89 server busy: it sends it again, §4.4)."""
    with Raw(port, server_cert, certfile) as raw:
        raw.send(Connect(4, "kept", False, 0))
        assert raw.read() == Connack(False, 3)  # 3.1.1 §3.2.2.3: server unavailable
        assert raw.closed()
    with Raw(port, server_cert, certfile, level=MQTT_5) as raw:
        raw.connect(Connect(MQTT_5, "clean", True, 0))
        raw.send(Publish("v1/devices/me/telemetry", b"qos 0", 0))
        raw.send(Publish("v1/devices/me/telemetry", b"qos 1", 1, packet_id=1))
        disconnect = raw.read()
        assert isinstance(disconnect, Disconnect)
        assert disconnect.code == 0x89
        assert raw.closed()
