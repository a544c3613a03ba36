"""How a CONNECT's flags and a DISCONNECT's reason code are judged, over mutual TLS.

MQTT 3.1.1 §3.1.2.9 forbids a password without a user name: the CONNECT does not conform and
the server closes without CONNACK (§3.1.4). An MQTT 5 DISCONNECT deletes the will only with
reason 0x00 (5.0 §3.1.2.5, §3.14.4); a reason code a client may not send (§3.14.2.1) is a
protocol error."""

import logging
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from broker.mqtt.packets import MQTT_3_1, MQTT_3_1_1, MQTT_5, Connect
from broker.mqtt.wire import utf8_field
from tests.e2e.harness import WAIT, BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import V5Client, v5_client
from tests.paho_loop import stop_loop

STATUS = "v1/devices/me/status"


@pytest.fixture(autouse=True)
def _broker_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.client")


def _logged(caplog: pytest.LogCaptureFixture, *fragments: str) -> list[str]:
    messages = (record.getMessage() for record in caplog.records)
    return [m for m in messages if all(fragment in m for fragment in fragments)]


def _certfile(broker: BrokerThread, directory: Path, name: str) -> Path:
    _, issued = broker.provision(name)
    return write_pem(directory, issued, name)


def _password_alone(name: str, level: int) -> bytes:
    """A CONNECT whose flags say Password (0x40) and Clean Session, not User Name."""
    body = utf8_field(name) + bytes((level, 0x42)) + b"\x00\x3c"
    body += utf8_field("pw-alone") + b"\x00\x06secret"
    return b"\x10" + bytes((len(body),)) + body


@pytest.mark.parametrize(
    ("name", "level"), [("MQTT", MQTT_3_1_1), ("MQIsdp", MQTT_3_1)], ids=["3.1.1", "3.1"]
)
def test_a_password_without_a_user_name_closes_without_connack(
    broker: BrokerThread,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    level: int,
) -> None:
    certfile = _certfile(broker, tmp_path, "pw-alone")
    with Raw(broker.port, broker.server_cert, certfile) as raw:
        raw.send(_password_alone(name, level))
        assert raw.read() is None  # closed, and no CONNACK 4 before it (§3.1.4)
    [line] = _logged(caplog, "first packet is not a valid CONNECT")
    assert "Password flag set without the User Name flag (§3.1.2.9)" in line
    # The same device, with a conforming CONNECT, is accepted.
    with Raw(broker.port, broker.server_cert, certfile) as raw:
        raw.send(Connect(MQTT_3_1_1, "pw-alone", True, 60))
        assert raw.read() is not None


def _watcher(broker: BrokerThread) -> V5Client:
    broker.application("watcher", "watcher", "pw-watcher")
    watcher = v5_client(
        broker.port, broker.server_cert, None, username="watcher", password="pw-watcher"
    )
    assert watcher.wait_connack()[0] == 0
    assert watcher.subscribe("devices/+/status") == [1]
    return watcher


def _disconnect_with(broker: BrokerThread, certfile: Path, will: bytes, code: int) -> None:
    """A paho MQTT 5 client with a will that leaves with DISCONNECT reason ``code``."""
    client = v5_client(
        broker.port, broker.server_cert, certfile, client_id=will.decode(),
        will=(STATUS, will, None),
    )  # fmt: skip
    assert client.wait_connack()[0] == 0
    client.paho.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=code))
    assert client.disconnected.wait(WAIT)
    stop_loop(client.paho)


def test_mqtt_5_will_is_deleted_by_reason_0x00_only(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.1.2.5 [MQTT-3.1.2-8]: a DISCONNECT with 0x80 (unspecified error) leaves the
    will to be published, as 0x04 does; 0x00 deletes it (§3.14.4 [MQTT-3.14.4-3])."""
    certfile = _certfile(broker, tmp_path, "leaver")
    watcher = _watcher(broker)
    try:
        _disconnect_with(broker, certfile, b"normal", 0x00)
        _disconnect_with(broker, certfile, b"error", 0x80)
        _disconnect_with(broker, certfile, b"with-will", 0x04)
        # Had the first will gone, it would have come first.
        assert watcher.next_message().payload == b"error"
        assert watcher.next_message().payload == b"with-will"
    finally:
        watcher.close()


def test_a_reason_code_only_a_server_sends_is_a_protocol_error(
    broker: BrokerThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """5.0 §3.14.2.1 [MQTT-3.14.2-1]: 0x8E (session taken over) is the server's; a client's
    DISCONNECT with it is no normal disconnection, so its will is published."""
    certfile = _certfile(broker, tmp_path, "pretender")
    watcher = _watcher(broker)
    try:
        _disconnect_with(broker, certfile, b"taken-over", 0x8E)
        assert watcher.next_message().payload == b"taken-over"
    finally:
        watcher.close()
    [line] = _logged(caplog, "protocol violation by device 'pretender'")
    assert "DISCONNECT: reason code 0x8e is not one a client sends (§3.14.2.1)" in line


def test_mqtt_5_password_alone_is_still_read(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.1.2.9 allows a password without a user name: no protocol error for it."""
    certfile = _certfile(broker, tmp_path, "five-pw")
    with Raw(broker.port, broker.server_cert, certfile, MQTT_5) as raw:
        raw.send(Connect(MQTT_5, "five-pw", True, 60, None, b"secret"))
        assert raw.read() is not None  # a CONNACK, whatever the password decides
