"""A broker and raw MQTT 3.1.1 clients for the statement-by-statement conformance tests
(``test_conformance311_*.py``; the checklist is docs/conformance-3.1.1.md).

One module-scoped broker, reached over mutual TLS and through a TLS proxy in turn, whose
ACL lets the device use every topic, '$conf/' topics included (a '#' rule, like a '#'
filter, leaves out '$' topics: §4.7.2), as the public suites need; every client presents
the one device certificate, each client id is a session of its own."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.mqtt.packets import (
    MQTT_3_1_1,
    Connack,
    Connect,
    Packet,
    Pingreq,
    Pingresp,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from tests.e2e.harness import BrokerThread, running_broker, write_pem
from tests.e2e.peers import Raw
from tests.e2e.tls_proxy import TlsProxy

ACL_RULES = [
    {"who": "device", "action": "both", "topic": "#"},
    {"who": "device", "action": "both", "topic": "$conf/#"},
]


class Broker:
    """Raw clients over mutual TLS, or (``proxy``) over plain TCP to a TLS proxy in front of
    the broker, as conformance checkers connect (``tests.e2e.tls_proxy``)."""

    def __init__(self, broker: BrokerThread, certfile: Path, proxy: TlsProxy | None) -> None:
        self.broker = broker
        self.certfile = certfile
        self.proxy = proxy

    def raw(self, level: int = MQTT_3_1_1) -> Raw:
        """A connection that has sent nothing yet."""
        port = self.broker.port if self.proxy is None else self.proxy.port
        plain = self.proxy is not None
        return Raw(port, self.broker.server_cert, self.certfile, level, plain=plain)

    def client(self, client_id: str, *, clean: bool = True, present: bool = False) -> Raw:
        """A connected 3.1.1 client; ``present``: the Session Present its CONNACK must say."""
        raw = self.raw()
        raw.send(Connect(MQTT_3_1_1, client_id, clean, 60))
        assert raw.read() == Connack(present, 0)
        return raw

    def subscribed(self, client_id: str, *filters: tuple[str, int]) -> Raw:
        """A clean client subscribed to ``filters`` and to its marker topic (``until_marker``)."""
        raw = self.client(client_id)
        asked = (*filters, (marker(client_id), 0))
        raw.send(Subscribe(1, tuple(SubscribeRequest(f, qos) for f, qos in asked)))
        assert raw.read() == Suback(1, tuple(qos for _, qos in asked))
        return raw


@pytest.fixture(scope="module", params=["tls", "tls-proxy"])
def conformance(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Broker]:
    folder = tmp_path_factory.mktemp("conformance311")
    with running_broker(folder / "data", acl_rules=ACL_RULES) as broker:
        _, issued = broker.provision("conformer")
        certfile = write_pem(folder, issued, "conformer")
        if request.param == "tls":
            yield Broker(broker, certfile, None)
            return
        proxy = TlsProxy(broker.port, broker.server_cert, certfile)
        try:
            yield Broker(broker, certfile, proxy)
        finally:
            proxy.stop()


def until_pingresp(raw: Raw) -> list[Packet]:
    """Every packet the broker sent ``raw`` before its answer to a PINGREQ sent now: what it
    answered at once (acknowledgements, SUBACK); messages are routed apart and may come
    after it (``until_marker``)."""
    raw.send(Pingreq())
    found: list[Packet] = []
    while not isinstance(packet := raw.read(), Pingresp):
        assert packet is not None, "closed"
        found.append(packet)
    return found


def marker(client_id: str) -> str:
    """The topic ``Broker.client`` subscribes each client to, for ``until_marker``."""
    return f"marker/{client_id}"


def until_marker(raw: Raw, client_id: str) -> list[Packet]:
    """Every packet the broker sent ``raw`` before a QoS 0 message it publishes now to its
    own marker topic: what it published before came before it (the order of one client's
    messages, §4.6 [MQTT-4.6.0-5])."""
    topic = marker(client_id)
    raw.send(Publish(topic, b"marker"))
    found: list[Packet] = []
    while True:
        packet = raw.read()
        assert packet is not None, "closed"
        if isinstance(packet, Publish) and packet.topic == topic:
            return found
        found.append(packet)


def publishes(raw: Raw, count: int) -> list[Publish]:
    found = [raw.read() for _ in range(count)]
    assert all(isinstance(packet, Publish) for packet in found), found
    return [packet for packet in found if isinstance(packet, Publish)]
