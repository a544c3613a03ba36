"""What a TLS peer checks in each certificate, one property per test (RFC 5280 sections)."""

import datetime as dt
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nanoiot.keygen.certs import (
    CLOCK_SKEW,
    client_certificate,
    device_ca,
    distinguished_name,
    new_key,
    server_certificate,
)
from nanoiot.keygen.properties import KeyAlgorithm, KeygenProperties, build_properties

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def props() -> KeygenProperties:
    return build_properties({"DOMAIN_SUFFIX": "broker.example", "CLIENT_CN": "sensor-1"}, "t")


E = TypeVar("E", bound=x509.ExtensionType)


def ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def test_server_certificate_is_a_self_signed_tls_server_leaf(props: KeygenProperties) -> None:
    cert = server_certificate(props, new_key(KeyAlgorithm.EC, 256), NOW).cert
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "broker.example"
    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical  # RFC 5280 §4.2.1.9
    assert not basic.value.ca
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example", "localhost"]
    usage = ext(cert, x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_encipherment
    assert not usage.key_cert_sign
    assert (
        ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(cert, x509.SubjectKeyIdentifier).value.digest
    )


def test_validity_starts_before_now_and_lasts_validity_days(props: KeygenProperties) -> None:
    cert = server_certificate(props, new_key(KeyAlgorithm.EC, 256), NOW).cert
    assert cert.not_valid_before_utc == NOW - CLOCK_SKEW
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=props.validity_days)


def test_rsa_server_may_be_used_for_rsa_key_transport() -> None:
    props = build_properties({"DOMAIN_SUFFIX": "b", "KEY_ALGORITHM": "RSA"}, "t")
    key = new_key(props.key_algorithm, props.key_size)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    cert = server_certificate(props, key, NOW).cert
    assert ext(cert, x509.KeyUsage).value.key_encipherment


def test_p384_keys_are_signed_with_sha384(props: KeygenProperties) -> None:
    key = new_key(KeyAlgorithm.EC, 384)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = server_certificate(props, key, NOW).cert
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)


def test_self_signed_device_certificate(props: KeygenProperties) -> None:
    cert = client_certificate(props, new_key(KeyAlgorithm.EC, 256), NOW).cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sensor-1"
    assert cert.subject == cert.issuer
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not ext(cert, x509.BasicConstraints).value.ca
    assert not ext(cert, x509.KeyUsage).value.key_encipherment
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)


def test_two_devices_never_share_a_dn_or_serial(props: KeygenProperties) -> None:
    other = build_properties({"DOMAIN_SUFFIX": "broker.example", "CLIENT_CN": "sensor-2"}, "t")
    first = client_certificate(props, new_key(KeyAlgorithm.EC, 256), NOW).cert
    second = client_certificate(other, new_key(KeyAlgorithm.EC, 256), NOW).cert
    assert first.subject != second.subject
    assert first.serial_number != second.serial_number


def test_device_ca_signs_end_entities_only(props: KeygenProperties) -> None:
    ca = device_ca(props, new_key(KeyAlgorithm.EC, 256), NOW).cert
    basic = ext(ca, x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    assert basic.value.path_length == 0
    usage = ext(ca, x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign


def test_ca_issued_device_certificate_links_by_key_identifiers(props: KeygenProperties) -> None:
    ca = device_ca(props, new_key(KeyAlgorithm.EC, 256), NOW)
    device = client_certificate(props, new_key(KeyAlgorithm.EC, 256), NOW, ca)
    cert = device.cert
    assert cert.issuer == ca.cert.subject
    assert (
        ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(ca.cert, x509.SubjectKeyIdentifier).value.digest
    )
    cert.verify_directly_issued_by(ca.cert)


def test_device_certificate_never_outlives_its_ca() -> None:
    short = build_properties({"DOMAIN_SUFFIX": "b", "VALIDITY_DAYS": "10"}, "t")
    long = build_properties({"DOMAIN_SUFFIX": "b", "VALIDITY_DAYS": "1000"}, "t")
    ca = device_ca(short, new_key(KeyAlgorithm.EC, 256), NOW)
    cert = client_certificate(long, new_key(KeyAlgorithm.EC, 256), NOW, ca).cert
    assert cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_empty_dn_parts_are_left_out() -> None:
    props = build_properties(
        {
            "DOMAIN_SUFFIX": "b",
            "ORGANIZATIONAL_UNIT": "",
            "CITY": "",
            "TWO_LETTER_COUNTRY_CODE": "de",
        },
        "t",
    )
    name = distinguished_name(props, "cn")
    assert name.rfc4514_string() == "C=DE,ST=CA,O=NanoIoT,CN=cn"
