"""A topic filter that breaks MQTT's syntax (§4.7.1.2 '#', §4.7.1.3 '+'), from real clients
over mutual TLS: the connection is closed with nothing of its packet subscribed, an MQTT
3.1.1 client's (§4.8) and an MQTT 5 client's, after a DISCONNECT 0x82 (5.0 §4.13.1: SUBACK
and UNSUBACK 0x8F are for a filter "correctly formed" that the server does not allow,
§3.9.3, §3.11.3)."""

import logging
from pathlib import Path
from queue import Empty

import pytest

from broker.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
)
from tests.e2e.harness import WAIT, BrokerThread, write_pem
from tests.e2e.peers import Paho, Raw

ALLOWED = "v1/devices/me/attributes"  # the device's own topic: granted QoS 1


def _certfile(broker: BrokerThread, directory: Path, name: str) -> Path:
    _, issued = broker.provision(name)
    return write_pem(directory, issued, name)


@pytest.fixture(autouse=True)
def _broker_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.client")  # where violations are logged


def _protocol_violations(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    messages = (record.getMessage() for record in caplog.records)
    return [m for m in messages if m.startswith(f"protocol violation by device '{name}'")]


def test_a_3_1_1_subscribe_with_a_malformed_filter_closes_and_subscribes_nothing(
    broker: BrokerThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certfile = _certfile(broker, tmp_path, "raw")
    with Raw(broker.port, broker.server_cert, certfile) as raw:
        raw.send(Connect(MQTT_3_1_1, "raw", False, 60))  # a persistent session, kept after
        assert raw.read() == Connack(False, 0)
        requests = (SubscribeRequest(ALLOWED, 1), SubscribeRequest("a/#/b", 1))
        raw.send(Subscribe(7, requests))
        assert raw.read() is None  # closed, no SUBACK
    [line] = _protocol_violations(caplog, "raw")
    assert "SUBSCRIBE: topic filter 'a/#/b': '#' must be the last level" in line
    assert "(§4.7.1.2)" in line
    # The session outlived the connection; MQTT 5's UNSUBACK says what it holds (§3.11.3).
    with Raw(broker.port, broker.server_cert, certfile, MQTT_5) as again:
        again.send(Connect(MQTT_5, "raw", False, 60))
        connack = again.read()
        assert isinstance(connack, Connack)
        assert (connack.session_present, connack.code) == (True, 0)
        again.send(Unsubscribe(8, (ALLOWED,)))
        unsuback = again.read()
        assert isinstance(unsuback, Unsuback)
        assert unsuback.codes == (0x11,)  # no subscription existed: the valid one was not made


@pytest.mark.parametrize(
    ("packet", "rule"),
    [
        (Subscribe(7, (SubscribeRequest(ALLOWED, 1), SubscribeRequest("a/b+", 1))),
         "SUBSCRIBE: topic filter 'a/b+': '+' must occupy a whole level (§4.7.1.3)"),
        (Unsubscribe(7, (ALLOWED, "a/#/b")),
         "UNSUBSCRIBE: topic filter 'a/#/b': '#' must be the last level"),
        (Subscribe(7, (SubscribeRequest("$share//x", 1),)),
         "the share name must not be empty (MQTT 5.0 §4.8.2)"),
    ],
    ids=["subscribe", "unsubscribe", "shared"],
)  # fmt: skip
def test_mqtt_5_is_disconnected_0x82_for_a_malformed_filter(
    broker: BrokerThread,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    packet: Subscribe | Unsubscribe,
    rule: str,
) -> None:
    certfile = _certfile(broker, tmp_path, "five")
    with Raw(broker.port, broker.server_cert, certfile, MQTT_5) as raw:
        raw.send(Connect(MQTT_5, "five", True, 60))
        assert isinstance(raw.read(), Connack)
        raw.send(Subscribe(6, (SubscribeRequest(ALLOWED, 1),)))
        assert raw.read() == Suback(6, (1,))
        raw.send(packet)
        disconnect = raw.read()  # no SUBACK or UNSUBACK first
        assert isinstance(disconnect, Disconnect)
        assert disconnect.code == 0x82  # Protocol Error
        assert raw.read() is None
    [line] = _protocol_violations(caplog, "five")
    assert rule in line


def test_paho_unsubscribing_a_malformed_filter_is_disconnected(
    broker: BrokerThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """paho checks a SUBSCRIBE's wildcards but sends an UNSUBSCRIBE's filter as it is."""
    certfile = _certfile(broker, tmp_path, "paho")
    client = Paho(broker.port, broker.server_cert, certfile, "paho")
    try:
        assert client.connack() == (0, False)
        assert client.subscribe((ALLOWED, 1)) == [1]
        client.paho.unsubscribe("a/+b")
        try:
            assert client.disconnected.get(timeout=WAIT)
        except Empty:
            pytest.fail(f"still connected; unsubacks: {client.unsubacks.qsize()}")
        assert client.unsubacks.empty()
    finally:
        client.close()
    [line] = _protocol_violations(caplog, "paho")
    assert "UNSUBSCRIBE: topic filter 'a/+b': '+' must occupy a whole level (§4.7.1.3)" in line
