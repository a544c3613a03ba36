"""Operator ACL rules from the settings reach the broker, placeholders filled per device."""

from pathlib import Path

from broker.mqtt.packets import MQTT_3_1_1, Connack, Connect, Puback, Publish, Will
from tests.certgen import issue
from tests.e2e.harness import (
    BrokerThread,
    broker_settings,
    device_client,
    mqtt_client,
    write_pem,
)
from tests.e2e.peers import Raw


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


def test_a_rule_allowing_sys_topics_lets_no_will_there(tmp_path: Path) -> None:
    """$SYS/ is the broker's (§4.7.2): a client's PUBLISH there is dropped whatever the rules
    say, and so must its will be, or a device could publish a retained $SYS/broker/... figure
    in the broker's name by connecting with it and dropping the connection."""
    rules = [{"who": "device", "action": "both", "topic": "$SYS/#"}]  # meant: read the figures
    with BrokerThread(
        broker_settings(tmp_path / "data", acl_rules=rules, sys_interval=0)
    ) as broker:
        _, issued = broker.provision("forger")
        certfile = write_pem(tmp_path, issued, "forger")
        forged = Will("$SYS/broker/uptime", b"forged", 1, retain=True)
        with Raw(broker.port, broker.server_cert, certfile) as raw:
            raw.send(Connect(MQTT_3_1_1, "forger", True, 0, will=forged))
            assert raw.read() == Connack(False, 5)  # §3.2.2.3: not authorized
            assert raw.closed()
        own = Will("v1/devices/me/status", b"gone", 1, retain=True)
        with Raw(broker.port, broker.server_cert, certfile) as raw:
            raw.connect(Connect(MQTT_3_1_1, "forger", True, 0, will=own))


def test_a_device_re_signing_its_key_with_another_cn_gets_no_other_cn_s_topics(
    tmp_path: Path,
) -> None:
    """Identity is the key: a device may present its key re-signed by itself (new dates, and
    any subject it likes) and is admitted. ``{cert_cn}`` is then the CN registered, not the
    one it wrote, or it could publish as any other device in the operator's namespace."""
    rules = [
        {"who": "device", "action": "both", "topic": "sensors/{cert_cn}/data"},
        {"who": "application", "action": "subscribe", "topic": "sensors/#"},
    ]
    with BrokerThread(broker_settings(tmp_path / "data", acl_rules=rules)) as broker:
        broker.application("collector", "collector", "pw-collector")
        app = mqtt_client(
            broker.port, broker.server_cert, None,
            client_id="c", username="collector", password="pw-collector",
        )  # fmt: skip
        _, registered = broker.provision("probe-1")  # CN probe-1, self-signed
        forged = issue("probe-2", key=registered.key)  # the same key, the victim's CN
        certfile = write_pem(tmp_path, forged, "forged")
        try:
            assert app.wait_connack() == 0
            assert app.subscribe("sensors/#") == [1]
            with Raw(broker.port, broker.server_cert, certfile) as raw:
                raw.connect(Connect(MQTT_3_1_1, "p", True, 0))  # admitted: its key is known
                raw.send(
                    Publish("sensors/probe-2/data", b"forged", 1, packet_id=1),
                    Publish("sensors/probe-1/data", b"own", 1, packet_id=2),
                )
                assert raw.read() == Puback(1)  # 3.1.1 §3.3.5: acknowledged, dropped
                assert raw.read() == Puback(2)
            message = app.next_message()
            assert (message.topic, message.payload) == ("sensors/probe-1/data", b"own")
            assert app.no_message()
        finally:
            app.close()
