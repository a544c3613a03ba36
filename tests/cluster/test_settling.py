"""A node back after a long absence with a large backlog parked for it, while the publisher
that made the backlog keeps publishing at full rate (``broker.cluster.replay``).

The persistent subscriber S holds its session on node a; the publisher P on node b publishes a
numbered stream to it, never more than ``WINDOW`` messages unacknowledged. a is frozen
(SIGSTOP): b takes it as gone and parks what P publishes for it, acknowledging P as JetStream
takes each frame, until ``BACKLOG`` more messages are acknowledged. a then runs again, fences
itself off, restores S's session and gives it the backlog, then takes frames again: what b
sends it directly from then on must be confirmed within ``CONFIRM_WITHIN`` seconds, not wait
behind the whole backlog, or b closes P unacknowledged, a healthy publisher cut off for a slow
but live peer. P is never closed; S has every acknowledged message (MQTT 3.1.1 §4.3.2), in P's
order (§4.6), QoS 2 once (§4.3.3). Real paho clients over TLS, nodes as separate processes on
the machine's NATS and PostgreSQL.
"""

import os
import signal
from pathlib import Path

import pytest

from tests.cluster.moving import ROOMY_QUEUES, Publisher, Subscriber
from tests.cluster.nodes import cluster
from tests.cluster.rejoining import routed_through_a_rejoining
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

HEARTBEAT = 1.0  # seconds between heartbeats: b takes a frozen as gone after MISSED_BEATS
# Messages P gets acknowledged (parked for a) while a is frozen, by QoS. At QoS 1, 30,000
# (parked in about 12 s on a 2-core machine) kept what b sent a directly after it came back
# unconfirmed past ``CONFIRM_WITHIN``, and b closed P, in each run without busy notices
# (``broker.cluster.busy``); 12,000 did not. P parks QoS 2 ten times slower (its own
# session's store writes on b): a smaller backlog checks that each message comes once.
BACKLOG = {1: 30_000, 2: 8_000}
PER_STEP = 50  # new numbers S receives before a is frozen
AFTER = 500  # numbers P gets acknowledged once a is back


@pytest.mark.parametrize("qos", [1, 2])
def test_a_node_back_with_a_large_backlog_does_not_cut_off_the_publisher(
    tmp_path: Path, qos: int
) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(HEARTBEAT)
        nodes.start_all("a", "b", **ROOMY_QUEUES)
        a, b = nodes.nodes["a"], nodes.nodes["b"]

        def frozen(subscriber: Subscriber, publisher: Publisher) -> None:
            logged = len(b.log.lines)
            os.kill(a.process.pid, signal.SIGSTOP)
            try:
                b.log.wait_for(r"cluster member a .* missed its heartbeats", after=logged)
                # Parked at P's full rate: bounded by how fast JetStream takes them.
                parked = publisher.acknowledged_within(BACKLOG[qos], 10 * WAIT)
                assert parked, f"{BACKLOG[qos]} messages not parked for a within {10 * WAIT} s"
                thawed = len(a.log.lines)
            finally:
                os.kill(a.process.pid, signal.SIGCONT)
            a.log.wait_for(r"fenced off the cluster", after=thawed)
            assert subscriber.connection(0).disconnected.wait(WAIT)  # kicked: S away

        routed_through_a_rejoining(nodes, sensor, qos, frozen, before=PER_STEP, after=AFTER)
