"""Devices of a trusted CA against a real broker: no per-device provisioning, rotation by
renewal, refusals, and a CRL that closes a live connection within a second."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auth.certificate import parse_credential
from auth.connack import ConnackCode
from nanoiot.settings import Settings
from storage.records import TrustedCA
from storage.sql import SqlCredentialStore
from tests.certgen import Issued, crl_of, issue
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, mqtt_client
from tests.e2e.trusted_ca import CA, connack, connected, trust, x509_fingerprints
from tests.keygen.conftest import runner, script_env, ship

NANOIOT = str(Path(sys.executable).with_name("nanoiot"))


def spki(leaf: Issued) -> str:
    return parse_credential(leaf.cert_pem).spki_sha256


def test_leaf_creates_its_device_and_a_renewal_rotates(
    broker: BrokerThread, tmp_path: Path
) -> None:
    trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    first = issue("device-sensor-9", issuer=CA)
    assert connack(broker, tmp_path, first) == ConnackCode.ACCEPTED
    assert x509_fingerprints(broker, "sensor-9") == {spki(first)}

    renewed = issue("device-sensor-9", issuer=CA)  # a new key for the same device
    assert connack(broker, tmp_path, renewed) == ConnackCode.ACCEPTED
    assert x509_fingerprints(broker, "sensor-9") == {spki(first), spki(renewed)}
    assert broker.running.auth_log.counts["allowed"] == 2


def test_refusals_of_ca_issued_leaves(broker: BrokerThread, tmp_path: Path) -> None:
    trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    untrusted = issue("device-sensor-1", issuer=issue("Stranger CA", ca=True))
    refused = {
        "name_not_allowed": [issue("thermostat-1", issuer=CA), issue("device-a+b", issuer=CA)],
        "untrusted_issuer": [untrusted],
    }
    for leaves in refused.values():
        for leaf in leaves:
            assert connack(broker, tmp_path, leaf) == ConnackCode.NOT_AUTHORIZED
    counts = broker.running.auth_log.counts
    assert {reason: counts[reason] for reason in refused} == {
        "name_not_allowed": 2,
        "untrusted_issuer": 1,
    }


def test_ca_without_create_devices_admits_devices_bound_to_it_only(
    broker: BrokerThread, tmp_path: Path
) -> None:
    plant = trust(broker, "plant", CA)
    assert connack(broker, tmp_path, issue("pump-1", issuer=CA)) == ConnackCode.NOT_AUTHORIZED
    assert broker.running.auth_log.counts["name_not_allowed"] == 1
    broker.call(broker.running.store.create_device("pump-2", bound_ca_id=plant.id))
    leaf = issue("pump-2", issuer=CA)
    assert connack(broker, tmp_path, leaf) == ConnackCode.ACCEPTED
    assert x509_fingerprints(broker, "pump-2") == {spki(leaf)}


def upload_crl(settings: Settings, ca: TrustedCA, crl_der: bytes) -> None:
    """What an operator's `nanoiot ca crl` does: another store instance, another event loop."""
    pem = x509.load_der_x509_crl(crl_der).public_bytes(Encoding.PEM).decode()

    async def upload() -> None:
        store = await SqlCredentialStore.open(
            settings.effective_database_url, data_dir=settings.data_dir
        )
        try:
            await store.set_ca_crl(ca.id, pem)
        finally:
            await store.close()

    asyncio.run(upload())


def test_crl_closes_the_revoked_live_connection_within_a_second(
    broker: BrokerThread, tmp_path: Path
) -> None:
    ca = trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    revoked, kept = issue("device-sensor-9", issuer=CA), issue("device-sensor-9", issuer=CA)
    with (
        connected(broker, tmp_path, revoked, "s9-a") as victim,
        connected(broker, tmp_path, kept, "s9-b") as other,
    ):
        assert victim.wait_connack() == ConnackCode.ACCEPTED
        assert other.wait_connack() == ConnackCode.ACCEPTED

        upload_crl(broker.settings, ca, crl_of(CA, revoked.cert.serial_number))
        stored = time.monotonic()
        assert victim.disconnected.wait(WAIT)
        assert time.monotonic() - stored < 1.0
        assert other.subscribe("v1/devices/me/rpc/request/+") == [1]  # the other leaf stays
        assert not other.disconnected.is_set()

    assert connack(broker, tmp_path, revoked) == ConnackCode.NOT_AUTHORIZED
    assert broker.running.auth_log.counts["revoked_by_ca"] == 1


def delete_ca(settings: Settings, ca: TrustedCA) -> None:
    """What an operator's `nanoiot ca delete` does: another store instance, another loop."""

    async def delete() -> None:
        store = await SqlCredentialStore.open(
            settings.effective_database_url, data_dir=settings.data_dir
        )
        try:
            await store.delete_trusted_ca(ca.id)
        finally:
            await store.close()

    asyncio.run(delete())


def test_deleting_the_ca_cuts_off_its_devices_within_a_second(
    broker: BrokerThread, tmp_path: Path
) -> None:
    ca = trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    leaf = issue("device-sensor-9", issuer=CA)
    pinned = issue("pump-1", issuer=CA)  # the same CA's leaf, pinned by the operator
    broker.provision("pump-1", pinned)
    with (
        connected(broker, tmp_path, leaf, "s9") as victim,
        connected(broker, tmp_path, pinned, "p1") as other,
    ):
        assert victim.wait_connack() == ConnackCode.ACCEPTED  # device created, leaf stored
        assert other.wait_connack() == ConnackCode.ACCEPTED
        assert x509_fingerprints(broker, "sensor-9") == {spki(leaf)}

        delete_ca(broker.settings, ca)
        deleted = time.monotonic()
        assert victim.disconnected.wait(WAIT)
        assert time.monotonic() - deleted < 1.0
        assert other.subscribe("v1/devices/me/rpc/request/+") == [1]  # the pinned one stays
        assert not other.disconnected.is_set()

    assert connack(broker, tmp_path, leaf) == ConnackCode.NOT_AUTHORIZED
    assert connack(broker, tmp_path, pinned) == ConnackCode.ACCEPTED
    assert broker.running.auth_log.counts["ca_no_longer_trusted"] == 1  # the reconnect


def test_trusting_the_ca_again_lets_its_devices_back_in(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """A stored leaf follows its CA by id: trusting the CA again under a new id does not
    revive it, and its device is the new CA's only once an operator binds it."""
    ca = trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    leaf = issue("device-sensor-9", issuer=CA)
    assert connack(broker, tmp_path, leaf) == ConnackCode.ACCEPTED
    delete_ca(broker.settings, ca)
    broker.call(broker.running.follower.poll_once())  # the broker has read the change
    assert connack(broker, tmp_path, leaf) == ConnackCode.NOT_AUTHORIZED
    again = trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    broker.call(broker.running.follower.poll_once())
    assert connack(broker, tmp_path, leaf) == ConnackCode.NOT_AUTHORIZED
    renewed = issue("device-sensor-9", issuer=CA)
    assert connack(broker, tmp_path, renewed) == ConnackCode.NOT_AUTHORIZED
    assert broker.running.auth_log.counts["not_bound_to_ca"] == 1
    store = broker.running.store
    device = broker.call(store.get_device_by_name("sensor-9"))
    broker.call(store.bind_device(device.id, again.id))
    assert connack(broker, tmp_path, renewed) == ConnackCode.ACCEPTED


def test_keygen_device_ca_needs_no_per_device_provisioning(tmp_path: Path) -> None:
    """server.keygen.sh --ca, client.keygen.sh --ca, nanoiot ca add: the device is in."""
    keys = ship(tmp_path / "keys")
    run = runner(keys, script_env(tmp_path))
    run("server.keygen.sh", "--ca")
    run("client.keygen.sh", "--ca", "--cn", "sensor-42", "--prefix", "sensor-42")
    settings = broker_settings(
        tmp_path / "data",
        mqtt_ssl_pem_cert=keys / "mqttserver.pub.pem",
        mqtt_ssl_pem_key=keys / "mqttserver.key.pem",
    )
    broker = BrokerThread(settings)
    try:
        nanoiot(
            tmp_path, "ca", "add", "fleet", str(keys / "nanoiot-device-ca.pem"), "--create-devices"
        )
        doctor = nanoiot(tmp_path, "doctor", "--cert", str(keys / "sensor-42.nopass.pem"))
        assert "device 'sensor-42' would be created at first connect" in doctor
        client = mqtt_client(
            broker.port,
            keys / "mqttserver.pub.pem",
            keys / "sensor-42.nopass.pem",
            client_id="sensor-42",
        )
        try:
            assert client.wait_connack() == ConnackCode.ACCEPTED
        finally:
            client.close()
        assert x509_fingerprints(broker, "sensor-42") == {
            parse_credential((keys / "sensor-42.pub.pem").read_bytes()).spki_sha256
        }
    finally:
        broker.stop()


def nanoiot(tmp_path: Path, *args: str) -> str:
    """The real CLI in another process, on the broker's database (NANOIOT_DATA_DIR)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOIOT_", "MQTT_SSL_"))}
    env["NANOIOT_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [NANOIOT, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
