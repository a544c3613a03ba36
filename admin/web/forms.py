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


# What a form can be refused for, shown inline with the user's input kept.
REFUSED = (CredentialError, ValidationError, ConflictError)


def refusal_status(exc: Exception) -> int:
    """409 for a duplicate (as the REST API answers), 400 for any other refused input."""
    return 409 if isinstance(exc, ConflictError) else 400


def text(form: FormData, name: str, limit: int, *, strip: bool = True) -> str:
    """The field ``name``, at most ``limit`` characters of it (``http_max_form_field_bytes``:
    a certificate chain fits many times over; anything longer is a mistake)."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    value = value[:limit]
    return value.strip() if strip else value


async def bytes_or_file(
    form: FormData, text_name: str, file_name: str, *, limit: int, text_limit: int
) -> bytes:
    """A pasted value (at most ``text_limit`` characters), or else the content of an uploaded
    file, as bytes (DER is binary). At most ``limit`` + 1 bytes of the file are read, so the
    caller can tell that it is too large."""
    pasted = text(form, text_name, text_limit)
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
    def from_form(cls, form: FormData, limit: int, prefix: str = "") -> "CredentialInput":
        try:
            kind = CredentialType(text(form, prefix + "credentials_type", limit))
        except ValueError:
            kind = CredentialType.X509_CERTIFICATE
        return cls(
            type=kind,
            pem=text(form, prefix + "pem", limit),
            token=text(form, prefix + "token", limit),
            client_id=text(form, prefix + "client_id", limit),
            username=text(form, prefix + "username", limit),
            password=text(form, prefix + "password", limit, strip=False),
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
    def from_form(cls, form: FormData, limit: int) -> "DeviceInput":
        return cls(
            name=text(form, "name", limit),
            label=text(form, "label", limit),
            with_credentials=text(form, "with_credentials", limit) == "yes",
            credentials=CredentialInput.from_form(form, limit),
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
    async def from_form(cls, form: FormData, limit: int) -> "CAInput":
        return cls(
            name=text(form, "name", limit),
            pem=text(form, "pem", limit),
            certificate=await bytes_or_file(form, "pem", "pem_file", limit=limit, text_limit=limit),
            cn_regex=text(form, "cn_regex", limit),
            create_devices=text(form, "create_devices", limit) == "yes",
        )
