"""Keys and certificates for the broker, the devices and the optional device CA.

Pure: values in, ``cryptography`` objects out; no files, no clock (``now`` is passed in).
Every choice that a TLS peer checks is made here, with the RFC 5280 section that decides it.
"""

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nanoiot.keygen.properties import KeyAlgorithm, KeygenProperties

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Devices with a slightly slow clock would otherwise refuse a certificate made a second ago.
CLOCK_SKEW = dt.timedelta(minutes=5)
DEVICE_CA_CN = "NanoIoT Device CA"
_CURVES = {256: ec.SECP256R1(), 384: ec.SECP384R1()}


@dataclass(frozen=True)
class Issued:
    """A private key and the certificate for its public key."""

    key: PrivateKey
    cert: x509.Certificate


def new_key(algorithm: KeyAlgorithm, size: int) -> PrivateKey:
    if algorithm is KeyAlgorithm.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    return ec.generate_private_key(_CURVES[size])


def distinguished_name(props: KeygenProperties, common_name: str) -> x509.Name:
    """CN plus the reference's OU, O, L, ST, C; an empty property is left out of the DN."""
    parts = [
        (NameOID.COMMON_NAME, common_name),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, props.organizational_unit),
        (NameOID.ORGANIZATION_NAME, props.organization),
        (NameOID.LOCALITY_NAME, props.city),
        (NameOID.STATE_OR_PROVINCE_NAME, props.state_or_province),
        (NameOID.COUNTRY_NAME, props.two_letter_country_code.upper()),
    ]
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts if value])


def server_certificate(props: KeygenProperties, key: PrivateKey, now: dt.datetime) -> Issued:
    """The broker's self-signed certificate, also the trust anchor clients pass as ca_certs.

    CN is DOMAIN_SUFFIX as in the reference, but clients match the host name against the SAN
    only (RFC 6125 §6.4.4, RFC 5280 §4.2.1.6), hence SUBJECT_ALTERNATIVE_NAMES.
    """
    name = distinguished_name(props, props.domain_suffix)
    builder = _leaf(name, name, key.public_key(), now, props.validity_days)
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
    ).add_extension(_leaf_key_usage(key, key_exchange=True), critical=True)
    if props.subject_alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(props.subject_alternative_names)), critical=False
        )
    builder = _self_identified(builder, key)
    return Issued(key, builder.sign(key, _hash(key)))


def device_ca(props: KeygenProperties, key: PrivateKey, now: dt.datetime) -> Issued:
    """A CA that only signs device certificates.

    RFC 5280 §4.2.1.9: cA=TRUE, and pathLenConstraint 0 because it signs end entities only;
    §4.2.1.3: keyCertSign and cRLSign, so the broker can later be given its CRL.
    """
    name = distinguished_name(props, f"{DEVICE_CA_CN} {props.domain_suffix}"[:64])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=props.validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    )
    builder = _self_identified(builder, key)
    return Issued(key, builder.sign(key, _hash(key)))


def client_certificate(
    props: KeygenProperties, key: PrivateKey, now: dt.datetime, ca: Issued | None = None
) -> Issued:
    """A device certificate: self-signed, or issued by the device CA when ``ca`` is given.

    CN = CLIENT_CN (the device name), so two devices never share a DN: the reference gave
    every device the same DN, which makes OpenSSL trust-store lookups collide.
    """
    subject = distinguished_name(props, props.client_cn)
    issuer = ca.cert.subject if ca is not None else subject
    not_after_limit = ca.cert.not_valid_after_utc if ca is not None else None
    builder = _leaf(subject, issuer, key.public_key(), now, props.validity_days, not_after_limit)
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    ).add_extension(_leaf_key_usage(key, key_exchange=False), critical=True)
    if ca is None:
        builder = _self_identified(builder, key)
        return Issued(key, builder.sign(key, _hash(key)))
    # RFC 5280 §4.2.1.1: AKI = the issuer's SKI, so the verifier picks the right CA key even
    # after the CA is renewed under the same name; §4.2.1.2: the device's own SKI.
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
    )
    return Issued(key, builder.sign(ca.key, _hash(ca.key)))


def _leaf(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    now: dt.datetime,
    days: int,
    not_after_limit: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    """Common to server and device certificates.

    RFC 5280 §4.2.1.9: cA=FALSE (critical) so the key can never sign other certificates,
    even though the self-signed ones also serve as their own trust anchor.
    RFC 5280 §4.1.2.5: a leaf should not outlive its issuer, hence ``not_after_limit``.
    """
    not_after = now + dt.timedelta(days=days)
    if not_after_limit is not None:
        not_after = min(not_after, not_after_limit)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )


def _self_identified(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.CertificateBuilder:
    """SKI (RFC 5280 §4.2.1.2) and the matching AKI (§4.2.1.1) of a self-signed certificate.

    The AKI may be omitted when self-signed, but strict verifiers (OpenSSL's X509_STRICT,
    Python 3.13's default) expect it, and it costs nothing.
    """
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return builder.add_extension(ski, critical=False).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
    )


def _leaf_key_usage(key: PrivateKey, *, key_exchange: bool) -> x509.KeyUsage:
    """RFC 5280 §4.2.1.3: signing for TLS 1.3 and ECDHE; an RSA server under TLS 1.2 may
    also be asked for RSA key transport (keyEncipherment)."""
    return _key_usage(
        digital_signature=True,
        key_encipherment=key_exchange and isinstance(key, rsa.RSAPrivateKey),
    )


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-384 for P-384 keys (matching strength, RFC 5480 §4), SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == 384:
        return hashes.SHA384()
    return hashes.SHA256()
