"""``max_connections`` held by connections nobody vouches for cannot keep devices out.

Idle TLS handshakes and idle connections before CONNECT from enough hosts (1,563 hosts of 64,
one IPv6 /48) filled the default 100,000 places, each under ``max_connecting_per_address``,
and then every device was turned away. Now, once ``max_connections`` are open, a new connection
takes the place of the oldest one not admitted yet (``broker.eviction``): admitted devices stay,
and a device gets a place at once. The attacker connects from 127.0.0.2 (Linux routes all of
127/8 to loopback), with ``max_connections`` 20: the devices admitted first, then a few
completed TLS handshakes that send no CONNECT, then bare TCP connections, until it is full.
"""

import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import WAIT
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import HOST, Paho
from tests.reliability.wire import client_context

ATTACKER = "127.0.0.2"
PLACES = 20
DEVICES = 3
HANDSHAKES = 4  # idle after a completed TLS handshake: the oldest of the attacker's


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path, max_connections=PLACES)
    try:
        yield made
    finally:
        made.broker.stop()


@contextlib.contextmanager
def idle(fleet: Fleet, handshakes: int, bare: int) -> Iterator[list[socket.socket]]:
    """From ATTACKER, oldest first: ``handshakes`` TLS connections that never send CONNECT,
    then ``bare`` TCP connections that never send a byte."""
    opened: list[socket.socket] = []
    context = client_context(fleet.broker.server_cert)
    try:
        for number in range(handshakes + bare):
            sock = socket.create_connection(
                (HOST, fleet.broker.port), timeout=WAIT, source_address=(ATTACKER, 0)
            )
            if number < handshakes:
                sock = context.wrap_socket(sock, server_hostname="localhost")
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):  # RST, or a TLS record cut short by it
        return True


def still_open(sock: socket.socket) -> bool:
    sock.settimeout(0)  # nothing to read: open (a timeout would wait that long first)
    try:
        return sock.recv(1) != b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except (ConnectionResetError, ssl.SSLError):
        return False


def round_trip(device: Paho, payload: bytes) -> None:
    """Still connected: a PUBACK comes back, and the connection was never lost."""
    device.publish("v1/devices/me/telemetry", payload, 1)
    assert device.disconnected.empty()


def test_a_device_takes_the_place_of_the_oldest_connection_not_admitted(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.eviction")
    held = [fleet.paho(f"held-{number}") for number in range(DEVICES)]
    try:
        with idle(fleet, HANDSHAKES, PLACES - DEVICES - HANDSHAKES) as attacker:
            # Full: the broker accepts connections in the order they came, the attacker's
            # first. The device is admitted at once, and the attacker's oldest gave its place.
            newcomers = [fleet.paho("newcomer-0")]
            try:
                assert closed_by_server(attacker[0])
                assert [still_open(sock) for sock in attacker[1:]] == [True] * (PLACES - 4)
                assert fleet.hits("max_connections") == 1
                # Two more: the next two oldest; the evictions named once a minute per host.
                newcomers += [fleet.paho("newcomer-1"), fleet.paho("newcomer-2")]
                assert closed_by_server(attacker[1])
                assert closed_by_server(attacker[2])
                assert [still_open(sock) for sock in attacker[3:]] == [True] * (PLACES - 6)
                assert fleet.hits("max_connections") == 3
                evicted = [r.getMessage() for r in caplog.records if r.name == "broker.eviction"]
                assert evicted == [
                    f"max_connections ({PLACES}) reached: closed a connection from {ATTACKER} "
                    "not admitted yet, the oldest, for a new one"
                ]
                # Admitted clients are never closed for another.
                for number, device in enumerate(held + newcomers):
                    round_trip(device, b"still here %d" % number)
            finally:
                for newcomer in newcomers:
                    newcomer.close()
    finally:
        for device in held:
            device.close()


def test_only_admitted_clients_holding_every_place_turn_a_newcomer_away(fleet: Fleet) -> None:
    held = [fleet.paho(f"held-{number}") for number in range(PLACES)]
    try:
        with idle(fleet, 0, 1) as late:
            assert closed_by_server(late[0])
        assert fleet.hits("max_connections") == 1
        for number, device in enumerate(held):
            round_trip(device, b"kept %d" % number)
    finally:
        for device in held:
            device.close()
