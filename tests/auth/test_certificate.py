import base64
import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from auth.certificate import load_certificate, parse_credential
from nanoiot.errors import PemError, PrivateKeyPastedError
from tests.certgen import issue, new_key


def _spki_hash(der_spki: bytes) -> str:
    return hashlib.sha256(der_spki).hexdigest()


def test_certificate_fields_and_both_fingerprints() -> None:
    device = issue("thermostat-7", serial=0xABCDEF)
    parsed = parse_credential(device.cert_pem)
    spki = device.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert parsed.spki_sha256 == _spki_hash(spki)
    # The reference system's id: sha3_256 over the base64 text of the DER certificate.
    expected_id = hashlib.sha3_256(base64.b64encode(device.cert_der)).hexdigest()
    assert parsed.credentials_id == expected_id
    assert parsed.subject == "CN=thermostat-7"
    assert parsed.common_name == "thermostat-7"
    assert parsed.issuer == "CN=thermostat-7"
    assert parsed.serial == "abcdef"
    assert parsed.key_type == "EC P-256"
    assert parsed.key_size == 256
    assert parsed.not_before == device.cert.not_valid_before_utc
    assert parsed.not_after == device.cert.not_valid_after_utc
    assert parsed.is_certificate
    assert parsed.pem == device.cert_pem


@pytest.mark.parametrize(
    ("kind", "key_type", "size"), [("rsa", "RSA", 2048), ("ed25519", "Ed25519", 256)]
)
def test_key_types_are_described(kind: str, key_type: str, size: int) -> None:
    parsed = parse_credential(issue("d", key=new_key(kind)).cert_pem)
    assert (parsed.key_type, parsed.key_size) == (key_type, size)


def test_der_certificate_is_accepted() -> None:
    device = issue("d")
    assert parse_credential(device.cert_der).pem == device.cert_pem


def test_bare_public_key_has_the_same_lookup_key_as_its_certificate() -> None:
    device = issue("d")
    from_key = parse_credential(device.public_key_pem)
    assert from_key.spki_sha256 == parse_credential(device.cert_pem).spki_sha256
    assert not from_key.is_certificate
    assert from_key.subject is None
    assert from_key.pem.startswith("-----BEGIN PUBLIC KEY-----\n")


def test_chain_keeps_the_leaf_and_reports_the_rest() -> None:
    ca = issue("Fleet CA", ca=True)
    leaf = issue("device-9", issuer=ca)
    parsed = parse_credential(leaf.cert_pem + ca.cert_pem)
    assert parsed.common_name == "device-9"
    assert parsed.ignored_chain == ("CN=Fleet CA",)


def test_chain_in_the_wrong_order_is_refused() -> None:
    ca = issue("Fleet CA", ca=True)
    leaf = issue("device-9", issuer=ca)
    with pytest.raises(PemError, match="wrong order"):
        parse_credential(ca.cert_pem + leaf.cert_pem)


def test_nopass_pem_with_key_is_refused() -> None:
    device = issue("d")
    with pytest.raises(PrivateKeyPastedError, match="private key"):
        parse_credential(device.key_pem + device.cert_pem)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x30\x03\x02\x01\x01", "neither PEM text"),
        ("just some text", "no '-----BEGIN"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----",
            "signing request",
        ),
        ("-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----", "found 'PKCS7'"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "not a valid X.509"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a valid public key"),
    ],
)
def test_bad_input_gets_one_clear_line(data: str | bytes, message: str) -> None:
    with pytest.raises(PemError, match=message) as caught:
        parse_credential(data)
    assert "\n" not in str(caught.value)


def test_expired_certificate_still_parses_with_its_dates() -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    old = issue("old", not_before=past, not_after=past + dt.timedelta(days=1))
    parsed = parse_credential(old.cert_pem)
    assert parsed.not_after == past + dt.timedelta(days=1)


def test_load_certificate_returns_the_leaf() -> None:
    ca = issue("CA", ca=True)
    leaf = issue("leaf", issuer=ca)
    assert load_certificate(leaf.cert_pem + ca.cert_pem) == leaf.cert
    assert load_certificate(leaf.cert_der) == leaf.cert
    with pytest.raises(PemError, match="no CERTIFICATE"):
        load_certificate(leaf.public_key_pem)
