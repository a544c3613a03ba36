"""The one place where the broker's TLS policy is set: ``build_server_context(settings)``.

Why pyOpenSSL and not the stdlib ``ssl`` module: devices authenticate with self-signed
certificates that live in our database (100,000 of them, changing at run time, many sharing
one subject DN). ``ssl`` has no verify callback, so a client certificate that does not chain
to the context's trust store fails the handshake, and the store can neither be grown cheaply
nor shrunk. With pyOpenSSL's ``Context.set_verify(mode, callback)`` the callback accepts any
client chain; TLS still proves that the client holds the private key of the certificate it
sent (RFC 8446 §4.4.3 CertificateVerify), and the application decides after the handshake by
pinning the public key (SHA-256 of the SubjectPublicKeyInfo), or by validating the chain the
client sent against a provisioned CA with ``cryptography``'s X.509 verifier.

Every error of OpenSSL or cryptography met while building the context becomes a
``TlsConfigError`` whose message is one line naming the setting and the file.

This module does no networking and must not import asyncio or amqtt: ``broker.transport``
drives the connections.
"""

import datetime
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from OpenSSL import SSL, crypto
from pydantic import SecretStr

from broker.tls_keystore import ServerKey, load_keystore, read_file
from nanoiot.errors import TlsConfigError
from nanoiot.settings import CredentialsType, Settings

__all__ = [
    "accept_any_client_chain",
    "bounded_client_chain",
    "build_server_context",
    "load_server_credentials",
    "sent_chain_refused",
]

log = logging.getLogger(__name__)

# RFC 8996 deprecates TLS 1.0 and 1.1; OpenSSL 3 also refuses their SHA-1/MD5 handshake
# signatures at its default security level, hence @SECLEVEL=0 when they are let in.
_LEGACY_CIPHERS = b"DEFAULT:@SECLEVEL=0"
_DEFAULT_CIPHERS = b"DEFAULT:!aNULL:!eNULL:!RC4:!3DES:!MD5"

# Lifetime of a resumable session (TLS 1.2 session id or ticket, TLS 1.3 ticket). Resumption
# saves reconnecting devices a full handshake; the peer certificate travels with the session,
# so the post-handshake public-key check still sees it. RFC 8446 §4.6.1 caps it at 7 days.
SESSION_TIMEOUT_SECONDS = 3600


def accept_any_client_chain(
    conn: SSL.Connection, cert: object, errno: int, depth: int, ok: int
) -> bool:
    """Verify callback: accept whatever chain the client sent.

    OpenSSL calls it once per certificate of the client's chain (``depth`` 0 is the leaf) with
    ``ok`` = 0 and ``errno`` = the X.509 verification error when the chain does not lead to our
    (empty) trust store, which is the normal case for a self-signed device certificate.

    Accepting here is safe because the handshake still fails unless the client proves it holds
    the leaf's private key (RFC 8446 §4.4.3, CertificateVerify; RFC 5246 §7.4.8 for TLS 1.2).
    Trust is decided after the handshake, from the leaf's public key.
    """
    return True


# An RSA verification costs one modular squaring per bit of the public exponent. A client
# chooses the keys of its chain: with exponents as long as the modulus (OpenSSL allows that up
# to 3072 bits), each signature of a 60-certificate chain cost about 10 ms, over half a second
# of the event loop's time per handshake. FIPS 186-5 §5.4 already bounds e below 2^256 and Go's
# crypto/rsa refuses e >= 2^31; 65537, the exponent everyone uses, is far below this bound.
MAX_RSA_PUBLIC_EXPONENT_BITS = 32
# A DSA key's check costs exponentiations modulo its prime p, which OpenSSL takes up to 10,000
# bits long: 1.5 ms measured at 4,096 bits, about 9 ms at 10,000 (it grows with the square),
# per certificate, for keys the client chose (four such CAs: five normal handshakes' work).
# NanoIoT never accepts DSA (FIPS 186-5 dropped it; auth.keys refuses a DSA device), so a DSA
# key above the device's own certificate can only be there to cost the broker work. The
# device's own DSA key is left to authentication, which tells the device why it is refused.


def bounded_client_chain(
    max_certificates: int,
) -> Callable[[SSL.Connection, crypto.X509, int, int, int], bool]:
    """A verify callback like ``accept_any_client_chain`` that fails the handshake when the
    client's chain would cost more than a bounded amount of verification.

    OpenSSL shows every certificate to the callback before using its key: the top of the
    chain when it finds no trusted issuer (before any signature is checked), every other one
    once its own signature has been checked with its issuer's key. Refusing a certificate
    there stops the verification before its key is ever used.
    """

    def verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if depth >= max_certificates:
            return False
        try:
            key = cert.get_pubkey().to_cryptography_key()
        except (crypto.Error, ValueError, TypeError):
            # A key cryptography cannot read is one OpenSSL cannot verify with either; the
            # post-handshake check refuses it with a reason the device is told.
            return True
        return not _costly_key(key, issuer=depth > 0)

    return verify


def _costly_key(key: object, *, issuer: bool) -> bool:
    if issuer and isinstance(key, dsa.DSAPublicKey):
        return True
    return (
        isinstance(key, rsa.RSAPublicKey)
        and key.public_numbers().e.bit_length() > MAX_RSA_PUBLIC_EXPONENT_BITS
    )


def sent_chain_refused(
    chain: Sequence[x509.Certificate], max_certificates: int, max_bytes: int | None = None
) -> bool:
    """Whether the certificates a client sent (leaf first) exceed the bounds of
    ``bounded_client_chain``, or take more than ``max_bytes`` (DER) together.

    The verify callback only sees the certificates OpenSSL links into a chain; the client may
    send others, which authentication would still hand to cryptography's path building
    (auth.chain), where each one named as an issuer costs a signature check with its key.
    The bytes: a connection keeps its client's certificates for as long as it lasts (the
    change-feed follower decides it again with them), and a device whose key is registered
    may present it in a certificate padded to OpenSSL's 100 KiB, 100 times the usual size,
    on each of its ``max_sessions_per_device`` connections.
    """
    if len(chain) > max_certificates:
        return True
    if max_bytes is not None and sum(len(c.public_bytes(Encoding.DER)) for c in chain) > max_bytes:
        return True
    for position, cert in enumerate(chain):
        try:
            key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            continue  # refused by authentication, which cannot read it either
        if _costly_key(key, issuer=position > 0):
            return True
    return False


def build_server_context(settings: Settings) -> SSL.Context:
    """The broker's TLS server context, configured from ``settings``.

    Raises ``TlsConfigError`` (one line, naming the setting and file) when the credentials or
    the protocol settings cannot be used.
    """
    key, chain = load_server_credentials(settings)
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    _set_protocol_policy(ctx, settings)
    try:
        ctx.use_certificate(chain[0])
        for extra in chain[1:]:
            ctx.add_extra_chain_cert(extra)
        ctx.use_privatekey(key)
        ctx.check_privatekey()
    except SSL.Error as exc:
        raise TlsConfigError(f"OpenSSL refused the server key or certificate: {exc}") from None

    # RFC 8446 §4.3.2 / §4.4.2: ask for a client certificate. No certificate_authorities list
    # is sent (we never call set_client_ca_list): with an empty list, clients offer their
    # certificate whatever its issuer; a list would make Java and others hold back
    # certificates not issued by one of the names in it.
    mode = SSL.VERIFY_PEER
    if settings.require_client_certificate:
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    ctx.set_verify(mode, bounded_client_chain(settings.max_client_chain_certificates))
    # OpenSSL builds no chain longer than this either (its default is 100 certificates).
    ctx.set_verify_depth(settings.max_client_chain_certificates)
    # Read after the handshake with the verify depth (``TlsProtocol``): an int, or None for
    # a context made elsewhere (no bound but OpenSSL's).
    ctx.set_app_data(settings.max_client_chain_bytes)

    # OpenSSL refuses to resume a session whose id context is unset when peer verification
    # is on ("session id context uninitialized", a fatal handshake error for a client that
    # offers a session). The context id names the verification policy, so that sessions made
    # under another policy are not resumed after it changes.
    policy = f"nanoiot-mqtt;require_client_cert={settings.require_client_certificate}"
    ctx.set_session_id(hashlib.sha256(policy.encode()).digest()[:32])
    ctx.set_timeout(SESSION_TIMEOUT_SECONDS)
    # Idle connections give their 2 x ~17 KiB record buffers back: most devices are idle.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return ctx


def _set_protocol_policy(ctx: SSL.Context, settings: Settings) -> None:
    minimum = SSL.TLS1_3_VERSION if settings.mqtt_ssl_protocol == "TLSv1.3" else SSL.TLS1_2_VERSION
    ciphers = _DEFAULT_CIPHERS
    if settings.tls_allow_legacy_protocols:
        if minimum == SSL.TLS1_3_VERSION:
            raise TlsConfigError(
                "tls_allow_legacy_protocols contradicts mqtt_ssl_protocol 'TLSv1.3': set only one"
            )
        # RFC 8996 (2021) deprecates TLS 1.0 and 1.1: only for devices that cannot be updated.
        minimum = SSL.TLS1_VERSION
        ciphers = _LEGACY_CIPHERS
        log.warning(
            "tls_allow_legacy_protocols is on: accepting TLS 1.0 and 1.1 (deprecated by "
            "RFC 8996) and weak algorithms (OpenSSL security level 0)"
        )
    ctx.set_min_proto_version(minimum)
    ctx.set_cipher_list(ciphers)
    ctx.set_options(
        # CRIME: compression leaks secrets through record lengths (RFC 7457 §2.6).
        SSL.OP_NO_COMPRESSION
        # A TLS 1.2 renegotiation could swap the client certificate after we have checked
        # it (RFC 5746 only makes renegotiation safe, not our per-connection identity).
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_SINGLE_ECDH_USE
    )


def load_server_credentials(
    settings: Settings,
) -> tuple[ServerKey, list[x509.Certificate]]:
    """The server's private key and certificate chain (leaf first), from PEM or a keystore."""
    if settings.mqtt_ssl_credentials_type is CredentialsType.KEYSTORE:
        if settings.mqtt_ssl_key_store is None:
            raise TlsConfigError(
                "mqtt_ssl_key_store is not set (needed when mqtt_ssl_credentials_type is KEYSTORE)"
            )
        key, chain = load_keystore(
            settings.mqtt_ssl_key_store,
            store_password=_secret(settings.mqtt_ssl_key_store_password),
            alias=settings.mqtt_ssl_key_alias,
            key_password=_secret(settings.mqtt_ssl_key_password),
        )
    else:
        key, chain = _load_pem(settings)
    _warn_if_expired(chain[0])
    return key, chain


def _load_pem(settings: Settings) -> tuple[ServerKey, list[x509.Certificate]]:
    cert_path = settings.mqtt_ssl_pem_cert
    if cert_path is None:
        raise TlsConfigError(
            "mqtt_ssl_pem_cert is not set (needed when mqtt_ssl_credentials_type is PEM)"
        )
    cert_data = read_file(cert_path, "mqtt_ssl_pem_cert")
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise TlsConfigError(
            f"mqtt_ssl_pem_cert {cert_path}: no readable PEM certificate in the file"
        ) from None
    # Like the reference system, the key may sit in the certificate file when no key file
    # is named.
    key_path = settings.mqtt_ssl_pem_key or cert_path
    key_data = cert_data if key_path == cert_path else read_file(key_path, "mqtt_ssl_pem_key")
    key = _load_pem_key(key_data, key_path, _secret(settings.mqtt_ssl_pem_key_password))
    if key.public_key() != chain[0].public_key():
        raise TlsConfigError(
            f"mqtt_ssl_pem_key {key_path} does not match the certificate in {cert_path} "
            "(the first certificate of the file must be the server's own)"
        )
    return key, chain


def _encrypted(pem: bytes) -> bool:
    """Whether ``pem`` holds a password-protected private key (PKCS #8, RFC 5958 §3, or
    OpenSSL's traditional form)."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem


def _load_pem_key(data: bytes, path: Path, password: bytes | None) -> ServerKey:
    setting = "mqtt_ssl_pem_key"
    try:
        key = load_pem_private_key(data, password)
    except TypeError as exc:
        if "not encrypted" in str(exc):
            # A password for a key that has none is harmless: use the key as it is.
            return _load_pem_key(data, path, None)
        raise TlsConfigError(
            f"{setting} {path}: the private key is encrypted; set mqtt_ssl_pem_key_password"
        ) from None
    except ValueError as exc:
        # A wrong password usually fails the padding check ("bad decrypt"), but about one in
        # 256 decrypts to garbage with valid padding that then fails to parse: for an
        # encrypted key both mean the password does not open it.
        if "password" in str(exc).lower() or (password is not None and _encrypted(data)):
            raise TlsConfigError(
                f"{setting} {path}: wrong password (mqtt_ssl_pem_key_password) for the private key"
            ) from None
        raise TlsConfigError(f"{setting} {path}: no readable PEM private key in the file") from None
    if not isinstance(key, ServerKey):
        raise TlsConfigError(f"{setting} {path}: a {type(key).__name__} cannot sign for TLS")
    return key


def _secret(value: SecretStr | None) -> bytes | None:
    return None if value is None else value.get_secret_value().encode()


def _warn_if_expired(cert: x509.Certificate) -> None:
    # RFC 5280 §4.1.2.5: outside its validity period, clients refuse the certificate.
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        log.warning(
            "the server certificate (%s) is outside its validity period %s .. %s",
            cert.subject.rfc4514_string(),
            cert.not_valid_before_utc.isoformat(),
            cert.not_valid_after_utc.isoformat(),
        )
