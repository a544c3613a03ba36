"""A node stopped cleanly (SIGTERM) with a persistent session a publisher on another node
publishes to: a message published as the node leaves the members bucket (the last step of
its stop, once it stopped taking frames and answered those it took) is acknowledged at once,
not once the publisher's node probed the stopping one (``PROBE_AFTER``): the node routes and
answers every frame NATS sent it before it stopped taking them, and NATS answers that nobody
listens for those sent after, so the publisher's node parks them at once
(``broker.cluster.forward``). Every acknowledged message reaches the session's adopter (MQTT
3.1.1 §4.3.2), a QoS 2 one once (§4.3.3). Real nodes, paho clients, NATS JetStream and
PostgreSQL."""

import asyncio
import signal
import time
from pathlib import Path

import nats
import pytest

from broker.cluster.confirmations import PROBE_AFTER
from broker.cluster.members import BUCKET
from tests.cluster.nodes import TELEMETRY, Cluster, Node, backend_away_on_a, cluster, logged
from tests.cluster.parking import check_numbers, received
from tests.e2e.harness import Client
from tests.natsserver import NATS_URL
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

BEFORE = 10  # messages acknowledged before node a is stopped (and after it left)


def _set_up(nodes: Cluster, qos: int) -> Client:
    """Nodes a and b; the application "backend"'s persistent session on a, subscribed at
    ``qos``, its client away; the device "sensor" on b, connected (returned)."""
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
    return backend_away_on_a(nodes, qos)


async def _stopped_until_left(nodes: Cluster, a: Node) -> None:
    """SIGTERM to node a; returns once its entry is deleted from the members bucket, once
    it stopped taking frames and answered them (``ClusterRouter.stop``)."""
    client = await nats.connect(NATS_URL)
    try:
        members = await client.jetstream().key_value(
            f"{nodes.env['NANOIOT_CLUSTER_NAME']}_{BUCKET}"
        )
        watcher = await members.watch(a.name)
        a.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            async for entry in watcher:
                if entry is not None and entry.operation in ("DEL", "PURGE"):
                    break
        await watcher.stop()  # type: ignore[no-untyped-call]
    finally:
        await client.close()


def _published(device: Client, number: int, qos: int) -> float:
    """Seconds until ``number`` was acknowledged (PUBACK, or PUBCOMP for QoS 2)."""
    sent = time.monotonic()
    info = device.paho.publish(TELEMETRY, str(number).encode(), qos=qos)
    info.wait_for_publish(WAIT)
    assert info.is_published(), f"message {number} not acknowledged"
    return time.monotonic() - sent


@pytest.mark.parametrize("qos", [1, 2])
def test_a_node_stopping_cleanly_answers_what_it_routed(tmp_path: Path, qos: int) -> None:
    with cluster(tmp_path) as nodes:
        device = _set_up(nodes, qos)
        for number in range(BEFORE):
            _published(device, number, qos)
        a = nodes.nodes["a"]
        asyncio.run(_stopped_until_left(nodes, a))
        took = _published(device, BEFORE, qos)  # routed to a while it stops
        # Had a routed its frame and not answered, b would park it once a probe found a gone.
        assert took < PROBE_AFTER, f"acknowledged {took:.3f} s after it was sent"
        assert a.process.wait(WAIT) == 0
        acked = list(range(BEFORE + 1))
        for number in range(BEFORE + 1, 2 * BEFORE + 1):  # parked for the adopter
            _published(device, number, qos)
            acked.append(number)
        logged(nodes, "adopted 1 persistent sessions of member a", "b")
        check_numbers(received(nodes, "b", acked), acked, qos)
