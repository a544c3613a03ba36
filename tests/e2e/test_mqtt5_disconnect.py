"""MQTT 5 end to end: how the server ends a 5.0 connection, and the will that follows.

A DISCONNECT with its reason code before the server closes (5.0 §3.14.2.1): 0x98 on
revocation, 0x8E on take-over, 0x8D on keep-alive expiry, 0x93 and 0x94 on a limit, 0x82 on a
protocol error; then the will, after its Will Delay Interval (§3.1.3.2.2)."""

import time
from pathlib import Path
from typing import Any

from auth.kinds import CredentialStatus
from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Puback,
    Publish,
    Pubrec,
    Will,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import reason_string, v5_client, v5_watcher
from tests.paho_loop import stop_loop


def test_revocation_sends_disconnect_0x98(broker: BrokerThread, tmp_path: Path) -> None:
    store = broker.running.store
    device, issued = broker.provision("to-revoke")
    client = v5_client(broker.port, broker.server_cert, write_pem(tmp_path, issued, "to-revoke"))
    try:
        assert client.wait_connack()[0] == 0
        [credential] = broker.call(store.list_credentials(device.id))
        broker.call(store.set_credential_status(credential.id, CredentialStatus.REVOKED))
        code, props = client.wait_disconnect()
        assert code == 0x98  # 5.0 §3.14.2.1 administrative action
        assert reason_string(props)
    finally:
        client.close()


def test_take_over_sends_disconnect_0x8e(broker: BrokerThread, tmp_path: Path) -> None:
    _, issued = broker.provision("twice")
    certfile = write_pem(tmp_path, issued, "twice")
    first = v5_client(broker.port, broker.server_cert, certfile, client_id="same")
    second = None
    try:
        assert first.wait_connack()[0] == 0
        second = v5_client(broker.port, broker.server_cert, certfile, client_id="same")
        assert second.wait_connack()[0] == 0
        assert first.wait_disconnect()[0] == 0x8E  # session taken over
    finally:
        stop_loop(first.paho)
        if second is not None:
            second.close()


def _raw(broker: BrokerThread, folder: Path, name: str) -> Raw:
    _, issued = broker.provision(name)
    return Raw(broker.port, broker.server_cert, write_pem(folder, issued, name), MQTT_5)


def _connected(
    broker: BrokerThread, folder: Path, name: str, keep_alive: int = 60
) -> tuple[Raw, Connack]:
    """A raw 5.0 client of the new device ``name`` and the CONNACK that accepted it."""
    raw = _raw(broker, folder, name)
    connack = raw.connect(Connect(MQTT_5, name, True, keep_alive))
    return raw, connack


def _disconnect_reason(packet: Packet | None, code: int) -> str:
    """The reason string of ``packet``, which must be a DISCONNECT with reason ``code``."""
    assert isinstance(packet, Disconnect)
    assert packet.code == code
    return str(packet.properties.get(Property.REASON_STRING))


def test_keep_alive_expiry_sends_disconnect_0x8d(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.1.2.10 and §3.14.2.1: nothing for 1.5 x the keep-alive, then 0x8D."""
    raw, _ = _connected(broker, tmp_path, "sleepy", keep_alive=1)
    _disconnect_reason(raw.read(), 0x8D)
    assert raw.read() is None
    raw.sock.close()


def test_too_many_qos_2_in_flight_sends_disconnect_0x93(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §4.9: more unacknowledged QoS 2 PUBLISHes than the announced Receive Maximum."""
    raw, connack = _connected(broker, tmp_path, "flooder")
    most = connack.properties.get(Property.RECEIVE_MAXIMUM)
    assert most == broker.settings.max_awaiting_pubrel
    raw.send(
        *(Publish("v1/devices/me/telemetry", b"x", 2, packet_id=n) for n in range(1, most + 2))
    )
    packets = []
    while (packet := raw.read()) is not None:
        packets.append(packet)
    assert len(packets) == most + 1
    assert all(isinstance(packet, Pubrec) for packet in packets[:-1])
    assert "not acknowledged" in _disconnect_reason(packets[-1], 0x93)  # receive maximum exceeded
    raw.sock.close()


def test_too_many_qos_1_without_puback_sends_disconnect_0x93(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §3.3.4, §4.9: the Receive Maximum counts QoS 1 PUBLISHes whose PUBACK has not
    gone too. A client that waits for its PUBACKs keeps sending; one that sends more than
    it may in one go (a single TLS record, read at once) is told 0x93."""
    raw, connack = _connected(broker, tmp_path, "pipeliner")
    most = connack.properties.get(Property.RECEIVE_MAXIMUM)
    assert isinstance(most, int)
    topic = "v1/devices/me/telemetry"
    for first in (1, most + 1):  # each window acknowledged before the next goes
        raw.send(*(Publish(topic, b"x", 1, packet_id=n) for n in range(first, first + most)))
        for n in range(first, first + most):
            assert raw.read() == Puback(n)
    raw.send(*(Publish(topic, b"x", 1, packet_id=n) for n in range(1, most + 2)))
    packets = []
    while (packet := raw.read()) is not None:
        packets.append(packet)
    assert len(packets) == most + 1
    assert all(isinstance(packet, Puback) for packet in packets[:-1])
    assert "not acknowledged" in _disconnect_reason(packets[-1], 0x93)
    raw.sock.close()


def test_a_topic_alias_above_the_maximum_sends_disconnect_0x94(
    broker: BrokerThread, tmp_path: Path
) -> None:
    raw, _ = _connected(broker, tmp_path, "aliasing")
    alias = broker.settings.max_topic_aliases + 1
    raw.send(Publish("v1/devices/me/telemetry", b"x", properties=Properties([(0x23, alias)])))
    # 5.0 §3.3.2.3.4: topic alias invalid
    assert "topic alias" in _disconnect_reason(raw.read(), 0x94)
    raw.sock.close()


def test_retain_handling_3_sends_disconnect_0x82(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.8.3.1: a Retain Handling of 3 is a protocol error (0x82), not a malformed
    packet (0x81, kept for reserved bits): paho will not send it, so the bytes go raw."""
    raw, _ = _connected(broker, tmp_path, "retainer")
    raw.send(b"\x82\x07\x00\x01\x00\x00\x01a\x31")  # SUBSCRIBE 'a', options 0x31
    assert "Retain Handling of 3" in _disconnect_reason(raw.read(), 0x82)
    raw.sock.close()


def _connect_with_will(raw: Raw, client_id: str, delay: int, expiry: int) -> None:
    will = Will(
        "v1/devices/me/status", b"gone", 1,
        properties=Properties([(Property.WILL_DELAY_INTERVAL, delay), (0x26, ("why", "lost"))]),
    )  # fmt: skip
    expiry_property = Properties([(Property.SESSION_EXPIRY_INTERVAL, expiry)])
    raw.connect(Connect(MQTT_5, client_id, True, 60, will=will, properties=expiry_property))


def test_will_waits_for_its_delay_and_a_reconnect_cancels_it(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §3.1.3.2.2: the will goes after its delay, with its properties; none if the
    client takes its session again before."""
    watcher = v5_watcher(broker, "devices/willing/status")
    try:
        raw = _raw(broker, tmp_path, "willing")
        _connect_with_will(raw, "w", delay=1, expiry=60)
        lost = time.monotonic()
        raw.sock.close()  # the network connection ends without DISCONNECT
        will = watcher.next_message()
        assert time.monotonic() - lost >= 0.9  # not before its delay
        assert will.payload == b"gone"
        props: Any = will.properties
        assert props.UserProperty == [("why", "lost")]
        certfile = tmp_path / "willing.nopass.pem"
        first = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
        _connect_with_will(first, "w", delay=30, expiry=60)
        first.sock.close()
        again = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
        resume = Properties([(Property.SESSION_EXPIRY_INTERVAL, 60)])
        again.send(Connect(MQTT_5, "w", False, 60, properties=resume))
        connack = again.read()
        assert isinstance(connack, Connack)
        assert connack.session_present
        again.send(Disconnect())
        assert again.read() is None
        again.sock.close()
        registry = broker.running.broker.registry
        session = next(s for key, s in registry.sessions.items() if key[1] == "w")
        assert session.will_timer is None  # cancelled by the reconnect
        assert watcher.messages.empty()
    finally:
        watcher.close()
