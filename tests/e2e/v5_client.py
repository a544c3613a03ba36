"""A paho-mqtt 2 client speaking MQTT 5, whose callbacks feed queues a test waits on; an
application's connection with it (user name and password), resuming its session or watching."""

import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.e2e.harness import WAIT, BrokerThread
from tests.paho_loop import stop_loop


@dataclass
class V5Client:
    paho: mqtt.Client
    connack: "Queue[tuple[int, Any]]" = field(default_factory=Queue)  # (reason code, props)
    messages: "Queue[mqtt.MQTTMessage]" = field(default_factory=Queue)
    subacks: "Queue[list[int]]" = field(default_factory=Queue)
    unsubacks: "Queue[list[int]]" = field(default_factory=Queue)
    disconnects: "Queue[tuple[int, Any]]" = field(default_factory=Queue)
    disconnected: threading.Event = field(default_factory=threading.Event)
    session_present: bool = False

    def wait_connack(self) -> tuple[int, Any]:
        """The CONNACK's reason code and properties."""
        return self.connack.get(timeout=WAIT)

    def wait_disconnect(self) -> tuple[int, Any]:
        """The server DISCONNECT's reason code and properties (or the close's)."""
        return self.disconnects.get(timeout=WAIT)

    def subscribe(self, topic: str, qos: int = 1, **options: Any) -> list[int]:
        self.paho.subscribe(topic, options=SubscribeOptions(qos=qos, **options))
        return self.subacks.get(timeout=WAIT)

    def subscribe_with_id(self, topic: str, identifier: int, qos: int = 1) -> list[int]:
        properties = make_properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=identifier)
        self.paho.subscribe(topic, options=SubscribeOptions(qos=qos), properties=properties)
        return self.subacks.get(timeout=WAIT)

    def unsubscribe(self, *topic_filters: str) -> list[int]:
        """One UNSUBSCRIBE with these filters, sent as written; its UNSUBACK's codes."""
        self.paho.unsubscribe(list(topic_filters))
        return self.unsubacks.get(timeout=WAIT)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        info = self.paho.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(WAIT)

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT)

    def assert_nothing_more(self, within: float = 0.3) -> None:
        """No further message comes within ``within`` seconds."""
        try:
            extra = self.messages.get(timeout=within)
        except Empty:
            return
        raise AssertionError(f"unexpected message on {extra.topic}: {extra.payload!r}")

    def close(self) -> None:
        self.paho.disconnect()
        stop_loop(self.paho)


def reason_string(properties: object) -> str:
    """The Reason String among paho's MQTT 5 ``properties`` of a packet ("" if it has none)."""
    return str(getattr(properties, "ReasonString", ""))


def make_properties(packet_type: int, **values: Any) -> Any:
    """paho's Properties for ``packet_type`` with ``values`` set by their MQTT 5 names."""
    properties = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def publish_properties(**values: Any) -> Any:
    return make_properties(PacketTypes.PUBLISH, **values)


def v5_client(
    port: int,
    server_cert: Path,
    certfile: Path | None,
    *,
    client_id: str = "",
    clean_start: bool = True,
    username: str | None = None,
    password: str | None = None,
    keepalive: int = 60,
    connect_properties: Properties | None = None,
    will: tuple[str, bytes, Properties | None] | None = None,
    tls: bool = True,
) -> V5Client:
    """Connect over mutual TLS with protocol MQTTv5, as device code would (``tls`` False:
    over plain TCP, to a TLS proxy that presents the certificate)."""
    paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client = V5Client(paho)
    if tls:
        paho.tls_set(
            ca_certs=str(server_cert),
            certfile=str(certfile) if certfile else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if username is not None:
        paho.username_pw_set(username, password)
    if will is not None:
        paho.will_set(will[0], will[1], qos=1, properties=will[2])

    def on_connect(_c: Any, _u: Any, flags: Any, code: ReasonCode, props: Any) -> None:
        client.session_present = bool(flags.session_present)
        client.connack.put((code.value, props))

    def on_disconnect(_c: Any, _u: Any, _f: Any, code: ReasonCode, props: Any) -> None:
        client.disconnects.put((code.value, props))
        client.disconnected.set()

    paho.on_connect = on_connect
    paho.on_disconnect = on_disconnect
    paho.on_message = lambda _c, _u, message: client.messages.put(message)
    paho.on_subscribe = lambda _c, _u, _mid, codes, _p: client.subacks.put(
        [code.value for code in codes]
    )
    paho.on_unsubscribe = lambda _c, _u, _mid, codes, _p: client.unsubacks.put(
        [code.value for code in codes]
    )
    paho.connect_async(
        "127.0.0.1", port, keepalive=keepalive, clean_start=clean_start,
        properties=connect_properties,
    )  # fmt: skip
    paho.loop_start()
    return client


def v5_application(broker: BrokerThread, name: str, password: str, **options: Any) -> V5Client:
    """The application ``name``, registered already (the store keeps it across a restart),
    connected with its user name and password; its CONNACK accepts it."""
    client = v5_client(
        broker.port, broker.server_cert, None, username=name, password=password, **options
    )
    assert client.wait_connack()[0] == 0
    return client


def v5_resuming(
    broker: BrokerThread, name: str, password: str, client_id: str, expiry: int, **connect: Any
) -> V5Client:
    """``v5_application`` with Clean Start 0 and a Session Expiry Interval of ``expiry``
    seconds (and the CONNECT properties ``connect``): its session resumed if there is one."""
    properties = make_properties(PacketTypes.CONNECT, SessionExpiryInterval=expiry, **connect)
    return v5_application(
        broker, name, password, client_id=client_id, clean_start=False,
        connect_properties=properties,
    )  # fmt: skip


def v5_watcher(broker: BrokerThread, topic: str) -> V5Client:
    """The application "watcher", registered and connected, subscribed to ``topic``."""
    broker.application("watcher", "watcher", "pw-watcher")
    watcher = v5_application(broker, "watcher", "pw-watcher")
    assert watcher.subscribe(topic) == [1]
    return watcher
