"""Reloading the broker's certificate and key while devices stay connected.

Real paho clients over mutual TLS: a device connected before the reload keeps its connection
and keeps round-tripping messages, a new client sees the new certificate, and a client that
trusts only the old certificate is refused. Server credentials are made with the code behind
``server.keygen.sh`` (a new key each time), as PEM files and as a PKCS#12 keystore; a bad file
is refused with one log line and the certificate in use stays.
"""

import datetime as dt
import logging
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auth.fingerprint import spki_sha256
from broker.tls_reload import ServerCertificateReloader
from nanoiot.keygen.files import write_files
from nanoiot.keygen.outputs import ServerPaths, server_outputs
from nanoiot.keygen.properties import build_properties
from tests.certgen import issue
from tests.e2e.harness import (
    WAIT,
    BrokerThread,
    Client,
    broker_settings,
    device_client,
    mqtt_client,
    write_pem,
)
from tests.reliability.serve_process import ServeProcess, connect, provision_device

PASSWORD = "server_ks_password"
LOGGER = "broker.tls_reload"


def make_server_files(directory: Path, password: str = PASSWORD) -> x509.Certificate:
    """A new key and certificate in ``directory`` (PEM pair and keystore), overwriting."""
    values = {"SERVER_KEYSTORE_PASSWORD": password, "SERVER_KEY_PASSWORD": password}
    props = build_properties(values, "test")
    directory.mkdir(parents=True, exist_ok=True)
    paths = ServerPaths.of(props, directory)
    write_files(server_outputs(props, paths, with_ca=False, now=dt.datetime.now(dt.UTC)))
    return x509.load_pem_x509_certificate(paths.cert_pem.read_bytes())


def trusting(directory: Path, cert: x509.Certificate) -> Path:
    """A CA file with just ``cert``: a client that trusts that one certificate."""
    path = directory / f"trust-{cert.serial_number:x}.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def served(port: int, ca_file: Path) -> x509.Certificate:
    """The certificate a new client gets (``ssl.SSLCertVerificationError`` if it does not
    trust it)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def refused(port: int, ca_file: Path) -> bool:
    try:
        served(port, ca_file)
    except ssl.SSLCertVerificationError:
        return True
    return False


def reloader(broker: BrokerThread) -> ServerCertificateReloader:
    return broker.running.tls_reload


def wait_for_attempt(broker: BrokerThread, before: int) -> None:
    broker.call(reloader(broker).wait_for_attempts(before + 1))


def round_trip(client: Client, payload: bytes) -> None:
    client.publish("v1/devices/me/telemetry", payload)
    assert client.next_message().payload == payload


def paho_peer(client: Client) -> x509.Certificate:
    sock = client.paho.socket()
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    return tmp_path / "server"


@pytest.fixture
def first(server_dir: Path) -> x509.Certificate:
    return make_server_files(server_dir)


@pytest.fixture
def pem_broker(tmp_path: Path, server_dir: Path, first: x509.Certificate) -> Iterator[BrokerThread]:
    settings = broker_settings(
        tmp_path / "data",
        mqtt_ssl_pem_cert=server_dir / "mqttserver.pub.pem",
        mqtt_ssl_pem_key=server_dir / "mqttserver.key.pem",
        tls_reload_interval=0.1,
    )
    broker = BrokerThread(settings)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def device(pem_broker: BrokerThread, tmp_path: Path, first: x509.Certificate) -> Iterator[Client]:
    """A device connected before any reload, subscribed to its own telemetry."""
    _, issued = pem_broker.provision("sensor")
    certfile = write_pem(tmp_path, issued, "sensor")
    client = mqtt_client(pem_broker.port, trusting(tmp_path, first), certfile)
    try:
        assert client.wait_connack() == 0
        assert client.subscribe("v1/devices/me/telemetry") == [1]
        yield client
    finally:
        client.close()


def test_changed_files_are_reloaded_and_the_connected_device_stays(
    pem_broker: BrokerThread,
    device: Client,
    server_dir: Path,
    first: x509.Certificate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    before = reloader(pem_broker).attempts
    second = make_server_files(server_dir)
    wait_for_attempt(pem_broker, before)
    assert reloader(pem_broker).reloads == 1

    round_trip(device, b"across the reload")
    assert not device.disconnected.is_set()
    assert paho_peer(device) == first  # its TLS session is the one it started with

    assert served(pem_broker.port, trusting(tmp_path, second)) == second
    assert refused(pem_broker.port, trusting(tmp_path, first))
    newcomer, _ = device_client(pem_broker, tmp_path, "newcomer")
    try:
        assert newcomer.wait_connack() == 0  # device_client trusts the file: now the new one
        assert paho_peer(newcomer) == second
    finally:
        newcomer.close()
    [line] = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert line.startswith("server certificate reloaded (the files changed): C=US,")
    assert f"key sha256:{spki_sha256(second.public_key())}; connected clients keep" in line


def test_a_bad_file_is_refused_and_the_certificate_in_use_stays(
    pem_broker: BrokerThread,
    device: Client,
    server_dir: Path,
    first: x509.Certificate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    key_file = server_dir / "mqttserver.key.pem"
    cert_file = server_dir / "mqttserver.pub.pem"
    old_ca = trusting(tmp_path, first)

    before = reloader(pem_broker).attempts
    key_file.write_text(issue("someone else").key_pem)  # a key that does not match
    wait_for_attempt(pem_broker, before)
    cert_file.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")  # half a file
    wait_for_attempt(pem_broker, before + 1)

    assert reloader(pem_broker).reloads == 0
    assert served(pem_broker.port, old_ca) == first
    round_trip(device, b"still connected")
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"server certificate not reloaded (the files changed): mqtt_ssl_pem_key {key_file} "
        f"does not match the certificate in {cert_file} (the first certificate of the file "
        "must be the server's own); still serving the previous one",
        f"server certificate not reloaded (the files changed): mqtt_ssl_pem_cert {cert_file}: "
        "no readable PEM certificate in the file; still serving the previous one",
    ]
    assert all(r.exc_info is None for r in caplog.records)

    third = make_server_files(server_dir)  # fixed: the next change is used
    wait_for_attempt(pem_broker, before + 2)
    assert served(pem_broker.port, trusting(tmp_path, third)) == third


def test_keystore_is_reloaded_on_request_and_a_wrong_password_is_refused(
    tmp_path: Path, server_dir: Path, first: x509.Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    """tls_reload_interval 0: no polling, only a request (what SIGHUP does) reloads."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    settings = broker_settings(
        tmp_path / "data",
        mqtt_ssl_credentials_type="KEYSTORE",
        mqtt_ssl_key_store=server_dir / "mqttserver.jks",
        mqtt_ssl_key_store_password=PASSWORD,
        mqtt_ssl_key_alias="serveralias",
        tls_reload_interval=0,
    )
    broker = BrokerThread(settings)
    try:
        second = make_server_files(server_dir)
        assert served(broker.port, trusting(tmp_path, first)) == first  # not polled
        before = reloader(broker).attempts
        broker.loop.call_soon_threadsafe(reloader(broker).request)
        wait_for_attempt(broker, before)
        assert served(broker.port, trusting(tmp_path, second)) == second

        make_server_files(server_dir, password="another-password")
        broker.loop.call_soon_threadsafe(reloader(broker).request)
        wait_for_attempt(broker, before + 1)
        assert served(broker.port, trusting(tmp_path, second)) == second
    finally:
        broker.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("server certificate not reloaded (SIGHUP): mqtt_ssl_key_store ")
    assert "wrong mqtt_ssl_key_store_password" in errors[0]


@pytest.mark.slow
def test_sighup_reloads_a_running_nanoiot_serve(tmp_path: Path) -> None:
    """The real process: development credentials replaced in <data dir>/certs, then SIGHUP
    (file checks off, so only the signal can have done it)."""
    data = tmp_path / "data"
    certfile = provision_device(data, "sighup-device", tmp_path)
    broker = ServeProcess(data, NANOIOT_TLS_RELOAD_INTERVAL="0")
    client = None
    try:
        first = x509.load_pem_x509_certificate(broker.server_cert.read_bytes())
        client = connect(broker, certfile, "sighup-device", clean_session=True)
        assert client.wait_connack() == (0, False)
        assert client.subscribe("v1/devices/me/telemetry") == [1]

        second = make_server_files(data / "certs")
        assert served(broker.port, trusting(tmp_path, first)) == first
        broker.process.send_signal(signal.SIGHUP)
        broker.wait_for_log("server certificate reloaded (SIGHUP)")

        assert served(broker.port, trusting(tmp_path, second)) == second
        client.paho.publish("v1/devices/me/telemetry", b"after SIGHUP", qos=1)
        assert client.receive(1)[0].payload == b"after SIGHUP"
        assert broker.process.poll() is None
    finally:
        if client is not None:
            client.close()
        broker.kill()
