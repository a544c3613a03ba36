"""A node killed (SIGKILL) while a message from a publisher on another node is on its way to
it: the message's frame reached NATS before the kill, so NATS never answers that nobody
listens for it. The publisher's node probes the killed node once the frame waited
``PROBE_AFTER`` seconds unanswered, parks the frame on NATS's answer, and acknowledges the
publisher well within ``CONFIRM_WITHIN`` (``broker.cluster.forward``); the persistent
session's adopter gets the message (MQTT 3.1.1 §4.3.2), and a QoS 2 message the killed node
had routed and committed before it died once (§4.3.3). Real nodes, paho clients, NATS
JetStream and PostgreSQL.
"""

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from queue import Queue

import nats
import pytest

from broker.cluster.confirmations import CONFIRM_WITHIN
from tests.cluster.nodes import TELEMETRY, Cluster, backend_away_on_a, cluster, logged
from tests.cluster.proxy import nats_proxy
from tests.e2e.harness import Client
from tests.natsserver import NATS_URL, nats_has_all
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow


def _set_up(nodes: Cluster, qos: int, **a_settings: str) -> Client:
    """Nodes a and b; the application "backend"'s persistent session on a, subscribed at
    ``qos``, its client away; the device "sensor" on b, connected (returned)."""
    # Heartbeats every 2 s (the default): a is taken as gone 6 s after its last one, and the
    # survivor's hand-over barrier then finds nobody listening for it (NATS says so): without
    # a probe, later than CONFIRM_WITHIN.
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "2"
    return backend_away_on_a(nodes, qos, a_settings=a_settings)


def _outcomes(client: Client) -> "Queue[str]":
    """What becomes of ``client``'s publishes: "acknowledged" (PUBACK, or PUBCOMP) or
    "disconnected" (closed unacknowledged: it would send again), in the order they come."""
    outcomes: Queue[str] = Queue()

    def on_disconnect(*_args: object) -> None:
        outcomes.put("disconnected")
        client.disconnected.set()  # as the harness's own

    client.paho.on_disconnect = on_disconnect
    client.paho.on_publish = lambda *_args: outcomes.put("acknowledged")
    return outcomes


async def _sent_to_a(
    nodes: Cluster, device: Client, payload: bytes, qos: int, silence_a: Callable[[], None]
) -> str:
    """Once ``silence_a`` made node a answer nothing, the device publishes ``payload`` on node
    b; once the frame carrying it is seen on a's subject (by a listener of the test's own,
    gone again before this returns), the subject a is to answer it on."""
    subject = f"{nodes.env['NANOIOT_CLUSTER_NAME']}.route.a"
    client = await nats.connect(NATS_URL)
    try:
        frames = await client.subscribe(subject)
        await nats_has_all(client)  # NATS sends this listener a copy of whatever goes to a
        silence_a()
        device.paho.publish(TELEMETRY, payload, qos=qos)
        frame = await frames.next_msg(timeout=WAIT)
        assert payload in frame.data  # a's copy is on its way to it too
        assert frame.reply
        await frames.unsubscribe()
        await nats_has_all(client)  # nobody but a listens again
    finally:
        await client.close()
    return frame.reply


def _killed_while_in_flight(nodes: Cluster, outcomes: "Queue[str]") -> None:
    """Node a killed; its frame's publisher acknowledged well within CONFIRM_WITHIN."""
    killed = time.monotonic()
    nodes.kill("a")
    outcome = outcomes.get(timeout=WAIT)
    took = time.monotonic() - killed
    assert outcome == "acknowledged", f"{outcome} {took:.2f} s after a was killed"
    assert took < CONFIRM_WITHIN / 3, f"acknowledged {took:.2f} s after a was killed"


def _adopted_backend(nodes: Cluster) -> Client:
    logged(nodes, "adopted 1 persistent sessions of member a", "b")
    backend = nodes.connect("b", app="backend", client_id="backend", clean_session=False)
    assert backend.session_present.get_nowait() is True
    return backend


def test_a_message_in_flight_to_a_killed_node_is_acknowledged_within_a_second(
    tmp_path: Path,
) -> None:
    """Node a stopped (SIGSTOP) before the frame reached it, then killed: it never read it."""
    with cluster(tmp_path) as nodes:
        device = _set_up(nodes, 1)
        outcomes = _outcomes(device)
        pid = nodes.nodes["a"].process.pid
        asyncio.run(
            _sent_to_a(nodes, device, b"in flight", 1, lambda: os.kill(pid, signal.SIGSTOP))
        )
        _killed_while_in_flight(nodes, outcomes)
        backend = _adopted_backend(nodes)
        assert backend.next_message().payload == b"in flight"  # nothing acknowledged lost


def test_a_qos2_message_a_killed_node_committed_but_never_confirmed_arrives_once(
    tmp_path: Path,
) -> None:
    """What node a sends is dropped (its connection to NATS through a proxy) before the frame
    reaches it: a routes the message, its store commits it to the session's queue, and its
    answer is lost; then a is killed. The frame is parked all the same; the adopter, which
    read the session's queue from the store, gives it no second copy."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        device = _set_up(nodes, 2, NANOIOT_NATS_URL=proxy.url)
        outcomes = _outcomes(device)
        reply = asyncio.run(_sent_to_a(nodes, device, b"once", 2, proxy.mute))
        proxy.until_dropped(f"PUB {reply} ".encode())  # committed, then answered: dropped
        _killed_while_in_flight(nodes, outcomes)
        backend = _adopted_backend(nodes)
        assert backend.next_message().payload == b"once"
        assert backend.no_message(within=1.0)  # once (a second copy would come at once)
