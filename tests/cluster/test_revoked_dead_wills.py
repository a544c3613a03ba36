"""A killed node's clients' wills, published by a survivor only for devices that would still
be admitted: a revoked, disabled or deleted device publishes nothing more (as on a single
node, ``tests/e2e/test_revoked_wills.py``), even when its node died before it could act.

Devices "sensor" and "control" are connected to node A with wills; a watcher on node B sees
what is published. Sensor's device changes in the shared PostgreSQL (its X.509 credential
revoked, or the device disabled) when A can no longer act on it: after A was killed while B
holds sensor's delayed will (MQTT 5.0 §3.1.3.2.2), or while A is frozen (SIGSTOP) just before
it is killed. B publishes control's will and drops sensor's, counted in its ``/metrics``.
Nodes are separate processes on the machine's NATS and PostgreSQL; the devices are real
paho clients, or raw ones for the exact MQTT 5 will properties.
"""

import os
import signal
from pathlib import Path
from uuid import UUID

import pytest

from broker.mqtt.packets import MQTT_5, Connect, Will
from broker.mqtt.properties import Properties, Property
from storage.interface import CredentialStore
from tests.cluster.delayed_wills import STATUS, stored
from tests.cluster.nodes import Cluster, cluster, counter, metrics, until_routed
from tests.e2e.harness import Client
from tests.e2e.peers import Raw

pytestmark = pytest.mark.slow

REFUSED = "nanoiot_cluster_wills_refused_total"


def _watched(nodes: Cluster) -> tuple[Path, Path, Client]:
    """Nodes a and b, devices "sensor" and "control" (their .nopass.pem files) and the
    watcher on b, subscribed to every device's status."""
    sensor, control = nodes.device("sensor"), nodes.device("control")
    nodes.application("watcher")
    for name in ("a", "b"):
        nodes.start(name)
    watcher = nodes.connect("b", app="watcher", client_id="watcher")
    assert watcher.subscribe("devices/+/status", qos=1) == [1]
    return sensor, control, watcher


def _delayed(nodes: Cluster, certfile: Path, name: str, delay: int) -> Raw:
    """Device ``name`` on node a, its session kept, with the will "gone" to its status after
    ``delay`` seconds; once its node committed the session."""
    raw = Raw(nodes.nodes["a"].port, nodes.server_cert, certfile, MQTT_5)
    will = Will(STATUS, b"gone", properties=Properties([(Property.WILL_DELAY_INTERVAL, delay)]))
    expiry = Properties([(Property.SESSION_EXPIRY_INTERVAL, 600)])
    raw.connect(Connect(MQTT_5, name, False, 60, will=will, properties=expiry))
    stored(raw)
    return raw


def _change(nodes: Cluster, name: str, how: str) -> None:
    async def change(store: CredentialStore) -> None:
        device_id: UUID = (await store.get_device_by_name(name)).id
        if how == "revoked":
            assert await store.revoke_x509(device_id)
        else:
            await store.set_device_enabled(device_id, False)

    nodes.in_store(change)


def _only_controls(nodes: Cluster, watcher: Client) -> None:
    """Control's will comes, sensor's never does: B dropped it and counted it."""
    will = watcher.next_message()
    assert (will.topic, will.payload) == ("devices/control/status", b"gone")
    nodes.nodes["b"].log.wait_for(r"will of session \S+/sensor dropped: ")
    assert watcher.no_message(within=1.0)
    assert counter(metrics(nodes, "b"), REFUSED) == 1


@pytest.mark.parametrize("how", ["revoked", "disabled"])
def test_a_survivor_drops_a_delayed_will_whose_device_changed_after_its_node_died(
    tmp_path: Path, how: str
) -> None:
    """Sensor's will is due a second before control's: had B published it, the watcher
    would have it first."""
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        sensor, control, watcher = _watched(nodes)
        devices = [_delayed(nodes, sensor, "sensor", 5), _delayed(nodes, control, "control", 6)]
        for _ in devices:
            assert watcher.next_message().payload == b"up"
        nodes.kill("a")
        for raw in devices:
            raw.close()
        nodes.nodes["b"].log.wait_for(r"member a\.\S+ is gone: 2 wills of its clients")
        _change(nodes, "sensor", how)
        _only_controls(nodes, watcher)


def test_a_survivor_drops_the_will_of_a_device_revoked_before_its_node_could_act(
    tmp_path: Path,
) -> None:
    """A is frozen, then sensor revoked, then A killed: its wills (no delay) are B's to
    publish, as A never applied the revocation (which closes a connection without its
    will). Heartbeats every 2 s: B takes A as gone 6 s after its last one, well after the
    revocation is committed."""
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "2"
        sensor, control, watcher = _watched(nodes)
        for name, certfile in (("sensor", sensor), ("control", control)):
            device = nodes.connect("a", certfile, client_id=name, will=(STATUS, b"gone"))
            until_routed(device, STATUS, watcher)
        a = nodes.nodes["a"]
        os.kill(a.process.pid, signal.SIGSTOP)
        try:
            _change(nodes, "sensor", "revoked")
        finally:
            nodes.kill("a")
        _only_controls(nodes, watcher)
