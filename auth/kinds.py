"""Credential kinds and states, shared by every layer (the names are the reference system's)."""

from enum import StrEnum


class CredentialType(StrEnum):
    """How a device proves who it is; the values are the REST API's ``credentialsType``."""

    X509_CERTIFICATE = "X509_CERTIFICATE"
    ACCESS_TOKEN = "ACCESS_TOKEN"  # noqa: S105 - a kind name, not a secret
    MQTT_BASIC = "MQTT_BASIC"


class CredentialStatus(StrEnum):
    """Life cycle of one credential.

    ``disabled`` can be enabled again; ``revoked`` is final (RFC 5280 §5.3.1 has no un-revoke
    either, apart from certificateHold, which we model as ``disabled``).
    """

    ACTIVE = "active"
    DISABLED = "disabled"
    REVOKED = "revoked"
