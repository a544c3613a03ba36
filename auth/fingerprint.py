"""Fingerprints that identify a device credential.

- ``spki_sha256``: SHA-256 over the DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), lowercase hex.
  It is our lookup key: it names the key pair, so a renewed certificate for the same key still
  matches, and it is what TLS proves possession of (the CertificateVerify message).
- ``reference_credentials_id``: ``sha3_256(base64(DER certificate))`` in lowercase hex, the
  ``credentialsId`` the reference system shows for X.509 credentials, kept for compatibility.
"""

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def spki_der(public_key: PublicKeyTypes) -> bytes:
    """DER encoding of the key's SubjectPublicKeyInfo."""
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def spki_sha256(public_key: PublicKeyTypes) -> str:
    """The lookup key of a public key: SHA-256 of its DER SubjectPublicKeyInfo, hex."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def spki_sha256_of_der(spki: bytes) -> str:
    """Same as ``spki_sha256`` for an already encoded SubjectPublicKeyInfo."""
    return hashlib.sha256(spki).hexdigest()


def reference_credentials_id(der: bytes) -> str:
    """The reference system's id: SHA3-256 of the base64 text of the DER bytes, hex."""
    return hashlib.sha3_256(base64.b64encode(der)).hexdigest()
