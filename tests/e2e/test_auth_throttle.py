"""A host whose connects keep being refused is slowed before the TLS handshake, not shut out.

The attack: one address presents certificates the broker does not know, one connection after
another. Each cost the broker a full TLS handshake and a lookup (5.2 ms of CPU), and nothing
bounded how many a second one address could make. Now, after ``auth_failures_before_throttle``
refusals in a row, the host's new connections go on to their handshake at most
``auth_throttled_connects_per_second`` a second and the others are dropped before any TLS
work; a connect admitted from it clears the count and the slowing. So a registered device
behind the same address still gets in while the flood goes on, and at once after it.

Real TLS clients against a real broker on a free port. The attacker connects from 127.0.0.2
(Linux answers all of 127.0.0.0/8 on loopback), and so does the device behind it; a bystander
device from 127.0.0.1; behind a trusted load balancer, both from 127.0.0.1 with PROXY v2
headers naming them. The broker's side is counted from its /metrics: connects refused (each
one a completed handshake) and the connections dropped before theirs.
"""

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.broker.proxy_headers import v2_header
from tests.certgen import issue
from tests.e2e.harness import WAIT, BrokerThread, running_broker, write_pem
from tests.reliability.packets import connect
from tests.reliability.wire import client_context

ATTACKER, DEVICE = "127.0.0.2", "127.0.0.1"
FREE = 3  # auth_failures_before_throttle in these tests
RATE = 2.0  # auth_throttled_connects_per_second in these tests, and so its burst
_METRIC = re.compile(r'^(nanoiot_\w+)\{(?:limit|reason)="(\w+)"\} (\S+)$', re.M)


def _counts(broker: BrokerThread) -> dict[tuple[str, str], int]:
    return {
        (found.group(1), found.group(2)): int(float(found.group(3)))
        for found in _METRIC.finditer(broker.metrics())
    }


def _refused(broker: BrokerThread, reason: str = "unknown_key") -> int:
    return _counts(broker).get(("nanoiot_connects_refused_total", reason), 0)


def _handshakes_failed(broker: BrokerThread) -> int:
    counts = _counts(broker).items()
    return sum(n for (name, _), n in counts if name == "nanoiot_tls_handshake_failures_total")


def _dropped(broker: BrokerThread) -> int:
    key = ("nanoiot_limit_hits_total", "auth_failures_before_throttle")
    return _counts(broker).get(key, 0)


def _open(
    broker: BrokerThread, certfile: Path, source: str, header: bytes = b""
) -> ssl.SSLSocket | None:
    """A TLS connection from ``source`` (after ``header``, for a PROXY v2 one), its handshake
    done; None if the broker dropped it before the handshake."""
    raw = socket.create_connection(
        ("127.0.0.1", broker.port), timeout=WAIT, source_address=(source, 0)
    )
    try:
        raw.sendall(header)
        return client_context(broker.server_cert, certfile).wrap_socket(
            raw, server_hostname="localhost"
        )
    except (ssl.SSLError, ConnectionError):
        raw.close()
        return None


def _connack(tls: ssl.SSLSocket, client_id: str) -> int:
    """CONNECT on ``tls``; the CONNACK's return code (MQTT 3.1.1 §3.2.2.3)."""
    with tls:
        tls.sendall(connect(client_id))
        answer = b""
        while len(answer) < 4 and (chunk := tls.recv(4 - len(answer))):
            answer += chunk
    assert len(answer) == 4, answer
    return answer[3]


def _attempt(broker: BrokerThread, certfile: Path, source: str, header: bytes = b"") -> int | None:
    """A whole connect: its CONNACK return code, or None if dropped before the handshake."""
    tls = _open(broker, certfile, source, header)
    return None if tls is None else _connack(tls, certfile.stem)


def _strangers(directory: Path, count: int) -> list[Path]:
    """Certificates of ``count`` distinct self-signed keys nobody registered."""
    return [write_pem(directory, issue(f"stranger-{n}"), f"stranger-{n}") for n in range(count)]


def _until_admitted(broker: BrokerThread, certfile: Path, source: str, pause: float) -> int:
    """Connect ``certfile`` from ``source`` again and again (``pause`` apart) until a
    connection reaches its handshake: the tries it took. It must then be admitted."""
    deadline = time.monotonic() + WAIT
    tries = 1
    while (answer := _attempt(broker, certfile, source)) is None:
        assert time.monotonic() < deadline, f"still dropped after {tries} tries"
        tries += 1
        time.sleep(pause)  # a device's retry interval, not a wait for an event
    assert answer == 0
    return tries


@dataclass
class _Flood:
    """An attacker connecting unknown certificates from ``source`` as fast as it can until
    stopped, ``parallel`` connections in flight at a time (several threads' worth: their
    handshakes done before their refusals): what it saw. ``warm`` is set after ``warm_up``
    rounds (the flood has gone on a while, dropped for the most part)."""

    broker: BrokerThread
    certfiles: list[Path]
    source: str = ATTACKER
    parallel: int = 4
    warm_up: int = 100
    rounds: int = 0
    refused: int = 0
    dropped: int = 0
    first_drop: threading.Event = field(default_factory=threading.Event)
    warm: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            opened = [
                _open(self.broker, self.certfiles[n], self.source) for n in range(self.parallel)
            ]
            for n, tls in enumerate(opened):
                if tls is None:
                    self.dropped += 1
                    self.first_drop.set()
                else:
                    assert _connack(tls, self.certfiles[n].stem) == 5  # not authorised
                    self.refused += 1
            self.rounds += 1
            if self.rounds >= self.warm_up:
                self.warm.set()


@contextlib.contextmanager
def _flooding(broker: BrokerThread, certfiles: list[Path]) -> Iterator[_Flood]:
    flood = _Flood(broker, certfiles)
    thread = threading.Thread(target=flood.run, daemon=True)
    thread.start()
    try:
        assert flood.warm.wait(WAIT)
        assert flood.dropped, "the flood was never slowed"
        yield flood
    finally:
        flood.stop.set()
        thread.join(WAIT)
    assert not thread.is_alive()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    settings = {"auth_failures_before_throttle": FREE, "auth_throttled_connects_per_second": RATE}
    with running_broker(tmp_path / "data", **settings) as running:
        yield running


def test_a_flood_is_slowed_and_a_device_behind_it_still_gets_in(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """One device with an unknown (or expired) certificate in a tight loop behind a NAT, or
    a scanner on the NAT's address: the NAT's registered devices still connect, during the
    flood by retrying, and at once after it; the flood's handshakes stay at the rate. (A
    host shut out for a while, its block doubling as each spell's connects in flight are
    refused, kept the device out past WAIT.)"""
    strangers = _strangers(tmp_path, 4)
    _, device = broker.provision("sensor")
    device_file = write_pem(tmp_path, device, "sensor")
    _, bystander = broker.provision("bystander")
    bystander_file = write_pem(tmp_path, bystander, "bystander")
    started = time.monotonic()
    with _flooding(broker, strangers) as flood:
        during = _until_admitted(broker, device_file, ATTACKER, pause=0.01)
        assert _attempt(broker, bystander_file, DEVICE) == 0  # another host: untouched
        # The device's admission cleared the host: the flood gets its free failures again
        # and is slowed again; the device's next connect, after it, competes once more.
        flood.first_drop.clear()
        assert flood.first_drop.wait(WAIT)
    flood_seconds = time.monotonic() - started
    # Once the flood stops the host's slots refill at the rate: no block to sit out.
    stopped = time.monotonic()
    after = _until_admitted(broker, device_file, ATTACKER, pause=0.05)
    waited = time.monotonic() - stopped

    refused = _refused(broker)
    assert refused == flood.refused
    assert _handshakes_failed(broker) == 0
    assert _dropped(broker) == flood.dropped + during - 1 + after - 1
    # Two slowed spells (before and after the device's admission): each the free failures,
    # the connections in flight when they ran out, and a full bucket; and the rate over the
    # flood's time.
    spell = FREE + flood.parallel - 1 + RATE
    assert refused <= 2 * spell + RATE * flood_seconds, (refused, flood_seconds)
    assert flood.dropped > refused  # the flood was mostly dropped before any TLS work
    assert waited < 3 / RATE, waited  # a slot of the rate, however slow the machine
    print(f"flood {flood_seconds:.1f} s: {flood.refused} refused, {flood.dropped} dropped; "
          f"device tries during {during}, after {after} ({waited:.2f} s)")  # fmt: skip


def test_after_a_burst_of_refusals_a_device_behind_it_gets_in_at_once(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """FREE + 4 refusals whose handshakes were all done before the first refusal (several
    attacker threads): the host is slowed, not shut out for 8 s (1, 2, 4, 8 s: the block
    doubled by each refusal in flight), and the device's next connect takes a slot."""
    strangers = _strangers(tmp_path, FREE + 4)
    _, device = broker.provision("sensor")
    device_file = write_pem(tmp_path, device, "sensor")
    opened = [_open(broker, certfile, ATTACKER) for certfile in strangers]
    for tls, certfile in zip(opened, strangers, strict=True):
        assert tls is not None
        assert _connack(tls, certfile.stem) == 5
    assert _attempt(broker, device_file, ATTACKER) == 0
    assert _dropped(broker) == 0


def test_a_success_clears_the_count(broker: BrokerThread, tmp_path: Path) -> None:
    """A NATed fleet: one broken device refused again and again, its neighbours admitted in
    between, is never slowed enough to drop a connection."""
    strangers = _strangers(tmp_path, 1)
    _, device = broker.provision("sensor")
    device_file = write_pem(tmp_path, device, "sensor")
    for _ in range(3):
        for _ in range(FREE):
            assert _attempt(broker, strangers[0], ATTACKER) == 5
        assert _attempt(broker, device_file, ATTACKER) == 0
    assert _dropped(broker) == 0


def test_a_success_ends_the_slowing_at_once(tmp_path: Path) -> None:
    settings = {"auth_failures_before_throttle": 1, "auth_throttled_connects_per_second": 0.2}
    with running_broker(tmp_path / "data", **settings) as broker:
        (stranger,) = _strangers(tmp_path, 1)
        _, device = broker.provision("sensor")
        device_file = write_pem(tmp_path, device, "sensor")
        assert _attempt(broker, stranger, ATTACKER) == 5  # slowed: one connect in 5 s
        assert _attempt(broker, device_file, ATTACKER) == 0  # it takes the host's one slot
        # Admitted: no longer slowed (else the next would wait 5 s for a slot), and its
        # count starts afresh (else this refusal would leave it no slot).
        assert [_attempt(broker, device_file, ATTACKER) for _ in range(3)] == [0, 0, 0]
        assert _attempt(broker, stranger, ATTACKER) == 5
        assert _attempt(broker, stranger, ATTACKER) == 5  # the burst's slot
        assert _attempt(broker, stranger, ATTACKER) is None
        assert _dropped(broker) == 1


def test_handshakes_for_nothing_count(broker: BrokerThread, tmp_path: Path) -> None:
    """A client that completes its handshake and leaves, or sends a CONNECT the protocol
    refuses, costs the broker what a refused certificate does: counted alike."""
    (stranger,) = _strangers(tmp_path, 1)
    completed = 0
    deadline = time.monotonic() + WAIT
    while (tls := _open(broker, stranger, ATTACKER)) is not None:
        assert time.monotonic() < deadline
        completed += 1
        with tls:
            tls.sendall(connect("x", level=9))  # §3.1.2.2: CONNACK 1, then closed
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                while tls.recv(64):
                    pass
    assert completed >= FREE + RATE
    assert _dropped(broker) == 1


def test_behind_a_load_balancer_the_client_is_slowed_not_the_balancer(tmp_path: Path) -> None:
    settings = {
        "auth_failures_before_throttle": FREE,
        "auth_throttled_connects_per_second": 0.2,  # a burst of one
        "proxy_protocol_trusted": ["127.0.0.1"],
    }
    with running_broker(tmp_path / "data", **settings) as broker:
        strangers = _strangers(tmp_path, FREE + 1)
        _, device = broker.provision("sensor")
        device_file = write_pem(tmp_path, device, "sensor")
        attacker = v2_header(source=("203.0.113.7", 40001), destination=("127.0.0.1", 8883))
        neighbour = v2_header(source=("203.0.113.8", 40002), destination=("127.0.0.1", 8883))
        for certfile in strangers:
            assert _attempt(broker, certfile, DEVICE, attacker) == 5
        assert _attempt(broker, strangers[0], DEVICE, attacker) is None
        assert _dropped(broker) == 1
        # Another client behind the same balancer, and the balancer's own connection (LOCAL:
        # its address), still get in.
        assert _attempt(broker, device_file, DEVICE, neighbour) == 0
        local = v2_header(command=0x0, family=0x00, body=b"")
        assert _attempt(broker, device_file, DEVICE, local) == 0
        assert _dropped(broker) == 1
