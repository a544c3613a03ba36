"""The pure core of NanoIoT: certificates, fingerprints, identity and the allow/deny decision.

Nothing here does I/O, and nothing here imports amqtt, SQLAlchemy or the web stack:
only the standard library, ``cryptography`` and ``nanoiot.errors``. A test enforces it.
Every other layer (storage, broker, CLI, admin API) calls into this package.
"""

from auth.certificate import ParsedCredential, parse_credential
from auth.fingerprint import reference_credentials_id, spki_sha256
from auth.kinds import CredentialStatus, CredentialType
from auth.pem import PemBlock, split_pem

__all__ = [
    "CredentialStatus",
    "CredentialType",
    "ParsedCredential",
    "PemBlock",
    "parse_credential",
    "reference_credentials_id",
    "spki_sha256",
    "split_pem",
]
