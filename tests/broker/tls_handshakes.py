"""In-memory TLS handshakes with pyOpenSSL, and the client chains the handshake tests send."""

import contextlib
import math

from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from broker.tls_keystore import ServerKey
from tests.certgen import Issued, issue


def handshake(server_ctx: SSL.Context, client_ctx: SSL.Context) -> tuple[SSL.Connection, ...]:
    """Run a handshake between two in-memory connections; SSL.Error if it fails."""
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, conn, peer in (("client", client, server), ("server", server, client)):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except SSL.WantReadError:
                    pass
            with contextlib.suppress(SSL.WantReadError):
                peer.bio_write(conn.bio_read(65536))
        if all(done.values()):
            # TLS 1.3: the server's verdict on the client certificate arrives after the
            # client's Finished; a read surfaces it.
            with contextlib.suppress(SSL.WantReadError):
                client.recv(1)
            return server, client
    raise AssertionError("handshake did not finish")


def signing_key(key: object) -> ServerKey:
    assert isinstance(key, ServerKey)
    return key


def long_exponent_key() -> rsa.RSAPrivateKey:
    """An RSA-2048 key with a 2,000-bit public exponent: OpenSSL accepts exponents that long
    for moduli up to 3072 bits, and each verification with it costs as much as signing."""
    p_q = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    p, q = p_q.p, p_q.q
    phi = (p - 1) * (q - 1)
    e = (1 << 2000) + 1
    while math.gcd(e, phi) != 1:
        e += 2
    d = pow(e, -1, phi)
    public = rsa.RSAPublicNumbers(e, p * q)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), rsa.rsa_crt_iqmp(p, q), public
    )
    return numbers.private_key()


def chain_of(length: int, top_key: rsa.RSAPrivateKey | None = None) -> list[Issued]:
    """A leaf and ``length - 1`` CAs above it, each issued by the next; leaf first."""
    top = issue("ca-top", key=top_key, ca=True)
    chain = [top]
    for level in range(length - 2, 0, -1):
        chain.insert(0, issue(f"ca-{level}", issuer=chain[0], ca=True))
    if length > 1:
        chain.insert(0, issue("device", issuer=chain[0]))
    return chain


def client_sending(chain: list[Issued]) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.use_certificate(chain[0].cert)
    for extra in chain[1:]:
        ctx.add_extra_chain_cert(extra.cert)
    ctx.use_privatekey(signing_key(chain[0].key))
    return ctx
