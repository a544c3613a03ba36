"""The conformance defects found in the old engine, each reproduced against a real broker.

Raw TLS clients write the exact bytes (several packets in one write, acknowledgements held
back); paho stands for an ordinary device. Each test failed before the broker had its own
protocol core.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
)
from tests.e2e.harness import BrokerThread, broker_settings, mqtt_client, write_pem
from tests.e2e.peers import Paho, Raw

RPC = "v1/devices/me/rpc/request"


class Device:
    def __init__(self, broker: BrokerThread, certfile: Path) -> None:
        self.broker = broker
        self.certfile = certfile

    def raw(self, client_id: str, *, clean: bool = True, present: bool = False) -> Raw:
        raw = Raw(self.broker.port, self.broker.server_cert, self.certfile)
        raw.send(Connect(4, client_id, clean, 60))
        assert raw.read() == Connack(present, 0)
        return raw

    def paho(self, client_id: str, *, clean_session: bool = True) -> Paho:
        client = Paho(self.broker.port, self.broker.server_cert, self.certfile, client_id,
                      clean_session=clean_session)  # fmt: skip
        assert client.connack()[0] == 0
        return client


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    broker = BrokerThread(broker_settings(tmp_path / "data"))
    try:
        _, issued = broker.provision("meter")
        yield Device(broker, write_pem(tmp_path, issued, "meter"))
    finally:
        broker.stop()


def test_packets_written_together_with_disconnect_are_all_processed(device: Device) -> None:
    """§4.6, §3.14.4: SUBSCRIBE, UNSUBSCRIBE and three PUBRELs in the same write as DISCONNECT:
    every one is answered and takes effect, in order, before the connection closes."""
    watcher = device.paho("watcher")
    assert watcher.subscribe((f"{RPC}/+", 2)) == [2]
    with device.raw("together", clean=False) as raw:
        for packet_id in (1, 2, 3):
            raw.send(Publish(f"{RPC}/{packet_id}", b"q2", 2, packet_id=packet_id))
            assert raw.read() == Pubrec(packet_id)
        raw.send(
            Subscribe(7, (SubscribeRequest(f"{RPC}/kept", 1),)), Unsubscribe(8, ("nothing",)),
            Pubrel(1), Pubrel(2), Pubrel(3), Disconnect(),
        )  # fmt: skip
        answers = [raw.read() for _ in range(5)]
        assert answers == [Suback(7, (1,)), Unsuback(8), Pubcomp(1), Pubcomp(2), Pubcomp(3)]
        assert raw.closed()
    assert sorted(m.topic for m in watcher.receive(3)) == [f"{RPC}/{n}" for n in (1, 2, 3)]
    with device.raw("together", clean=False, present=True) as again:  # the subscription holds
        watcher.publish(f"{RPC}/kept", b"still subscribed", 1)
        message = again.read()
        assert isinstance(message, Publish)
        assert (message.topic, message.payload) == (f"{RPC}/kept", b"still subscribed")
    watcher.close()


def test_qos2_in_flight_is_redelivered_and_pubrel_resent_after_reconnect(device: Device) -> None:
    """§4.4: PUBREL again where PUBREC came, PUBLISH again with DUP where it did not, with
    the original packet ids, in the original order."""
    publisher = device.paho("publisher")
    with device.raw("subscriber", clean=False) as raw:
        raw.send(Subscribe(1, (SubscribeRequest(f"{RPC}/+", 2),)))
        assert raw.read() == Suback(1, (2,))
        publisher.publish(f"{RPC}/a", b"first", 2)
        publisher.publish(f"{RPC}/b", b"second", 2)
        first, second = raw.read(), raw.read()
        assert isinstance(first, Publish)
        assert isinstance(second, Publish)
        assert first.packet_id is not None
        assert second.packet_id is not None
        raw.send(Pubrec(first.packet_id))
        assert raw.read() == Pubrel(first.packet_id)
    # Gone without PUBCOMP for the first and without PUBREC for the second.
    with device.raw("subscriber", clean=False, present=True) as raw:
        assert raw.read() == Pubrel(first.packet_id)
        assert raw.read() == Publish(f"{RPC}/b", b"second", 2, dup=True, packet_id=second.packet_id)
        raw.send(Pubcomp(first.packet_id), Pubrec(second.packet_id))
        assert raw.read() == Pubrel(second.packet_id)
        raw.send(Pubcomp(second.packet_id))
    with device.raw("subscriber", clean=False, present=True) as raw:
        publisher.publish(f"{RPC}/c", b"after", 1)  # and nothing owed any more before it
        after = raw.read()
        assert isinstance(after, Publish)
        assert (after.topic, after.payload, after.dup) == (f"{RPC}/c", b"after", False)
    publisher.close()


def test_a_publish_to_a_dollar_topic_is_the_acls_decision_not_a_violation(device: Device) -> None:
    """§4.7.2 keeps '$' topics out of wildcard matches; publishing there is acknowledged (and
    dropped when the ACL does not allow it), never a reason to close the connection."""
    client = device.paho("dollar")
    try:
        assert client.subscribe(("v1/devices/me/#", 1)) == [1]
        client.publish("$own/topic", b"", 1)
        client.publish("$SYS/broker/uptime", b"forged", 1)  # the broker's: never a client's
        client.publish("v1/devices/me/telemetry", b"still connected", 1)
        assert client.receive(1)[0].payload == b"still connected"
        assert client.nothing_more()
    finally:
        client.close()


def test_retained_messages_come_on_subscribe_not_on_every_resume(device: Device) -> None:
    """§3.3.1.3: retained messages are sent when a subscription is made; a resumed session
    made none."""
    device.paho("retainer").publish("v1/devices/me/attributes", b"kept", 1, retain=True)
    client = device.paho("resumer", clean_session=False)
    assert client.subscribe(("v1/devices/me/attributes", 1)) == [1]
    [retained] = client.receive(1)
    assert (retained.payload, retained.retain) == (b"kept", True)
    client.close()
    again = device.paho("resumer", clean_session=False)
    try:
        again.publish("v1/devices/me/attributes", b"live", 1)  # retain 0: not stored
        [live] = again.receive(1)
        assert (live.payload, live.retain) == (b"live", False)  # no "kept" before it
        assert again.nothing_more()
    finally:
        again.close()


def test_sys_tree_for_applications_never_for_hash(tmp_path: Path) -> None:
    """$SYS/broker/... every sys_interval, retained; applications read it by a default rule,
    devices do not; a '#' subscription never matches it (§4.7.2)."""
    hash_rule = {"who": "application", "action": "subscribe", "topic": "#"}
    broker = BrokerThread(
        broker_settings(tmp_path / "data", sys_interval=0.2, acl_rules=[hash_rule])
    )
    try:
        broker.application("dashboard", "dashboard", "dashboard-pass")
        app = mqtt_client(broker.port, broker.server_cert, None, client_id="dash",
                          username="dashboard", password="dashboard-pass")  # fmt: skip
        everything = mqtt_client(broker.port, broker.server_cert, None, client_id="all",
                                 username="dashboard", password="dashboard-pass")  # fmt: skip
        _, issued = broker.provision("meter")
        device = Paho(broker.port, broker.server_cert, write_pem(tmp_path, issued, "m"), "m")
        assert device.connack() == (0, False)
        assert app.wait_connack() == 0
        assert everything.wait_connack() == 0
        assert app.subscribe("$SYS/broker/clients/connected", qos=0) == [0]
        while int(app.next_message().payload) != 3:  # retained first, then every 0.2 s
            pass
        assert app.subscribe("$SYS/broker/version", qos=0) == [0]
        version = app.next_message()
        assert (version.payload[:8], version.retain) == (b"NanoIoT ", True)
        assert device.subscribe(("$SYS/#", 0)) == [0x80]  # devices: by an operator's rule
        assert everything.subscribe("#", qos=0) == [0]
        device.publish("v1/devices/me/telemetry", b"round trip", 0)
        assert everything.next_message().payload == b"round trip"
        assert everything.no_message(within=0.5)  # 2 publications of $SYS meanwhile
        for client in (app, everything, device):
            client.close()
    finally:
        broker.stop()
