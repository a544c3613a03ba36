"""A device subscribing and unsubscribing in a loop, on a cluster of ``nanoiot serve``
processes: its route changes do not become one key-value write each (before: 40,000 writes
for 20,000 pairs, which NATS takes a few thousand a second, every other session's new route
waiting behind them), and another client's route made after the loop reaches the other node
(``broker.cluster.route_writes``). Real paho clients over mutual TLS."""

import asyncio
from pathlib import Path

import nats
import pytest

from tests.cluster.nodes import cluster, until_routed
from tests.e2e.harness import WAIT
from tests.natsserver import NATS_URL

pytestmark = pytest.mark.slow

PAIRS = 20_000


async def _routes_written(cluster_name: str) -> int:
    """Writes the routes bucket has had (its stream's last sequence)."""
    client = await nats.connect(NATS_URL)
    try:
        info = await client.jetstream().stream_info(f"KV_{cluster_name}_routes")
        return info.state.last_seq
    finally:
        await client.close()


def test_a_subscribe_unsubscribe_loop_does_not_queue_a_write_per_change(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        looping = nodes.device("looping")
        other = nodes.device("other")
        nodes.application("watcher")
        nodes.start("a")
        nodes.start("b")
        device = nodes.connect("a", looping, client_id="looping")
        for n in range(PAIRS):  # sent without waiting for SUBACK / UNSUBACK
            device.paho.subscribe(f"v1/devices/me/loop/{n}", qos=0)
            device.paho.unsubscribe(f"v1/devices/me/loop/{n}")
        for _ in range(PAIRS):  # every SUBACK: the broker has read the whole loop
            assert device.subacks.get(timeout=WAIT) == [0]
        watcher = nodes.connect("a", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/other/telemetry", qos=1) == [1]
        until_routed(nodes.connect("b", other, client_id="other"), "v1/devices/me/telemetry",
                     watcher)  # fmt: skip
        written = asyncio.run(_routes_written(nodes.env["NANOIOT_CLUSTER_NAME"]))
        assert written < PAIRS // 4, f"{written} writes for {PAIRS} subscribe/unsubscribe pairs"
