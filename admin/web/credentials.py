"""The Device Credentials form turned into the shared operations' terms, and shown back.

What a credential looks like on the page is decided here too: for X.509 the SPKI SHA-256
fingerprint (what NanoIoT pins), subject, issuer, validity and the reference system's
credentialsId, so an operator can compare with either system's records.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from admin import service
from admin.web.forms import CredentialInput
from auth.certificate import parse_credential
from auth.kinds import CredentialStatus, CredentialType
from auth.validity import validity_problem
from nanoiot.errors import CredentialError, ValidationError
from storage.records import Credential

TYPE_NAMES = {
    CredentialType.ACCESS_TOKEN: "Access token",
    CredentialType.X509_CERTIFICATE: "X.509 Certificate",
    CredentialType.MQTT_BASIC: "MQTT Basic",
}


def spec_of(form: CredentialInput) -> service.CredentialSpec:
    """Raises ValidationError naming the field the operator left empty."""
    if form.type is CredentialType.X509_CERTIFICATE:
        if not form.pem:
            raise ValidationError(
                "Paste the device's certificate (the contents of its .pub.pem file)."
            )
        return service.X509Spec(form.pem)
    if form.type is CredentialType.ACCESS_TOKEN:
        return service.TokenSpec(form.token or None)  # empty: a random token is made
    if not form.username or not form.password:
        raise ValidationError("MQTT Basic needs a user name and a password.")
    return service.BasicSpec(form.username, form.password, form.client_id or None)


@dataclass(frozen=True)
class CredentialView:
    credential: Credential
    type_name: str
    key: str | None = None  # "EC P-256 (256 bits)"
    validity_problem: str | None = None  # "expired on ..." while it is not valid now

    @property
    def active(self) -> bool:
        return self.credential.status is CredentialStatus.ACTIVE


def view_of(credential: Credential, now: datetime | None = None) -> CredentialView:
    type_name = TYPE_NAMES.get(credential.type, str(credential.type))
    if credential.type is not CredentialType.X509_CERTIFICATE:
        return CredentialView(credential, type_name)
    problem = validity_problem(
        credential.not_before, credential.not_after, now or datetime.now(UTC)
    )
    return CredentialView(credential, type_name, _key_of(credential), problem)


def _key_of(credential: Credential) -> str | None:
    if credential.pem is None:
        return None
    try:
        parsed = parse_credential(credential.pem)
    except CredentialError:
        return None  # stored before a parser change: the fingerprint still identifies it
    return f"{parsed.key_type} ({parsed.key_size} bits)"


def ordered(credentials: list[Credential]) -> list[CredentialView]:
    """Active first, then newest first: the one in use leads the section."""
    rank = {CredentialStatus.ACTIVE: 0, CredentialStatus.DISABLED: 1, CredentialStatus.REVOKED: 2}
    by_age = sorted(credentials, key=lambda c: c.created_at, reverse=True)
    return [view_of(c) for c in sorted(by_age, key=lambda c: rank[c.status])]
