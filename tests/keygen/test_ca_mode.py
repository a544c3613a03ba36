"""Device CA mode: ``server.keygen.sh --ca`` makes a CA, ``client.keygen.sh --ca`` uses it."""

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.keygen.conftest import Run, check
from tests.keygen.tlsutil import client_context, handshake, server_context


@pytest.fixture
def ca_run(shipped: Path, run: Run) -> Path:
    run("server.keygen.sh", "--ca")
    run("client.keygen.sh", "--ca", "--cn", "sensor-1")
    return shipped


def test_ca_files_are_written_key_private(ca_run: Path) -> None:
    assert stat.S_IMODE((ca_run / "nanoiot-device-ca.key.pem").stat().st_mode) == 0o600
    out = check(
        "openssl",
        "x509",
        "-in",
        str(ca_run / "nanoiot-device-ca.pem"),
        "-noout",
        "-ext",
        "basicConstraints,keyUsage",
    )
    assert "CA:TRUE, pathlen:0" in out
    assert "Certificate Sign, CRL Sign" in out


def test_openssl_verifies_the_device_certificate_against_the_ca(ca_run: Path) -> None:
    out = check(
        "openssl",
        "verify",
        "-CAfile",
        str(ca_run / "nanoiot-device-ca.pem"),
        "-purpose",
        "sslclient",
        str(ca_run / "mqttclient.pub.pem"),
    )
    assert out.strip().endswith(": OK")


def test_a_self_signed_device_certificate_does_not_verify_against_the_ca(
    ca_run: Path, run: Run
) -> None:
    run("client.keygen.sh", "--cn", "loner", "--prefix", "loner")
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(ca_run / "nanoiot-device-ca.pem"),
            str(ca_run / "loner.pub.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0


def test_device_certificate_links_to_the_ca_by_key_identifier(ca_run: Path) -> None:
    ca = x509.load_pem_x509_certificate((ca_run / "nanoiot-device-ca.pem").read_bytes())
    device = x509.load_pem_x509_certificate((ca_run / "mqttclient.pub.pem").read_bytes())
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = device.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = device.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert ski.digest != ca_ski.digest
    assert device.issuer == ca.subject
    eku = device.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert device.not_valid_after_utc <= ca.not_valid_after_utc


def test_keytool_shows_the_device_chain(ca_run: Path) -> None:
    out = check(
        "keytool",
        "-list",
        "-v",
        "-keystore",
        str(ca_run / "mqttclient.jks"),
        "-storepass",
        "password",
        "-alias",
        "clientalias",
    )
    assert "Certificate chain length: 2" in out


def test_a_broker_trusting_only_the_ca_accepts_the_device(ca_run: Path) -> None:
    server = server_context(
        ca_run / "mqttserver.pub.pem",
        ca_run / "mqttserver.key.pem",
        ca_run / "nanoiot-device-ca.pem",
    )
    client = client_context(ca_run / "mqttserver.pub.pem", ca_run / "mqttclient.nopass.pem")
    peer = handshake(server, client, "localhost").getpeercert()
    assert peer is not None
    assert (("commonName", "sensor-1"),) in peer["subject"]


def test_client_ca_mode_without_a_ca_says_what_to_run(shipped: Path, run: Run) -> None:
    run("server.keygen.sh")
    result = run("client.keygen.sh", "--ca", ok=False)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("not found: run server.keygen.sh --ca first (same --dir)")
