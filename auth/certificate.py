"""Turning operator input into a device credential: a certificate or a bare public key.

``parse_credential`` accepts what operators actually have at hand: the ``.pub.pem`` written by
``client.keygen.sh`` (a certificate, although its name says "public key"), a DER ``.cer``, a
bare ``PUBLIC KEY`` PEM, or a pasted chain. For a chain the leaf is kept and the rest reported;
a chain whose first certificate is a CA is refused as out of order (RFC 5246 §7.4.2 and
RFC 8446 §4.4.2: the sender's certificate comes first).
"""

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from cryptography.x509.oid import NameOID

from auth.fingerprint import reference_credentials_id, spki_der, spki_sha256_of_der
from auth.pem import PemBlock, looks_like_pem, split_pem
from nanoiot.errors import PemError
from nanoiot.text import printable

_CERT_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE"})
_KEY_LABELS = frozenset({"PUBLIC KEY", "RSA PUBLIC KEY"})
_CURVE_NAMES = {
    "secp192r1": "P-192", "secp224r1": "P-224", "secp256r1": "P-256", "secp384r1": "P-384",
    "secp521r1": "P-521",
}  # fmt: skip


@dataclass(frozen=True)
class ParsedCredential:
    """A certificate or bare public key, normalised, with everything we store or show about it.

    For a bare public key the certificate fields (subject, issuer, serial, validity) are None.
    """

    pem: str
    spki_sha256: str
    credentials_id: str
    key_type: str
    key_size: int
    subject: str | None = None
    common_name: str | None = None
    issuer: str | None = None
    serial: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    ignored_chain: tuple[str, ...] = ()
    # basicConstraints cA (RFC 5280 §4.2.1.9) in a certificate another CA issued: an
    # intermediate CA's, never a device's (auth.keys).
    is_ca: bool = False

    @property
    def is_certificate(self) -> bool:
        return self.subject is not None


def parse_credential(data: str | bytes) -> ParsedCredential:
    """Parse a PEM or DER certificate, or a PEM public key, into a ``ParsedCredential``.

    Raises ``PemError`` (or its sibling ``PrivateKeyPastedError``) with a one-line message
    saying what is wrong with the input.
    """
    if isinstance(data, bytes) and not looks_like_pem(data):
        return _from_certificate(_load_der_certificate(data), ())
    blocks = split_pem(data)
    first = blocks[0]
    if first.label in _KEY_LABELS:
        if len(blocks) > 1:
            raise PemError("expected one public key, found more PEM blocks after it")
        return _from_public_key(first)
    if first.label == "CERTIFICATE REQUEST" or first.label == "NEW CERTIFICATE REQUEST":
        raise PemError(
            "this is a certificate signing request (CSR), not a certificate: sign it first"
        )
    if first.label not in _CERT_LABELS:
        raise PemError(f"expected a CERTIFICATE or PUBLIC KEY PEM block, found '{first.label}'")
    certificates = [
        _load_block_certificate(block) for block in blocks if block.label in _CERT_LABELS
    ]
    _check_chain_order(certificates)
    rest = tuple(shown_name(c.subject) for c in certificates[1:])
    return _from_certificate(certificates[0], rest)


def load_certificate(data: str | bytes) -> x509.Certificate:
    """The leaf certificate of PEM or DER input (for callers that need the object itself)."""
    if isinstance(data, bytes) and not looks_like_pem(data):
        return _load_der_certificate(data)
    blocks = [b for b in split_pem(data) if b.label in _CERT_LABELS]
    if not blocks:
        raise PemError("no CERTIFICATE PEM block found")
    return _load_block_certificate(blocks[0])


def describe_key(public_key: PublicKeyTypes) -> tuple[str, int]:
    """A readable key type ("RSA", "EC P-256", "Ed25519") and its size in bits."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        name = public_key.curve.name
        return f"EC {_CURVE_NAMES.get(name, name)}", public_key.curve.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA", public_key.key_size
    raise PemError(f"unsupported public key type {type(public_key).__name__}")


def shown_name(name: x509.Name) -> str:
    """``name`` in RFC 4514 text, as it is stored and shown back (API, web UI, CLI, errors),
    with every character that would not show as itself escaped as in a Python literal:
    controls (a newline would forge a CLI line), and the bidirectional and zero-width format
    characters that make a subject read as another (the rule of ``storage.names`` for the
    names an operator types; a certificate's subject is the issuer's text, so it is escaped,
    not refused). Only shown: identity is the key's fingerprint, never this text."""
    text = name.rfc4514_string()
    return printable(text, len(text))


def common_name(name: x509.Name) -> str | None:
    """The first CN attribute of a name, or None (RFC 5280 §4.1.2.6 allows an empty subject)."""
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def _load_der_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise PemError(
            "not a certificate: neither PEM text ('-----BEGIN CERTIFICATE-----') nor DER"
        ) from None


def _load_block_certificate(block: PemBlock) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(block.der)
    except ValueError as exc:
        raise PemError(f"the CERTIFICATE block is not a valid X.509 certificate: {exc}") from None


def _check_chain_order(certificates: list[x509.Certificate]) -> None:
    if len(certificates) < 2:
        return
    first, second = certificates[0], certificates[1]
    # The leaf is issued by the next certificate; if instead the first issued the second,
    # the chain was pasted root-first.
    if first.subject == second.issuer and first.issuer != second.subject:
        raise PemError(
            "certificate chain in the wrong order: the device (leaf) certificate must come first, "
            f"but the first one, '{shown_name(first.subject)}', issued the second"
        )


def _from_certificate(cert: x509.Certificate, rest: tuple[str, ...]) -> ParsedCredential:
    try:
        public_key = cert.public_key()
    except ValueError as exc:
        raise PemError(f"the certificate's public key cannot be read: {exc}") from None
    key_type, key_size = describe_key(public_key)
    der = cert.public_bytes(Encoding.DER)
    return ParsedCredential(
        pem=PemBlock("CERTIFICATE", der).to_pem(),
        spki_sha256=spki_sha256_of_der(spki_der(public_key)),
        credentials_id=reference_credentials_id(der),
        key_type=key_type,
        key_size=key_size,
        subject=shown_name(cert.subject),
        common_name=common_name(cert.subject),
        issuer=shown_name(cert.issuer),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        ignored_chain=rest,
        is_ca=is_issued_ca_certificate(cert),
    )


def is_issued_ca_certificate(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is a CA certificate (basicConstraints cA, RFC 5280 §4.2.1.9) that
    another CA issued: an intermediate CA, which must never stand for a device.

    A self-signed certificate asserting cA is left alone: ``openssl req -x509`` adds it by
    default, and pinned by its key it can vouch for nothing but itself.
    """
    if cert.issuer == cert.subject:
        return False
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _from_public_key(block: PemBlock) -> ParsedCredential:
    try:
        public_key = load_der_public_key(block.der)
    except (ValueError, TypeError) as exc:
        raise PemError(f"the PUBLIC KEY block is not a valid public key: {exc}") from None
    key_type, key_size = describe_key(public_key)
    spki = spki_der(public_key)
    return ParsedCredential(
        pem=PemBlock("PUBLIC KEY", spki).to_pem(),
        spki_sha256=spki_sha256_of_der(spki),
        credentials_id=reference_credentials_id(spki),
        key_type=key_type,
        key_size=key_size,
    )
