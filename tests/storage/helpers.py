"""Credentials made at test time for the store tests (no key is ever written or committed)."""

from auth import ParsedCredential, parse_credential
from tests.certgen import issue, new_key


def x509(cn: str = "device", kind: str = "ec") -> ParsedCredential:
    """A freshly generated self-signed certificate, parsed (never written to disk)."""
    return parse_credential(issue(cn, key=new_key(kind)).cert_pem)


def public_key(kind: str = "ec") -> ParsedCredential:
    """A bare PUBLIC KEY, parsed."""
    return parse_credential(issue("bare", key=new_key(kind)).public_key_pem)


def ca_certificate(cn: str = "Test CA") -> ParsedCredential:
    return parse_credential(issue(cn, ca=True).cert_pem)
