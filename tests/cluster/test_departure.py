"""A dead member's wills are published by the survivor that made its departure's entry, even
when the answer to that create never reached it: NATS made the entry, the request timed out.
Node A, the survivor, reaches NATS through a proxy that holds back what NATS sends it from
B's death until that create timed out. And when the survivor that made the entry is killed
before settling it, another takes it over. Real paho clients, nodes as separate processes on
the machine's NATS and PostgreSQL."""

import asyncio
import secrets
from pathlib import Path

import nats
import pytest

from broker.cluster.link import REQUEST_TIMEOUT
from broker.cluster.will_entries import incarnation
from nanoiot.members import decode_member
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


def test_the_departure_of_a_survivor_killed_before_settling_it_is_taken_over(
    tmp_path: Path,
) -> None:
    """Node C made the departure of node B and was killed before settling it (the entry it
    leaves: its process's value, not done): A, which lost the creation race to C, publishes
    the will of B's client and adopts its persistent session once it sees C go."""
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("watcher")
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(B_HEARTBEAT)
        nodes.start_all("a", "b", "c")
        watcher = nodes.connect("a", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/status", qos=1) == [1]
        device = nodes.connect("b", sensor, client_id="sensor", will=(STATUS, b"gone"),
                               clean_session=False)  # fmt: skip
        device.paho.reconnect_delay_set(600, 600)
        until_routed(device, STATUS, watcher)
        asyncio.run(_departure_made_by(nodes, "c", "b"))
        nodes.kill("b")
        nodes.nodes["a"].log.wait_for(r"cluster member b \(.*\) missed its heartbeats")
        assert watcher.no_message(within=1.0)  # left to C while C is live

        nodes.kill("c")
        a = nodes.nodes["a"].log
        a.wait_for(r"the departure of b\.[\d-]+ was left unsettled by c\.[\d-]+")
        a.wait_for(r"published the will of session \S+/sensor")
        will = watcher.next_message()
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
        a.wait_for(r"adopted 1 persistent sessions of member b")
        assert watcher.no_message(within=2.0)  # once


async def _departure_made_by(nodes: Cluster, maker: str, gone: str) -> None:
    """The entry of the departure of node ``gone`` (its run now) as node ``maker`` creates
    it: the value of ``maker``'s process (``departure.creator``)."""
    client = await nats.connect(NATS_URL)
    try:
        js, cluster_name = client.jetstream(), nodes.env["NANOIOT_CLUSTER_NAME"]
        members = await js.key_value(f"{cluster_name}_members")
        runs = {}
        for name in (maker, gone):
            member = decode_member((await members.get(name)).value or b"")
            runs[name] = incarnation(member.name, member.pid, member.started, member.run)
        departures = await js.key_value(f"{cluster_name}_departures")
        await departures.create(runs[gone], f"{runs[maker]} {secrets.token_hex(8)}".encode())
    finally:
        await client.close()
