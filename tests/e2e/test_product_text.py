"""The product text (docs: X.509 Certificate Based Authentication), followed literally.

Keys come from the shipped ``server.keygen.sh`` and ``client.keygen.sh`` with the shipped
``keygen.properties``; the broker serves the generated ``mqttserver.pub.pem`` /
``mqttserver.key.pem``; the device is provisioned with the CLI as a user would
(``nanoiot device add`` + ``nanoiot credentials add-x509 NAME mqttclient.pub.pem``) while the
broker runs on the same SQLite file; then paho is set up with the text's ``tls_set`` call,
run from the folder holding the files, so the relative file names are the text's own.

The text's ``tls_version=ssl.PROTOCOL_TLSv1`` is the one thing that cannot work as written:
with OpenSSL 3 the *client* refuses it before anything is sent (no cipher is usable for TLS 1.0
at OpenSSL's default security level), whatever the broker allows. A client that lowers its own
security level (``ciphers="DEFAULT:@SECLEVEL=0"``) can offer TLS 1.0/1.1: the broker answers
with a protocol_version alert, unless it runs with ``tls_allow_legacy_protocols``.
"""

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.e2e.harness import BrokerThread, Client, mqtt_client, wired
from tests.e2e.interop import (
    DeviceKeys,
    Keys,
    checked,
    close_leaked_tls_socket,
    deprecated_protocol,
    make_keys,
    operator_env,
    provision_pem,
    running_broker,
)

DEVICE = "sensor-1"
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"


@dataclass(frozen=True)
class ProductKeys:
    keys: Keys
    device: DeviceKeys  # mqttclient.*: the text's CLIENT_FILE_PREFIX, CN sensor-1
    stranger: DeviceKeys  # stranger.*: made by the same script, never provisioned


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> ProductKeys:
    keys = make_keys(tmp_path_factory.mktemp("product-text"))
    return ProductKeys(keys, keys.device(DEVICE), keys.device("stranger", prefix="stranger"))


@pytest.fixture(scope="module")
def cli_broker(
    product: ProductKeys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerThread]:
    """A broker on the generated server files, its device provisioned through the CLI."""
    data_dir = tmp_path_factory.mktemp("cli-broker") / "data"
    with running_broker(product.keys, data_dir) as broker:
        env = operator_env(data_dir)  # the CLI shares the running broker's SQLite file
        folder = product.keys.folder
        added = checked(["nanoiot", "device", "add", DEVICE], cwd=folder, env=env)
        assert f"created device '{DEVICE}'" in added
        registered = checked(
            ["nanoiot", "credentials", "add-x509", DEVICE, "mqttclient.pub.pem"],
            cwd=folder,
            env=env,
        )
        assert f"registered X.509 credential for '{DEVICE}'" in registered
        assert f"CN={DEVICE}" in registered
        yield broker


@pytest.fixture
def in_keys_folder(product: ProductKeys, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the folder holding the files: the text's file names are relative."""
    monkeypatch.chdir(product.keys.folder)
    return product.keys.folder


def text_client(
    port: int,
    tls_version: ssl._SSLMethod,
    certfile: str = "mqttclient.nopass.pem",
    ciphers: str | None = None,
) -> Client:
    """paho configured as in the product text, connected to localhost (blocking: a TLS
    failure raises here), its network loop running."""
    paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="")
    client = wired(paho)
    with deprecated_protocol(tls_version):
        paho.tls_set(
            ca_certs="mqttserver.pub.pem",
            certfile=certfile,
            keyfile=None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=tls_version,
            ciphers=ciphers,
        )
    try:
        paho.connect("localhost", port)
    except ssl.SSLError as exc:
        close_leaked_tls_socket(exc)
        raise
    paho.loop_start()
    return client


@pytest.mark.slow
@pytest.mark.parametrize(
    "tls_version",
    [ssl.PROTOCOL_TLSv1_2, ssl.PROTOCOL_TLS_CLIENT],
    ids=["PROTOCOL_TLSv1_2", "PROTOCOL_TLS_CLIENT"],
)
def test_text_client_publishes_telemetry_and_receives_attributes(
    cli_broker: BrokerThread, in_keys_folder: Path, tls_version: ssl._SSLMethod
) -> None:
    application = f"backend-{tls_version.name.lower()}"
    cli_broker.application(application, application, "backend-password")
    backend = mqtt_client(
        cli_broker.port,
        cli_broker.server_cert,
        None,
        username=application,
        password="backend-password",
    )
    device: Client | None = None
    try:
        assert backend.wait_connack() == 0
        assert backend.subscribe(f"devices/{DEVICE}/telemetry") == [1]

        device = text_client(cli_broker.port, tls_version)
        assert device.wait_connack() == 0
        assert device.subscribe("v1/devices/me/attributes") == [1]

        device.publish("v1/devices/me/telemetry", b'{"temperature": 21}')
        telemetry = backend.next_message()
        assert (telemetry.topic, telemetry.payload) == (
            f"devices/{DEVICE}/telemetry",
            b'{"temperature": 21}',
        )

        backend.publish(f"devices/{DEVICE}/attributes", b'{"interval": 30}')
        attributes = device.next_message()
        assert (attributes.topic, attributes.payload) == (
            "v1/devices/me/attributes",
            b'{"interval": 30}',
        )
    finally:
        if device is not None:
            device.close()
        backend.close()


def test_unprovisioned_script_certificate_is_refused_with_not_authorised(
    product: ProductKeys, in_keys_folder: Path, tmp_path: Path
) -> None:
    with running_broker(product.keys, tmp_path / "data") as broker:
        client = text_client(broker.port, ssl.PROTOCOL_TLS_CLIENT, certfile="stranger.nopass.pem")
        try:
            assert client.wait_connack() == 5
            assert client.disconnected.wait(10)
        finally:
            client.close()
        assert broker.running.auth_log.counts == {"unknown_key": 1}


def assert_still_serves(broker: BrokerThread) -> None:
    """The provisioned device still connects with a modern TLS version. Also a barrier: its
    CONNACK means the broker has taken every earlier connection off the listen queue, so none
    is in flight when the broker stops (asyncio would then drop it unclosed)."""
    client = text_client(broker.port, ssl.PROTOCOL_TLS_CLIENT)
    try:
        assert client.wait_connack() == 0
    finally:
        client.close()


@pytest.mark.parametrize("legacy", [False, True], ids=["default", "legacy-allowed"])
def test_text_tls_v1_verbatim_fails_in_the_client_itself(
    product: ProductKeys, in_keys_folder: Path, tmp_path: Path, legacy: bool
) -> None:
    """``tls_version=ssl.PROTOCOL_TLSv1, ciphers=None`` as written: OpenSSL 3's default
    security level leaves no cipher for TLS 1.0, so the client fails before sending a byte,
    even against a broker that allows TLS 1.0."""
    with running_broker(
        product.keys, tmp_path / "data", tls_allow_legacy_protocols=legacy
    ) as broker:
        provision_pem(broker, product.device)
        with pytest.raises(ssl.SSLError, match="NO_CIPHERS_AVAILABLE"):
            text_client(broker.port, ssl.PROTOCOL_TLSv1)
        assert_still_serves(broker)
        assert broker.running.auth_log.counts == {"allowed": 1}


@pytest.mark.parametrize(
    "tls_version", [ssl.PROTOCOL_TLSv1, ssl.PROTOCOL_TLSv1_1], ids=["TLSv1", "TLSv1.1"]
)
def test_broker_refuses_legacy_tls_by_default(
    product: ProductKeys, in_keys_folder: Path, tmp_path: Path, tls_version: ssl._SSLMethod
) -> None:
    """A client able to speak TLS 1.0/1.1 (security level 0) gets the broker's
    protocol_version alert: the refusal comes from the broker, not from the client."""
    with running_broker(product.keys, tmp_path / "data") as broker:
        provision_pem(broker, product.device)
        with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
            text_client(broker.port, tls_version, ciphers=LEGACY_CIPHERS)
        assert_still_serves(broker)
        assert broker.running.auth_log.counts == {"allowed": 1}


@pytest.mark.parametrize(
    ("tls_version", "negotiated"),
    [(ssl.PROTOCOL_TLSv1, "TLSv1"), (ssl.PROTOCOL_TLSv1_1, "TLSv1.1")],
    ids=["TLSv1", "TLSv1.1"],
)
def test_legacy_mode_accepts_tls_1_0_and_1_1_clients(
    product: ProductKeys,
    in_keys_folder: Path,
    tmp_path: Path,
    tls_version: ssl._SSLMethod,
    negotiated: str,
) -> None:
    """With ``tls_allow_legacy_protocols`` the same client connects and is authenticated by
    its certificate as usual (the text's snippet plus ``ciphers="DEFAULT:@SECLEVEL=0"``)."""
    with running_broker(product.keys, tmp_path / "data", tls_allow_legacy_protocols=True) as broker:
        provision_pem(broker, product.device)
        client = text_client(broker.port, tls_version, ciphers=LEGACY_CIPHERS)
        try:
            assert client.wait_connack() == 0
            sock = client.paho.socket()
            assert isinstance(sock, ssl.SSLSocket)
            assert sock.version() == negotiated
            assert client.subscribe("v1/devices/me/rpc/request/+") == [1]
        finally:
            client.close()
        assert broker.running.auth_log.counts == {"allowed": 1}
