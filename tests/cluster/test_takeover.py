"""One live connection per session across a cluster (MQTT 3.1.1 §3.1.4): a device that
connects on node B closes its connection on node A before B's CONNACK, and two connects
racing on two nodes end with exactly one live connection. Real paho clients; each client's
automatic reconnect is put off, so that a closed one does not take the session back."""

import select
from pathlib import Path

import pytest

from tests.cluster.nodes import any_closed, cluster, wait_for
from tests.e2e.harness import Client, mqtt_client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

NO_RECONNECT = 600  # seconds paho waits before reconnecting: longer than the test


def test_connect_on_b_closes_the_connection_on_a_before_the_connack(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.start("a")
        nodes.start("b")
        on_a = nodes.connect("a", sensor, client_id="sensor")
        on_a.paho.reconnect_delay_set(NO_RECONNECT, NO_RECONNECT)
        # Looked at in paho's thread as B's CONNACK arrives: whether A's connection had its
        # end from A's node by then (read by its client or still waiting in its socket).
        ended_before_connack: list[bool] = []
        on_b = mqtt_client(
            nodes.nodes["b"].port, nodes.server_cert, sensor, client_id="sensor",
            on_connack=lambda: ended_before_connack.append(_ended(on_a)),
        )  # fmt: skip
        assert on_b.wait_connack() == 0
        nodes.nodes["a"].log.wait_for(r"connected on another node: closing this connection")
        nodes.nodes["b"].log.wait_for(r"connected device 'sensor'")
        assert ended_before_connack == [True], "A's connection was open at B's CONNACK"
        assert on_a.disconnected.wait(WAIT)
        assert on_b.paho.is_connected()
        on_b.close()


def test_two_nodes_racing_for_one_session_end_with_one_live_connection(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.start("a")
        nodes.start("b")
        for attempt in range(3):
            clients: list[Client] = []
            for node in ("a", "b"):  # both connects in flight at once (paho's own threads)
                client = mqtt_client(
                    nodes.nodes[node].port, nodes.server_cert, sensor, client_id="sensor"
                )
                client.paho.reconnect_delay_set(NO_RECONNECT, NO_RECONNECT)
                clients.append(client)
            assert wait_for(lambda: any_closed(clients)), attempt  # noqa: B023 - called here
            live = [c for c in clients if not c.disconnected.is_set()]
            assert len(live) == 1, attempt
            # The winner's CONNACK may still be on its way (its node waits for the loser's
            # node to give the session up, then reads it from the store).
            assert live[0].wait_connack() == 0, attempt
            # It stays: the other is not coming back, and nothing closes the winner.
            assert not live[0].disconnected.wait(0.5)
            assert live[0].paho.is_connected()
            for client in clients:
                client.close()


def _ended(client: Client) -> bool:
    """Whether the server ended ``client``'s connection: its client saw it, or the end (a
    FIN or a reset, there at once on 127.0.0.1) waits in its socket to be read."""
    sock = client.paho.socket()
    if client.disconnected.is_set() or sock is None:
        return True
    poller = select.poll()
    try:
        poller.register(sock, select.POLLRDHUP)
    except (OSError, ValueError):  # paho closed it meanwhile: it read the end
        return True
    return bool(poller.poll(0))  # POLLRDHUP, or POLLHUP / POLLERR, or POLLNVAL: closed
