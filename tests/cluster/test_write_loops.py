"""A device subscribing and unsubscribing in a loop, or publishing a retained message in one,
on a cluster of ``nanoiot serve`` processes: its changes do not queue one key-value write
each behind one another (before: one per packet, which NATS takes a few thousand a second,
every other client's route or retained message waiting behind them, and the queue holding a
retained message each without bound), and what follows the loop reaches the other node
(``broker.cluster.pending_writes``). Real paho clients over mutual TLS."""

import asyncio
from pathlib import Path
from queue import Empty

import nats
import pytest

from tests.cluster.nodes import cluster, until_routed
from tests.e2e.harness import WAIT, Client
from tests.natsserver import NATS_URL

pytestmark = pytest.mark.slow

LOOPS = 20_000


async def _written(cluster_name: str, bucket: str) -> int:
    """Writes the bucket has had (its stream's last sequence)."""
    client = await nats.connect(NATS_URL)
    try:
        info = await client.jetstream().stream_info(f"KV_{cluster_name}_{bucket}")
        return info.state.last_seq
    finally:
        await client.close()


def _written_to(nodes_env: dict[str, str], bucket: str) -> int:
    return asyncio.run(_written(nodes_env["NANOIOT_CLUSTER_NAME"], bucket))


def test_a_subscribe_unsubscribe_loop_is_written_one_change_at_a_time(tmp_path: Path) -> None:
    """A SUBACK waits until the other members' route tables hold its filter (MQTT 3.1.1 and
    5.0 §3.8.4, ``broker.cluster.routes_seen``) and nothing more of the client is read
    meanwhile, so the loop's changes are written as the broker reads them, each once and
    none queued behind another: a subscription another client makes during the loop reaches
    the other node while the loop is still being read."""
    with cluster(tmp_path) as nodes:
        looping = nodes.device("looping")
        other = nodes.device("other")
        nodes.application("watcher")
        nodes.start("a")
        nodes.start("b")
        device = nodes.connect("a", looping, client_id="looping")
        for n in range(LOOPS):  # sent without waiting for SUBACK / UNSUBACK
            device.paho.subscribe(f"v1/devices/me/loop/{n}", qos=0)
            device.paho.unsubscribe(f"v1/devices/me/loop/{n}")
        watcher = nodes.connect("a", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/other/telemetry", qos=1) == [1]
        until_routed(nodes.connect("b", other, client_id="other"), "v1/devices/me/telemetry",
                     watcher)  # fmt: skip
        answered = device.subacks.qsize()
        assert answered < LOOPS, "the loop was read whole before the watcher's route went"
        for _ in range(LOOPS):  # every SUBACK: the broker has read the whole loop
            assert device.subacks.get(timeout=WAIT) == [0]
        written = _written_to(nodes.env, "routes")
        assert written <= 2 * LOOPS + 1, f"{written} writes for {LOOPS} pairs and one filter"


def _retained(client: Client, topic_filter: str) -> bytes | None:
    """The retained message a new subscription gets (None: none within 0.3 s of its SUBACK)."""
    assert client.subscribe(topic_filter, qos=1) == [1]
    try:
        message = client.messages.get(timeout=0.3)
    except Empty:
        return None
    finally:
        client.paho.unsubscribe(topic_filter)
    assert message.retain
    return bytes(message.payload)


def test_a_retained_message_published_in_a_loop_is_written_in_its_last_state(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        looping = nodes.device("looping")
        nodes.application("reader")
        nodes.start("a")
        nodes.start("b")
        device = nodes.connect("a", looping, client_id="looping")
        payload = b"x" * 1024
        for n in range(LOOPS):  # QoS 0: nothing to wait for
            device.paho.publish("v1/devices/me/state", b"%d" % n + payload, qos=0, retain=True)
        device.publish("v1/devices/me/state", b"last", qos=1, retain=True)  # after all of them
        reader = nodes.connect("b", app="reader", client_id="reader")
        for _ in range(100):  # another node has it about a millisecond after its PUBACK
            if _retained(reader, "devices/looping/state") == b"last":
                break
        else:
            raise AssertionError("node b never had the last retained message")
        written = _written_to(nodes.env, "retained")
        assert written < LOOPS // 4, f"{written} writes for {LOOPS} retained messages"
