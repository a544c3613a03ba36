"""The issue's "done when", run as a new user would: both shipped scripts, shipped properties,
no terminal; then every output file checked by the tools the operators use."""

import re
import shutil
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.keygen.conftest import REPO, Generated, Run, check
from tests.keygen.tlsutil import client_context, handshake, server_context

SERVER_FILES = {
    "mqttserver.jks": 0o600,
    "mqttserver.pub.pem": 0o644,
    "mqttserver.cer": 0o644,
    "mqttserver.key.pem": 0o600,
}
CLIENT_FILES = {
    "mqttclient.jks": 0o600,
    "mqttclient.nopass.pem": 0o600,
    "mqttclient.pub.pem": 0o644,
}
DEVICE_CN = f"{socket.gethostname()}-device"
PRODUCT_TEXT = REPO / "tests" / "keygen" / "data" / "product-text.properties"


def test_both_scripts_write_the_product_text_files_with_safe_modes(generated: Generated) -> None:
    names = {path.name: stat.S_IMODE(path.stat().st_mode) for path in generated.folder.iterdir()}
    for name, mode in {**SERVER_FILES, **CLIENT_FILES}.items():
        assert names.get(name) == mode, f"{name}: expected mode {mode:o}, found {names.get(name)}"
    assert not [name for name in names if name.startswith(".")], "temporary files left behind"


def test_no_private_key_is_printed(generated: Generated) -> None:
    output = generated.server_stdout + generated.server_stderr + generated.client_stdout
    assert "PRIVATE KEY" not in output
    assert "server_ks_password" not in output  # passwords are named, not printed


def test_server_prints_broker_configuration_for_pem_and_keystore(generated: Generated) -> None:
    folder = generated.folder.resolve()
    out = generated.server_stdout
    assert f"MQTT_SSL_PEM_CERT={folder / 'mqttserver.pub.pem'}" in out
    assert f"MQTT_SSL_PEM_KEY={folder / 'mqttserver.key.pem'}" in out
    assert f"MQTT_SSL_KEY_STORE={folder / 'mqttserver.jks'}" in out
    assert "MQTT_SSL_KEY_ALIAS=serveralias" in out


def test_the_shipped_properties_run_without_a_warning(generated: Generated) -> None:
    assert generated.server_stderr == ""


def test_differing_key_and_store_passwords_are_explained(shipped: Path, run: Run) -> None:
    """The product text's values differ for the server: one warning line, no failure."""
    shutil.copy2(PRODUCT_TEXT, shipped / "product-text.properties")
    result = run("server.keygen.sh", "-p", "product-text.properties")
    assert result.stderr.count("\n") == 1
    assert "SERVER_KEY_PASSWORD differs from SERVER_KEYSTORE_PASSWORD" in result.stderr


def test_openssl_reads_the_server_certificate_in_pem_and_der(generated: Generated) -> None:
    folder = generated.folder
    pem = check(
        "openssl",
        "x509",
        "-in",
        str(folder / "mqttserver.pub.pem"),
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName,extendedKeyUsage,basicConstraints",
    )
    assert f"CN = {socket.gethostname()}" in pem
    assert "DNS:localhost" in pem
    assert "IP Address:127.0.0.1" in pem
    assert "TLS Web Server Authentication" in pem
    assert "CA:FALSE" in pem
    der = check(
        "openssl",
        "x509",
        "-inform",
        "DER",
        "-in",
        str(folder / "mqttserver.cer"),
        "-noout",
        "-subject",
    )
    assert der.splitlines()[0] == pem.splitlines()[0]


def test_openssl_reads_the_device_certificate_with_its_cn(generated: Generated) -> None:
    out = check(
        "openssl",
        "x509",
        "-in",
        str(generated.folder / "mqttclient.pub.pem"),
        "-noout",
        "-subject",
        "-ext",
        "extendedKeyUsage",
    )
    assert out.startswith(f"subject=CN = {DEVICE_CN}, OU = NanoIoT, O = NanoIoT, L = San Francisco")
    assert "TLS Web Client Authentication" in out


def test_nopass_pem_is_the_key_then_the_certificate_of_that_key(generated: Generated) -> None:
    nopass = generated.folder / "mqttclient.nopass.pem"
    text = nopass.read_text()
    assert text.startswith("-----BEGIN PRIVATE KEY-----")
    assert text.index("-----BEGIN CERTIFICATE-----") > text.index("-----END PRIVATE KEY-----")
    from_key = check("openssl", "pkey", "-in", str(nopass), "-pubout")
    from_cert = check("openssl", "x509", "-in", str(nopass), "-noout", "-pubkey")
    assert from_key == from_cert
    assert (generated.folder / "mqttclient.pub.pem").read_text() in text


@pytest.mark.parametrize(
    ("store", "password"),
    [("mqttserver.jks", "server_ks_password"), ("mqttclient.jks", "password")],
)
def test_openssl_pkcs12_opens_the_keystores(
    generated: Generated, store: str, password: str
) -> None:
    path = str(generated.folder / store)
    info = check("openssl", "pkcs12", "-in", path, "-info", "-noout", "-passin", f"pass:{password}")
    assert "MAC: sha256" in info
    wrong = subprocess.run(
        ["openssl", "pkcs12", "-in", path, "-noout", "-passin", "pass:wrong-password"],
        capture_output=True,
        check=False,
    )
    assert wrong.returncode != 0, "a wrong password must fail the MAC check"


def test_client_keystore_carries_the_java_trusted_certificate_attribute(
    generated: Generated,
) -> None:
    out = check(
        "openssl",
        "pkcs12",
        "-in",
        str(generated.folder / "mqttclient.jks"),
        "-nokeys",
        "-passin",
        "pass:password",
    )
    bags = out.split("Bag Attributes")[1:]
    server_bag = next(bag for bag in bags if "friendlyName: serveralias" in bag)
    assert "2.16.840.1.113894.746875.1.1" in server_bag
    client_bag = next(bag for bag in bags if "friendlyName: clientalias" in bag)
    assert "2.16.840.1.113894.746875.1.1" not in client_bag


def test_keytool_lists_clientalias_and_serveralias(generated: Generated) -> None:
    out = check(
        "keytool",
        "-list",
        "-keystore",
        str(generated.folder / "mqttclient.jks"),
        "-storepass",
        "password",
    )
    assert re.search(r"^clientalias, .*PrivateKeyEntry", out, re.M), out
    assert re.search(r"^serveralias, .*trustedCertEntry", out, re.M), out
    assert "Your keystore contains 2 entries" in out


def test_keytool_lists_the_server_key(generated: Generated) -> None:
    out = check(
        "keytool",
        "-list",
        "-keystore",
        str(generated.folder / "mqttserver.jks"),
        "-storepass",
        "server_ks_password",
    )
    assert re.search(r"^serveralias, .*PrivateKeyEntry", out, re.M), out


@pytest.mark.parametrize(
    ("store", "alias", "password"),
    [
        ("mqttserver.jks", "serveralias", "server_ks_password"),
        ("mqttclient.jks", "clientalias", "password"),
    ],
)
def test_java_decrypts_the_private_key_with_the_store_password(
    generated: Generated, tmp_path: Path, store: str, alias: str, password: str
) -> None:
    # What a Java client's KeyManagerFactory.init(store, keyPassword) needs: the key entry
    # opens with the store password (the reference's users failed when the two differed).
    check(
        "keytool",
        "-importkeystore",
        "-noprompt",
        "-srckeystore",
        str(generated.folder / store),
        "-srcstoretype",
        "PKCS12",
        "-srcstorepass",
        password,
        "-srcalias",
        alias,
        "-srckeypass",
        password,
        "-destkeystore",
        str(tmp_path / "copy.p12"),
        "-deststoretype",
        "PKCS12",
        "-deststorepass",
        "copy-password",
    )


def test_cryptography_reads_the_client_keystore_as_written(generated: Generated) -> None:
    loaded = pkcs12.load_pkcs12((generated.folder / "mqttclient.jks").read_bytes(), b"password")
    assert loaded.key is not None
    assert loaded.cert is not None
    assert loaded.cert.friendly_name == b"clientalias"
    [server] = loaded.additional_certs
    assert server.friendly_name == b"serveralias"
    broker = x509.load_pem_x509_certificate((generated.folder / "mqttserver.pub.pem").read_bytes())
    assert server.certificate == broker


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", socket.gethostname()])
def test_python_ssl_handshake_with_the_generated_files(generated: Generated, hostname: str) -> None:
    folder = generated.folder
    server = server_context(
        folder / "mqttserver.pub.pem", folder / "mqttserver.key.pem", folder / "mqttclient.pub.pem"
    )
    client = client_context(folder / "mqttserver.pub.pem", folder / "mqttclient.nopass.pem")
    session = handshake(server, client, hostname)
    peer = session.getpeercert()
    assert peer is not None
    assert ((("commonName", DEVICE_CN),)) in peer["subject"]


def test_handshake_fails_for_a_host_name_not_in_the_certificate(generated: Generated) -> None:
    folder = generated.folder
    server = server_context(
        folder / "mqttserver.pub.pem", folder / "mqttserver.key.pem", folder / "mqttclient.pub.pem"
    )
    client = client_context(folder / "mqttserver.pub.pem", folder / "mqttclient.nopass.pem")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server, client, "not-this-broker.example")


def test_paho_accepts_the_files_as_the_docs_show(generated: Generated) -> None:
    mqtt = pytest.importorskip("paho.mqtt.client")
    folder = generated.folder
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="keygen-test")
    client.tls_set(
        ca_certs=str(folder / "mqttserver.pub.pem"),
        certfile=str(folder / "mqttclient.nopass.pem"),
        keyfile=None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
