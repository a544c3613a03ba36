"""TLS 1.3 session tickets leave with the first record after the handshake (the CONNACK), in
one write (``broker.transport``): a client still gets them and can resume its session."""

import socket
import ssl
from pathlib import Path

from tests.e2e.harness import WAIT, BrokerThread, write_pem

CONNECT = b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03tix"


def _connect(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    tls = context.wrap_socket(raw, server_hostname="localhost", session=session)
    tls.sendall(CONNECT)
    assert tls.recv(4) == b"\x20\x02\x00\x00"
    return tls


def test_tickets_arrive_with_connack_and_resume(broker: BrokerThread, tmp_path: Path) -> None:
    _, issued = broker.provision("tix")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(broker.server_cert)
    context.load_cert_chain(write_pem(tmp_path, issued, "tix"))

    with _connect(broker.port, context, None) as first:
        assert first.version() == "TLSv1.3"
        session = first.session
        assert session is not None
        assert session.has_ticket  # read together with the CONNACK
        first.sendall(b"\xe0\x00")
    with _connect(broker.port, context, session) as second:
        assert second.session_reused
        second.sendall(b"\xe0\x00")
