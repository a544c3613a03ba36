"""A 3.1.1 persistent session adopted from a dead node expires there: the survivor runs its
``persistent_session_expiry`` as it would an MQTT 5 session's Session Expiry Interval (from the
adoption, its node having died while its client was connected), and its client's next CONNECT
gets session present 0 with nothing queued (MQTT 3.1.1 §3.1.2.4). Real paho 3.1.1 clients, nodes
as separate processes on the machine's NATS and PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.nodes import cluster

pytestmark = pytest.mark.slow

EXPIRY = 3  # seconds: room to queue a message for the adopted session before it expires
REQUEST = "v1/devices/me/rpc/request/+"


def test_a_session_adopted_from_a_dead_node_expires_on_the_survivor(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        nodes.env["NANOIOT_PERSISTENT_SESSION_EXPIRY"] = str(EXPIRY)
        meter = nodes.device("meter")
        nodes.application("backend")
        nodes.application("publisher")
        nodes.start_all("a", "b")
        device = nodes.connect("a", meter, client_id="meter", clean_session=False)
        device.paho.reconnect_delay_set(600, 600)  # it comes back on B, when told
        assert device.subscribe(REQUEST) == [1]
        publisher = nodes.connect("a", app="publisher", client_id="publisher")
        publisher.paho.reconnect_delay_set(600, 600)
        # PUBACKed once A committed it for the session, and the session before it.
        publisher.publish("devices/meter/rpc/request/0", b"first", qos=1)
        assert device.next_message().payload == b"first"

        nodes.kill("a")
        b = nodes.nodes["b"].log
        adopted = b.wait_for(r"adopted 1 persistent sessions of member a")
        backend = nodes.connect("b", app="backend", client_id="backend")
        backend.publish("devices/meter/rpc/request/1", b"queued", qos=1)  # PUBACK: kept for it
        after = b.lines.index(adopted.string)
        b.wait_for(r"session \S+/meter expired", after=after)

        again = nodes.connect("b", meter, client_id="meter", clean_session=False)
        assert again.session_present.get_nowait() is False
        assert again.subscribe(REQUEST) == [1]
        backend.publish("devices/meter/rpc/request/2", b"now", qos=1)
        message = again.next_message()  # the first it gets: nothing was queued
        assert (message.topic, message.payload) == ("v1/devices/me/rpc/request/2", b"now")
