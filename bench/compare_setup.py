"""What the side-by-side benchmark gives every broker alike: one CA, one server certificate,
device certificates that chain to the CA, and each broker's configuration.

All three brokers present the same EC P-256 server certificate (CN and SAN ``localhost``,
issued by the benchmark CA) and see the same device certificates:

- Mosquitto: ``require_certificate true``, ``cafile`` = the device CA, ``set_tcp_nodelay true``,
  ``sys_interval 1`` (its count of connected clients is how the benchmark checks it).
- plain amqtt 0.12.1: its own TLS listener (``cafile`` = the device CA; amqtt hard-codes
  ``CERT_OPTIONAL``), the anonymous auth plugin (the one that lets clients in) and its $SYS
  plugin (part of its default set) at a 1 s interval.
- NanoIoT: every device certificate is provisioned (pinned by public key) in its SQLite store,
  next to ``--devices`` bulk-inserted fake devices. Devices keep their default rights on
  ``devices/<name>/#``; two ACL rules let them use ``bench/#`` and let the fleet's application
  (a device certificate too) subscribe to ``devices/+/telemetry``.

Private keys live only in the run's temporary directory.
"""

import datetime as dt
import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from auth.certificate import parse_credential
from bench.store_bench import bulk_insert
from nanoiot.settings import Settings
from storage.bulk import NewDevice
from storage.migrate import upgrade
from storage.sql import SqlCredentialStore

TOPIC = "bench/t"
ACL_RULES = [
    {"who": "device", "action": "both", "topic": "bench/#"},
    {"who": "device", "action": "subscribe", "topic": "devices/+/telemetry"},
]
SYS_INTERVAL_S = 1


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # the CA certificate: brokers trust devices through it, clients the server
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class Device:
    name: str
    pem_file: Path  # private key then certificate
    cert_pem: str


def _key(kind: str) -> CertificateIssuerPrivateKeyTypes:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    cn: str,
    key: CertificateIssuerPrivateKeyTypes,
    issuer: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_pki(directory: Path, device_counts: dict[str, int]) -> tuple[Pki, dict[str, list[Device]]]:
    """The CA, the server certificate, and ``count`` devices per key kind ("ec", "rsa")."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key = _key("ec")
    ca_cert = _certificate("NanoIoT bench CA", ca_key, None, ca=True)
    ca = (ca_cert, ca_key)
    server_key = _key("ec")
    server_cert = _certificate("localhost", server_key, ca, server=True)
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_file.write_bytes(ca_cert.public_bytes(Encoding.PEM))
    pki.server_cert.write_bytes(server_cert.public_bytes(Encoding.PEM))
    _write_private(pki.server_key, _pem(server_key))
    devices: dict[str, list[Device]] = {}
    for kind, count in device_counts.items():
        devices[kind] = [_device(directory, f"{kind}-{i:05d}", kind, ca) for i in range(count)]
    return pki, devices


def _device(
    directory: Path,
    name: str,
    kind: str,
    ca: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes],
) -> Device:
    key = _key(kind)
    cert_pem = _certificate(name, key, ca).public_bytes(Encoding.PEM)
    pem_file = directory / f"{name}.pem"
    _write_private(pem_file, _pem(key) + cert_pem)
    return Device(name, pem_file, cert_pem.decode())


# --- NanoIoT ------------------------------------------------------------------------------


async def prepare_nanoiot_store(data_dir: Path, fake: int, devices: list[Device]) -> None:
    """A migrated SQLite store: ``fake`` bulk-inserted devices, then ``devices`` pinned."""
    data_dir.mkdir(parents=True)  # noqa: ASYNC240 - once, before any load
    url = Settings(data_dir=data_dir).effective_database_url
    await upgrade(url)
    if fake:
        seconds, _ = await bulk_insert(url, fake, 10_000, set(), 1)
        print(f"  {fake:,} fake devices inserted in {seconds:.1f} s", flush=True)
    store = await SqlCredentialStore.open(url, data_dir=data_dir)
    try:
        for start in range(0, len(devices), 1000):
            batch = [
                NewDevice(d.name, parse_credential(d.cert_pem))
                for d in devices[start : start + 1000]
            ]
            refused = [
                o for o in await store.create_devices_with_x509(batch) if isinstance(o, Exception)
            ]
            if refused:
                raise RuntimeError(f"provisioning the benchmark devices: {refused[0]}")
    finally:
        await store.close()


def nanoiot_env(data_dir: Path, pki: Pki, admin_token: str) -> dict[str, str]:
    """``nanoiot serve``'s configuration: a YAML file with the ACL rule, the rest from the
    environment (nothing inherited from ours)."""
    config = data_dir.parent / "nanoiot.yaml"
    config.write_text(json.dumps({"acl_rules": ACL_RULES}))  # JSON is YAML
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NANOIOT_", "MQTT_SSL_"))
    }
    env.update(
        NANOIOT_DATA_DIR=str(data_dir),
        NANOIOT_LOG_LEVEL="WARNING",
        NANOIOT_HTTP_PORT="0",
        NANOIOT_ADMIN_TOKEN=admin_token,
        NANOIOT_CONFIG=str(config),
        MQTT_SSL_BIND_ADDRESS="127.0.0.1",
        MQTT_SSL_BIND_PORT="0",
        MQTT_SSL_PROTOCOL="TLSv1.2",
        MQTT_SSL_PEM_CERT=str(pki.server_cert),
        MQTT_SSL_PEM_KEY=str(pki.server_key),
    )
    return env


# --- Mosquitto and amqtt ------------------------------------------------------------------


def mosquitto_conf(directory: Path, pki: Pki, port: int) -> Path:
    path = directory / "mosquitto.conf"
    path.write_text(
        "\n".join(
            [
                # Run as root, Mosquitto drops to user "mosquitto", who cannot read the
                # run's private directory: the benchmark keeps whoever started it.
                f"user {getpass.getuser()}",
                "per_listener_settings false",
                "allow_anonymous true",
                "persistence false",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "set_tcp_nodelay true",
                "max_queued_messages 0",
                f"sys_interval {SYS_INTERVAL_S}",
                f"listener {port} 127.0.0.1",
                f"cafile {pki.ca_file}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
                "require_certificate true",
                "",
            ]
        )
    )
    return path


def amqtt_config(pki: Pki, port: int) -> dict[str, object]:
    """amqtt 0.12.1 with a TLS listener; with ``plugins: {}`` it refuses every client (no auth
    plugin answers True, broker.py:807-832), so the anonymous plugin is configured, and the
    $SYS plugin of its default set (its count of connected clients)."""
    return {
        "listeners": {
            "default": {
                "type": "tcp",
                "bind": f"127.0.0.1:{port}",
                "ssl": True,
                "cafile": str(pki.ca_file),
                "certfile": str(pki.server_cert),
                "keyfile": str(pki.server_key),
                "max_connections": 0,
            }
        },
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            "amqtt.plugins.sys.broker.BrokerSysPlugin": {"sys_interval": SYS_INTERVAL_S},
        },
    }
