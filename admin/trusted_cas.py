"""Trusted-CA checks shared by the REST API (``v1_cas``) and the web UI (``web.cas``)."""

from uuid import UUID

from auth.certificate import ParsedCredential
from auth.chain import trusted_ca_problem
from nanoiot.errors import NotFoundError, ValidationError
from storage.interface import CredentialStore
from storage.records import TrustedCA


def check_is_ca(parsed: ParsedCredential) -> None:
    """Refuse what cannot be a trusted CA (``auth.chain.trusted_ca_problem``)."""
    problem = trusted_ca_problem(parsed)
    if problem is not None:
        raise ValidationError(problem)


async def find_ca(store: CredentialStore, ca_id: UUID) -> TrustedCA:
    for ca in await store.list_trusted_cas():
        if ca.id == ca_id:
            return ca
    raise NotFoundError(f"trusted CA {ca_id} does not exist")
