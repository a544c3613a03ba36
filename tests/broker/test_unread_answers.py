"""A client that sends without reading the answers is not read either, past
``max_outgoing_buffer``.

Each PINGREQ is answered with a PINGRESP (and each PUBREL with a PUBCOMP...). Before, the
broker read on whatever the client left unread: 78 MB of PINGREQs sent without reading made
the broker hold 72 MB of PINGRESPs. Now, past ``max_outgoing_buffer`` bytes not yet taken by
its socket, the broker stops reading it until they are, and TCP holds the client back; once
it reads, every packet it sent is answered. Real broker, real TLS, a raw socket whose receive
buffer is small, so that the broker's own buffer is what fills.
"""

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from broker.client import MqttClient
from tests.e2e.harness import WAIT, BrokerThread, running_broker

CAP = 64 * 1024
# One read's answers may come on top of the cap before reading stops: a read is at most a
# turn's work (``Connection.turn_over``), whose answers are well below this.
SLACK = 512 * 1024
FLOOD_MAX = 64 * 1024 * 1024  # unbounded before: the broker held all of their answers
CHUNK = b"\xc0\x00" * 32 * 1024  # PINGREQs (3.1.1 §3.12)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with running_broker(tmp_path / "data", max_outgoing_buffer=CAP) as running:
        yield running


def _string(value: str) -> bytes:
    return len(value).to_bytes(2, "big") + value.encode()


def _connected(broker: BrokerThread) -> ssl.SSLSocket:
    """An application client (3.1.1) with a small receive buffer, connected."""
    broker.application("deaf", "deaf", "deaf-pass")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    raw.settimeout(WAIT)
    raw.connect(("127.0.0.1", broker.port))
    context = ssl.create_default_context(cafile=str(broker.server_cert))
    context.check_hostname = False
    tls = context.wrap_socket(raw)
    body = (
        b"\x00\x04MQTT\x04\xc2\x00\x00" + _string("deaf") + _string("deaf") + _string("deaf-pass")
    )
    tls.sendall(b"\x10" + bytes([len(body)]) + body)
    assert tls.recv(4) == b"\x20\x02\x00\x00"
    return tls


def _buffered(broker: BrokerThread) -> int:
    async def size() -> int:
        client: MqttClient = next(
            c for c in broker.running.broker.clients() if c.peer and c.peer.client_id == "deaf"
        )
        return client.tls.buffered()

    return broker.call(size())


def _flood(deaf: ssl.SSLSocket) -> int:
    """PINGREQs until a send waits 2 s (the broker stopped reading) or FLOOD_MAX bytes went;
    the bytes sent whole."""
    deaf.settimeout(2.0)
    sent = 0
    try:
        while sent < FLOOD_MAX:
            deaf.sendall(CHUNK)
            sent += len(CHUNK)
    except TimeoutError:
        pass
    return sent


def test_a_client_that_does_not_read_its_answers_is_not_read(broker: BrokerThread) -> None:
    deaf = _connected(broker)
    try:
        sent = _flood(deaf)
        assert sent < FLOOD_MAX, "the broker read on"
        assert _buffered(broker) <= CAP + SLACK
        text = generate_latest(broker.running.broker.metrics.registry).decode()
        assert 'nanoiot_limit_hits_total{limit="max_outgoing_buffer"}' in text
        # It reads: every PINGREQ sent is answered, and the connection goes on.
        deaf.settimeout(WAIT)
        received = 0
        while received < sent:
            data = deaf.recv(65536)
            assert data, "closed"
            at = received % 2  # a PINGRESP may span two reads
            assert data == (b"\xd0\x00" * (len(data) // 2 + 2))[at : at + len(data)]
            received += len(data)
    finally:
        deaf.close()
