"""A node dies holding a persistent session whose client is away, while a publisher on another
node keeps publishing to it: nothing the publisher had acknowledged is lost (MQTT 3.1.1 §4.3.2,
§4.3.3), QoS 2 arrives once, and each publisher's messages arrive in order (§4.6), whether the
session is adopted by a survivor before its client comes back, taken by the client on another
node first, or restored by the node itself started again. Real nodes, paho clients, NATS
JetStream and PostgreSQL.
"""

from pathlib import Path

import pytest

from tests.cluster.nodes import cluster, logged
from tests.cluster.parking import (
    AFTER,
    adopter_of_a,
    check_numbers,
    collect,
    kill_a,
    received,
    set_up,
)
from tests.cluster.proxy import nats_proxy
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("qos", [1, 2])
def test_messages_for_a_dead_nodes_session_reach_its_adopter(tmp_path: Path, qos: int) -> None:
    with cluster(tmp_path) as nodes:
        publisher = set_up(nodes, qos)
        kill_a(nodes, publisher)
        adopter_of_a(nodes)
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        check_numbers(received(nodes, "c", acked), acked, qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_messages_for_a_dead_nodes_session_reach_its_client_back_before_adoption(
    tmp_path: Path, qos: int
) -> None:
    with cluster(tmp_path) as nodes:
        publisher = set_up(nodes, qos)
        kill_a(nodes, publisher)
        backend = nodes.connect("c", app="backend", client_id="backend", clean_session=False)
        assert backend.session_present.get_nowait() is True
        logged(nodes, "member a is gone", "b", "c")  # its departure: wills, adoption
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        check_numbers(collect(backend, acked), acked, qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_messages_for_a_dead_nodes_session_reach_it_when_the_node_restarts(
    tmp_path: Path, qos: int
) -> None:
    with cluster(tmp_path) as nodes:
        publisher = set_up(nodes, qos, heartbeat=5.0)  # restarted before it is taken as gone
        kill_a(nodes, publisher)
        nodes.start("a")
        nodes.nodes["a"].log.wait_for(r"restored 1 persistent sessions")
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        check_numbers(received(nodes, "a", acked), acked, qos)


def test_a_full_parked_stream_refuses_publishers_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    """cluster_max_parked_bytes at its least (64 KiB) and 8 KiB messages: the stream fills
    before the session is adopted; the publisher is disconnected unacknowledged (it sends
    again), and every message it had acknowledged reaches the subscriber."""
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_MAX_PARKED_BYTES"] = str(64 * 1024)
        publisher = set_up(nodes, 1, heartbeat=1.0, size=8 * 1024)
        kill_a(nodes, publisher)
        refused = nodes.nodes["b"].log.wait_for(r"parking a frame for member a: .*")
        full = "is full (cluster_max_parked_bytes, 65536 bytes): its publishers are disconnected"
        assert full in refused.group(0)
        assert publisher.client.disconnected.wait(WAIT)
        adopter_of_a(nodes)
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        check_numbers(received(nodes, "c", acked), acked, 1)


def test_messages_parked_while_a_node_was_away_from_nats_reach_its_sessions(
    tmp_path: Path,
) -> None:
    """Node a's connection to NATS is cut for a moment, shorter than it takes to fence itself
    off: what b parked for a's session meanwhile is given to it once a is back on NATS."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        publisher = set_up(nodes, 1, heartbeat=2.0, NANOIOT_NATS_URL=proxy.url)
        kill_a(nodes, publisher, cut=proxy.cut)
        nodes.nodes["b"].log.wait_for(r"cluster member a is gone \(.*\): frames for it are parked")
        publisher.until_acked(AFTER)  # parked
        proxy.restore()
        nodes.nodes["b"].log.wait_for(r"cluster member a is back")
        publisher.until_acked(AFTER)
        acked = publisher.finish()
        check_numbers(received(nodes, "a", acked), acked, 1)
