"""A node away from the cluster for a moment (frozen, or cut off from NATS) that fences itself
off and rejoins: it restores its sessions, or a survivor that found nobody listening for it
adopted them first, and what was published meanwhile still reaches them
(``broker.cluster.fence``, ``broker.cluster.routes``, ``broker.cluster.silence``).

The persistent subscriber S holds its session on node a; the publisher P on node b publishes
a numbered stream to it. ``away`` takes a away and returns once a fenced itself off (S's
connection closed). a then rejoins and restores S's session; S's filter stays in the routes
bucket throughout (a writes it again only if it is not there), never deleted, so nothing P got
acknowledged meanwhile matched no route. S takes
its session back on a and has every acknowledged message (MQTT 3.1.1 §4.3.2), QoS 2 once.

Node b parks what P publishes for a while a is away, and until a is back, not before
(``broker.cluster.absences``): a fenced off refuses what b sends it, and b would close P
unacknowledged. So P is never closed, and b takes a as back only once a logged it is.
"""

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tests.cluster.moving import (
    FILTER,
    Publisher,
    Subscriber,
    acknowledged_and_received,
    check_moved,
    subscribed_on_a,
)
from tests.cluster.nodes import Cluster, wait_for
from tests.cluster.route_changes import RouteChanges
from tests.serve_process import WAIT

Away = Callable[[Subscriber, Publisher], None]


def routed_through_a_rejoining(
    nodes: Cluster, sensor: Path, qos: int, away: Away, *, before: int, after: int
) -> None:
    """S (application "backend") and P (device ``sensor``) as above; ``before`` new numbers
    reach S before a goes away, ``after`` are acknowledged once it is back."""
    a, b = nodes.nodes["a"], nodes.nodes["b"]
    with Subscriber(nodes, "backend", 4) as subscriber:
        device = subscribed_on_a(subscriber, FILTER, qos, sensor, "b", "sensor")
        with Publisher(device, qos) as publisher:
            assert subscriber.receive_new(before), subscriber.counts()
            logged, logged_on_b = len(a.log.lines), len(b.log.lines)
            with RouteChanges(nodes.env["NANOIOT_CLUSTER_NAME"], "a") as routes:
                away(subscriber, publisher)
                back = a.log.wait_for(r"back in the cluster as run 1", after=logged)
                if _restored_on_a(nodes, logged, logged_on_b):
                    # In the bucket once S's session is restored, and never deleted before.
                    a.log.wait_for(r"routes of the restored sessions in the bucket", after=logged)
                    assert routes.kept(FILTER), (routes.held, routes.changes)
            unparked = b.log.wait_for(r"cluster member a is back", after=logged_on_b)
            assert _logged_at(unparked.string) >= _logged_at(back.string), "unparked too early"
            assert publisher.acknowledged_within(after, WAIT)
            subscriber.move("a", "disconnect")  # its session, restored on a
            acknowledged = acknowledged_and_received(publisher, subscriber, after)
            assert not device.disconnected.is_set(), "P was closed"
            unrouted = [line for line in b.log.lines[logged_on_b:] if "could not be routed" in line]
            assert not unrouted, "b sent a frames that a refused"
    check_moved(subscriber, acknowledged, qos)


def _restored_on_a(nodes: Cluster, logged: int, logged_on_b: int) -> bool:
    """Whether a restored S's session as it rejoined (True) or b adopted it first (False). A
    fenced-off node stops listening for frames, so b, asking again while a is gone
    (``broker.cluster.silence``), may find nobody listening and adopt S's session before a is
    back; S then takes it from b as it moves to a, and still has every acknowledged message."""
    a, b = nodes.nodes["a"], nodes.nodes["b"]
    restored, adopted = (
        r"restored 1 persistent sessions",
        r"adopted 1 persistent sessions of member a",
    )
    assert wait_for(
        lambda: (
            any(re.search(restored, line) for line in a.log.lines[logged:])
            or any(re.search(adopted, line) for line in b.log.lines[logged_on_b:])
        )
    ), "a neither restored S's session nor did b adopt it"
    return any(re.search(restored, line) for line in a.log.lines[logged:])


def _logged_at(line: str) -> datetime:
    """When a node logged ``line`` (its first 23 characters, in ``nanoiot serve``'s format):
    the nodes share the machine's clock."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
