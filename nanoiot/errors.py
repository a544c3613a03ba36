"""The one error hierarchy of NanoIoT.

Every error a user can cause or meet is one of these; the errors of our dependencies
(cryptography, SQLAlchemy, amqtt, ...) are mapped to them at the edge of the package that
uses the dependency, so callers handle ours only::

    NanoIoTError                     root; str(error) is one line meant for the user
    ├── ConfigError                  bad or unknown setting (names the key and the file)
    │   └── TlsConfigError           the broker's TLS key, certificate or keystore is unusable
    ├── CredentialError              a credential value cannot be used as given
    │   ├── PemError                 not a PEM/DER certificate or public key, or malformed
    │   ├── PrivateKeyPastedError    a private key was given where a certificate belongs
    │   └── CertificateRejected      parsed, but unusable (for example already expired)
    ├── KeygenError                  key/certificate generation: bad properties, refusals
    ├── StoreError                   anything the credential store reports
    │   ├── NotFoundError            unknown device, credential or CA
    │   ├── ConflictError            a duplicate (name, fingerprint, token, user name)
    │   │   └── AlreadyImportedError the very device a bulk import row describes exists
    │   ├── ValidationError          a value the store refuses (device name, token, ...)
    │   └── StoreUnavailableError    the database cannot be reached
    └── ClusterError                 the cluster's messaging (NATS) reported a problem
        ├── ClusterUnavailableError  NATS cannot be reached or did not answer in time
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


class ClusterConflictError(ClusterError):
    """A compare-and-set lost: the key already exists, or changed since it was read."""
