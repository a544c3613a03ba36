"""The password throttle counts an IPv6 /64 as one host, as the other per-host bounds do.

The attack: a host owns a whole /64 (RFC 7421) and may use any address in it (RFC 8981).
Counted per address, each new address got a fresh share of the password checks and a fresh
count of failures, so guesses from ever new addresses of one /64 were all checked and never
shut out. Now the failures of the /64 add up: after ``password_failures_before_throttle`` in
a row its new connections, from whichever address in it, are dropped before the TLS
handshake, while a client from the next /64 or an IPv4 one gets in.

Real TLS clients against a real broker on a free port. The loopback has one IPv6 address,
so the clients come as a trusted load balancer's would: from 127.0.0.1, each connection with
a PROXY v2 header (TCP over IPv6) naming its client's address.
"""

import re
import socket
import ssl
from pathlib import Path

from tests.broker.proxy_headers import v2_header
from tests.e2e.harness import WAIT, BrokerThread, running_broker
from tests.reliability.packets import connect
from tests.reliability.wire import client_context

FREE = 2  # password_failures_before_throttle in this test
BALANCER = "127.0.0.1"
_IPV6_TCP = 0x21  # PROXY v2 family byte: AF_INET6, STREAM (proxy-protocol.txt §2.2)
_REFUSED = re.compile(r'^nanoiot_connects_refused_total\{reason="(\w+)"\} (\S+)$', re.M)


def _header(client: str) -> bytes:
    if ":" in client:
        return v2_header(
            family=_IPV6_TCP, source=(client, 40001), destination=("2001:db8:ffff::1", 8883)
        )
    return v2_header(source=(client, 40001), destination=("192.0.2.1", 8883))


def _attempt(broker: BrokerThread, client: str, password: bytes) -> int | None:
    """A CONNECT with user ``app`` from ``client`` behind the balancer: its CONNACK return
    code (MQTT 3.1.1 §3.2.2.3), or None if the broker dropped it before the handshake."""
    raw = socket.create_connection(
        ("127.0.0.1", broker.port), timeout=WAIT, source_address=(BALANCER, 0)
    )
    try:
        raw.sendall(_header(client))
        tls = client_context(broker.server_cert).wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, ConnectionError):
        raw.close()
        return None
    with tls:
        tls.sendall(connect(f"app-{client}", username="app", password=password))
        answer = b""
        while len(answer) < 4 and (chunk := tls.recv(4 - len(answer))):
            answer += chunk
    assert len(answer) == 4, answer
    return answer[3]


def _wrong_passwords(broker: BrokerThread) -> int:
    counts = {found.group(1): found.group(2) for found in _REFUSED.finditer(broker.metrics())}
    return int(float(counts.get("bad_username_or_password", "0")))


def test_guesses_from_new_addresses_of_one_64_are_shut_out_together(tmp_path: Path) -> None:
    settings = {
        "proxy_protocol_trusted": [BALANCER],
        "password_failures_before_throttle": FREE,
        "password_throttle_max_seconds": 60.0,
    }
    with running_broker(tmp_path / "data", **settings) as broker:
        broker.application("app", "app", "the-right-password")
        # FREE failures, then the one that shuts the /64 out (CONNACK 4 each: checked), each
        # from an address of its own.
        for n in range(FREE + 1):
            assert _attempt(broker, f"2001:db8:1:2::{n + 1}", b"guess") == 4
        # Its next address is dropped before the handshake. The first block lasts 1 s and
        # each failure doubles it: on a machine slow enough to let a block end before the
        # next connect, that connect is checked and the next block is longer.
        answers = []
        for n in range(FREE + 1, FREE + 5):
            answers.append(_attempt(broker, f"2001:db8:1:2:{n:x}::{n:x}", b"guess"))
            if answers[-1] is None:
                break
        assert answers[-1] is None, answers
        assert all(answer == 4 for answer in answers[:-1])
        assert _wrong_passwords(broker) == FREE + 1 + len(answers) - 1
        # The next /64 and an IPv4 client are other hosts: admitted with the right password.
        assert _attempt(broker, "2001:db8:1:3::1", b"the-right-password") == 0
        assert _attempt(broker, "203.0.113.9", b"the-right-password") == 0
