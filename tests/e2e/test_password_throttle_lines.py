"""A guessing flood from ever new hosts writes a bounded number of "shutting out" lines.

Each host shut out by the password throttle wrote its own warning, and each further block
another: hosts without end (a /48 holds 65,536 hosts of a /64 each) wrote lines without end.
Now a host gets at most one line per ``auth_log_interval_seconds``, at most
``password_throttle_addresses`` hosts get one in an interval, and the others are counted in one
summary line, written at the latest when the broker stops.

Real TLS clients against a real broker on a free port, each CONNECT behind a PROXY v2 header
from a trusted load balancer naming a host of its own (the loopback has a single address).
"""

import logging
import socket
from pathlib import Path

import pytest

from tests.broker.proxy_headers import v2_header
from tests.e2e.harness import WAIT, BrokerThread, running_broker
from tests.reliability.packets import connect
from tests.reliability.wire import client_context

BALANCER = "127.0.0.1"
TRACKED = 3  # password_throttle_addresses in this test
HOSTS = 8


def _guess(broker: BrokerThread, client: str) -> int:
    """A CONNECT with a wrong password from ``client``: its CONNACK return code."""
    raw = socket.create_connection(
        ("127.0.0.1", broker.port), timeout=WAIT, source_address=(BALANCER, 0)
    )
    raw.sendall(v2_header(source=(client, 40001)))
    with client_context(broker.server_cert).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(connect(f"app-{client}", username="app", password=b"guess"))
        answer = b""
        while len(answer) < 4 and (chunk := tls.recv(4 - len(answer))):
            answer += chunk
    assert len(answer) == 4, answer
    return answer[3]


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "broker.password_gate"]


def test_hosts_past_the_tracked_ones_share_one_summary_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.password_gate")
    settings = {
        "proxy_protocol_trusted": [BALANCER],
        "password_failures_before_throttle": 1,
        "password_throttle_addresses": TRACKED,
        "auth_log_interval_seconds": 600.0,
    }
    with running_broker(tmp_path / "data", **settings) as broker:
        broker.application("app", "app", "the-right-password")
        for n in range(HOSTS):  # a free failure, then the one that shuts the host out
            assert [_guess(broker, f"203.0.113.{n + 1}") for _ in range(2)] == [4, 4]
        lines = _lines(caplog)
        assert [line.split()[2] for line in lines] == [
            f"203.0.113.{n + 1}" for n in range(TRACKED)
        ], lines
    summary = _lines(caplog)[TRACKED:]
    assert len(summary) == 1, summary  # written as the broker stopped
    assert summary[0].startswith(f"*: {HOSTS - TRACKED} more shut-outs after failed password")
