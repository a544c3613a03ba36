"""A node away from the cluster for a moment (frozen, or cut off from NATS) that fences itself
off and rejoins before anyone takes its sessions: it restores them, and what was published
meanwhile still reaches them (``broker.cluster.fence``, ``broker.cluster.routes``).

The persistent subscriber S holds its session on node a; the publisher P on node b publishes
a numbered stream to it. ``away`` takes a away and returns once a fenced itself off (S's
connection closed). a then rejoins and restores S's session; S's filter is written again and
never deleted in between, so nothing P got acknowledged meanwhile matched no route. S takes
its session back on a and has every acknowledged message (MQTT 3.1.1 §4.3.2), QoS 2 once.
"""

from collections.abc import Callable
from pathlib import Path

from tests.cluster.moving import (
    FILTER,
    Publisher,
    Subscriber,
    acknowledged_and_received,
    subscribed_on_a,
)
from tests.cluster.nodes import Cluster
from tests.cluster.route_changes import RouteChanges
from tests.cluster.test_handover import _check
from tests.serve_process import WAIT

Away = Callable[[Subscriber, Publisher], None]


def routed_through_a_rejoining(
    nodes: Cluster, sensor: Path, qos: int, away: Away, *, before: int, after: int
) -> None:
    """S (application "backend") and P (device ``sensor``) as above; ``before`` new numbers
    reach S before a goes away, ``after`` are acknowledged once it is back."""
    a = nodes.nodes["a"]
    with Subscriber(nodes, "backend", 4) as subscriber:
        device = subscribed_on_a(subscriber, FILTER, qos, sensor, "b", "sensor")
        with Publisher(device, qos) as publisher:
            assert subscriber.receive_new(before), subscriber.counts()
            logged = len(a.log.lines)
            with RouteChanges(nodes.env["NANOIOT_CLUSTER_NAME"], "a") as routes:
                away(subscriber, publisher)
                a.log.wait_for(r"back in the cluster as run 1", after=logged)
                a.log.wait_for(r"restored 1 persistent sessions", after=logged)
                # Written again as S's session is restored, and never deleted before.
                assert routes.written_again(FILTER) == [(FILTER, True)]
            assert publisher.acknowledged_within(after, WAIT)  # P may have to reconnect
            subscriber.move("a", "disconnect")  # its session, restored on a
            acknowledged = acknowledged_and_received(publisher, subscriber, after)
    _check(subscriber, acknowledged, qos)
