"""What each script writes, named as the product text names it, and built in memory.

``server_outputs`` / ``client_outputs`` return the files to write (nothing is written here),
so the command can check for earlier output first and write everything only afterwards.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from nanoiot.errors import KeygenError
from nanoiot.keygen.certs import (
    Issued,
    PrivateKey,
    client_certificate,
    device_ca,
    new_key,
    server_certificate,
)
from nanoiot.keygen.files import OutputFile, read_bytes
from nanoiot.keygen.keystore import build_keystore
from nanoiot.keygen.properties import KeygenProperties

DEVICE_CA_PREFIX = "nanoiot-device-ca"


def device_ca_paths(directory: Path) -> tuple[Path, Path]:
    """Certificate and key of the device CA; one CA per directory, whatever the prefixes."""
    return directory / f"{DEVICE_CA_PREFIX}.pem", directory / f"{DEVICE_CA_PREFIX}.key.pem"


@dataclass(frozen=True)
class ServerPaths:
    keystore: Path
    cert_pem: Path
    cert_der: Path
    key_pem: Path
    ca_cert: Path
    ca_key: Path

    @classmethod
    def of(cls, props: KeygenProperties, directory: Path) -> "ServerPaths":
        prefix = props.server_file_prefix
        ca_cert, ca_key = device_ca_paths(directory)
        return cls(
            keystore=directory / f"{prefix}.jks",
            cert_pem=directory / f"{prefix}.pub.pem",
            cert_der=directory / f"{prefix}.cer",
            key_pem=directory / f"{prefix}.key.pem",
            ca_cert=ca_cert,
            ca_key=ca_key,
        )


@dataclass(frozen=True)
class ClientPaths:
    keystore: Path
    nopass: Path
    cert_pem: Path

    @classmethod
    def of(cls, props: KeygenProperties, directory: Path) -> "ClientPaths":
        prefix = props.client_file_prefix
        return cls(
            keystore=directory / f"{prefix}.jks",
            nopass=directory / f"{prefix}.nopass.pem",
            cert_pem=directory / f"{prefix}.pub.pem",
        )


def server_outputs(
    props: KeygenProperties, paths: ServerPaths, *, with_ca: bool, now: dt.datetime
) -> list[OutputFile]:
    server = server_certificate(props, new_key(props.key_algorithm, props.key_size), now)
    keystore = build_keystore(
        alias=props.server_key_alias,
        key=server.key,
        chain=[server.cert],
        password=props.server_keystore_password,
    )
    files = [
        OutputFile(paths.keystore, keystore, True, "PKCS#12 keystore with the server key"),
        OutputFile(paths.cert_pem, _cert_pem(server), False, "server certificate (ca_certs)"),
        OutputFile(paths.cert_der, server.cert.public_bytes(Encoding.DER), False, "same, DER"),
        OutputFile(paths.key_pem, _key_pem(server.key), True, "server private key (PEM)"),
    ]
    if with_ca:
        ca = device_ca(props, new_key(props.key_algorithm, props.key_size), now)
        files += [
            OutputFile(paths.ca_cert, _cert_pem(ca), False, "device CA certificate"),
            OutputFile(paths.ca_key, _key_pem(ca.key), True, "device CA private key"),
        ]
    return files


def client_outputs(
    props: KeygenProperties,
    paths: ClientPaths,
    *,
    server_cert: x509.Certificate,
    ca: Issued | None,
    now: dt.datetime,
) -> tuple[list[OutputFile], Issued]:
    device = client_certificate(props, new_key(props.key_algorithm, props.key_size), now, ca)
    chain = [device.cert] + ([ca.cert] if ca is not None else [])
    keystore = build_keystore(
        alias=props.client_key_alias,
        key=device.key,
        chain=chain,
        password=props.client_keystore_password,
        trusted=[(props.server_key_alias, server_cert)],
    )
    # The reference's .nopass.pem: the unencrypted key, then the certificate, so one file
    # serves as paho's certfile (keyfile=None) and as mosquitto's --cert and --key.
    nopass = _key_pem(device.key) + _cert_pem(device)
    files = [
        OutputFile(paths.keystore, keystore, True, "PKCS#12 keystore for Java clients"),
        OutputFile(paths.nopass, nopass, True, "key + certificate for non-Java clients"),
        OutputFile(paths.cert_pem, _cert_pem(device), False, "device certificate: provision it"),
    ]
    return files, device


def load_certificate(path: Path, hint: str) -> x509.Certificate:
    """A PEM or DER certificate (``.pub.pem`` or ``.cer``)."""
    data = read_bytes(path, "certificate", hint)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise KeygenError(f"{path} is not a PEM or DER certificate") from None


def load_device_ca(directory: Path) -> Issued:
    """The device CA written by ``server.keygen.sh --ca`` into the same directory."""
    cert_path, key_path = device_ca_paths(directory)
    hint = "run server.keygen.sh --ca first (same --dir)"
    cert = load_certificate(cert_path, hint)
    try:
        key = load_pem_private_key(read_bytes(key_path, "device CA key", hint), None)
    except (ValueError, TypeError):
        raise KeygenError(f"{key_path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) or (
        key.public_key() != cert.public_key()
    ):
        raise KeygenError(f"{key_path} is not the key of {cert_path}")
    return Issued(key, cert)


def password_warning(props: KeygenProperties, side: str) -> str | None:
    """PKCS#12 has one password per file (see ``keystore``): say so when asked for two.

    ``side`` is "SERVER" or "CLIENT".
    """
    store = getattr(props, f"{side.lower()}_keystore_password")
    if store == getattr(props, f"{side.lower()}_key_password"):
        return None
    return (
        f"{side}_KEY_PASSWORD differs from {side}_KEYSTORE_PASSWORD; a PKCS#12 keystore has "
        f"one password, so the key is protected by {side}_KEYSTORE_PASSWORD: give Java that "
        "one as the key password too"
    )


def _cert_pem(issued: Issued) -> bytes:
    return issued.cert.public_bytes(Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
