"""Certificates made at test time (no key is ever committed).

Small, explicit builders: each test states the properties it relies on.
"""

import datetime as dt
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = dt.UTC


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(Encoding.PEM).decode()

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()

    @property
    def public_key_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )


def new_key(kind: str = "ec") -> CertificateIssuerPrivateKeyTypes:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def issue(
    cn: str,
    *,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    issuer: Issued | None = None,
    ca: bool = False,
    eku: tuple[x509.ObjectIdentifier, ...] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
    key_usage: x509.KeyUsage | None = None,
) -> Issued:
    """A certificate for ``cn``: self-signed unless ``issuer`` is given; no key usage
    extension unless ``key_usage`` is given."""
    key = key or new_key()
    now = dt.datetime.now(UTC)
    name = x509.Name([_common_name(cn)])
    signer_name = issuer.cert.subject if issuer else name
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    algorithm = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Issued(builder.sign(signer_key, algorithm), key)


def _common_name(cn: str) -> x509.NameAttribute[str]:
    """cryptography refuses a CN past RFC 5280's ub-common-name (64) unless told not to check
    (then it warns): tests of that bound need one, as an attacker's CA-signed leaf may hold."""
    if len(cn) <= 64:
        return x509.NameAttribute(NameOID.COMMON_NAME, cn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)


def revocation_list(
    ca: Issued, *serials: int, signer: Issued | None = None
) -> x509.CertificateRevocationList:
    """A CRL naming ``ca`` as issuer and revoking ``serials``, signed by ``signer`` (default:
    ``ca`` itself; another signer makes a CRL whose signature must not verify)."""
    now = dt.datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=7))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign((signer or ca).key, hashes.SHA256())


def crl_of(ca: Issued, *serials: int, signer: Issued | None = None) -> bytes:
    """A CRL naming ``ca`` as issuer, signed by ``signer`` (default: ``ca`` itself), in DER."""
    return revocation_list(ca, *serials, signer=signer).public_bytes(Encoding.DER)
