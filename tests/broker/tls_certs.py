"""Certificates and key files for the TLS tests and the TLS benchmark, made at run time.

Nothing here is ever committed: every key is generated when a test or the benchmark starts.
"""

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.certgen import Issued, issue, new_key

__all__ = ["ClientFiles", "ServerPki", "client_cert", "make_server_pki", "write_key"]


@dataclass(frozen=True)
class ServerPki:
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it, on disk."""

    ca: Issued
    server: Issued
    ca_file: Path
    cert_file: Path  # server certificate, then the CA (a chain file)
    key_file: Path  # unencrypted PKCS#8

    def client_context(
        self, client: "ClientFiles | None" = None, *, ciphers: str | None = None
    ) -> ssl.SSLContext:
        """A stdlib client context that trusts our CA and presents ``client`` if given."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        if ciphers is not None:
            ctx.set_ciphers(ciphers)
        if client is not None:
            ctx.load_cert_chain(str(client.cert_file), str(client.key_file))
        return ctx


@dataclass(frozen=True)
class ClientFiles:
    issued: Issued
    cert_file: Path
    key_file: Path


def write_key(
    key: CertificateIssuerPrivateKeyTypes,
    path: Path,
    encryption: KeySerializationEncryption | None = None,
) -> Path:
    path.write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption or NoEncryption())
    )
    path.chmod(0o600)
    return path


def encrypted(password: bytes) -> KeySerializationEncryption:
    return BestAvailableEncryption(password)


def make_server_pki(directory: Path, kind: str = "ec") -> ServerPki:
    ca = issue("NanoIoT Test CA", ca=True, key=new_key(kind))
    key = new_key(kind)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    server = Issued(cert, key)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.cert.public_bytes(Encoding.PEM))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM) + ca.cert.public_bytes(Encoding.PEM))
    key_file = write_key(key, directory / "server.key")
    return ServerPki(ca, server, ca_file, cert_file, key_file)


def client_cert(
    directory: Path, cn: str, kind: str = "ec", *, name: str | None = None
) -> ClientFiles:
    """A self-signed client certificate (as the reference keygen makes them), on disk."""
    issued = issue(cn, key=new_key(kind))
    stem = name or f"{cn}-{kind}"
    cert_file = directory / f"{stem}.pem"
    cert_file.write_bytes(issued.cert.public_bytes(Encoding.PEM))
    key_file = write_key(issued.key, directory / f"{stem}.key")
    return ClientFiles(issued, cert_file, key_file)
