"""An MQTT 5 Response Topic is the topic name of the reply (5.0 §3.3.2.3.5), so it can be
neither a filter nor empty (§4.7.3 [MQTT-4.7.3-1]). Before, an empty one was forwarded: a
device could hand it to every responder subscribed to its requests, and a responder that
answered on it was itself closed for a protocol error. A device over mutual TLS, its packets
written by hand as a client library would refuse to send them."""

from pathlib import Path

from broker.mqtt.packets import MQTT_5, Connack, Connect, Disconnect, Publish, Will
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import v5_application


def _device(broker: BrokerThread, tmp_path: Path) -> Path:
    _, issued = broker.provision("requester")
    return write_pem(tmp_path, issued, "requester")


def test_a_publish_with_an_empty_response_topic_is_a_protocol_error(
    broker: BrokerThread, tmp_path: Path
) -> None:
    broker.application("responder", "responder", "pw-responder")
    responder = v5_application(broker, "responder", "pw-responder")
    certfile = _device(broker, tmp_path)
    try:
        assert responder.subscribe("devices/requester/rpc/request/+") == [1]
        with Raw(broker.port, broker.server_cert, certfile, MQTT_5) as raw:
            raw.connect(Connect(MQTT_5, "requester", True, 60))
            asked = Properties([(Property.RESPONSE_TOPIC, "v1/devices/me/rpc/response/1")])
            raw.send(Publish("v1/devices/me/rpc/request/1", b"ok", properties=asked))
            # Forwarded as written (§3.3.2.3: the server does not alter it).
            got = responder.next_message().properties
            assert getattr(got, "ResponseTopic", None) == "v1/devices/me/rpc/response/1"
            empty = Properties([(Property.RESPONSE_TOPIC, "")])
            raw.send(Publish("v1/devices/me/rpc/request/2", b"empty", properties=empty))
            disconnect = raw.read()
            assert isinstance(disconnect, Disconnect)
            assert disconnect.code == 0x82  # protocol error (§4.13.1)
            assert raw.closed()
        responder.assert_nothing_more()
    finally:
        responder.close()


def test_a_will_with_an_empty_response_topic_is_refused(
    broker: BrokerThread, tmp_path: Path
) -> None:
    certfile = _device(broker, tmp_path)
    will = Will("v1/devices/me/status", b"gone", 1,
                properties=Properties([(Property.RESPONSE_TOPIC, "")]))  # fmt: skip
    with Raw(broker.port, broker.server_cert, certfile, MQTT_5) as raw:
        raw.send(Connect(MQTT_5, "requester", True, 60, will=will))
        connack = raw.read()
        assert isinstance(connack, Connack)
        assert connack.code == 0x82  # 5.0 §3.2.2.2: protocol error
        assert raw.closed()
