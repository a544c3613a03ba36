"""Every case of the Eclipse Paho MQTT 3.1.1 interoperability suite, over mutual TLS.

The suite (``interoperability/client_test.py`` of eclipse/paho.mqtt.testing) runs against a
broker through a TLS proxy with one device certificate, so every client here presents the
same certificate: client ids "myclientid" and "myclientid2" are two sessions of one device.
The ACL comes from ``NANOIOT_ACL_RULES`` as an operator writes it: the device may use every
topic (``#``) except subscribing to ``test/nosubscribe``. Topics are the suite's own.
Clients are paho's; where paho cannot do what the suite's client does (a second CONNECT on
one socket, another protocol name), a raw TLS client writes the packets.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.mqtt.packets import Connack, Connect, Pingreq, Pingresp, Will
from nanoiot.settings import load_settings
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Paho, Raw

ACL_RULES = [
    {"who": "device", "action": "subscribe", "topic": "test/nosubscribe", "effect": "deny"},
    {"who": "device", "action": "both", "topic": "#"},
]
TOPICS = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
WILDTOPICS = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")


class Suite:
    def __init__(self, broker: BrokerThread, certfile: Path) -> None:
        self.broker = broker
        self.certfile = certfile

    def client(
        self,
        client_id: str,
        *,
        clean_session: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int] | None = None,
        manual_ack: bool = False,
    ) -> Paho:
        return Paho(
            self.broker.port, self.broker.server_cert, self.certfile, client_id,
            clean_session=clean_session, keepalive=keepalive, will=will, manual_ack=manual_ack,
        )  # fmt: skip

    def raw(self) -> Raw:
        return Raw(self.broker.port, self.broker.server_cert, self.certfile)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    folder = tmp_path_factory.mktemp("paho-suite")
    empty_config = folder / "nanoiot.yaml"
    empty_config.write_text("")
    environ = {
        "NANOIOT_DATA_DIR": str(folder / "data"),
        "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
        "MQTT_SSL_BIND_PORT": "0",
        "NANOIOT_HTTP_PORT": "0",
        "NANOIOT_TLS_HANDSHAKE_TIMEOUT": "5",
        "NANOIOT_ACL_RULES": json.dumps(ACL_RULES),
    }
    broker = BrokerThread(load_settings(empty_config, environ))
    try:
        _, device = broker.provision("interop-device")
        yield Suite(broker, write_pem(folder, device, "interop-device"))
    finally:
        broker.stop()


def _connected(client: Paho, present: bool = False) -> Paho:
    assert client.connack() == (0, present)
    return client


def test_basic(suite: Suite) -> None:
    _connected(suite.client("myclientid")).close()
    aclient = _connected(suite.client("myclientid"))  # §3.2.2.2: clean session, none present
    try:
        assert aclient.subscribe((TOPICS[0], 2)) == [2]
        for qos in (0, 1, 2):
            aclient.publish(TOPICS[0], f"qos {qos}".encode(), qos)
        assert sorted(m.payload for m in aclient.receive(3)) == [b"qos 0", b"qos 1", b"qos 2"]
    finally:
        aclient.close()
    with suite.raw() as raw:  # a second CONNECT on one connection (§3.1.0)
        raw.send(Connect(4, "myclientid", True, 60))
        assert raw.read() == Connack(False, 0)
        raw.send(Connect(4, "myclientid", True, 60))
        assert raw.closed()
    with suite.raw() as raw:  # a protocol name that is not MQTT (§3.1.2.1)
        raw.send(b"\x10\x0e\x00\x02hj\x04\x02\x00\x3c\x00\x02id")
        assert raw.closed()


def test_retained_messages(suite: Suite) -> None:
    aclient = _connected(suite.client("myclientid"))
    try:
        for qos, topic in enumerate(TOPICS[1:4]):
            aclient.publish(topic, f"qos {qos}".encode(), qos, retain=True)
        assert aclient.subscribe((WILDTOPICS[5], 2)) == [2]
        retained = aclient.receive(3)
        assert {(m.topic, m.retain) for m in retained} == {(t, True) for t in TOPICS[1:4]}
    finally:
        aclient.close()
    aclient = _connected(suite.client("myclientid"))
    try:
        for qos, topic in enumerate(TOPICS[1:4]):
            aclient.publish(topic, b"", qos, retain=True)  # §3.3.1.3: deletes it
        assert aclient.subscribe((WILDTOPICS[5], 2)) == [2]
        aclient.publish("TopicA/round-trip", b"after", 0)
        assert aclient.receive(1)[0].payload == b"after"  # and no retained message first
    finally:
        aclient.close()


def test_offline_message_queueing(suite: Suite) -> None:
    aclient = _connected(suite.client("myclientid", clean_session=False))
    assert aclient.subscribe((WILDTOPICS[5], 2)) == [2]
    aclient.close()
    bclient = _connected(suite.client("myclientid2"))
    for qos, topic in enumerate(TOPICS[1:4]):
        bclient.publish(topic, f"qos {qos}".encode(), qos)
    bclient.close()
    aclient = _connected(suite.client("myclientid", clean_session=False), present=True)
    try:
        # QoS 0 is not kept for an offline client; QoS 1 and 2 are (§3.1.2.4).
        assert sorted(m.payload for m in aclient.receive(2)) == [b"qos 1", b"qos 2"]
        assert aclient.nothing_more()
    finally:
        aclient.close()
    _connected(suite.client("myclientid")).close()  # clean up the session


def test_will_message(suite: Suite) -> None:
    bclient = _connected(suite.client("myclientid2", clean_session=False))
    try:
        assert bclient.subscribe((TOPICS[2], 2)) == [2]
        aclient = _connected(
            suite.client("myclientid", keepalive=2, will=(TOPICS[2], b"client not disconnected", 0))
        )
        aclient.drop()  # no DISCONNECT: §3.1.2.5
        [will] = bclient.receive(1)
        assert (will.topic, will.payload) == (TOPICS[2], b"client not disconnected")
    finally:
        bclient.close()
    _connected(suite.client("myclientid2")).close()


def test_overlapping_subscriptions(suite: Suite) -> None:
    aclient = _connected(suite.client("myclientid"))
    try:
        assert aclient.subscribe((WILDTOPICS[6], 2), (WILDTOPICS[0], 1)) == [2, 1]
        aclient.publish(TOPICS[3], b"overlapping topic filters", 2)
        # §3.3.5: one message per client, at the highest QoS of the matching subscriptions.
        [message] = aclient.receive(1)
        assert message.qos == 2
        assert aclient.nothing_more()
    finally:
        aclient.close()


def test_keepalive(suite: Suite) -> None:
    bclient = _connected(suite.client("myclientid2", keepalive=0))
    try:
        assert bclient.subscribe((TOPICS[4], 2)) == [2]
        with suite.raw() as silent:  # keep-alive 2 s, a will, then nothing at all
            silent.send(Connect(4, "myclientid", True, 2, will=Will(TOPICS[4], b"keepalive")))
            assert silent.read() == Connack(False, 0)
            # §3.1.2.10: closed after 1.5 x 2 s; the will goes out (§3.1.2.5).
            [will] = bclient.receive(1)
            assert (will.topic, will.payload) == (TOPICS[4], b"keepalive")
            assert silent.closed()
    finally:
        bclient.close()


def test_redelivery_on_reconnect(suite: Suite) -> None:
    """§4.4: unacknowledged QoS 1 comes again with DUP; QoS 2 not yet PUBREC'd as PUBLISH
    with DUP, once PUBREC'd as PUBREL; original packet ids each time."""
    paused = _connected(suite.client("myclientid2", clean_session=False, manual_ack=True))
    assert paused.subscribe((WILDTOPICS[6], 2)) == [2]
    paused.publish(TOPICS[1], b"", 1)
    paused.publish(TOPICS[3], b"", 2)
    first = {m.qos: m for m in paused.receive(2)}  # QoS 2 arrives with the PUBREL
    released = paused.wait_log("Received PUBREL")
    paused.close()  # neither the PUBACK nor the PUBCOMP was sent
    again = _connected(suite.client("myclientid2", clean_session=False), present=True)
    try:
        [redelivered] = again.receive(1)
        assert (redelivered.topic, redelivered.dup, redelivered.mid) == (
            TOPICS[1], True, first[1].mid,
        )  # fmt: skip
        assert again.wait_log("Received PUBREL") == released  # same packet id
        assert again.nothing_more()
    finally:
        again.close()
    _connected(suite.client("myclientid2")).close()


def test_zero_length_clientid(suite: Suite) -> None:
    with suite.raw() as raw:  # §3.1.3.1: rejected with a persistent session
        raw.send(Connect(4, "", False, 60))
        assert raw.read() == Connack(False, 2)
        assert raw.closed()
    client = _connected(suite.client(""))  # accepted with a clean one
    try:
        assert client.subscribe(("TopicA", 1)) == [1]
    finally:
        client.close()


def test_subscribe_failure(suite: Suite) -> None:
    aclient = _connected(suite.client("myclientid"))
    try:
        assert aclient.subscribe(("test/nosubscribe", 2)) == [0x80]  # §3.9.3, denied by the ACL
        assert aclient.subscribe(("test/other", 2)) == [2]  # still connected
    finally:
        aclient.close()


def test_a_wildcard_subscriber_never_receives_a_denied_topic(suite: Suite) -> None:
    aclient = _connected(suite.client("myclientid"))
    try:
        assert aclient.subscribe(("test/#", 1)) == [1]  # overlaps the deny rule: granted
        aclient.publish("test/nosubscribe", b"denied", 1)
        aclient.publish("test/other", b"allowed", 1)
        assert [message.payload for message in aclient.receive(1)] == [b"allowed"]
        assert aclient.nothing_more()
    finally:
        aclient.close()


def test_dollar_topics(suite: Suite) -> None:
    bclient = _connected(suite.client("myclientid2", keepalive=0))
    try:
        assert bclient.subscribe((WILDTOPICS[5], 2)) == [2]
        bclient.publish("$" + TOPICS[1], b"", 1)  # acknowledged; no '+/+' subscriber gets it
        bclient.publish(TOPICS[1], b"plain", 1)
        assert bclient.receive(1)[0].payload == b"plain"  # §4.7.2
        assert bclient.nothing_more()
    finally:
        bclient.close()


def test_unsubscribe(suite: Suite) -> None:
    bclient = _connected(suite.client("myclientid2"))
    aclient = _connected(suite.client("myclientid"))
    try:
        for topic in TOPICS[:3]:
            assert bclient.subscribe((topic, 2)) == [2]
        bclient.unsubscribe(TOPICS[0])
        for topic in TOPICS[:3]:
            aclient.publish(topic, b"", 1)
        assert sorted(m.topic for m in bclient.receive(2)) == sorted(TOPICS[1:3])
        assert bclient.nothing_more()
    finally:
        aclient.close()
        bclient.close()


def test_a_raw_client_is_served_as_paho_is(suite: Suite) -> None:
    with suite.raw() as raw:
        raw.send(Connect(4, "raw", True, 60), Pingreq())
        assert [raw.read(), raw.read()] == [Connack(False, 0), Pingresp()]
