"""A dead member's wills are published by the survivor that made its departure's entry, even
when the answer to that create never reached it: NATS made the entry, the request timed out.
Node A, the survivor, reaches NATS through a proxy that holds back what NATS sends it from
B's death until that create timed out. Real paho clients, nodes as separate processes on the
machine's NATS and PostgreSQL."""

import asyncio
from pathlib import Path

import nats
import pytest

from broker.cluster.link import REQUEST_TIMEOUT
from tests.cluster.nodes import Cluster, cluster, until_routed
from tests.cluster.proxy import nats_proxy
from tests.natsserver import NATS_URL
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

STATUS = "v1/devices/me/status"
# A's heartbeats are far apart and B dies just after one of them: the whole hold (three of
# B's heartbeats until A takes it as gone, the create's timeout, the lag: about 8 s) falls
# between two heartbeats of A, none of which times out, so A never fences itself off. A
# departure A could not tell it won is tried again after its next heartbeat.
A_HEARTBEAT = 15.0
B_HEARTBEAT = 1.0
LAG = REQUEST_TIMEOUT + 0.5  # what NATS sends A arrives after A's requests gave up


def test_a_survivor_that_made_the_departure_but_missed_the_answer_still_publishes_the_wills(
    tmp_path: Path,
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("watcher")
        nodes.start("a", NANOIOT_NATS_URL=proxy.url,
                    NANOIOT_CLUSTER_HEARTBEAT_INTERVAL=str(A_HEARTBEAT))  # fmt: skip
        nodes.start("b", NANOIOT_CLUSTER_HEARTBEAT_INTERVAL=str(B_HEARTBEAT))
        watcher = nodes.connect("a", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/status", qos=1) == [1]
        device = nodes.connect("b", sensor, client_id="sensor", will=(STATUS, b"gone"))
        device.paho.reconnect_delay_set(600, 600)
        until_routed(device, STATUS, watcher)

        asyncio.run(_killed_after_heartbeats(nodes, "a", "b"))
        proxy.delay(LAG)
        # A took B as gone; its create of B's departure timed out (the entry made at NATS).
        nodes.nodes["a"].log.wait_for(r"creating \S+departures/b\.[\d-]+: ")
        proxy.delay(0)

        nodes.nodes["a"].log.wait_for(r"published the will of session \S+/sensor")
        will = watcher.next_message()
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
        assert watcher.no_message(within=2.0)  # once
        assert not any("fenced off the cluster" in line for line in nodes.nodes["a"].log.lines)


async def _killed_after_heartbeats(nodes: Cluster, survivor: str, name: str) -> None:
    """Kill node ``name`` (SIGKILL) just after NATS has a heartbeat of ``survivor``, then
    one of ``name``'s."""
    client = await nats.connect(NATS_URL)
    try:
        bucket = await client.jetstream().key_value(f"{nodes.env['NANOIOT_CLUSTER_NAME']}_members")
        async with asyncio.timeout(2 * A_HEARTBEAT + WAIT):
            for member in (survivor, name):
                watcher = await bucket.watch(member, include_history=False)
                while await watcher.updates(timeout=None) is not None:  # type: ignore[no-untyped-call]
                    pass  # its entry as it is now
                await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
                await watcher.stop()  # type: ignore[no-untyped-call]
        nodes.kill(name)
    finally:
        await client.close()
