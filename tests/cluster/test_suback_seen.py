"""MQTT 3.1.1 and 5.0 §3.8.4: once a client has its SUBACK, a message published on another
node reaches it. An application subscribes on node A; the moment its SUBACK arrives (in paho's
network thread, before the test's thread wakes), another application publishes on node B at
QoS 1, each time to a topic no route named before: every message must arrive. Without more
than the route written to the bucket, B's table lacked it a KV watch's delivery longer and B
acknowledged the message routed nowhere. Real paho clients over mutual TLS, nodes as separate
processes on the machine's NATS and PostgreSQL; in the second test B's route watch reaches
it late through a proxy."""

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.cluster.nodes import Cluster, cluster, until_routed
from tests.cluster.proxy import nats_proxy
from tests.e2e.harness import Client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

ROUNDS = 300  # each a new filter of the listener's: within max_subscriptions below
LAG = 0.5  # seconds B's route watch is held back in the second test
ACK_TIMEOUT = 2.0  # the third's: its SUBACK waits a second at most


def commands(nodes: Cluster) -> tuple[Client, Client]:
    """An application "listener" on A, "commander" on B, the route from B to A in place."""
    nodes.application("listener")
    nodes.application("commander")
    listener = nodes.connect("a", app="listener", client_id="listener")
    commander = nodes.connect("b", app="commander", client_id="commander")
    assert listener.subscribe("devices/probe/rpc/request/+", qos=1) == [1]
    until_routed(commander, "devices/probe/rpc/request/0", listener)
    return listener, commander


def published_at_suback(listener: Client, commander: Client, topics: list[str]) -> list[bytes]:
    """Subscribe ``listener`` to each topic in turn; at its SUBACK, ``commander`` publishes
    the topic's name on it (QoS 1). What ``listener`` got, in order."""
    acked = threading.Event()
    original = listener.paho.on_subscribe

    def on_subscribe(
        _c: mqtt.Client, _u: object, mid: int, codes: list[ReasonCode], _p: Properties
    ) -> None:
        commander.paho.publish(topics[len(sent)], topics[len(sent)].encode(), qos=1)
        sent.append(mid)
        granted.extend(codes)
        acked.set()

    sent: list[int] = []
    granted: list[ReasonCode] = []
    listener.paho.on_subscribe = on_subscribe
    try:
        for topic in topics:
            acked.clear()
            listener.paho.subscribe(topic, qos=1)
            assert acked.wait(WAIT)
    finally:
        listener.paho.on_subscribe = original
    assert granted == [1] * len(topics)
    return [bytes(listener.next_message().payload) for _ in topics]


def test_a_message_published_elsewhere_at_the_suback_reaches_the_subscriber(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        # The listener's filters, 1.9 KB counted each: 560 KB.
        bytes_most = str(2 * 1024 * 1024)
        nodes.start(
            "a",
            NANOIOT_MAX_SUBSCRIPTIONS=str(ROUNDS + 1),
            NANOIOT_MAX_SUBSCRIPTION_BYTES=bytes_most,
            NANOIOT_MAX_SUBSCRIPTION_BYTES_PER_DEVICE=bytes_most,
        )
        nodes.start("b")
        listener, commander = commands(nodes)
        topics = [f"devices/d{i}/rpc/request/{i}" for i in range(ROUNDS)]
        assert published_at_suback(listener, commander, topics) == [t.encode() for t in topics]
        assert listener.no_message()


def test_a_suback_waits_for_a_member_whose_routes_lag(tmp_path: Path) -> None:
    with nats_proxy() as to_b, cluster(tmp_path) as nodes:
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        nodes.start("a")
        nodes.start("b", NANOIOT_NATS_URL=to_b.url)
        listener, commander = commands(nodes)
        to_b.delay(LAG, subjects=(f"$KV.{name}_routes.",))
        topics = [f"devices/lag/rpc/request/{i}" for i in range(3)]
        assert published_at_suback(listener, commander, topics) == [t.encode() for t in topics]
        to_b.delay(0)
        assert listener.no_message()


def test_a_suback_waits_at_most_half_the_ack_timeout(tmp_path: Path) -> None:
    """B's table lags longer than A waits: the SUBACK goes after ``ack_timeout`` / 2 seconds
    (the bound of what a SUBACK waits for, ``broker.acks``), the connection stays."""
    with nats_proxy() as to_b, cluster(tmp_path) as nodes:
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        nodes.start("a", NANOIOT_ACK_TIMEOUT=str(ACK_TIMEOUT))
        nodes.start("b", NANOIOT_NATS_URL=to_b.url)
        listener, _commander = commands(nodes)
        to_b.delay(ACK_TIMEOUT * 2, subjects=(f"$KV.{name}_routes.",))
        started = time.monotonic()
        assert listener.subscribe("devices/late/rpc/request/+", qos=1) == [1]
        waited = time.monotonic() - started
        assert ACK_TIMEOUT / 2 - 0.1 <= waited < ACK_TIMEOUT, waited
        to_b.delay(0)
        assert listener.subscribe("devices/later/rpc/request/+", qos=1) == [1]
        assert not listener.disconnected.is_set()
