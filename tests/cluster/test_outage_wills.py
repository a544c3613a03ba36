"""Wills around a node's loss of NATS, published exactly once (MQTT 3.1.1 §3.1.2.5) however
the outage ends. Node A reaches NATS through a TCP proxy the test cuts; a watcher on node B
counts the will. Real paho clients, nodes as separate processes on the machine's NATS and
PostgreSQL."""

import signal
from pathlib import Path

import pytest

from tests.cluster.nodes import Cluster, cluster, cut_off_a_watched_on_b, until_routed
from tests.cluster.proxy import Proxy, nats_proxy
from tests.e2e.harness import Client
from tests.paho_loop import stop_loop
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

STATUS = "v1/devices/me/status"
# A failed delete of a will's entry, with or without the will held back for it.
ENTRY_NOT_DELETED = r"will held back until NATS is back|the will's entry stays"


def _drop(device: Client) -> None:
    """Gone without DISCONNECT, as a device losing its network."""
    stop_loop(device.paho)
    device.paho._reset_sockets()  # its socket, and paho's wake-up pair (no warning later)


def _dropped_while_cut(nodes: Cluster, proxy: Proxy) -> Client:
    """The device "sensor", connected to A with a will, drops while A has lost NATS: A
    cannot delete its will's entry (``cut_off_a_watched_on_b``). The watcher."""
    sensor = nodes.device("sensor")
    watcher = cut_off_a_watched_on_b(nodes, proxy)
    device = nodes.connect("a", sensor, client_id="sensor", will=(STATUS, b"gone"))
    until_routed(device, STATUS, watcher)
    proxy.cut()
    _drop(device)
    nodes.nodes["a"].log.wait_for(ENTRY_NOT_DELETED)
    return watcher


def _once(watcher: Client) -> None:
    will = watcher.next_message()
    assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
    assert watcher.no_message(within=2.0)


def test_a_will_a_node_cut_off_could_not_keep_is_published_once_it_is_back(
    tmp_path: Path,
) -> None:
    """The device connects while A has lost NATS: its claim fails, its will is in no
    bucket. A's fencing closes it without its will, B takes A's run as gone (no will of it
    to publish); A publishes it once NATS is back."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        watcher = cut_off_a_watched_on_b(nodes, proxy)
        probe = nodes.connect("a", sensor, client_id="probe")
        until_routed(probe, STATUS, watcher)
        probe.close()

        proxy.cut()
        device = nodes.connect("a", sensor, client_id="sensor", will=(STATUS, b"gone"))
        device.paho.reconnect_delay_set(600, 600)
        nodes.nodes["a"].log.wait_for(r"session \S+sensor not claimed in the cluster")
        assert device.disconnected.wait(WAIT)  # fenced
        nodes.nodes["b"].log.wait_for(r"member a\.[\d-]+ is gone: 0 wills")
        assert watcher.no_message(within=0.5)
        proxy.restore()
        nodes.nodes["a"].log.wait_for(r"back in the cluster as run 1")
        _once(watcher)


def test_a_will_due_while_cut_off_is_published_once_when_nats_is_back_before_the_fence(
    tmp_path: Path,
) -> None:
    """The device drops while A has lost NATS, its will's entry in the bucket: A cannot
    delete it. NATS is back before A fences itself: the will is published once, and A's
    clean stop afterwards (its departure) finds no entry left to publish again."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        watcher = _dropped_while_cut(nodes, proxy)
        proxy.restore()
        nodes.nodes["a"].log.wait_for(r"reconnected to NATS")
        will = watcher.next_message()
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
        a = nodes.nodes["a"]
        a.process.send_signal(signal.SIGTERM)
        a.process.wait(WAIT)
        nodes.nodes["b"].log.wait_for(r"member a\.[\d-]+ is gone: \d+ wills")
        assert watcher.no_message(within=2.0)
        assert not any("fenced off the cluster" in line for line in a.log.lines)


def test_a_will_due_while_cut_off_is_published_once_by_a_survivor_after_the_fence(
    tmp_path: Path,
) -> None:
    """The device drops while A has lost NATS, its will's entry in the bucket. A fences
    itself, B takes A's run as gone and publishes the will; A, back, publishes nothing."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        watcher = _dropped_while_cut(nodes, proxy)
        nodes.nodes["a"].log.wait_for(r"fenced off the cluster")
        nodes.nodes["b"].log.wait_for(r"member a\.[\d-]+ is gone: 1 wills")
        will = watcher.next_message()
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
        proxy.restore()
        nodes.nodes["a"].log.wait_for(r"back in the cluster as run 1")
        assert watcher.no_message(within=2.0)


def test_a_will_due_while_cut_off_is_published_once_when_nats_is_back_after_the_fence(
    tmp_path: Path,
) -> None:
    """The device drops while A has lost NATS, its will's entry in the bucket. A fences
    itself (leaving the entry to the departure of its run that ended) and NATS is back
    before B noticed: the delete A could not send is not sent late, on the new connection,
    and the departure publishes the will once."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        watcher = _dropped_while_cut(nodes, proxy)
        a = nodes.nodes["a"]
        a.log.wait_for(r"fenced off the cluster")
        proxy.restore()  # B could take A as gone one heartbeat later, A is back before
        a.log.wait_for(r"back in the cluster as run 1")
        _once(watcher)
