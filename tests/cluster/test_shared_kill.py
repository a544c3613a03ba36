"""A member of a shared subscription group (MQTT 5.0 §4.8.2) whose node is killed: its
persistent session is taken on another node, and every message its publisher got
acknowledged reaches the group once (QoS 2, §4.3.3), each of the group's connections getting
its messages in the order they were published (§4.6).

The group ``g`` has two members: S1, on node a, and S2, on node c; the publisher is on node
b, which has none (a node with members of a group serves it itself), so b chooses a or c for
each message's copy in turn. Node a is SIGKILLed; while it is dead the publisher goes on (the
copies b chooses a for are parked for it, ``broker.cluster.parked``); then S1's client
connects to node c, taking its session before a survivor adopts it, or after one did. Once
the session is on its new member, b passes over node a, still in its route table until the
adopter deletes a's entries, while it lists the new member (``broker.cluster.moves``): a
copy given to a would be parked behind what already reached the session. In the third case
that lasts past ``cluster_handover_window``: a's entries stay until a survivor adopted its
sessions (three long heartbeats), and a copy parked for a after c read a's frames would reach
nobody. Real nodes, paho MQTT 5 clients, NATS JetStream and PostgreSQL.
"""

import collections
import itertools
import threading
from pathlib import Path

import pytest

from tests.cluster.moving import Subscriber
from tests.cluster.nodes import TELEMETRY, cluster, logged, until_routed
from tests.cluster.parking import Publisher, kill_a
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

SHARED = "$share/g/devices/+/telemetry"
QOS = 2  # exactly once
BEFORE_KILL = 30  # messages acknowledged before node a is killed
MEANWHILE = 30  # ... while it is dead, before S1's session is taken
AFTER = 400  # ... once it is taken: seconds of them, while a is still in b's route table
# Node a is taken as gone three heartbeats after its last, and its routes go only once the
# adopter is done: while S1's client takes the session to c, b still lists a for the group.
HEARTBEAT = 2.0
LONG_HEARTBEAT = 5.0  # a is taken as gone 15 s after its last: all AFTER come before that


@pytest.mark.parametrize(
    "how", ["taken-by-its-client", "adopted-then-taken", "taken-long-before-adoption"]
)
def test_a_killed_group_members_messages_reach_the_group_once_and_in_order(
    tmp_path: Path, how: str
) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(HEARTBEAT)
        if how == "taken-long-before-adoption":
            nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(LONG_HEARTBEAT)
            nodes.env["NANOIOT_CLUSTER_HANDOVER_WINDOW"] = "0.5"  # the least there is
        nodes.env["NANOIOT_MAX_QUEUED_MESSAGES"] = "100000"
        sensor = nodes.device("sensor")
        for name in ("s1", "s2"):
            nodes.application(name)
        nodes.start_all("a", "b", "c")
        s1, s2 = Subscriber(nodes, "s1", 5), Subscriber(nodes, "s2", 5)
        try:
            for subscriber, node in ((s1, "a"), (s2, "c")):
                assert subscriber.connect(node).subscribe(SHARED, QOS) == [QOS]
            device = nodes.connect("b", sensor, client_id="sensor")
            until_routed(device, TELEMETRY, s1._clients[0], s2._clients[0])
            publisher = Publisher(device, QOS)
            publisher.start()
            publisher.until_acked(BEFORE_KILL)
            kill_a(nodes, publisher)  # S1's last messages may be on their way to it then
            publisher.until_acked(MEANWHILE)
            if how == "adopted-then-taken":
                logged(nodes, "adopted 1 persistent sessions of member a", "b", "c")
            s1.move("c", "disconnect")  # its connection to a is gone
            publisher.until_acked(AFTER)
            acked = publisher.finish()
            _receive_all((s1, s2), set(acked))
        finally:
            s1.close()
            s2.close()
        _check((s1, s2), set(acked))
        assert sum(n in acked for n, _ in itertools.chain(*s1.connections[1:])) > 0


def _receive_all(subscribers: tuple[Subscriber, ...], acked: set[int]) -> None:
    """What the subscribers' current connections deliver, until every number in ``acked``
    came to one of them or none came for ``WAIT`` s; then until a quiet second (any copy
    delivered twice would come by then)."""
    while not acked <= set().union(*(s.seen for s in subscribers)):
        if not _taken_within(subscribers, WAIT):
            return  # the check says which are missing
    while _taken_within(subscribers, 1.0):
        pass


def _taken_within(subscribers: tuple[Subscriber, ...], within: float) -> bool:
    """Whether messages came to the subscribers within ``within`` s (all those taken)."""
    quiet = threading.Event()  # never set: waited on for the time between two looks
    for _ in range(max(1, round(within / 0.05))):
        if sum(subscriber.take_delivered() for subscriber in subscribers):
            return True
        quiet.wait(0.05)  # polled: two clients' queues have no one event to wait on
    return False


def _check(subscribers: tuple[Subscriber, ...], acked: set[int]) -> None:
    named = {
        f"{subscriber.client_id}#{index}": conn
        for subscriber in subscribers
        for index, conn in enumerate(subscriber.connections)
    }
    connections = list(named.values())
    received = collections.Counter(n for conn in connections for n, _ in conn)
    problems = []
    missing = sorted(acked - received.keys())
    if missing:
        problems.append(f"{len(missing)} of {len(acked)} acknowledged messages lost: {missing}")
    twice = sorted(n for n, count in received.items() if count > 1)
    if twice:
        where = {n: [name for name, conn in named.items() if n in dict(conn)] for n in twice}
        problems.append(f"{len(twice)} QoS 2 messages reached the group twice: {where}")
    for index, conn in named.items():
        numbers = [n for n, _ in conn]
        behind = [(a, b) for a, b in itertools.pairwise(numbers) if b <= a]
        if behind:
            problems.append(f"connection {index}: out of order: {behind[:10]}")
    counts = {name: len(conn) for name, conn in named.items()}
    assert not problems, "\n".join([*problems, f"received by each connection: {counts}"])
