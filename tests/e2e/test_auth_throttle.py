"""A host whose connects keep being refused is shut out before the TLS handshake.

The attack: one address presents certificates the broker does not know, one connection after
another. Each cost the broker a full TLS handshake and a lookup (5.2 ms of CPU), and nothing
bounded how many a second one address could make. Now, after ``auth_failures_before_throttle``
refusals in a row, the host's new connections are dropped before any TLS work, for 1 s
doubling up to ``auth_throttle_max_seconds``; a connect admitted from it clears the count.

Real TLS clients against a real broker on a free port. The attacker connects from 127.0.0.2
(Linux answers all of 127.0.0.0/8 on loopback), the bystander device from 127.0.0.1; behind a
trusted load balancer, both from 127.0.0.1 with PROXY v2 headers naming them. The broker's
side is counted from its /metrics: connects refused (each one a completed handshake) and the
connections dropped before theirs.
"""

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.proxy_headers import v2_header
from tests.certgen import issue
from tests.e2e.harness import WAIT, BrokerThread, running_broker, write_pem
from tests.reliability.packets import connect
from tests.reliability.wire import client_context

ATTACKER, DEVICE = "127.0.0.2", "127.0.0.1"
FREE = 3  # auth_failures_before_throttle in these tests
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


def _shut_out_for_8_s(broker: BrokerThread, certfiles: list[Path], source: str) -> None:
    """FREE refusals, then 4 more (1, 2, 4, 8 s): the 4 handshakes done before the first
    refusal, so that the block reached is 8 s however slow the machine is."""
    assert len(certfiles) == FREE + 4
    for certfile in certfiles[:FREE]:
        assert _attempt(broker, certfile, source) == 5  # not authorised
    opened = [_open(broker, certfile, source) for certfile in certfiles[FREE:]]
    for tls, certfile in zip(opened, certfiles[FREE:], strict=True):
        assert tls is not None
        assert _connack(tls, certfile.stem) == 5


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    settings = {"auth_failures_before_throttle": FREE, "auth_throttle_max_seconds": 8.0}
    with running_broker(tmp_path / "data", **settings) as running:
        yield running


def test_a_flood_of_unknown_certificates_is_dropped_before_the_handshake(
    broker: BrokerThread, tmp_path: Path
) -> None:
    strangers = _strangers(tmp_path, FREE + 5)
    _, device = broker.provision("sensor")
    device_file = write_pem(tmp_path, device, "sensor")
    _shut_out_for_8_s(broker, strangers[: FREE + 4], ATTACKER)
    refused = _refused(broker)
    assert refused == FREE + 4
    handshakes_failed = _handshakes_failed(broker)

    # The attacker's next connections, new certificate or one seen before, are dropped
    # before the handshake: no refusal more, each counted as a limit hit.
    for certfile in (strangers[-1], strangers[0], strangers[1]):
        assert _attempt(broker, certfile, ATTACKER) is None
    assert _refused(broker) == refused
    assert _dropped(broker) == 3
    assert _handshakes_failed(broker) == handshakes_failed
    # A registered device on another address connects meanwhile, and the attacker is still
    # shut out afterwards.
    assert _attempt(broker, device_file, DEVICE) == 0
    assert _attempt(broker, strangers[-1], ATTACKER) is None
    assert _refused(broker) == refused


def test_a_success_clears_the_count(broker: BrokerThread, tmp_path: Path) -> None:
    """A NATed fleet: one broken device refused again and again, its neighbours admitted in
    between, is never shut out."""
    strangers = _strangers(tmp_path, 1)
    _, device = broker.provision("sensor")
    device_file = write_pem(tmp_path, device, "sensor")
    for _ in range(3):
        for _ in range(FREE):
            assert _attempt(broker, strangers[0], ATTACKER) == 5
        assert _attempt(broker, device_file, ATTACKER) == 0
    assert _dropped(broker) == 0


def test_the_block_ends(tmp_path: Path) -> None:
    settings = {"auth_failures_before_throttle": 1, "auth_throttle_max_seconds": 1.0}
    with running_broker(tmp_path / "data", **settings) as broker:
        (stranger,) = _strangers(tmp_path, 1)
        _, device = broker.provision("sensor")
        device_file = write_pem(tmp_path, device, "sensor")
        assert _attempt(broker, stranger, ATTACKER) == 5
        assert _attempt(broker, stranger, ATTACKER) == 5  # the second: shut out for 1 s
        refused_at = time.monotonic()
        assert _attempt(broker, device_file, ATTACKER) is None
        deadline = refused_at + WAIT
        while (answer := _attempt(broker, device_file, ATTACKER)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)  # the block ends at a time of the broker's clock
        assert answer == 0
        assert time.monotonic() - refused_at > 0.9
        # Admitted: its count starts afresh (else this refusal would shut it out again).
        assert _attempt(broker, stranger, ATTACKER) == 5
        assert _attempt(broker, stranger, ATTACKER) == 5


def test_handshakes_for_nothing_count(broker: BrokerThread, tmp_path: Path) -> None:
    """A client that completes its handshake and leaves, or sends a CONNECT the protocol
    refuses, costs the broker what a refused certificate does: counted alike."""
    (stranger,) = _strangers(tmp_path, 1)
    for _ in range(FREE + 1):
        tls = _open(broker, stranger, ATTACKER)
        assert tls is not None
        with tls:
            tls.sendall(connect("x", level=9))  # §3.1.2.2: CONNACK 1, then closed
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                while tls.recv(64):
                    pass
    assert _attempt(broker, stranger, ATTACKER) is None
    assert _dropped(broker) == 1


def test_behind_a_load_balancer_the_client_is_shut_out_not_the_balancer(tmp_path: Path) -> None:
    settings = {
        "auth_failures_before_throttle": FREE,
        "auth_throttle_max_seconds": 8.0,
        "proxy_protocol_trusted": ["127.0.0.1"],
    }
    with running_broker(tmp_path / "data", **settings) as broker:
        strangers = _strangers(tmp_path, FREE + 4)
        _, device = broker.provision("sensor")
        device_file = write_pem(tmp_path, device, "sensor")
        attacker = v2_header(source=("203.0.113.7", 40001), destination=("127.0.0.1", 8883))
        neighbour = v2_header(source=("203.0.113.8", 40002), destination=("127.0.0.1", 8883))
        for certfile in strangers[:FREE]:
            assert _attempt(broker, certfile, DEVICE, attacker) == 5
        opened = [_open(broker, certfile, DEVICE, attacker) for certfile in strangers[FREE:]]
        for tls, certfile in zip(opened, strangers[FREE:], strict=True):
            assert tls is not None
            assert _connack(tls, certfile.stem) == 5
        assert _attempt(broker, strangers[0], DEVICE, attacker) is None
        assert _dropped(broker) == 1
        # Another client behind the same balancer, and the balancer's own connection (LOCAL:
        # its address), still get in.
        assert _attempt(broker, device_file, DEVICE, neighbour) == 0
        local = v2_header(command=0x0, family=0x00, body=b"")
        assert _attempt(broker, device_file, DEVICE, local) == 0
        assert _dropped(broker) == 1
