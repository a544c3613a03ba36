"""The wills a node fenced off holds are decided again before it publishes them once back: a
device revoked or disabled meanwhile publishes nothing more (as a survivor drops a dead
node's, ``tests/cluster/test_revoked_dead_wills.py``).

Devices "sensor" and "control" connect to node A while A has lost NATS (their connects cannot
claim their sessions nor keep their wills in the cluster: A alone knows of them); A fences
itself off and closes them without their wills (0x9C), or they drop (no DISCONNECT) before
that: either way A holds the wills until it is back.
Sensor's device changes in the shared PostgreSQL meanwhile; once NATS is back, A publishes
control's will and drops sensor's, counted in its ``/metrics``. Node A reaches NATS through a
TCP proxy the test cuts; a watcher on B sees what is published; the devices are real paho
clients; nodes are separate processes on the machine's NATS and PostgreSQL.
"""

from pathlib import Path

import pytest

from tests.cluster.nodes import cluster, counter, cut_off_a_watched_on_b, metrics, until_routed
from tests.cluster.proxy import nats_proxy
from tests.cluster.test_outage_wills import _drop
from tests.cluster.test_revoked_dead_wills import REFUSED, _change
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

STATUS = "v1/devices/me/status"


@pytest.mark.parametrize(
    ("how", "ended"), [("revoked", "fenced"), ("disabled", "fenced"), ("revoked", "dropped")]
)
def test_a_fenced_node_drops_a_held_will_whose_device_changed_while_it_was_cut_off(
    tmp_path: Path, how: str, ended: str
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        certfiles = {name: nodes.device(name) for name in ("sensor", "control")}
        watcher = cut_off_a_watched_on_b(nodes, proxy)
        a = nodes.nodes["a"]
        probe = nodes.connect("a", certfiles["control"], client_id="probe")
        until_routed(probe, STATUS, watcher)
        probe.close()

        proxy.cut()
        devices = []
        for name, certfile in certfiles.items():
            device = nodes.connect("a", certfile, client_id=name, will=(STATUS, b"gone"))
            device.paho.reconnect_delay_set(600, 600)
            devices.append(device)
        a.log.wait_for(r"session \S+sensor not claimed in the cluster")
        a.log.wait_for(r"session \S+control not claimed in the cluster")
        if ended == "dropped":  # their wills fall due while A is cut off, before its fencing
            for device in devices:
                _drop(device)
        a.log.wait_for(r"fenced off the cluster")
        for device in devices:
            assert ended == "dropped" or device.disconnected.wait(WAIT)  # without their wills
        _change(nodes, "sensor", how)
        proxy.restore()
        a.log.wait_for(r"back in the cluster as run 1")
        will = watcher.next_message()
        assert (will.topic, will.payload) == ("devices/control/status", b"gone")
        a.log.wait_for(r"will of session \S+/sensor dropped: ")
        assert watcher.no_message(within=1.0)
        assert counter(metrics(nodes, "a"), REFUSED) == 1
