"""The work a client's certificate chain can make the handshake do is bounded: at most
``max_client_chain_certificates`` certificates, and no RSA key whose public exponent makes a
signature check as costly as a private-key operation."""

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from OpenSSL import SSL

from broker.tls import build_server_context, sent_chain_refused
from nanoiot.settings import Settings
from tests.broker.tls_handshakes import chain_of, client_sending, handshake, long_exponent_key
from tests.certgen import issue


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


def test_a_dsa_ca_in_the_chain_fails_the_handshake(
    tls_settings: Callable[..., Settings],
) -> None:
    # NanoIoT accepts no DSA key; one above the device's certificate could only cost work.
    ca = issue("ca", key=dsa.generate_private_key(2048), ca=True)
    leaf = issue("device", issuer=ca)
    with pytest.raises(SSL.Error):
        handshake(build_server_context(tls_settings()), client_sending([leaf, ca]))


def test_sent_certificates_with_a_dsa_issuer_key_are_refused() -> None:
    dsa_key = dsa.generate_private_key(2048)
    ca = issue("ca", key=dsa_key, ca=True)
    leaf = issue("device", issuer=ca)
    assert sent_chain_refused([leaf.cert, ca.cert], 5)
    # The device's own DSA key is authentication's to refuse, with its reason.
    assert not sent_chain_refused([issue("device", key=dsa_key).cert], 5)
