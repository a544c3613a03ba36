"""Trusted-CA checks shared by the REST API (``v1_cas``) and the web UI (``web.cas``)."""

from uuid import UUID

from cryptography import x509

from auth.certificate import ParsedCredential, load_certificate
from nanoiot.errors import NotFoundError, ValidationError
from storage.interface import CredentialStore
from storage.records import TrustedCA


def check_is_ca(parsed: ParsedCredential) -> None:
    """RFC 5280 §4.2.1.9: only a certificate asserting basicConstraints cA may issue others."""
    if not parsed.is_certificate:
        raise ValidationError("a trusted CA must be a certificate, not a bare public key")
    try:
        constraints = load_certificate(parsed.pem).extensions.get_extension_for_class(
            x509.BasicConstraints
        )
        is_ca = constraints.value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValidationError(
            f"'{parsed.subject}' is not a CA certificate (basicConstraints cA is false or "
            "absent): give the CA that issues the device certificates"
        )


async def find_ca(store: CredentialStore, ca_id: UUID) -> TrustedCA:
    for ca in await store.list_trusted_cas():
        if ca.id == ca_id:
            return ca
    raise NotFoundError(f"trusted CA {ca_id} does not exist")
