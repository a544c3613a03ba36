"""MQTT 3.1.1 §4.3.3 (method B) for persistent sessions: the broker keeps the packet id of a
QoS 2 PUBLISH it routed until PUBREL, in the store, and answers PUBREC only once the id is
committed. A client that sends the PUBLISH again with DUP before PUBREL, after a restart, gets
PUBREC again and nothing is routed twice. A raw client, as paho does not send a PUBLISH again
on demand."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from broker.mqtt.codes import Reason
from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Packet,
    Pingreq,
    Pingresp,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import (
    WAIT,
    BrokerThread,
    application_client,
    broker_settings,
    mqtt_client,
    write_pem,
)
from tests.e2e.peers import Raw
from tests.reliability.store_faults import SqliteLock

PASSWORD = "pw-watcher-1"
TELEMETRY = "v1/devices/me/telemetry"


def test_a_qos2_publish_sent_again_after_a_restart_is_not_routed_twice(
    tmp_path: Path,
) -> None:
    settings = broker_settings(tmp_path / "data")
    broker = BrokerThread(settings)
    try:
        _, issued = broker.provision("sensor")
        certfile = write_pem(tmp_path, issued, "sensor")
        watcher = application_client(broker, "watcher", PASSWORD)
        assert watcher.wait_connack() == 0
        assert watcher.subscribe("devices/+/telemetry", qos=2) == [2]
        with Raw(broker.port, broker.server_cert, certfile) as raw:
            raw.send(Connect(4, "sensor", False, 60))
            assert raw.read() == Connack(False, 0)
            raw.send(Publish(TELEMETRY, b"done", 2, packet_id=5))
            assert raw.read() == Pubrec(5)
            raw.send(Pubrel(5))  # id 5 is free again, in the store too
            assert raw.read() == Pubcomp(5)
            raw.send(Publish(TELEMETRY, b"once", 2, packet_id=7))
            assert raw.read() == Pubrec(7)  # routed, its packet id committed
        assert [watcher.next_message().payload for _ in "ab"] == [b"done", b"once"]
        watcher.close()
        broker.stop()

        broker = BrokerThread(settings)
        watcher = mqtt_client(
            broker.port, broker.server_cert, None, username="watcher", password=PASSWORD
        )
        assert watcher.wait_connack() == 0
        assert watcher.subscribe("devices/+/telemetry", qos=2) == [2]
        with Raw(broker.port, broker.server_cert, certfile) as raw:
            raw.send(Connect(4, "sensor", False, 60))
            assert raw.read() == Connack(True, 0)
            raw.publish_again_and_release(TELEMETRY, b"once", 7)
            # Ids free again are routed: 5 released before the restart, 7 just now.
            for packet_id, payload in ((5, b"five"), (7, b"seven")):
                raw.send(Publish(TELEMETRY, payload, 2, packet_id=packet_id))
                assert raw.read() == Pubrec(packet_id)
                raw.send(Pubrel(packet_id))
                assert raw.read() == Pubcomp(packet_id)
        # "once" not again before them, nor after.
        assert [watcher.next_message().payload for _ in "ab"] == [b"five", b"seven"]
        assert watcher.no_message()
        watcher.close()
    finally:
        broker.stop()


@contextmanager
def _sensor_whose_store_can_be_locked(
    tmp_path: Path, **settings_overrides: object
) -> Iterator[tuple[Raw, SqliteLock, BrokerThread]]:
    """A connected raw client of a persistent session that has published one QoS 2 message
    (id 1, PUBREC'd), a lock that keeps the store from being written (half a second of
    statement timeout: a write fails fast while it is held), and the broker."""
    settings = broker_settings(
        tmp_path / "data", database_statement_timeout=0.5, **settings_overrides
    )
    lock = SqliteLock(tmp_path / "data" / "nanoiot.db")
    with BrokerThread(settings) as broker:
        try:
            _, issued = broker.provision("sensor")
            certfile = write_pem(tmp_path, issued, "sensor")
            with Raw(broker.port, broker.server_cert, certfile) as raw:
                raw.send(Connect(4, "sensor", False, 60))
                assert raw.read() == Connack(False, 0)
                raw.send(Publish(TELEMETRY, b"first", 2, packet_id=1))
                assert raw.read() == Pubrec(1)  # the session's row is committed too
                yield raw, lock, broker
        finally:
            lock.end()


def _answered_once_the_store_is_back(raw: Raw, lock: SqliteLock, *packets: Packet) -> Packet:
    """Send ``packets`` while the store cannot be written: no answer then, and the first
    that comes by itself once it can."""
    lock.begin()
    raw.send(*packets)
    _nothing_while_the_store_is_locked(raw)
    lock.end()
    raw.sock.settimeout(WAIT)
    answer = raw.read()
    assert answer is not None
    return answer


def _nothing_while_the_store_is_locked(raw: Raw) -> None:
    raw.sock.settimeout(1.5)  # three busy timeouts: the store has failed meanwhile
    with pytest.raises(TimeoutError):
        raw.read()


def _sent_to_the_sensor(raw: Raw, broker: BrokerThread) -> int:
    """Subscribe the sensor's persistent session, have a QoS 2 message sent to it; its id."""
    raw.send(Subscribe(1, (SubscribeRequest("v1/devices/me/rpc/request/+", 2),)))
    assert raw.read() == Suback(1, (2,))
    backend = application_client(broker, "backend", PASSWORD)
    assert backend.wait_connack() == 0
    backend.publish("devices/sensor/rpc/request/1", b"once", qos=2)
    sent = raw.read()
    assert isinstance(sent, Publish)
    assert (sent.payload, sent.qos) == (b"once", 2)
    assert sent.packet_id is not None
    backend.close()
    return sent.packet_id


@contextmanager
def _resumed(broker: BrokerThread, tmp_path: Path) -> Iterator[Raw]:
    """The sensor connected again: its persistent session is there (session present), with
    what the last connection left in flight (§4.4)."""
    with Raw(broker.port, broker.server_cert, tmp_path / "sensor.nopass.pem") as again:
        again.send(Connect(4, "sensor", False, 60))
        assert again.read() == Connack(True, 0)
        yield again


def test_pubrec_waits_until_the_packet_id_is_committed(tmp_path: Path) -> None:
    """No subscriber, so routing writes nothing: the PUBREC still waits for the id's commit,
    and goes out by itself once the store can be written again."""
    with _sensor_whose_store_can_be_locked(tmp_path) as (raw, lock, _):
        held = Publish(TELEMETRY, b"held", 2, packet_id=2)
        assert _answered_once_the_store_is_back(raw, lock, held) == Pubrec(2)


def test_pubcomp_waits_until_the_packet_id_is_released_in_the_store(tmp_path: Path) -> None:
    """After PUBCOMP the client may use the id for a new message (§4.3.3): a store still
    holding it would take that message for this one sent again, after a restart."""
    with _sensor_whose_store_can_be_locked(tmp_path) as (raw, lock, _):
        assert _answered_once_the_store_is_back(raw, lock, Pubrel(1)) == Pubcomp(1)


def test_pubrel_waits_until_the_store_committed_the_pubrec(tmp_path: Path) -> None:
    """A persistent session's QoS 2 message to its client: PUBREL goes out only once the
    store has the message released, so that the server never sends the PUBLISH again after
    its PUBREL (§4.3.3), not even after a crash in between: the client, having answered the
    PUBREL, would take that PUBLISH for a new message."""
    with _sensor_whose_store_can_be_locked(tmp_path) as (raw, lock, broker):
        packet_id = _sent_to_the_sensor(raw, broker)
        assert _answered_once_the_store_is_back(raw, lock, Pubrec(packet_id)) == Pubrel(packet_id)
        raw.send(Pubcomp(packet_id))


def test_a_repeated_pubrec_is_answered_once_the_store_committed_the_first(
    tmp_path: Path,
) -> None:
    """The client repeats its PUBREC while the release is not committed: that PUBREL waits
    for the commit too."""
    with _sensor_whose_store_can_be_locked(tmp_path) as (raw, lock, broker):
        packet_id = _sent_to_the_sensor(raw, broker)
        pubrec = Pubrec(packet_id)
        assert _answered_once_the_store_is_back(raw, lock, pubrec, pubrec) == Pubrel(packet_id)
        assert raw.read() == Pubrel(packet_id)
        raw.send(Pubcomp(packet_id))


def test_a_resumed_session_s_pubrel_waits_for_the_commit_of_the_release(
    tmp_path: Path,
) -> None:
    """The client reconnects to the same server while its PUBREC's commit is pending: the
    session's PUBREL (§4.4) waits for the commit as the first one did."""
    with _sensor_whose_store_can_be_locked(tmp_path) as (raw, lock, broker):
        packet_id = _sent_to_the_sensor(raw, broker)
        lock.begin()
        raw.send(Pubrec(packet_id))
        _nothing_while_the_store_is_locked(raw)
        raw.close()
        with _resumed(broker, tmp_path) as again:
            _nothing_while_the_store_is_locked(again)
            lock.end()
            again.sock.settimeout(WAIT)
            assert again.read() == Pubrel(packet_id)
            again.send(Pubcomp(packet_id))


def test_a_pubcomp_before_its_pubrel_closes_the_connection(tmp_path: Path) -> None:
    """PUBCOMP answers PUBREL (§4.3.3); one that comes while the PUBREL waits for the store
    answers nothing: a protocol error (5.0 §4.13.1; 3.1.1 §4.8: close). Taken as delivered,
    the message would leave its PUBREL to go out later for a packet id no longer in flight.
    It stays in flight: the next connection gets the PUBREL (§4.4), and its PUBCOMP ends it."""
    # An ack_timeout longer than the waits here: only the PUBCOMP can close the connection.
    with _sensor_whose_store_can_be_locked(tmp_path, ack_timeout=60.0) as (raw, lock, broker):
        packet_id = _sent_to_the_sensor(raw, broker)
        lock.begin()
        raw.send(Pubrec(packet_id))
        _nothing_while_the_store_is_locked(raw)
        raw.send(Pubcomp(packet_id))
        raw.sock.settimeout(WAIT)
        assert raw.read() is None, "the connection stays open after a PUBCOMP before PUBREL"
        assert "nanoiot_protocol_violations_total 1.0" in broker.metrics()
        lock.end()
        with _resumed(broker, tmp_path) as again:
            assert again.read() == Pubrel(packet_id)
            again.send(Pubcomp(packet_id))
            again.send(Pingreq())
            assert again.read() == Pingresp()  # nothing sent again before it: delivered


def test_a_pubrel_waiting_past_ack_timeout_closes_a_subscriber(tmp_path: Path) -> None:
    """What could not be saved is the release of a message sent to the client, not a
    message it published: counted apart. The message stays in flight, its PUBREL goes on
    the next connection (§4.4)."""
    with _sensor_whose_store_can_be_locked(tmp_path, ack_timeout=1.0) as (raw, lock, broker):
        packet_id = _sent_to_the_sensor(raw, broker)
        lock.begin()
        raw.send(Pubrec(packet_id))
        assert raw.read() is None, "not closed after ack_timeout"
        metrics = broker.metrics()
        assert "nanoiot_subscribers_closed_unsaved_total 1.0" in metrics
        assert "nanoiot_publishers_closed_unsaved_total 0.0" in metrics
        lock.end()
        with _resumed(broker, tmp_path) as again:
            assert again.read() == Pubrel(packet_id)
            again.send(Pubcomp(packet_id))


def test_a_v5_pubrec_with_an_error_code_ends_the_flow(tmp_path: Path) -> None:
    """5.0 §4.3.3: PUBREL answers a PUBREC of reason code below 0x80 only; one of 0x80 or
    more ends the flow, the message done with (§4.4: not sent again), its place in the
    client's Receive Maximum free (§4.9)."""
    settings = broker_settings(tmp_path / "data")
    with BrokerThread(settings) as broker:
        _, issued = broker.provision("sensor")
        certfile = write_pem(tmp_path, issued, "sensor")
        persistent = Properties(
            [(Property.SESSION_EXPIRY_INTERVAL, 60), (Property.RECEIVE_MAXIMUM, 1)]
        )
        with Raw(broker.port, broker.server_cert, certfile, MQTT_5) as raw:
            raw.connect(Connect(MQTT_5, "sensor", False, 60, properties=persistent))
            raw.send(Subscribe(1, (SubscribeRequest("v1/devices/me/rpc/request/+", 2),)))
            suback = raw.read()
            assert isinstance(suback, Suback)
            assert suback.codes == (2,)
            backend = application_client(broker, "backend", PASSWORD)
            assert backend.wait_connack() == 0
            for payload in (b"refused", b"next"):
                backend.publish("devices/sensor/rpc/request/1", payload, qos=2)
            refused = raw.read()
            assert isinstance(refused, Publish)
            assert refused.payload == b"refused"
            assert refused.packet_id is not None
            raw.send(Pubrec(refused.packet_id, Reason.UNSPECIFIED_ERROR))
            following = raw.read()  # no PUBREL before it: the next message
            assert isinstance(following, Publish)
            assert following.payload == b"next"
            assert following.packet_id is not None
            raw.send(Pubrec(following.packet_id))
            assert raw.read() == Pubrel(following.packet_id)
            raw.send(Pubcomp(following.packet_id))
        with Raw(broker.port, broker.server_cert, certfile, MQTT_5) as raw:
            raw.send(Connect(MQTT_5, "sensor", False, 60, properties=persistent))
            connack = raw.read()
            assert isinstance(connack, Connack)
            assert connack.session_present
            backend.publish("devices/sensor/rpc/request/1", b"after", qos=2)
            after = raw.read()  # "refused" is not sent again before it
            assert isinstance(after, Publish)
            assert after.payload == b"after"
        backend.close()
