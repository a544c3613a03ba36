"""A node cut off from NATS fences itself off before the others may take it as gone: it
closes its clients (without their wills), leaves its sessions in the store and refuses
connections; a survivor publishes the wills once and adopts the sessions; once NATS is back
the node accepts connections again. Node A reaches NATS through a TCP proxy the test cuts;
real paho clients, nodes as separate processes on the machine's NATS and PostgreSQL."""

import asyncio
from pathlib import Path

import pytest

from tests.cluster.moving import (
    ROOMY_QUEUES,
    Publisher,
    Subscriber,
)
from tests.cluster.nodes import (
    TELEMETRY,
    Cluster,
    adopting_node,
    backend_acking_when_told,
    cluster,
    counter,
    cut_off_a_watched_on_b,
    heartbeat_runs,
    logged,
    metrics,
    until_routed,
)
from tests.cluster.proxy import Proxy, nats_proxy
from tests.cluster.rejoining import routed_through_a_rejoining
from tests.e2e.harness import mqtt_client
from tests.e2e.v5_client import v5_client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

STATUS = "v1/devices/me/status"
# Seconds between heartbeats in the three-node test: A fences itself off two of them after
# its last heartbeat written, the survivors may take it as gone one later. Short, for a
# quick test, yet above what a key-value write takes on a loaded machine.
HEARTBEAT = 1.0
ROUNDS = 100  # numbers the publisher gets acknowledged before and after each step


def _start(nodes: Cluster, proxy: Proxy) -> None:
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(HEARTBEAT)
    nodes.start("a", NANOIOT_NATS_URL=proxy.url)
    nodes.start("b")
    nodes.start("c")


def _gone_logged(nodes: Cluster) -> bool:
    """Whether a survivor logged node A gone (by its heartbeats) so far."""
    return any(
        "cluster member a " in line and "missed its heartbeats" in line
        for name in ("b", "c")
        for line in nodes.nodes[name].log.lines
    )


def test_a_node_cut_off_from_nats_gives_its_clients_up_before_the_others_act(
    tmp_path: Path,
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor, meter = nodes.device("sensor"), nodes.device("meter")
        nodes.application("backend")
        nodes.application("watcher")
        _start(nodes, proxy)
        a = nodes.nodes["a"].port
        v5 = v5_client(a, nodes.server_cert, meter, client_id="meter")
        assert v5.wait_connack()[0] == 0
        v5.paho.reconnect_delay_set(600, 600)
        watcher = nodes.connect("c", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/status", qos=1) == [1]
        backend = backend_acking_when_told(nodes, "a")
        backend.paho.reconnect_delay_set(600, 600)  # it comes back on a survivor
        assert backend.subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("a", sensor, client_id="sensor", will=(STATUS, b"gone"))
        device.paho.reconnect_delay_set(600, 600)
        until_routed(device, TELEMETRY, backend)
        sent = [f"m{i}".encode() for i in range(20)]
        for payload in sent:
            device.publish(TELEMETRY, payload, qos=1)  # PUBACKed by A: A's to deliver
        got = [backend.next_message() for _ in range(5)]  # some reached it, none acked
        assert [m.payload for m in got] == sent[:5]

        proxy.cut()
        # A closes both connections itself, before any survivor takes it as gone.
        assert backend.disconnected.wait(WAIT)
        assert device.disconnected.wait(WAIT)
        assert not _gone_logged(nodes)
        assert v5.wait_disconnect()[0] == 0x9C  # use another server (5.0 §3.14.2.1)
        v5.close()
        nodes.nodes["a"].log.wait_for(r"fenced off the cluster: .* closing 3 connections")
        refused = mqtt_client(a, nodes.server_cert, sensor, client_id="x")
        refused_v5 = v5_client(a, nodes.server_cert, meter, client_id="meter")
        try:
            assert refused.wait_connack() == 3  # server unavailable (§3.2.2.3)
            assert refused_v5.wait_connack()[0] == 0x88  # 5.0 §3.2.2.2
        finally:
            refused.close()
            refused_v5.close()
        assert counter(metrics(nodes, "a"), "nanoiot_cluster_fenced") == 1

        # A survivor publishes the will, once, and adopts the backend's session with
        # everything A acknowledged.
        logged(nodes, "wills of its clients to publish", "b", "c")  # A's run is gone
        will = watcher.next_message()
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
        adopter = adopting_node(nodes, "b", "c")
        backend = backend_acking_when_told(nodes, adopter)
        assert backend.session_present.get_nowait() is True
        again = []
        for _ in sent:
            again.append(backend.next_message())
            backend.paho.ack(again[-1].mid, again[-1].qos)
        assert [m.payload for m in again] == sent
        assert backend.no_message()

        # NATS back: A is a member again, accepts connections, and publishes no will.
        mark = len(nodes.nodes["a"].log.lines)
        proxy.restore()
        nodes.nodes["a"].log.wait_for(r"back in the cluster as run 1", after=mark)
        device = nodes.connect("a", sensor, client_id="sensor")
        figures = metrics(nodes, "a")
        assert counter(figures, "nanoiot_cluster_fenced") == 0
        assert counter(figures, "nanoiot_cluster_fencings_total") == 1
        device.publish(TELEMETRY, b"after", qos=1)
        assert backend.next_message().payload == b"after"  # routed from A to the adopter
        assert watcher.no_message(within=1.0)  # the will was published once


def test_a_node_back_before_the_others_noticed_has_its_wills_published_once(
    tmp_path: Path,
) -> None:
    """Cut for longer than the fencing delay but shorter than the others' one: A's run that
    ended at fencing is taken as gone when A writes its heartbeat again, and the will of the
    device it closed is published once."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        watcher = cut_off_a_watched_on_b(nodes, proxy)
        device = nodes.connect("a", sensor, client_id="sensor", will=(STATUS, b"gone"))
        device.paho.reconnect_delay_set(600, 600)
        until_routed(device, STATUS, watcher)

        proxy.cut()
        assert device.disconnected.wait(WAIT)  # fenced 10 s after its last heartbeat
        proxy.restore()  # B could take A as gone 5 s later, A writes its next one before
        nodes.nodes["a"].log.wait_for(r"back in the cluster as run 1")
        will = watcher.next_message()
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
        assert watcher.no_message(within=1.0)


def test_a_node_back_before_the_others_noticed_keeps_routing_to_its_sessions(
    tmp_path: Path,
) -> None:
    """Cut as above: nobody takes the persistent subscriber S's session from A (it is back
    before B may take it as gone), so A restores it as it rejoins. S's filter stays in B's
    route table all along: what the publisher P on B gets acknowledged while A fences itself
    off, is back on NATS and restores S's session reaches S (issue 14)."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        # Shorter than SLOW_HEARTBEAT: fewer messages parked (all for S) while A is cut off.
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(2 * HEARTBEAT)
        nodes.start("a", NANOIOT_NATS_URL=proxy.url, **ROOMY_QUEUES)
        nodes.start("b", **ROOMY_QUEUES)

        def cut_off(subscriber: Subscriber, _publisher: Publisher) -> None:
            proxy.cut()
            assert subscriber.connection(0).disconnected.wait(WAIT)  # A fenced itself off
            proxy.restore()  # B could take A as gone 2 s later: A is back before

        routed_through_a_rejoining(nodes, sensor, 1, cut_off, before=ROUNDS, after=ROUNDS)


def test_a_node_whose_heartbeat_writes_are_slow_but_in_time_does_not_fence_itself(
    tmp_path: Path,
) -> None:
    """Every answer from NATS reaches A most of an interval late, its heartbeat writes
    included: each is written well before the others may take A as gone, so A keeps its
    clients and its run."""
    interval = 1.5
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(interval)
        nodes.start("a", NANOIOT_NATS_URL=proxy.url)
        nodes.start("b")
        device = nodes.connect("a", sensor, client_id="sensor")
        proxy.delay(0.9 * interval)  # below the key-value requests' 2 s timeout
        runs = asyncio.run(heartbeat_runs(nodes.env["NANOIOT_CLUSTER_NAME"], "a", count=8))
        assert runs == [0] * 8
        assert not device.disconnected.is_set()
        assert not any("fenced off the cluster" in line for line in nodes.nodes["a"].log.lines)
        assert counter(metrics(nodes, "a"), "nanoiot_cluster_fencings_total") == 0
