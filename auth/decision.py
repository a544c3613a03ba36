"""The allow/deny decision for one MQTT connection, with its reason.

Pure functions over what the TLS handshake and the store reported: no I/O here, so every
rule is tested without a broker. The broker turns a ``Decision`` into a CONNACK return code
(MQTT 3.1.1 §3.2.2.3), one log line, a counter by ``reason`` and an auth event.
"""

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from auth.connack import MQTT5_REASON_CODE, ConnackCode
from auth.fingerprint import spki_sha256
from auth.keys import CA_AS_DEVICE, DEFAULT_KEYS, KeyPolicy, is_issued_ca_certificate, key_problem
from auth.kinds import CredentialStatus
from auth.validity import validity_problem


class Reason(StrEnum):
    """Why a connection was allowed or refused; the values label metrics and auth events."""

    ALLOWED = "allowed"
    NO_CREDENTIALS = "no_credentials"
    UNKNOWN_KEY = "unknown_key"
    DEVICE_DISABLED = "device_disabled"
    CREDENTIAL_REVOKED = "credential_revoked"
    CREDENTIAL_DISABLED = "credential_disabled"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    NOT_FOR_CLIENT_AUTH = "not_for_client_auth"
    WEAK_KEY = "weak_key"
    CA_AS_DEVICE = "ca_certificate_as_device"
    CERTIFICATE_NOT_PINNED = "certificate_not_pinned"
    ISSUER_MISMATCH = "issuer_mismatch"
    NOT_BOUND_TO_CA = "not_bound_to_ca"
    DEVICE_NOT_CAS = "device_has_other_credentials"
    UNTRUSTED_ISSUER = "untrusted_issuer"
    REVOKED_BY_CA = "revoked_by_ca"
    CA_NO_LONGER_TRUSTED = "ca_no_longer_trusted"
    NAME_NOT_ALLOWED = "name_not_allowed"
    UNKNOWN_TOKEN = "unknown_token"  # noqa: S105 - a reason label
    BAD_USERNAME_OR_PASSWORD = "bad_username_or_password"  # noqa: S105 - a reason label
    CLIENT_ID_MISMATCH = "client_id_mismatch"
    WILL_NOT_ALLOWED = "will_topic_not_allowed"
    STORE_UNAVAILABLE = "store_unavailable"
    # Refused before any password check: the address failed too often, or too many checks
    # are under way (the broker's password gate).
    PASSWORD_THROTTLED = "password_throttled"  # noqa: S105 - a reason label
    PASSWORD_CHECKS_BUSY = "password_checks_busy"  # noqa: S105 - a reason label


_CONNACK = {
    Reason.ALLOWED: ConnackCode.ACCEPTED,
    Reason.STORE_UNAVAILABLE: ConnackCode.SERVER_UNAVAILABLE,
    Reason.PASSWORD_THROTTLED: ConnackCode.SERVER_UNAVAILABLE,
    Reason.PASSWORD_CHECKS_BUSY: ConnackCode.SERVER_UNAVAILABLE,
    Reason.BAD_USERNAME_OR_PASSWORD: ConnackCode.BAD_USERNAME_OR_PASSWORD,
    Reason.CLIENT_ID_MISMATCH: ConnackCode.IDENTIFIER_REJECTED,
}


@dataclass(frozen=True, slots=True)  # one per connected client
class Holder:
    """Who a stored credential belongs to, as the store reports it."""

    device_id: str
    device_name: str
    device_enabled: bool
    credential_id: str
    credential_status: CredentialStatus
    application: bool = False
    # The trusted CA the credential was accepted through (None: pinned by an operator).
    issuer_ca_id: str | None = None
    # What was registered: a certificate's or a bare public key's PEM (auth.pinning).
    pinned_pem: str | None = None


@dataclass(frozen=True, slots=True)  # one per connected client
class Decision:
    """The outcome: ``detail`` is the one line an operator reads in the log."""

    allowed: bool
    reason: Reason
    detail: str
    holder: Holder | None = None
    fingerprint: str | None = None

    @property
    def connack(self) -> ConnackCode:
        """Every refusal is 'not authorised' unless a more precise code exists."""
        return _CONNACK.get(self.reason, ConnackCode.NOT_AUTHORIZED)

    @property
    def reason_code(self) -> int:
        """The reason code an MQTT 5 client reads in its CONNACK (0x87 not authorized, 0x86
        bad user name or password, ...)."""
        return MQTT5_REASON_CODE[self.connack]


def deny(
    reason: Reason, detail: str, *, holder: Holder | None = None, fingerprint: str | None = None
) -> Decision:
    """A refusal for ``reason``; ``detail`` says what an operator needs to fix it."""
    return Decision(False, reason, detail, holder, fingerprint)


def client_auth_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` may not authenticate a TLS client, or None: its extended key usage
    (RFC 5280 §4.2.1.12) or its key usage (§4.2.1.3) leaves client authentication out."""
    return _extended_usage_problem(cert) or _key_usage_problem(cert)


def _extended_usage_problem(cert: x509.Certificate) -> str | None:
    """No EKU extension means any use; otherwise clientAuth or anyExtendedKeyUsage is listed."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if (
        ExtendedKeyUsageOID.CLIENT_AUTH in usages
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    ):
        return None
    names = ", ".join(getattr(oid, "_name", None) or oid.dotted_string for oid in usages)
    return f"certificate is not for client authentication (extended key usage: {names})"


_KEY_USAGE_BITS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
)  # fmt: skip


def _key_usage_problem(cert: x509.Certificate) -> str | None:
    """A TLS client proves it holds its key by signing the handshake (CertificateVerify,
    RFC 8446 §4.4.3, RFC 5246 §7.4.8); a key whose usage extension leaves out digitalSignature
    (keyEncipherment only, keyCertSign only, ...) was not issued for that (§4.2.1.3), and
    OpenSSL refuses it as a client certificate too. No key usage extension means any use."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if usage.digital_signature:
        return None
    names = ", ".join(_camel(bit) for bit in _KEY_USAGE_BITS if getattr(usage, bit)) or "none"
    return (
        "certificate key is not for signing, which a TLS client does "
        f"(key usage: {names}; digitalSignature is needed)"
    )


def _camel(name: str) -> str:
    """RFC 5280's spelling of a key usage bit: ``key_cert_sign`` -> ``keyCertSign``."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def leaf_problem(cert: x509.Certificate, keys: KeyPolicy = DEFAULT_KEYS) -> Decision | None:
    """Why ``cert`` cannot be a device certificate whoever holds it: not for client
    authentication, a CA certificate, or a key below the minimums."""
    usage = client_auth_problem(cert)
    if usage is not None:
        return deny(Reason.NOT_FOR_CLIENT_AUTH, usage)
    if is_issued_ca_certificate(cert):
        return deny(Reason.CA_AS_DEVICE, CA_AS_DEVICE)
    weak = key_problem(cert.public_key(), keys)
    if weak is not None:
        return deny(Reason.WEAK_KEY, weak)
    return None


def decide_certificate(
    cert: x509.Certificate,
    holder: Holder | None,
    *,
    now: datetime,
    check_validity: bool = True,
    keys: KeyPolicy = DEFAULT_KEYS,
) -> Decision:
    """Decide a connection that presented ``cert``, pinned by its public key.

    ``holder`` is what the store found for the key's SPKI SHA-256, or None.
    """
    fingerprint = spki_sha256(cert.public_key())
    if holder is None:
        return deny(
            Reason.UNKNOWN_KEY,
            f"unknown certificate key sha256:{fingerprint}",
            fingerprint=fingerprint,
        )
    refusal = _certificate_problem(cert, now, check_validity, keys) or _holder_problem(holder)
    if refusal is not None:
        return replace(refusal, holder=holder, fingerprint=fingerprint)
    return Decision(
        True, Reason.ALLOWED, f"device '{holder.device_name}' (certificate)", holder, fingerprint
    )


def _certificate_problem(
    cert: x509.Certificate, now: datetime, check_validity: bool, keys: KeyPolicy
) -> Decision | None:
    unfit = leaf_problem(cert, keys)
    if unfit is not None:
        return unfit
    if not check_validity:
        return None
    problem = validity_problem(cert.not_valid_before_utc, cert.not_valid_after_utc, now)
    if problem is None:
        return None
    reason = (
        Reason.CERTIFICATE_EXPIRED
        if problem.startswith("expired")
        else Reason.CERTIFICATE_NOT_YET_VALID
    )
    return deny(reason, f"certificate {problem}")


def _holder_problem(holder: Holder) -> Decision | None:
    if holder.credential_status is CredentialStatus.REVOKED:
        return deny(
            Reason.CREDENTIAL_REVOKED, f"credential of device '{holder.device_name}' was revoked"
        )
    if holder.credential_status is CredentialStatus.DISABLED:
        return deny(
            Reason.CREDENTIAL_DISABLED, f"credential of device '{holder.device_name}' is disabled"
        )
    if not holder.device_enabled:
        return deny(Reason.DEVICE_DISABLED, f"device '{holder.device_name}' is disabled")
    return None


def decide_token(holder: Holder | None) -> Decision:
    """Decide a certless connection whose MQTT user name is an access token."""
    if holder is None:
        return deny(Reason.UNKNOWN_TOKEN, "unknown access token")
    refusal = _holder_problem(holder)
    if refusal is not None:
        return replace(refusal, holder=holder)
    return Decision(True, Reason.ALLOWED, f"device '{holder.device_name}' (access token)", holder)


def decide_basic(holder: Holder | None, username: str) -> Decision:
    """Decide a certless connection with MQTT user name and password (already verified)."""
    if holder is None:
        return deny(Reason.BAD_USERNAME_OR_PASSWORD, f"bad user name or password for '{username}'")
    refusal = _holder_problem(holder)
    if refusal is not None:
        return replace(refusal, holder=holder)
    return Decision(True, Reason.ALLOWED, f"device '{holder.device_name}' (MQTT basic)", holder)


def no_credentials() -> Decision:
    return deny(Reason.NO_CREDENTIALS, "no client certificate and no user name")


def store_unavailable(detail: str) -> Decision:
    return deny(Reason.STORE_UNAVAILABLE, f"credential store unavailable: {detail}")
