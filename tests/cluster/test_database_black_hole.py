"""PostgreSQL black-holed for a while under two nodes (a TCP proxy that passes nothing and
refuses nothing: connections hang, as with a hung host or a dropped route), while devices
connect, take their persistent sessions across nodes and QoS 1 messages are published to a
session whose client is away.

Every wait is bounded and every outcome clear: a connect gets CONNACK 3 (server
unavailable) within about ``auth_timeout``; a take-over that cannot read the session either;
a QoS 1 message for the away session is not acknowledged while it cannot be stored
(MQTT 3.1.1 §4.3.2) and its publisher is closed after ``ack_timeout``. Once the database
answers again the cluster goes on by itself: the devices connect and find their sessions,
with every message acknowledged. Real paho clients over TLS, nodes as separate processes,
the machine's NATS and PostgreSQL (behind the proxy)."""

import time
from pathlib import Path

import pytest

from tests.cluster.black_hole import black_hole
from tests.cluster.nodes import TELEMETRY, cluster, until_routed
from tests.e2e.harness import mqtt_client
from tests.storage.pg import PG_PORT

pytestmark = pytest.mark.slow

AUTH_TIMEOUT = 2.0
ACK_TIMEOUT = 4.0
SLACK = 2.0  # seconds past a timeout on a loaded machine


def test_a_black_holed_database_gives_clear_answers_and_the_cluster_recovers(
    tmp_path: Path,
) -> None:
    with black_hole() as hole, cluster(tmp_path) as nodes:
        database = nodes.env["NANOIOT_DATABASE_URL"].replace(f":{PG_PORT}/", f":{hole.port}/")
        sensor, meter, late = (nodes.device(name) for name in ("sensor", "meter", "late"))
        nodes.application("backend")
        for name in ("a", "b"):
            nodes.start(
                name, NANOIOT_DATABASE_URL=database, NANOIOT_AUTH_TIMEOUT=str(AUTH_TIMEOUT),
                NANOIOT_ACK_TIMEOUT=str(ACK_TIMEOUT),
            )  # fmt: skip
        backend = nodes.connect("a", app="backend", client_id="backend", clean_session=False)
        assert backend.subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("b", sensor, client_id="sensor")
        device.paho.reconnect_delay_set(600, 600)
        until_routed(device, TELEMETRY, backend)
        device.publish(TELEMETRY, b"before", qos=1)
        assert backend.next_message().payload == b"before"
        backend.close()  # its session stays on a, its client away
        on_a = nodes.connect("a", meter, client_id="meter", clean_session=False)
        assert on_a.subscribe("v1/devices/me/attributes", qos=1) == [1]

        hole.swallow()
        # A new connect: CONNACK 3 once its credential lookup timed out.
        began = time.monotonic()
        refused = mqtt_client(nodes.nodes["b"].port, nodes.server_cert, late, client_id="late")
        try:
            assert refused.wait_connack() == 3
        finally:
            refused.close()
        assert time.monotonic() - began < AUTH_TIMEOUT + SLACK
        # A take-over to the other node: refused as clearly, within a bound.
        began = time.monotonic()
        moving = mqtt_client(
            nodes.nodes["b"].port, nodes.server_cert, meter, client_id="meter",
            clean_session=False,
        )  # fmt: skip
        moving.paho.reconnect_delay_set(600, 600)
        try:
            assert moving.wait_connack() == 3
        finally:
            moving.close()
        assert time.monotonic() - began < AUTH_TIMEOUT + SLACK
        # QoS 1 for the away session: not acknowledged, the publisher closed.
        info = device.paho.publish(TELEMETRY, b"during", qos=1)
        assert device.disconnected.wait(ACK_TIMEOUT + SLACK + 5), "the publisher was not closed"
        assert not info.is_published(), "acknowledged while the database was away"

        hole.release()
        device = nodes.connect("b", sensor, client_id="sensor")
        device.publish(TELEMETRY, b"during", qos=1)  # sent again (§4.4)
        device.publish(TELEMETRY, b"after", qos=1)
        moved = nodes.connect("b", meter, client_id="meter", clean_session=False)
        assert moved.session_present.get_nowait() is True
        backend = nodes.connect("a", app="backend", client_id="backend", clean_session=False)
        assert backend.session_present.get_nowait() is True
        got = [backend.next_message().payload]
        while got[-1] != b"after" and len(got) < 3:
            got.append(backend.next_message().payload)
        # The copy held while the database was away is stored once it answers, and the one
        # sent again is another (QoS 1 is at least once, §4.3.2): once or twice, never lost.
        assert got in ([b"during", b"after"], [b"during", b"during", b"after"]), got
