"""NATS slow for one node: everything NATS sends node a (its watches, the answers to its
heartbeat writes, the messages other nodes route to it) comes 500 ms late, through a TCP
proxy, while a publisher P on node b publishes a numbered stream at QoS 1 or 2 to the
persistent subscriber S on a. Heartbeats every 2 s (the default): a's writes are answered
well within the fencing delay, so a neither fences itself off nor is taken as gone (no
flapping), and every number P got acknowledged reaches S, QoS 2 once, in order (MQTT 3.1.1
§4.3.2, §4.3.3, §4.6). Real paho clients over TLS, nodes as separate processes on the
machine's NATS and PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.moving import (
    FILTER,
    ROOMY_QUEUES,
    Publisher,
    Subscriber,
    acknowledged_and_received,
    check_moved,
    subscribed_on_a,
)
from tests.cluster.nodes import cluster, counter, metrics
from tests.cluster.proxy import nats_proxy

pytestmark = pytest.mark.slow

LATENCY = 0.5  # seconds
MESSAGES = 100  # numbers P gets acknowledged while NATS is slow for a (about 3 s)


@pytest.mark.parametrize("qos", [1, 2])
def test_a_slow_nats_neither_fences_a_node_off_nor_loses_a_message(
    tmp_path: Path, qos: int
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a", NANOIOT_NATS_URL=proxy.url, **ROOMY_QUEUES)
        nodes.start("b", **ROOMY_QUEUES)
        a, b = nodes.nodes["a"], nodes.nodes["b"]
        with Subscriber(nodes, "backend", 4) as subscriber:
            device = subscribed_on_a(subscriber, FILTER, qos, sensor, "b", "sensor")
            with Publisher(device, qos) as publisher:
                proxy.delay(LATENCY)
                acknowledged = acknowledged_and_received(publisher, subscriber, MESSAGES)
                assert not device.disconnected.is_set(), "P was closed"
                assert not subscriber.connection(0).disconnected.is_set(), "S was closed"
                proxy.delay(0)  # the nodes stop at their pace
        for node in (a, b):
            lines = "".join(node.log.lines)
            assert "fenced off the cluster" not in lines
            assert "missed its heartbeats" not in lines
            assert "could not be routed" not in lines
        assert counter(metrics(nodes, "a"), "nanoiot_cluster_fencings_total") == 0
    check_moved(subscriber, acknowledged, qos)
