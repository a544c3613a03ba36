"""The broker and peers of the MQTT 5 interoperability suite (tests/e2e/test_paho_suite5.py).

One device certificate for every client, as through the suite's TLS proxy; an ACL that lets the
device use every topic except subscribing to ``test/nosubscribe``; the settings that match the
paho test broker where the suite depends on its configuration (see the suite's docstring).
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes

from broker.mqtt.packets import MQTT_5, Connack, Connect, Disconnect, Publish, Will
from broker.mqtt.properties import Properties, Property
from nanoiot.settings import load_settings
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.tls_proxy import TlsProxy
from tests.e2e.v5_client import V5Client, make_properties, v5_client

ACL_RULES = [
    {"who": "device", "action": "subscribe", "topic": "test/nosubscribe", "effect": "deny"},
    {"who": "device", "action": "both", "topic": "#"},
]
PREFIX = "client_test5/"  # the suite's own prefix (its __main__)
TOPICS = tuple(PREFIX + t for t in ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA"))
WILDTOPICS = tuple(
    PREFIX + t for t in ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
)  # fmt: skip
USER_PROPERTIES = [("a", "2"), ("c", "3")]
# The paho test broker's configuration the suite depends on, as NanoIoT settings.
SERVER_KEEP_ALIVE = 60  # test_server_keep_alive: a client asking for 120 s gets 60
MAX_PACKET_SIZE = 4096  # < 65535: test_maximum_packet_size sends one packet too many
RECEIVE_MAXIMUM = 10  # test_flow_control2 sends one QoS 2 message more than this
TOPIC_ALIAS_MAXIMUM = 2  # > 0: test_client_topic_alias goes on past its early return
SETTINGS = {
    "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
    "MQTT_SSL_BIND_PORT": "0",
    "NANOIOT_HTTP_PORT": "0",
    "NANOIOT_TLS_HANDSHAKE_TIMEOUT": "5",
    "NANOIOT_ACL_RULES": json.dumps(ACL_RULES),
    "NANOIOT_MAX_KEEP_ALIVE": str(SERVER_KEEP_ALIVE),
    "NANOIOT_MAX_PACKET_SIZE": str(MAX_PACKET_SIZE),
    "NANOIOT_MAX_AWAITING_PUBREL": str(RECEIVE_MAXIMUM),
    "NANOIOT_MAX_TOPIC_ALIASES": str(TOPIC_ALIAS_MAXIMUM),
}


class Suite5:
    """The clients of the suite: over mutual TLS, or (``proxy``) as the suite's own client
    connects, plain TCP, to a TLS proxy in front of the broker."""

    def __init__(self, broker: BrokerThread, certfile: Path, proxy: TlsProxy | None) -> None:
        self.broker = broker
        self.certfile = certfile
        self.proxy = proxy
        self.port = broker.port if proxy is None else proxy.port

    def connect(
        self,
        client_id: str = "myclientid",
        *,
        clean_start: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, Any] | None = None,
        **properties: Any,
    ) -> tuple[V5Client, Any]:
        """A paho MQTTv5 client, connected, and its CONNACK's properties; ``properties``: its
        CONNECT's, by their MQTT 5 names."""
        connect = make_properties(PacketTypes.CONNECT, **properties) if properties else None
        client = v5_client(
            self.port, self.broker.server_cert, self.certfile, client_id=client_id,
            clean_start=clean_start, keepalive=keepalive, connect_properties=connect, will=will,
            tls=self.proxy is None,
        )  # fmt: skip
        code, connack = client.wait_connack()
        assert code == 0
        return client, connack

    def client(self, client_id: str = "myclientid", **options: Any) -> V5Client:
        return self.connect(client_id, **options)[0]

    def raw(self) -> Raw:
        return Raw(self.port, self.broker.server_cert, self.certfile, MQTT_5,
                   plain=self.proxy is not None)  # fmt: skip

    def raw_connected(
        self,
        client_id: str = "myclientid",
        *,
        clean_start: bool = True,
        will: Will | None = None,
        **properties: int,
    ) -> tuple[Raw, Connack]:
        raw = self.raw()
        asked = Properties([(Property[name], value) for name, value in properties.items()])
        return raw, raw.connect(Connect(MQTT_5, client_id, clean_start, 60, will=will,
                                        properties=asked))  # fmt: skip

    def clean_retained(self) -> None:
        """The suite's cleanRetained: every retained message under the prefix deleted."""
        with self.raw() as raw:
            raw.connect(Connect(MQTT_5, "clean retained", True, 60))
            for topic in TOPICS:
                raw.send(Publish(topic, b"", 0, retain=True))
            raw.publishes_before_pingresp()


def reason_code(packet: object) -> int:
    """A server DISCONNECT's reason code (its Reason String aside)."""
    assert isinstance(packet, Disconnect), packet
    return packet.code


def publishes(raw: Raw, count: int) -> list[Publish]:
    found: list[Publish] = []
    while len(found) < count:
        if isinstance(packet := raw.read(), Publish):
            found.append(packet)
    return found


def wait_until(moment: float) -> None:
    # The event waited for is time itself passing: an interval must run out.
    time.sleep(max(0.0, moment - time.monotonic()))


def start_suite(folder: Path, way: str) -> Iterator[Suite5]:
    """The broker and the suite's clients; ``way``: "tls" or "tls-proxy" (``Suite5``)."""
    empty_config = folder / "nanoiot.yaml"
    empty_config.write_text("")
    environ = {"NANOIOT_DATA_DIR": str(folder / "data"), **SETTINGS}
    broker = BrokerThread(load_settings(empty_config, environ))
    try:
        _, device = broker.provision("interop-device")
        certfile = write_pem(folder, device, "interop-device")
        if way == "tls":
            yield Suite5(broker, certfile, None)
            return
        proxy = TlsProxy(broker.port, broker.server_cert, certfile)
        try:
            yield Suite5(broker, certfile, proxy)
        finally:
            proxy.stop()
    finally:
        broker.stop()
