"""A node frozen (SIGSTOP) rather than killed: NATS keeps its connection, so nothing but its
silent heartbeats says it is gone (``broker.cluster.members``).

Node a holds the persistent subscriber S's session and a device with a will; a publisher P on
node b publishes a numbered stream to S at QoS 1 or 2, never more than ``WINDOW`` messages
unacknowledged. a is frozen. b takes it as gone after ``MISSED_BEATS`` heartbeats, publishes
the device's will once (MQTT 3.1.1 §3.1.2.5), and from then on parks what P publishes for a's
routes instead of waiting for a (``broker.cluster.forward``): P keeps being acknowledged.
S reconnects to b and gets its session (§3.1.2.4), with every message P got acknowledged
(§4.3.2, §4.3.3), QoS 2 once, new numbers in P's order (§4.6). Then a runs again (SIGCONT):
it fences itself off before it routes anything it finds waiting in its sockets (its run
ended while it was frozen: ``broker.cluster.fence``), so it delivers nothing twice and holds
no session b took; it kicks its clients without their wills, and rejoins. Real paho clients
over TLS, nodes as separate processes on the machine's NATS and PostgreSQL.
"""

import os
import signal
import time
from pathlib import Path

import pytest

from broker.cluster.confirmations import CONFIRM_WITHIN
from broker.cluster.members import MISSED_BEATS
from tests.cluster.moving import (
    FILTER,
    ROOMY_QUEUES,
    WINDOW,
    Publisher,
    Subscriber,
    acknowledged_and_received,
    check_moved,
    subscribed_on_a,
)
from tests.cluster.nodes import Cluster, cluster, counter, metrics
from tests.cluster.rejoining import routed_through_a_rejoining
from tests.e2e.harness import WAIT, Client

pytestmark = pytest.mark.slow

# Seconds between heartbeats: b takes a as gone MISSED_BEATS of them after its last one.
# Short, for a quick test, yet above what a key-value write takes on a loaded machine.
HEARTBEAT = 1.0
PER_STEP = 50  # new numbers S receives before each step of the test
AFTER = 100  # numbers P publishes once a runs again
STATUS = "v1/devices/me/status"


def _started(nodes: Cluster) -> Path:
    """Nodes a and b, with ``HEARTBEAT`` s heartbeats and roomy queues; the application
    "backend"; the device "sensor" (its .nopass.pem file), not connected."""
    sensor = nodes.device("sensor")
    nodes.application("backend")
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(HEARTBEAT)
    nodes.start_all("a", "b", **ROOMY_QUEUES)
    return sensor


def _watcher_and_meter(nodes: Cluster) -> tuple[Client, Client]:
    """The application "watcher" on b, subscribed to every device's status; the device
    "meter" on a, with a will there."""
    meter = nodes.device("meter")
    nodes.application("watcher")
    watcher = nodes.connect("b", app="watcher", client_id="watcher")
    assert watcher.subscribe("devices/+/status", qos=1) == [1]
    on_a = nodes.connect("a", meter, client_id="meter", will=(STATUS, b"gone"))
    on_a.paho.reconnect_delay_set(600, 600)  # it stays away once kicked
    return watcher, on_a


@pytest.mark.parametrize("qos", [1, 2])
def test_a_frozen_node_is_taken_as_gone_and_fences_itself_off_when_it_runs_again(
    tmp_path: Path, qos: int
) -> None:
    with cluster(tmp_path) as nodes:
        sensor = _started(nodes)
        watcher, meter = _watcher_and_meter(nodes)
        a, b = nodes.nodes["a"], nodes.nodes["b"]
        with Subscriber(nodes, "backend", 4) as subscriber:
            device = subscribed_on_a(subscriber, FILTER, qos, sensor, "b", "sensor")
            with Publisher(device, qos) as publisher:
                assert subscriber.receive_new(PER_STEP), subscriber.counts()
                logged, frozen = len(b.log.lines), time.monotonic()
                os.kill(a.process.pid, signal.SIGSTOP)
                try:
                    b.log.wait_for(r"cluster member a .* missed its heartbeats", after=logged)
                    gone = time.monotonic()
                    assert gone - frozen < (MISSED_BEATS + 2) * HEARTBEAT
                    will = watcher.next_message()
                    assert (will.topic, will.payload) == ("devices/meter/status", b"gone")
                    # P is acknowledged while a is frozen: its messages for a are parked.
                    assert publisher.acknowledged_within(WINDOW, CONFIRM_WITHIN)
                    # S's connection to a stays up (a frozen closes nothing): what it got
                    # before the freeze is taken, and it connects to b too (a known gone,
                    # b does not wait for it: ``broker.cluster.sessions``).
                    subscriber.take_delivered()
                    subscriber.connect("b")
                    assert subscriber.receive_new(PER_STEP), subscriber.counts()
                    thawed = len(a.log.lines)
                finally:
                    os.kill(a.process.pid, signal.SIGCONT)
                a.log.wait_for(r"fenced off the cluster", after=thawed)
                a.log.wait_for(r"back in the cluster as run 1", after=thawed)
                # a closed S's first connection and the meter's (without its will) and
                # delivered nothing there once it ran again: nothing routed into the
                # session b took, from the frames that waited in a's sockets.
                assert subscriber.connection(0).disconnected.wait(WAIT)
                assert meter.disconnected.wait(WAIT)
                assert subscriber.unread(0) == 0, "a delivered to S after it was thawed"
                took_over = [line for line in a.log.lines[thawed:] if "on another node" in line]
                assert not took_over, "a acted on b's take-over before it fenced itself off"
                assert subscriber.receive_new(PER_STEP), subscriber.counts()
                acknowledged = acknowledged_and_received(publisher, subscriber, AFTER)
        check_moved(subscriber, acknowledged, qos)
        assert watcher.no_message(within=1.0)  # the will once
        held = {name: counter(metrics(nodes, name), "nanoiot_sessions") for name in "ab"}
        assert held == {"a": 0, "b": 3}  # S's, P's and the watcher's: a holds none b took


@pytest.mark.parametrize("qos", [1, 2])
def test_a_thawed_node_keeps_routing_to_the_session_nobody_took_while_it_rejoins(
    tmp_path: Path, qos: int
) -> None:
    """S stays connected to a through the freeze: nobody takes its session meanwhile (b
    adopts only once NATS says nobody listens for a, and NATS keeps a frozen process's
    subscriptions; a thawed and fenced off listens no more, and b may adopt it then: S takes
    it from b). Thawed, a kicks S and forgets the session, then restores it as it rejoins:
    S's filter must stay in b's route table all along, or what P publishes in between
    matches no route and is acknowledged without reaching S. b parks what P publishes for a
    until a is back: not at a heartbeat of the run b took as gone that a may write as it
    runs again, nor at one of its next run fenced off (``broker.cluster.absences``)."""
    with cluster(tmp_path) as nodes:
        sensor = _started(nodes)
        a, b = nodes.nodes["a"], nodes.nodes["b"]

        def frozen(subscriber: Subscriber, publisher: Publisher) -> None:
            logged = len(b.log.lines)
            os.kill(a.process.pid, signal.SIGSTOP)
            try:
                b.log.wait_for(r"cluster member a .* missed its heartbeats", after=logged)
                assert publisher.acknowledged_within(WINDOW, CONFIRM_WITHIN)  # parked
                thawed = len(a.log.lines)
            finally:
                os.kill(a.process.pid, signal.SIGCONT)
            a.log.wait_for(r"fenced off the cluster", after=thawed)
            assert subscriber.connection(0).disconnected.wait(WAIT)  # kicked: S away

        # P goes on while a fences itself off, rejoins and restores S's session.
        routed_through_a_rejoining(nodes, sensor, qos, frozen, before=PER_STEP, after=AFTER)
