"""A provisioned device connects with its certificate and uses the reference device API."""

from pathlib import Path

from tests.certgen import issue
from tests.e2e.harness import BrokerThread, mqtt_client, write_pem


def test_provisioned_device_publishes_and_receives_on_me_topics(
    broker: BrokerThread, tmp_path: Path
) -> None:
    _, device = broker.provision("thermostat-1")
    certfile = write_pem(tmp_path, device, "thermostat-1")
    client = mqtt_client(broker.port, broker.server_cert, certfile, client_id="t1")
    try:
        assert client.wait_connack() == 0
        assert client.subscribe("v1/devices/me/rpc/request/+") == [1]
        client.publish("devices/thermostat-1/rpc/request/7", b'{"method":"ping"}')
        message = client.next_message()
        assert message.topic == "v1/devices/me/rpc/request/7"
        assert message.payload == b'{"method":"ping"}'
    finally:
        client.close()


def test_unknown_certificate_is_refused_with_not_authorised(
    broker: BrokerThread, tmp_path: Path
) -> None:
    stranger = write_pem(tmp_path, issue("stranger"), "stranger")
    client = mqtt_client(broker.port, broker.server_cert, stranger)
    try:
        assert client.wait_connack() == 5
        assert client.disconnected.wait(10)
    finally:
        client.close()
    assert broker.running.auth_log.counts["unknown_key"] == 1
