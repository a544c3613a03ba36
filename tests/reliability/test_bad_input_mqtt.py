"""Bad clients at the MQTT layer, against a real broker while a canary device keeps working.

Each case asserts what the client sees (CONNACK code, SUBACK code, the connection closed or
kept), that nothing reaches anyone it should not, the reason the broker recorded (auth
counts, log line), and that the canary still round-trips a message.

Covered elsewhere exactly and not repeated here: the strict client-id policy's CONNACK 2
(``tests/e2e/test_auth_paths.py::test_strict_client_id_policy``), a token client reusing a
device's client id (``tests/e2e/test_sessions.py``).
"""

from collections.abc import Iterator
from pathlib import Path
from queue import Queue

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.certgen import Issued
from tests.e2e.harness import (
    WAIT,
    BrokerThread,
    Client,
    application_client,
    device_client,
    write_pem,
)
from tests.reliability import packets
from tests.reliability.canary import Canary
from tests.reliability.conftest import HANDSHAKE_TIMEOUT, MAX_PACKET_SIZE, logged
from tests.reliability.wire import RawMqtt, client_context, paho_probe

TOKEN = "raw-client-token"  # a test credential


@pytest.fixture(scope="module")
def backend(rbroker: BrokerThread) -> Iterator[Client]:
    """An application that sees every device topic (and may publish RPC requests)."""
    client = application_client(rbroker, "backend", "backend-pass", client_id="backend")
    client.messages = _AllButTheCanary()
    assert client.wait_connack() == 0
    assert client.subscribe("devices/#") == [1]
    yield client
    client.close()


class _AllButTheCanary(Queue["mqtt.MQTTMessage"]):
    """The backend's inbox, without the canary's own traffic."""

    def put(
        self, item: "mqtt.MQTTMessage", block: bool = True, timeout: float | None = None
    ) -> None:
        if not item.topic.startswith("devices/canary/"):
            super().put(item, block, timeout)


@pytest.fixture(scope="module")
def raw_device(rbroker: BrokerThread) -> str:
    """A device with an access token, for clients that write packets by hand."""
    store = rbroker.running.store
    device = rbroker.call(store.create_device("raw-client"))
    rbroker.call(store.add_token_credential(device.id, TOKEN))
    return TOKEN


def _drain(client: Client) -> None:
    while not client.no_message(within=0.05):
        pass


# --- another device's client id ---------------------------------------------------------


@pytest.mark.parametrize("clean_session", [True, False], ids=["clean", "persistent"])
@pytest.mark.parametrize("intruder", ["no-certificate", "other-certificate"])
def test_another_devices_client_id_never_reaches_its_session(
    rbroker: BrokerThread,
    backend: Client,
    canary: Canary,
    certs_dir: Path,
    logs: pytest.LogCaptureFixture,
    clean_session: bool,
    intruder: str,
) -> None:
    case = f"{intruder}-{'clean' if clean_session else 'persistent'}"
    client_id = f"shared-{case}"
    victim, victim_cert = device_client(
        rbroker, certs_dir, f"victim-{case}", client_id=client_id, clean_session=False
    )
    assert victim.wait_connack() == 0
    assert victim.subscribe("v1/devices/me/rpc/request/+", qos=1) == [1]
    victim.close()
    _drain(backend)
    backend.publish(f"devices/victim-{case}/rpc/request/1", b"for the victim only", qos=1)
    refusals = rbroker.running.auth_log.counts["no_credentials"]

    with canary.busy():
        certfile = None
        if intruder == "other-certificate":
            _, cert = rbroker.provision(f"intruder-{case}")
            certfile = write_pem(certs_dir, cert, f"intruder-{case}")
        probe = paho_probe(
            rbroker.port, rbroker.server_cert, certfile,
            client_id=client_id, clean_session=clean_session,
        )  # fmt: skip
        try:
            if intruder == "no-certificate":
                assert probe.wait_connack() == (5, False)
                assert rbroker.running.auth_log.counts["no_credentials"] == refusals + 1
                assert logged(logs, "refused", f"'{client_id}'", "[no_credentials, CONNACK 5]")
            else:
                # Admitted as itself, in a session of its own: nothing of the victim's.
                assert probe.wait_connack() == (0, False)
                assert logged(logs, f"connected device 'intruder-{case}'", f"'{client_id}'")
                assert probe.client.no_message()
        finally:
            probe.client.close()

    back = paho_probe(
        rbroker.port, rbroker.server_cert, write_pem(certs_dir, victim_cert, "victim"),
        client_id=client_id, clean_session=False,
    )  # fmt: skip
    try:
        assert back.wait_connack() == (0, True)  # its session survived, queue included
        message = back.client.next_message()
        assert (message.topic, message.payload) == (
            "v1/devices/me/rpc/request/1",
            b"for the victim only",
        )
    finally:
        back.client.close()


# --- packet size ----------------------------------------------------------------------


def _payload_for(topic: str, packet_size: int) -> bytes:
    """A payload that makes a QoS 1 PUBLISH on ``topic`` exactly ``packet_size`` bytes."""
    overhead = len(packets.publish(topic, b"", qos=1))
    size = packet_size - overhead
    while len(packets.publish(topic, b"x" * size, qos=1)) > packet_size:
        size -= 1  # the remaining length took another byte
    return b"x" * size


def test_publish_over_the_maximum_size_closes_the_connection(
    rbroker: BrokerThread,
    backend: Client,
    canary: Canary,
    certs_dir: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    topic = "v1/devices/me/telemetry"
    largest = _payload_for(topic, MAX_PACKET_SIZE)
    assert len(packets.publish(topic, largest, qos=1)) == MAX_PACKET_SIZE
    device, _ = device_client(rbroker, certs_dir, "big-sender", client_id="big")
    try:
        assert device.wait_connack() == 0
        _drain(backend)
        with canary.busy():
            device.publish(topic, largest, qos=1)  # at the limit: delivered
            assert backend.next_message().payload == largest
            device.paho.publish(topic, largest + b"x", qos=1)  # one byte over
            assert device.disconnected.wait(WAIT)
        assert backend.no_message()
    finally:
        device.close()
    assert rbroker.running.broker.metrics.limit_hits["max_packet_size"] >= 1
    size = MAX_PACKET_SIZE + 1
    assert logged(
        logs, "protocol violation by device 'big-sender'",
        f"PUBLISH of {size} bytes exceeds max_packet_size {MAX_PACKET_SIZE}",
    )  # fmt: skip


def test_connect_claiming_256_mb_is_refused_without_waiting_for_it(
    rbroker: BrokerThread, canary: Canary, logs: pytest.LogCaptureFixture
) -> None:
    """Only the fixed header is sent: the broker must not wait for (or buffer) the body."""
    with canary.busy(), RawMqtt(rbroker.port, client_context(rbroker.server_cert)) as raw:
        raw.send(bytes([0x10]) + packets.remaining_length(268_435_455))
        closed, received, took = raw.closed_by_server()
    assert (closed, received) == (True, b"")
    assert took < HANDSHAKE_TIMEOUT  # refused at once, not at the CONNECT timeout
    assert logged(logs, "first packet is not a valid CONNECT", "exceeds max_packet_size")


# --- other protocol versions -------------------------------------------------------------


def test_an_unknown_protocol_level_gets_return_code_1_and_close(
    rbroker: BrokerThread, canary: Canary, logs: pytest.LogCaptureFixture
) -> None:
    """MQTT 3.1.1 §3.1.2.2: CONNACK 0x01 'unacceptable protocol version', then close; levels
    3, 4 and 5 are spoken, 6 is not."""
    with canary.busy(), RawMqtt(rbroker.port, client_context(rbroker.server_cert)) as raw:
        raw.send(packets.connect("new", level=6))
        assert raw.recv_exactly(4) == b"\x20\x02\x00\x01"
        closed, received, _ = raw.closed_by_server()
    assert (closed, received) == (True, b"")
    assert logged(logs, "unsupported protocol 'MQTT' level 6")


def test_mqtt_3_1_is_spoken(rbroker: BrokerThread, raw_device: str, canary: Canary) -> None:
    """MQTT 3.1 ("MQIsdp", level 3): accepted, answered in its own CONNACK form."""
    connect = packets.connect("old-firmware", name=b"MQIsdp", level=3, username=raw_device)
    with canary.busy(), RawMqtt(rbroker.port, client_context(rbroker.server_cert)) as raw:
        raw.send(connect)
        assert raw.recv_exactly(4) == packets.CONNACK_ACCEPTED
        raw.send(packets.PINGREQ_PACKET)
        assert raw.recv_exactly(2) == packets.PINGRESP_PACKET


@pytest.mark.parametrize(
    ("protocol", "connack"),
    [(MQTTProtocolVersion.MQTTv31, (0, False)), (MQTTProtocolVersion.MQTTv5, (0, False))],
    ids=["3.1", "5"],
)
def test_paho_clients_of_other_versions_are_answered_not_left_hanging(
    rbroker: BrokerThread,
    canary: Canary,
    certs_dir: Path,
    protocol: MQTTProtocolVersion,
    connack: tuple[int, bool],
) -> None:
    certfile = write_pem(certs_dir, canary.issued, "other-version")
    with canary.busy():
        probe = paho_probe(
            rbroker.port, rbroker.server_cert, certfile, client_id="v", protocol=protocol
        )
        try:
            assert probe.wait_connack() == connack
            if connack[0]:
                assert probe.client.disconnected.wait(WAIT)
        finally:
            probe.client.close()


# --- topics outside the ACL --------------------------------------------------------------


@pytest.fixture(scope="module")
def nosy(rbroker: BrokerThread) -> Issued:
    return rbroker.provision("nosy")[1]


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "+/#", "devices/canary/#", "devices/+/telemetry", "v1/devices/+/telemetry", "$SYS/#"],
)
def test_subscription_outside_the_acl_gets_suback_0x80(
    rbroker: BrokerThread,
    canary: Canary,
    certs_dir: Path,
    nosy: Issued,
    logs: pytest.LogCaptureFixture,
    topic_filter: str,
) -> None:
    """MQTT 3.1.1 §3.9.3: return code 0x80 refuses one filter; the connection stays."""
    device, _ = device_client(rbroker, certs_dir, "nosy", nosy, client_id=f"nosy-{topic_filter}")
    try:
        assert device.wait_connack() == 0
        with canary.busy():
            assert device.subscribe(topic_filter) == [0x80]
        assert device.no_message()  # the canary's traffic never reached it
        assert device.subscribe("v1/devices/me/attributes") == [1]  # still connected
    finally:
        device.close()
    assert logged(logs, "device 'nosy'", f"may not subscribe to '{topic_filter}'")


def test_publish_outside_the_acl_is_acknowledged_and_dropped(
    rbroker: BrokerThread,
    backend: Client,
    canary: Canary,
    certs_dir: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    # MQTT 3.1.1 §3.3.5: a server that does not authorize a PUBLISH has no way to say so; it
    # MUST either acknowledge it by the normal QoS rules or close the connection. We
    # acknowledge and drop, so a device with one wrong topic keeps its connection.
    sender, _ = device_client(rbroker, certs_dir, "sender", client_id="sender")
    try:
        assert sender.wait_connack() == 0
        _drain(backend)
        with canary.busy():
            sender.publish("devices/canary/telemetry", b"forged", qos=1)  # PUBACK comes back
            sender.publish("v1/devices/me/telemetry", b"own topic", qos=1)
            seen = backend.next_message()
        assert (seen.topic, seen.payload) == ("devices/sender/telemetry", b"own topic")
        assert backend.no_message()
        assert sender.paho.is_connected()
    finally:
        sender.close()
    assert logged(logs, "device 'sender'", "may not publish to 'devices/canary/telemetry'")


# --- protocol violations after CONNECT (§4.8) -----------------------------------------------

VIOLATIONS = {
    "reserved-type-0": (b"\x00\x00", "reserved type 0 may not be sent by a client"),
    "reserved-type-15": (b"\xf0\x00", "reserved type 15 may not be sent by a client"),
    "connack-from-client": (b"\x20\x02\x00\x00", "CONNACK may not be sent by a client"),
    "second-connect": (packets.connect("again", username=TOKEN), "second CONNECT"),
    "publish-qos-3": (packets.publish("t", b"x", qos=3), "QoS 3"),
    "publish-dup-at-qos-0": (packets.publish("t", flags=0x08), "DUP set at QoS 0"),
    "publish-wildcard": (packets.publish("v1/devices/me/+"), "must not contain the wildcards"),
    "publish-invalid-utf8": (packets.publish(b"v1/\xff"), "topic name is not valid UTF-8"),
    "publish-nul": (packets.publish(b"v1/\x00"), "contains U+0000"),
    "publish-packet-id-0": (packets.publish("t", qos=1, packet_id=0), "packet identifier 0"),
    "publish-short-length": (b"\x30\x03\x00\x05abc", "runs past the remaining length"),
    "subscribe-bad-flags": (packets.subscribe(("t", 0), flags=0), "flags 0b0000"),
    "subscribe-packet-id-0": (packets.subscribe(("t", 0), packet_id=0), "packet identifier 0"),
    "subscribe-qos-3": (packets.subscribe(("t", 3)), "requested QoS byte 0x03"),
    "subscribe-no-filter": (packets.subscribe(), "no topic filter"),
    "unsubscribe-no-filter": (packets.unsubscribe(), "no topic filter"),
    "subscribe-hash-not-last": (
        packets.subscribe(("v1/devices/me/attributes", 1), ("a/#/b", 1)),
        "'#' must be the last level",
    ),
    "unsubscribe-plus-in-a-level": (packets.unsubscribe("a/b+"), "'+' must occupy a whole level"),
    "puback-too-long": (b"\x40\x03\x00\x01\x00", "remaining length 3, must be 2"),
    "pingreq-with-body": (b"\xc0\x01\x00", "remaining length must be 0"),
    "length-in-5-bytes": (b"\x30\xff\xff\xff\xff\x7f", "longer than 4 bytes"),
    "declares-200-mb": (b"\x30" + packets.remaining_length(200_000_000), "exceeds max_packet"),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_protocol_violation_closes_the_connection(
    rbroker: BrokerThread,
    raw_device: str,
    canary: Canary,
    logs: pytest.LogCaptureFixture,
    case: str,
) -> None:
    """MQTT 3.1.1 §4.8: on a protocol violation the server MUST close the connection
    (amqtt's reader loop would discard the packet and read on)."""
    bad, reason = VIOLATIONS[case]
    with canary.busy(), RawMqtt(rbroker.port, client_context(rbroker.server_cert)) as raw:
        raw.send(packets.connect(f"raw-{case}", username=raw_device))
        assert raw.recv_exactly(4) == packets.CONNACK_ACCEPTED
        raw.send(packets.PINGREQ_PACKET)
        assert raw.recv_exactly(2) == packets.PINGRESP_PACKET  # a valid packet is served
        raw.send(bad)
        closed, received, _ = raw.closed_by_server()
    assert (closed, received) == (True, b"")
    assert logged(logs, "protocol violation by device 'raw-client'", reason)


def test_protocol_violation_publishes_the_will(
    rbroker: BrokerThread, raw_device: str, backend: Client, canary: Canary
) -> None:
    """MQTT 3.1.1 §3.1.2.5: a connection the server closes for a protocol error publishes
    the client's will."""
    connect = packets.connect(
        "raw-will", username=raw_device, will=("v1/devices/me/status", b"gone")
    )
    _drain(backend)
    with canary.busy(), RawMqtt(rbroker.port, client_context(rbroker.server_cert)) as raw:
        raw.send(connect)
        assert raw.recv_exactly(4) == packets.CONNACK_ACCEPTED
        raw.send(b"\xf0\x00")
        assert raw.closed_by_server()[0]
    will = backend.next_message()
    assert (will.topic, will.payload) == ("devices/raw-client/status", b"gone")
