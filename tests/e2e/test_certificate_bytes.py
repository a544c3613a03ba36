"""``max_client_chain_bytes``: a connection keeps the certificates its client sent while it
lasts, so their size is bounded. Before, a device whose key is registered could present it in
a certificate padded to some 60 KB (OpenSSL takes a 100 KiB Certificate message) on each of
its connections: 60 times what a device certificate takes, held by the broker. Real broker,
real TLS, paho."""

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier
from pydantic import ValidationError

from broker.tls import sent_chain_refused
from broker.tls_failures import TlsFailureReason
from tests.certgen import Issued, issue, new_key
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, device_client

DEFAULT_BOUND = 16 * 1024  # max_client_chain_bytes
_PADDING = ObjectIdentifier("1.3.6.1.4.1.55555.1")  # a private, non-critical extension


def padded(cn: str, size: int) -> Issued:
    """A self-signed device certificate that takes about ``size`` bytes in DER."""
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    filler = b"\x04\x82" + (size - 500).to_bytes(2, "big") + b"A" * (size - 500)  # OCTET STRING
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.UnrecognizedExtension(_PADDING, filler), critical=False)
    )  # fmt: skip
    return Issued(builder.sign(key, hashes.SHA256()), key)


def test_a_chain_past_max_client_chain_bytes_fails_the_handshake(
    broker: BrokerThread, tmp_path: Path
) -> None:
    within, past = padded("within", 15 * 1024), padded("past", 17 * 1024)
    assert len(within.cert_der) <= DEFAULT_BOUND < len(past.cert_der)
    broker.provision("within", within)
    broker.provision("past", past)  # its key is registered: it would be let in
    client, _ = device_client(broker, tmp_path, "within", within)
    try:
        assert client.wait_connack() == 0
    finally:
        client.close()
    client, _ = device_client(broker, tmp_path, "past", past)
    try:
        assert client.disconnected.wait(WAIT)
        assert client.connack.empty()
    finally:
        client.close()
    assert broker.settings.max_client_chain_bytes == DEFAULT_BOUND
    counts = broker.running.tls_failures.counts
    assert counts[TlsFailureReason.CLIENT_CHAIN_REFUSED] == 1


def test_the_bytes_of_every_certificate_sent_count() -> None:
    """The leaf and what the client sent after it (those that chain nowhere too)."""
    ca = issue("ca", ca=True)
    leaf = issue("device", issuer=ca)
    chain = [leaf.cert, ca.cert]
    size = sum(len(c.public_bytes(Encoding.DER)) for c in chain)
    assert not sent_chain_refused(chain, 5, size)
    assert sent_chain_refused(chain, 5, size - 1)
    assert not sent_chain_refused(chain, 5, None)  # a context made without the setting


def test_the_bound_itself_is_bounded(tmp_path: Path) -> None:
    """Not below a device certificate and a CA's, not above OpenSSL's own 100 KiB."""
    for value in (2047, 100 * 1024 + 1):
        with pytest.raises(ValidationError, match="max_client_chain_bytes"):
            broker_settings(tmp_path, max_client_chain_bytes=value)
