"""``max_sessions_per_device`` counts a device's sessions on every node of the cluster
(``broker.cluster.seats``): with a limit of 2, one session on node A and one on node B, a third
CONNECT is refused on either (3.1.1 §3.2.2.3: CONNACK 3; 5.0 §3.2.2.2: 0x97 quota exceeded).
A take-over of an existing session is no new seat: the device connects to its session on the
other node at the limit, and a Clean Start there finds the seat of the session it ends free.
A killed node's seats stop counting once the survivor takes it as gone; a restarted node's
restored sessions hold their seats once, not again beside its previous process's.

Nodes are separate ``nanoiot serve`` processes on the machine's NATS and PostgreSQL; clients
are real paho clients, and a raw MQTT 5 one for the reason code.
"""

import asyncio
import json
from pathlib import Path

import nats
import pytest

from broker.mqtt.packets import MQTT_5, Connack, Connect
from tests.cluster.nodes import Cluster, cluster
from tests.e2e.harness import mqtt_client
from tests.e2e.peers import Raw
from tests.natsserver import NATS_URL
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

LIMIT = {"NANOIOT_MAX_SESSIONS_PER_DEVICE": "2"}


def refused(nodes: Cluster, node: str, certfile: Path, client_id: str) -> int:
    """The CONNACK return code a new session of the device gets on ``node``."""
    client = mqtt_client(nodes.nodes[node].port, nodes.server_cert, certfile, client_id=client_id)
    try:
        return client.wait_connack()
    finally:
        client.close()


def test_a_devices_sessions_are_counted_on_every_node(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.start_all("a", "b", **LIMIT)
        nodes.connect("a", sensor, client_id="one")
        nodes.connect("b", sensor, client_id="two")
        assert refused(nodes, "a", sensor, "three") == 3
        assert refused(nodes, "b", sensor, "three") == 3
        with Raw(nodes.nodes["b"].port, nodes.server_cert, sensor, level=MQTT_5) as raw:
            raw.send(Connect(MQTT_5, "three-5", True, 0))
            connack = raw.read()
            assert isinstance(connack, Connack)
            assert connack.code == 0x97
        # Its own sessions still connect, on either node.
        nodes.connect("a", sensor, client_id="two")  # taken over from b
        nodes.connect("b", sensor, client_id="one")  # and from a


def test_a_device_takes_its_session_on_the_other_node_at_the_limit(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.start_all("a", "b", **LIMIT)
        kept = nodes.connect("a", sensor, client_id="kept", clean_session=False)
        nodes.connect("b", sensor, client_id="other")
        kept.close()  # its session stays on a
        moved = mqtt_client(
            nodes.nodes["b"].port, nodes.server_cert, sensor, client_id="kept",
            clean_session=False,
        )  # fmt: skip
        assert moved.wait_connack() == 0
        moved.close()
        # Clean Start on a: it ends the session b holds, whose seat b gives back first.
        nodes.connect("a", sensor, client_id="kept")
        assert refused(nodes, "b", sensor, "third") == 3


def test_a_dead_nodes_seats_stop_counting(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        sensor = nodes.device("sensor")
        nodes.start_all("a", "b", **LIMIT)
        nodes.connect("a", sensor, client_id="one")  # a clean session: nobody adopts it
        nodes.connect("b", sensor, client_id="two")
        assert refused(nodes, "b", sensor, "three") == 3
        nodes.kill("a")
        nodes.nodes["b"].log.wait_for(r"cluster member a .* missed its heartbeats")
        nodes.connect("b", sensor, client_id="three")


async def seats_held(cluster_name: str, pids: dict[str, int], total: int) -> None:
    """Until the one device's entry in the devices bucket names none but the processes
    ``pids`` (node -> pid), holding ``total`` sessions together."""
    client = await nats.connect(NATS_URL)
    try:
        bucket = await client.jetstream().key_value(f"{cluster_name}_devices")
        watcher = await bucket.watch(">", include_history=False)
        async with asyncio.timeout(WAIT):
            while True:
                entry = await watcher.updates(timeout=WAIT)  # type: ignore[no-untyped-call]
                if entry is None or not entry.value:
                    continue
                # node -> [pid, started, run, sessions held]
                seats = {name: (seat[0], seat[3]) for name, seat in json.loads(entry.value).items()}
                current = all(pids.get(name) == pid for name, (pid, _) in seats.items())
                if current and sum(count for _, count in seats.values()) == total:
                    break
        await watcher.stop()  # type: ignore[no-untyped-call]
    finally:
        await client.close()


def test_a_restarted_nodes_restored_sessions_take_their_seats_once(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.start_all("a", "b", **LIMIT)
        nodes.connect("a", sensor, client_id="kept", clean_session=False).close()
        nodes.connect("b", sensor, client_id="other")
        nodes.kill("a")
        nodes.start("a", **LIMIT)  # restores "kept", or b adopted it: one seat either way
        pids = {name: nodes.nodes[name].process.pid for name in ("a", "b")}
        asyncio.run(seats_held(nodes.env["NANOIOT_CLUSTER_NAME"], pids, 2))
        assert refused(nodes, "a", sensor, "third") == 3
        assert refused(nodes, "b", sensor, "third") == 3
        nodes.connect("b", sensor, client_id="kept", clean_session=False)  # its own: no seat
