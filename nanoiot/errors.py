"""The one error hierarchy of NanoIoT.

Every error a user can cause or meet is one of these; the errors of our dependencies
(cryptography, SQLAlchemy, pyOpenSSL, ...) are mapped to them at the edge of the package that
uses the dependency, so callers handle ours only::

    NanoIoTError                     root; str(error) is one line meant for the user
    ├── ConfigError                  bad or unknown setting (names the key and the file)
    │   └── TlsConfigError           the broker's TLS key, certificate or keystore is unusable
    ├── CredentialError              a credential value cannot be used as given
    │   ├── PemError                 not a PEM/DER certificate or public key, or malformed
    │   ├── PrivateKeyPastedError    a private key was given where a certificate belongs
    │   └── CertificateRejected      parsed, but unusable (for example already expired)
    ├── KeygenError                  key/certificate generation: bad properties, refusals
    ├── ProtocolError                an MQTT peer broke the protocol: its connection is closed
    │   ├── MalformedPacket          a packet that cannot be decoded as the standard says
    │   └── ConnectRefused           a CONNECT answered with a refusal code, then closed
    ├── StoreError                   anything the credential store reports
    │   ├── NotFoundError            unknown device, credential or CA
    │   ├── ConflictError            a duplicate (name, fingerprint, token, user name)
    │   │   └── AlreadyImportedError the very device a bulk import row describes exists
    │   ├── ValidationError          a value the store refuses (device name, token, ...)
    │   └── StoreUnavailableError    the database cannot be reached
    └── ClusterError                 the cluster's messaging (NATS) reported a problem
        ├── ClusterUnavailableError  NATS cannot be reached or did not answer in time
        │   └── ClusterFullError     a cluster bound (cluster_max_parked_bytes) refused it
        └── ClusterConflictError     a compare-and-set lost: the key exists or has changed

Only NanoIoTError and its subclasses are raised on purpose; anything else is a bug.
"""


class NanoIoTError(Exception):
    """Root of every error NanoIoT raises on purpose."""


class ConfigError(NanoIoTError):
    """A setting is unknown, of the wrong type, or inconsistent with another."""


class TlsConfigError(ConfigError):
    """The broker's own TLS credentials or policy cannot be used (names the setting and file)."""


class CredentialError(NanoIoTError):
    """A credential value cannot be used as given."""


class PemError(CredentialError):
    """The input is not a certificate or public key we can read."""


class PrivateKeyPastedError(CredentialError):
    """A private key was supplied where a certificate or public key belongs.

    The message never contains the key material.
    """


class CertificateRejected(CredentialError):
    """The certificate parsed, but cannot be accepted (for example, it has expired)."""


class KeygenError(NanoIoTError):
    """Key or certificate generation cannot proceed (bad properties, refused overwrite)."""


class ProtocolError(NanoIoTError):
    """An MQTT client broke the protocol; the server closes its connection (MQTT 3.1.1 §4.8).

    ``reason_code`` is the MQTT 5 reason code that names the problem (§2.4): 0x81 malformed
    packet, 0x82 protocol error, 0x95 packet too large, ...
    """

    reason_code = 0x82

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(ProtocolError):
    """A packet that cannot be decoded as the standard says (MQTT 5 reason code 0x81)."""

    reason_code = 0x81


class ConnectRefused(ProtocolError):
    """A CONNECT the server answers with a CONNACK refusal, then closes (MQTT 3.1.1 §3.1.4):
    ``return_code`` is the 3.1.1 return code (§3.2.2.3), ``connack_reason`` the MQTT 5 reason
    code where 5.0 has a more precise one."""

    def __init__(self, message: str, return_code: int, *, reason_code: int | None = None) -> None:
        super().__init__(message, reason_code)
        self.return_code = return_code
        # The MQTT 5 reason code when it says more than the 3.1.1 return code (5.0 §3.2.2.2).
        self.connack_reason = reason_code


class SessionQuotaExceeded(ConnectRefused):
    """A CONNECT that would start one more session for a device that holds
    ``max_sessions_per_device``: CONNACK 3 (server unavailable), MQTT 5 0x97 quota exceeded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 3, reason_code=0x97)


class StoreError(NanoIoTError):
    """The device-credential store reported a problem."""


class NotFoundError(StoreError):
    """The device, credential or CA does not exist."""


class ConflictError(StoreError):
    """The value is already registered (device name, fingerprint, token, user name)."""


class AlreadyImportedError(ConflictError):
    """A bulk import row whose device exists already, with that row's certificate: an earlier
    import of the same file got that far (a re-run after a crash meets these rows)."""


class ValidationError(StoreError):
    """The store refuses a value (for example a device name MQTT cannot carry)."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached; callers may retry later."""


class ClusterError(NanoIoTError):
    """The cluster's messaging (NATS) reported a problem."""


class ClusterUnavailableError(ClusterError):
    """NATS cannot be reached or did not answer in time; callers may retry later."""


class ClusterFullError(ClusterUnavailableError):
    """A bound of the cluster's (``cluster_max_parked_bytes``) refused what was sent; the
    sender may send it again later."""


class ClusterConflictError(ClusterError):
    """A compare-and-set lost: the key already exists, or changed since it was read."""
