"""``max_unadmitted_bytes``: what connections not admitted yet make the broker hold, together.

Each connection may send up to ``max_packet_size`` of a CONNECT before the broker decides on
it; without a bound on them all, connections trickling large partial CONNECTs held
``max_connections`` times that. Here attackers without a certificate open connections over
real TLS and send the start of a 1 MiB CONNECT each; the broker keeps what they all hold
within the bound (closing the connections charged the most), a device still connects
meanwhile, and every byte charged is given back however a connection ends.
"""

import os
import socket
import ssl
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.mqtt.encode import encode
from broker.mqtt.packets import MQTT_3_1_1, Connack, Connect, Will
from broker.unadmitted import UnadmittedBytes
from tests.e2e.harness import WAIT
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import HOST, Raw

KIB = 1024
MIB = 1024 * KIB
TELEMETRY = "v1/devices/me/telemetry"


def _budget(fleet: Fleet) -> UnadmittedBytes:
    return fleet.broker.running.broker.unadmitted


def _until(holds: Callable[[], bool], what: str) -> None:
    """Wait (at most WAIT seconds) for the broker's thread to make ``holds`` true."""
    deadline = time.monotonic() + WAIT
    while not holds():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _attacker(fleet: Fleet) -> ssl.SSLSocket:
    """A TLS connection without a client certificate (none is needed before CONNECT)."""
    context = ssl.create_default_context(cafile=str(fleet.broker.server_cert))
    raw = socket.create_connection((HOST, fleet.broker.port), timeout=WAIT)
    return context.wrap_socket(raw, server_hostname="localhost")


def _connect_start(announced: int) -> bytes:
    """The fixed and variable header of a 3.1.1 CONNECT announcing ``announced`` bytes."""
    length, remaining = bytearray(), announced
    while True:
        byte, remaining = remaining & 0x7F, remaining >> 7
        length.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    return b"\x10" + bytes(length) + b"\x00\x04MQTT\x04\x02\x00\x3c"


def _closed_by_broker(sock: ssl.SSLSocket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


# --- (1) many connections trickling large partial CONNECTs -------------------------------------

BUDGET = 4 * MIB
PACKET = BUDGET // 4  # the largest max_packet_size it may go with (nanoiot.settings.mqtt)
ATTACKERS = 80
SENT = 512 * KIB  # of a CONNECT of almost PACKET, by each attacker: 40 MiB in all
CHUNK = 64 * KIB


@pytest.fixture
def flooded(tmp_path: Path) -> Iterator[Fleet]:
    # The attackers closed unadmitted share 127.0.0.1 with the bystander: their host ends up
    # slowed (auth_failures_before_throttle), never shut out, so the bystander's one connect
    # takes a slot of its burst.
    made = Fleet(tmp_path, max_unadmitted_bytes=BUDGET, max_packet_size=PACKET,
                 tls_handshake_timeout=60)  # fmt: skip
    try:
        yield made
    finally:
        made.broker.stop()


def _trickle(attackers: list[ssl.SSLSocket], budget: UnadmittedBytes) -> tuple[int, set[int]]:
    """Send each attacker's SENT bytes, a CHUNK at a time in turn; the most the broker held
    after any chunk, and the attackers whose connection was closed under them."""
    start = _connect_start(PACKET - 16)
    chunks = [start + bytes(CHUNK - len(start))] + [bytes(CHUNK)] * (SENT // CHUNK - 1)
    most, failed = 0, set[int]()
    for chunk in chunks:
        for index, sock in enumerate(attackers):
            if index in failed:
                continue
            try:
                sock.sendall(chunk)
            except OSError:  # the broker closed it
                failed.add(index)
            most = max(most, budget.held)
    return most, failed


def test_partial_connects_are_held_within_the_budget_and_a_device_still_connects(
    flooded: Fleet,
) -> None:
    budget = _budget(flooded)
    attackers = [_attacker(flooded) for _ in range(ATTACKERS)]
    try:

        def hits() -> int:
            return flooded.hits("max_unadmitted_bytes")

        # Python's allocations, the broker's thread's among them (RSS would also show what
        # the allocator keeps for later), until the broker has read all that was sent: every
        # attacker is then either closed (counted) or holds all it sent.
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            most, _ = _trickle(attackers, budget)
            _until(lambda: hits() + len(budget) == ATTACKERS and budget.held == len(budget) * SENT,
                   "the attackers' bytes are all read")  # fmt: skip
            grown = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert most <= BUDGET
        assert len(budget) <= BUDGET // SENT
        assert hits() >= ATTACKERS - BUDGET // SENT
        # 40 MiB sent, all of it held before the bound; now the budget, the bytearrays'
        # spare room, and reads on their way (about 10 MiB at the peak).
        assert grown < 4 * BUDGET, grown
        survivors = len(budget)
        flooded.bystander_round_trip()  # its CONNECT fits, by closing an attacker if need be
        assert len(budget) >= survivors - 1
        held = {client.tls.remote[1] for client in list(budget._charged)}
        closed = [sock for sock in attackers if sock.getsockname()[1] not in held]
        assert len(closed) == ATTACKERS - len(budget)
        assert all(_closed_by_broker(sock) for sock in closed)
    finally:
        for sock in attackers:
            sock.close()
    _until(lambda: budget.held == 0 and not len(budget), "every charge given back")


# --- (2) every way a connection not admitted ends gives its bytes back ---------------------------

PARTIAL = 100 * KIB
# The largest will payload (MQTT 3.1.1 §1.5.3, §3.1.3.3: binary data of a 2-byte length).
WILL = 65_535


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path, max_unadmitted_bytes=MIB, tls_handshake_timeout=2)
    try:
        yield made
    finally:
        if not made.broker.loop.is_closed():  # the test stops it itself
            made.broker.stop()


def _partial(fleet: Fleet) -> ssl.SSLSocket:
    sock = _attacker(fleet)
    start = _connect_start(200 * KIB)
    sock.sendall(start + bytes(PARTIAL - len(start)))
    return sock


def _sent_slowly(sock: socket.socket, data: bytes) -> None:
    for at in range(0, len(data), 16 * KIB):
        sock.sendall(data[at : at + 16 * KIB])


def _with_will(client_id: str, username: str | None = None, password: bytes | None = None) -> bytes:
    will = Will(TELEMETRY, b"w" * WILL)
    connect = Connect(MQTT_3_1_1, client_id, True, 0, username, password, will)
    return encode(connect, MQTT_3_1_1)


def test_the_bytes_come_back_however_the_connection_ends(fleet: Fleet) -> None:
    budget = _budget(fleet)
    timed_out = _partial(fleet)  # left until the connect deadline
    left = _partial(fleet)  # the client goes away
    broken = _partial(fleet)  # a TLS record that does not decrypt
    _until(lambda: budget.held == 3 * PARTIAL, "three partial CONNECTs charged")
    left.close()
    garbage = socket.socket(fileno=os.dup(broken.fileno()))
    garbage.sendall(b"\x17\x03\x03\x00\x20" + bytes(32))
    garbage.detach()
    refused = _attacker(fleet)  # a whole CONNECT with a wrong password
    _sent_slowly(refused, _with_will("refused", username="backend", password=b"wrong"))
    bad_level = _attacker(fleet)  # a whole CONNECT of an unknown protocol level
    _sent_slowly(bad_level, _connect_start(12)[:-4] + b"\x09\x02\x00\x3c\x00\x00")
    first = Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile)  # accepted
    _sent_slowly(first.sock, _with_will("same"))
    assert first.read() == Connack(False, 0)
    second = Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile)  # takes over
    _sent_slowly(second.sock, _with_will("same"))
    assert second.read() == Connack(False, 0)
    try:
        assert refused.recv(4) == b"\x20\x02\x00\x04"  # bad user name or password
        assert bad_level.recv(4) == b"\x20\x02\x00\x01"  # §3.1.2.2: unacceptable level
        closing = (timed_out, broken, refused, bad_level, first.sock)
        assert all(_closed_by_broker(sock) for sock in closing)  # type: ignore[arg-type]
        _until(lambda: budget.held == 0 and not len(budget), "every charge given back")
        assert fleet.hits("max_unadmitted_bytes") == 0
        fleet.bystander_round_trip()
        stopping = _partial(fleet)  # and one the broker's stop closes
        _until(lambda: budget.held == PARTIAL, "one more charged")
        fleet.broker.stop()
        assert budget.held == 0
        assert not len(budget)
        stopping.close()
    finally:
        for sock in (timed_out, broken, refused, bad_level):
            sock.close()
        first.sock.close()
        second.sock.close()


# --- (3) a device's large will -----------------------------------------------------------------


def test_a_connect_with_the_largest_will_is_accepted(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)  # the default budget
    try:
        device = Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile)
        _sent_slowly(device.sock, _with_will("large-will"))
        assert device.read() == Connack(False, 0)
        assert _budget(fleet).held == 0  # admitted: no longer counted
        device.sock.close()
    finally:
        fleet.broker.stop()
