"""One live connection per session across a cluster (MQTT 3.1.1 §3.1.4): a device that
connects on node B closes its connection on node A before B's CONNACK, and two connects
racing on two nodes end with exactly one live connection. Real paho clients; each client's
automatic reconnect is put off, so that a closed one does not take the session back."""

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.nodes import cluster
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
        closed_at: list[float] = []
        on_a.paho.on_disconnect = lambda *_args: closed_at.append(_now())
        on_b = mqtt_client(nodes.nodes["b"].port, nodes.server_cert, sensor, client_id="sensor")
        # B's CONNACK time as its client got it: the queue is filled in paho's thread.
        assert on_b.wait_connack() == 0
        connack_at = [_now()]
        nodes.nodes["a"].log.wait_for(r"connected on another node: closing this connection")
        nodes.nodes["b"].log.wait_for(r"connected device 'sensor'")
        # A closed the socket before B sent its CONNACK: A's client saw its end no later
        # than B's client saw the CONNACK, give or take the two paho threads' scheduling.
        assert _wait_for(lambda: bool(closed_at)), "the connection on A is still open"
        assert closed_at[0] <= connack_at[0] + 0.05
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
            assert _wait_for(lambda: _any_closed(clients)), attempt  # noqa: B023 - called here
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


def _any_closed(clients: list[Client]) -> bool:
    return any(client.disconnected.is_set() for client in clients)


def _now() -> float:
    return time.monotonic()


def _wait_for(condition: Callable[[], bool], within: float = WAIT) -> bool:
    """Poll ``condition`` (paho's state has no event for it), bounded by ``within``."""
    done = threading.Event()
    deadline = _now() + within
    while _now() < deadline:
        if condition():
            return True
        done.wait(0.02)
    return False
