"""The work a client's certificate chain can make the handshake do is bounded: at most
``max_client_chain_certificates`` certificates, and no RSA key whose public exponent makes a
signature check as costly as a private-key operation."""

import math
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from broker.tls import build_server_context
from nanoiot.settings import Settings
from tests.broker.test_tls_context import handshake, signing_key
from tests.certgen import Issued, issue


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


def test_a_chain_up_to_the_bound_completes_the_handshake(
    tls_settings: Callable[..., Settings],
) -> None:
    chain = chain_of(5)
    server, _ = handshake(build_server_context(tls_settings()), client_sending(chain))
    sent = server.get_peer_cert_chain(as_cryptography=True)
    assert sent is not None
    # On the server's side OpenSSL leaves the leaf out of the peer's chain.
    assert list(sent) == [i.cert for i in chain[1:]]
    assert server.get_peer_certificate(as_cryptography=True) == chain[0].cert


@pytest.mark.parametrize("bound", [1, 5])
def test_a_chain_past_the_bound_fails_the_handshake(
    tls_settings: Callable[..., Settings], bound: int
) -> None:
    ctx = build_server_context(tls_settings(max_client_chain_certificates=bound))
    with pytest.raises(SSL.Error):
        handshake(ctx, client_sending(chain_of(bound + 1)))


def test_a_ca_key_with_a_long_public_exponent_fails_the_handshake(
    tls_settings: Callable[..., Settings],
) -> None:
    # The CA at the top of the chain is the first certificate OpenSSL would verify a
    # signature with: it must be refused before its key is used.
    chain = chain_of(2, top_key=long_exponent_key())
    with pytest.raises(SSL.Error):
        handshake(build_server_context(tls_settings()), client_sending(chain))


def test_a_device_key_with_a_long_public_exponent_fails_the_handshake(
    tls_settings: Callable[..., Settings],
) -> None:
    # CertificateVerify (RFC 8446 §4.4.3) is checked with the leaf's key.
    chain = [issue("device", key=long_exponent_key())]
    with pytest.raises(SSL.Error):
        handshake(build_server_context(tls_settings()), client_sending(chain))


def test_rsa_keys_with_the_usual_exponent_are_accepted(
    tls_settings: Callable[..., Settings],
) -> None:
    ca = issue("ca", key=rsa.generate_private_key(public_exponent=65537, key_size=2048), ca=True)
    leaf = issue(
        "device", key=rsa.generate_private_key(public_exponent=65537, key_size=2048), issuer=ca
    )
    handshake(build_server_context(tls_settings()), client_sending([leaf, ca]))
