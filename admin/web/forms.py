"""What the operator typed into a form, kept as typed so a refused form comes back filled in."""

from dataclasses import dataclass, field, replace

from starlette.datastructures import FormData, UploadFile

from auth.kinds import CredentialType
from nanoiot.errors import (
    ConflictError,
    CredentialError,
    PrivateKeyPastedError,
    ValidationError,
)

# The reference system's names in its credentials dialog, in its order.
CREDENTIAL_CHOICES = (
    (CredentialType.ACCESS_TOKEN, "Access token"),
    (CredentialType.X509_CERTIFICATE, "X.509 Certificate"),
    (CredentialType.MQTT_BASIC, "MQTT Basic"),
)
_MAX_TEXT = 64 * 1024  # a certificate chain fits many times over; anything larger is a mistake
_MAX_UPLOAD = 16 * 1024 * 1024  # a CRL of ~400,000 entries, as the REST API allows


# What a form can be refused for, shown inline with the user's input kept.
REFUSED = (CredentialError, ValidationError, ConflictError)


def refusal_status(exc: Exception) -> int:
    """409 for a duplicate (as the REST API answers), 400 for any other refused input."""
    return 409 if isinstance(exc, ConflictError) else 400


def text(form: FormData, name: str, *, strip: bool = True) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    value = value[:_MAX_TEXT]
    return value.strip() if strip else value


async def bytes_or_file(
    form: FormData, text_name: str, file_name: str, limit: int = _MAX_UPLOAD
) -> bytes:
    """A pasted value, or else the content of an uploaded file, as bytes (DER is binary).
    At most ``limit`` + 1 bytes are read, so the caller can tell that a file is too large."""
    pasted = text(form, text_name)
    if pasted:
        return pasted.encode()
    upload = form.get(file_name)
    if isinstance(upload, UploadFile) and upload.filename:
        return await upload.read(limit + 1)
    return b""


@dataclass(frozen=True)
class CredentialInput:
    """The Device Credentials form. The password is never sent back to the browser."""

    type: CredentialType = CredentialType.X509_CERTIFICATE
    pem: str = ""
    token: str = ""
    client_id: str = ""
    username: str = ""
    password: str = ""

    def refused_with(self, error: Exception) -> "CredentialInput":
        """What to show again after ``error``: never a private key pasted by mistake."""
        return replace(self, pem="") if isinstance(error, PrivateKeyPastedError) else self

    @classmethod
    def from_form(cls, form: FormData, prefix: str = "") -> "CredentialInput":
        try:
            kind = CredentialType(text(form, prefix + "credentials_type"))
        except ValueError:
            kind = CredentialType.X509_CERTIFICATE
        return cls(
            type=kind,
            pem=text(form, prefix + "pem"),
            token=text(form, prefix + "token"),
            client_id=text(form, prefix + "client_id"),
            username=text(form, prefix + "username"),
            password=text(form, prefix + "password", strip=False),
        )


@dataclass(frozen=True)
class DeviceInput:
    """The Add device form: a name, a label, and optionally its first credentials."""

    name: str = ""
    label: str = ""
    with_credentials: bool = False
    credentials: CredentialInput = field(default_factory=CredentialInput)

    def refused_with(self, error: Exception) -> "DeviceInput":
        return replace(self, credentials=self.credentials.refused_with(error))

    @classmethod
    def from_form(cls, form: FormData) -> "DeviceInput":
        return cls(
            name=text(form, "name"),
            label=text(form, "label"),
            with_credentials=text(form, "with_credentials") == "yes",
            credentials=CredentialInput.from_form(form),
        )


@dataclass(frozen=True)
class CAInput:
    """The Add trusted CA form; the certificate is pasted (``pem``) or uploaded (PEM or DER)."""

    name: str = ""
    pem: str = ""
    certificate: bytes = b""
    cn_regex: str = ""
    create_devices: bool = False

    @classmethod
    async def from_form(cls, form: FormData) -> "CAInput":
        return cls(
            name=text(form, "name"),
            pem=text(form, "pem"),
            certificate=await bytes_or_file(form, "pem", "pem_file", limit=_MAX_TEXT),
            cn_regex=text(form, "cn_regex"),
            create_devices=text(form, "create_devices") == "yes",
        )
