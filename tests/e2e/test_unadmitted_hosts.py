"""What one host can make the broker hold before it is admitted, and what deep topics cost.

``max_connecting_per_address``: connections from one host (an IPv4 address, an IPv6 /64)
that are in their TLS handshake or whose CONNECT is not accepted yet. Without it a host
opening ``max_connections`` TCP connections that never send a ClientHello (re-opened as
``tls_handshake_timeout`` closes them) kept every device out. The bound applies once half of
``max_connections`` are open: before that a burst from one address (devices behind one NAT
reconnecting together) is not turned away. The attacker here connects from 127.0.0.2: Linux
routes all of 127/8 to loopback, so to the broker it is another host.

``max_topic_levels``: each level of a subscription's filter or of a kept retained message's
topic is a trie node of about 230 bytes; a 64 KiB retained topic of 32,768 levels held 7.6 MB
while ``max_retained_bytes`` counted 64 KiB of it.

And the log lines a host's connections cause before CONNECT: a few per host a minute; and
the user properties one PUBLISH makes the broker read.
"""

import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.mqtt.codes import Reason
from broker.mqtt.packets import MQTT_5, Connack, Connect, Disconnect, Publish
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import WAIT
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import HOST, Raw
from tests.reliability.wire import client_context, tls_attempt

ATTACKER = "127.0.0.2"
CLIENT_LINES = 5  # the auth_log_repeats default: lines per host, reason and interval
DEFAULT_CONNECTING = 64  # the max_connecting_per_address default
DEFAULT_LEVELS = 128  # the max_topic_levels default


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    made = Fleet(tmp_path, **getattr(request, "param", {}))
    try:
        yield made
    finally:
        made.broker.stop()


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections from ATTACKER that never send a byte."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            opened.append(
                socket.create_connection((HOST, port), timeout=WAIT, source_address=(ATTACKER, 0))
            )
        yield opened
    finally:
        for sock in opened:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("fleet", [{"max_connections": DEFAULT_CONNECTING + 6}], indirect=True)
def test_one_host_s_idle_connections_cannot_take_every_slot(fleet: Fleet) -> None:
    # The attacker opens as many connections as the broker holds, before the device's; the
    # broker accepts them in that order.
    port = fleet.broker.port
    with idle_connections(port, DEFAULT_CONNECTING + 6) as idle:
        device = fleet.paho("device")  # its CONNACK 0: a slot was left for it
        try:
            assert all(closed_by_server(sock) for sock in idle[DEFAULT_CONNECTING:])
            assert fleet.hits("max_connecting_per_address") == 6
            assert fleet.hits("max_connections") == 0
        finally:
            device.close()


def still_open(sock: socket.socket) -> bool:
    sock.settimeout(0)  # a socket with a timeout would wait for data that long first
    try:
        return sock.recv(1) != b""
    except BlockingIOError:  # nothing to read, not closed
        return True
    except ConnectionResetError:
        return False


@pytest.mark.parametrize("fleet", [{"max_connecting_per_address": 2}], indirect=True)
def test_a_burst_from_one_host_is_not_turned_away_while_places_are_free(fleet: Fleet) -> None:
    # 20 connections from one host at once, far from half of max_connections (100,000).
    with idle_connections(fleet.broker.port, 20) as burst:
        fleet.bystander_round_trip()  # the broker has accepted them all by now
        assert fleet.hits("max_connecting_per_address") == 0
        assert [still_open(sock) for sock in burst] == [True] * 20


# Half of max_connections (10) is taken once the four devices and one idle connection are open.
@pytest.mark.parametrize(
    "fleet", [{"max_connecting_per_address": 2, "max_connections": 10}], indirect=True
)
def test_admitted_connections_no_longer_count_against_their_host(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.connection_limit")
    held = [fleet.paho(f"held-{number}") for number in range(4)]  # all from 127.0.0.1
    try:
        with idle_connections(fleet.broker.port, 3) as idle:
            assert closed_by_server(idle[2])
        assert fleet.hits("max_connecting_per_address") == 1
        assert (
            "max_connecting_per_address (2) reached: 1 connection(s) closed before any TLS "
            f"work, the last from {ATTACKER}" in caplog.text
        )
        fleet.bystander_round_trip()
    finally:
        for client in held:
            client.close()


def _deep(levels: int) -> str:
    """A device's topic whose canonical form (devices/<name>/...) has ``levels`` levels."""
    return "v1/devices/me/" + "/".join(["x"] * (levels - 2))


def test_filters_and_retained_topics_deeper_than_max_topic_levels(fleet: Fleet) -> None:
    device = fleet.paho("deep")
    try:
        assert device.subscribe((_deep(DEFAULT_LEVELS), 1)) == [1]
        assert device.subscribe((_deep(DEFAULT_LEVELS + 1), 1)) == [0x80]
        assert fleet.hits("max_topic_levels") == 1
        device.publish(_deep(DEFAULT_LEVELS), b"kept", 1, retain=True)
        assert device.receive(1)[0].payload == b"kept"
        # A retained message too deep to keep is delivered all the same, only not kept.
        assert device.subscribe(("v1/devices/me/#", 1)) == [1]
        assert device.receive(1)[0].payload == b"kept"  # the retained one, for the new filter
        device.publish(_deep(DEFAULT_LEVELS + 1), b"not kept", 1, retain=True)
        assert device.receive(1)[0].payload == b"not kept"
        assert fleet.hits("max_topic_levels") == 2
        retained = fleet.broker.running.broker.retained
        assert retained.owned_by(str(fleet.device.id)) == 1
    finally:
        device.close()


def test_lines_a_host_causes_before_connect_are_limited(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    # Anyone can complete a handshake and send garbage, at its own rate: one INFO line each
    # (85 a second from one test client) before; now as many as the auth log's refusals.
    caplog.set_level(logging.INFO, logger="broker.client")
    for _ in range(CLIENT_LINES + 3):
        attempt = tls_attempt(fleet.broker.port, client_context(fleet.broker.server_cert),
                              b"\x10\x02garbage")  # fmt: skip
        assert attempt.closed_by_server
    refused = [r for r in caplog.records if "first packet is not a valid CONNECT" in r.message]
    assert len(refused) == CLIENT_LINES
    fleet.bystander_round_trip()


def test_a_publish_with_more_user_properties_than_the_broker_reads_is_disconnected(
    fleet: Fleet,
) -> None:
    # 5.0 §3.3.2.3.7 lets them repeat at will; 50,000 empty ones (256 KiB) held the event loop
    # for 140 ms each. At most 1,024 are read: past them DISCONNECT 0x97 (quota exceeded).
    many = Properties([(Property.USER_PROPERTY, ("", ""))] * 1025)
    with Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile, level=MQTT_5) as raw:
        raw.send(Connect(MQTT_5, "talkative", True, 0))
        assert isinstance(raw.read(), Connack)
        raw.send(Publish("v1/devices/me/telemetry", b"x", 1, packet_id=1, properties=many))
        disconnect = raw.read()
        assert isinstance(disconnect, Disconnect)
        assert disconnect.code == Reason.QUOTA_EXCEEDED
        assert "more than 1024 user properties" in str(disconnect.properties)
        assert raw.closed()
    fleet.bystander_round_trip()
