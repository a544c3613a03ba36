"""Operator ACL rules from the settings reach the broker, placeholders filled per device."""

from pathlib import Path

from tests.e2e.harness import BrokerThread, broker_settings, device_client, mqtt_client


def test_operator_rules_with_cert_cn_placeholder(tmp_path: Path) -> None:
    rules = [
        {"who": "device", "action": "both", "topic": "sensors/{cert_cn}/data"},
        {"who": "application", "action": "subscribe", "topic": "sensors/#"},
    ]
    broker = BrokerThread(broker_settings(tmp_path / "data", acl_rules=rules))
    try:
        broker.application("collector", "collector", "pw-collector")
        app = mqtt_client(
            broker.port, broker.server_cert, None,
            client_id="c", username="collector", password="pw-collector",
        )  # fmt: skip
        assert app.wait_connack() == 0
        assert app.subscribe("sensors/#") == [1]
        device, _ = device_client(broker, tmp_path, "probe-1", client_id="p")
        assert device.wait_connack() == 0
        assert device.subscribe("sensors/probe-1/data") == [1]
        assert device.subscribe("sensors/probe-2/data") == [128]
        device.publish("sensors/probe-2/data", b"not mine")  # dropped by the broker
        device.publish("sensors/probe-1/data", b"42")
        assert app.next_message().payload == b"42"  # the forbidden one never arrived first
        assert device.next_message().payload == b"42"
        device.close()
        app.close()
    finally:
        broker.stop()
