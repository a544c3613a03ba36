"""The routes and claims buckets stay bounded in a running cluster (``broker.cluster.compaction``):
two ``nanoiot serve`` nodes on a private nats-server 2.10 purging delete markers each second
while an application on one node subscribes to and unsubscribes from 2,000 distinct filters
and a device connects with a new client id again and again; the other node routes to every
live filter throughout. Real paho clients over mutual TLS."""

import asyncio
from pathlib import Path

import nats
import pytest

from tests.cluster.nodes import cluster, counter, logged, metrics, until_routed, wait_for
from tests.natsserver import NATS_URL, modern_nats

pytestmark = pytest.mark.slow

CHURNED = 2000  # filters subscribed to and unsubscribed from for good
CONNECTS = 50  # connects of a device, each with a client id of its own and a clean session


def _stored(url: str, stream: str) -> int:
    async def read() -> int:
        client = await nats.connect(url)
        try:
            return (await client.jetstream().stream_info(stream)).state.messages
        finally:
            await client.close()

    return asyncio.run(read())


def _version(url: str) -> tuple[int, int, int]:
    async def read() -> tuple[int, int, int]:
        client = await nats.connect(url)
        try:
            said = client.connected_server_version
            return said.major, said.minor, said.patch
        finally:
            await client.close()

    return asyncio.run(read())


def test_churned_filters_and_ended_clean_sessions_leave_the_buckets_bounded(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes, modern_nats(tmp_path / "nats") as url:
        compacting = {
            "NANOIOT_NATS_URL": url,
            "NANOIOT_CLUSTER_COMPACTION_INTERVAL": "1",
            "NANOIOT_CLUSTER_DELETE_MARKERS_KEPT": "1",
        }
        nodes.env |= compacting
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a")
        nodes.start("b")
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        app = nodes.connect("a", app="backend", client_id="backend")
        assert app.subscribe("devices/+/telemetry", qos=0) == [0]
        device = nodes.connect("b", sensor, client_id="sensor")
        until_routed(device, "v1/devices/me/telemetry", app)

        for number in range(CHURNED):
            assert app.subscribe(f"devices/churn{number}/telemetry", qos=0) == [0]
            app.paho.unsubscribe(f"devices/churn{number}/telemetry")
        assert app.subscribe("devices/+/attributes", qos=0) == [0]  # the UNSUBSCRIBEs done
        for number in range(CONNECTS):
            nodes.connect("b", sensor, client_id=f"sensor-{number}").close()
        logged(nodes, "delete markers purged", "a", "b")

        # Two live routes of a (b's device subscribes to nothing), and the claims of the
        # two connections still open: every marker purged once a second old.
        routes, claims = f"KV_{name}_routes", f"KV_{name}_clients"
        assert wait_for(lambda: _stored(url, routes) == 2 and _stored(url, claims) == 2, 30.0), (
            _stored(url, routes), _stored(url, claims),
        )  # fmt: skip

        purged = sum(
            counter(metrics(nodes, n), "nanoiot_cluster_delete_markers_purged_total")
            for n in ("a", "b")
        )
        assert purged > CONNECTS  # the claims' markers, and the routes' (writes coalesce)

        # b missed no live route of a's while the markers were purged under its watch.
        until_routed(device, "v1/devices/me/telemetry", app)
        device.publish("v1/devices/me/attributes", b"x", qos=1)
        assert app.next_message().topic == "devices/sensor/attributes"


def test_a_node_on_an_older_nats_server_says_once_what_grows(tmp_path: Path) -> None:
    """The machine's nats-server 2.9.10: nothing is purged, and the log says why."""
    with cluster(tmp_path) as nodes:
        version = _version(NATS_URL)
        if version >= (2, 9, 12):
            pytest.skip(f"the machine's nats-server is {version}")
        nodes.start("a")
        logged(nodes, "is older than 2.9.12", "a")
        sensor = nodes.device("sensor")
        nodes.connect("a", sensor, client_id="sensor").close()
        lines = [line for line in nodes.nodes["a"].log.lines if "older than 2.9.12" in line]
        assert len(lines) == 1, lines
        assert "NATS server 2.9." in lines[0]
        assert "routes bucket grows by about 250 bytes per filter" in lines[0]
