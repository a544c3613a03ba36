"""A TLS handshake between two Python ``ssl`` contexts over memory BIOs: no sockets, no threads."""

import ssl
from pathlib import Path


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """Run the handshake to completion; returns the server side (for ``getpeercert``).

    Raises the ``ssl.SSLError`` of whichever side refuses the other.
    """
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(client_in, client_out, server_hostname=hostname)
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    sides = (
        ("client", client_side, client_out, server_in),
        ("server", server_side, server_out, client_in),
    )
    for _ in range(20):
        for name, side, sent, peer_incoming in sides:
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_incoming.write(sent.read())
        if all(done.values()):
            return server_side
    raise AssertionError("the TLS handshake did not finish")


def server_context(cert: Path, key: Path, trust: Path) -> ssl.SSLContext:
    """The broker's side: its own certificate, a client certificate required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(trust)
    return context


def client_context(ca_certs: Path, certfile: Path) -> ssl.SSLContext:
    """What paho's ``tls_set(ca_certs=..., certfile=..., keyfile=None)`` builds, plus strict
    checks (the default from Python 3.13 on), so the files keep working there."""
    context = ssl.create_default_context(cafile=ca_certs)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_cert_chain(certfile, None)
    return context
