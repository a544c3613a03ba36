"""``$SYS/cluster/...`` and ``/metrics``: the cluster's totals summed from the members'
entries, published by every node beside its own ``$SYS/broker/...``, and every member's
figures labelled by member; a node that dies leaves them once it missed its heartbeats.
``nanoiot serve`` processes, real paho clients over mutual TLS."""

import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.nodes import ADMIN_TOKEN, cluster
from tests.e2e.harness import WAIT, Client

pytestmark = pytest.mark.slow

FAST = {"NANOIOT_SYS_INTERVAL": "0.2", "NANOIOT_CLUSTER_HEARTBEAT_INTERVAL": "0.2"}


def until(client: Client, **wanted: str) -> dict[str, str]:
    """The latest value of each ``$SYS`` topic once those named in ``wanted`` (``__`` for
    ``/``) all hold; the figures come every 0.2 s, each a chance for them to hold."""
    topics = {"$SYS/" + name.replace("__", "/"): value for name, value in wanted.items()}
    latest: dict[str, str] = {}
    deadline = time.monotonic() + WAIT
    while any(latest.get(topic) != value for topic, value in topics.items()):
        assert time.monotonic() < deadline, f"waited for {topics}, last saw {latest}"
        message = client.next_message()
        latest[message.topic] = message.payload.decode()
    return latest


def test_cluster_totals_sum_every_node_and_drop_a_dead_one(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a", **FAST)
        nodes.start("b", **FAST)
        device = nodes.connect("a", sensor, client_id="sensor")
        for n in range(5):
            device.publish("v1/devices/me/telemetry", f"{n}".encode(), qos=1)
        app = nodes.connect("b", app="backend", client_id="backend")
        assert app.subscribe("$SYS/#", qos=0) == [0]

        seen = until(
            app, cluster__nodes="2", cluster__members="a b", cluster__clients__connected="2",
            cluster__messages__received="5", cluster__subscriptions__count="1",
            broker__clients__connected="1",
        )  # fmt: skip
        assert seen["$SYS/broker/messages/received"] == "0"  # b's own: nobody published there
        assert int(seen["$SYS/cluster/bytes/received"]) > 0

        metrics = httpx.get(
            nodes.nodes["b"].http_url + "/metrics",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=WAIT,
        ).text  # fmt: skip
        assert "nanoiot_cluster_members 2.0" in metrics
        assert 'nanoiot_cluster_member_connected_clients{member="a"} 1.0' in metrics
        assert 'nanoiot_cluster_member_messages_received_total{member="a"} 5.0' in metrics
        assert 'nanoiot_cluster_member_messages_received_total{member="b"} 0.0' in metrics

        nodes.kill("a")  # no clean leave: a's entry just stops being rewritten
        until(app, cluster__nodes="1", cluster__members="b", cluster__clients__connected="1")
