"""Identity attacks against a real broker with real paho clients over real TLS: a trusted CA
taking over a device, a revoked CA-issued certificate re-signed as self-signed, re-dated
self-signed certificates (whole-certificate pinning), weak keys and CA certificates as
device certificates. Each test fails on a broker without the defence."""

import datetime as dt
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from paho.mqtt.enums import CallbackAPIVersion

from auth.certificate import parse_credential
from auth.connack import ConnackCode
from nanoiot.errors import ValidationError
from tests.certgen import issue, revocation_list
from tests.e2e.harness import BrokerThread, Client, broker_settings, mqtt_client, write_pem
from tests.e2e.trusted_ca import connack, trust, x509_fingerprints

CA = issue("Fleet CA", ca=True)
REFUSED = ConnackCode.NOT_AUTHORIZED


def test_a_trusted_ca_cannot_take_over_a_device(broker: BrokerThread, tmp_path: Path) -> None:
    """With the README's rule 'device-(.+)', any leaf of the CA used to be attached to the
    device its CN named: its identity, its session and its queued messages."""
    trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    _, own = broker.provision("boiler")  # the device's own self-signed certificate, pinned
    assert connack(broker, tmp_path, own) == ConnackCode.ACCEPTED
    attacker = issue("device-boiler", issuer=CA)
    assert connack(broker, tmp_path, attacker) == REFUSED
    # Revoking the device's credential does not open it to the CA either.
    store = broker.running.store
    device = broker.call(store.get_device_by_name("boiler"))
    broker.call(store.revoke_x509(device.id))
    assert connack(broker, tmp_path, issue("device-boiler", issuer=CA)) == REFUSED
    assert x509_fingerprints(broker, "boiler") == {parse_credential(own.cert_pem).spki_sha256}
    assert broker.running.auth_log.counts["device_has_other_credentials"] == 2


def test_a_ca_without_create_devices_reaches_bound_devices_only(
    broker: BrokerThread, tmp_path: Path
) -> None:
    fleet = trust(broker, "plant", CA)
    store = broker.running.store
    broker.call(store.create_device("pump-1"))  # made by an operator, not for this CA
    assert connack(broker, tmp_path, issue("pump-1", issuer=CA)) == REFUSED
    assert broker.running.auth_log.counts["not_bound_to_ca"] == 1
    assert connack(broker, tmp_path, issue("pump-9", issuer=CA)) == REFUSED  # not created
    broker.call(store.create_device("pump-2", bound_ca_id=fleet.id))
    assert connack(broker, tmp_path, issue("pump-2", issuer=CA)) == ConnackCode.ACCEPTED


def test_a_revoked_ca_issued_certificate_does_not_come_back_self_signed(
    broker: BrokerThread, tmp_path: Path
) -> None:
    fleet = trust(broker, "fleet", CA)
    leaf = issue("meter", issuer=CA)
    store = broker.running.store
    broker.call(store.create_device_with_credential("meter", x509=parse_credential(leaf.cert_pem)))
    assert connack(broker, tmp_path, leaf) == ConnackCode.ACCEPTED
    crl = revocation_list(CA, leaf.cert.serial_number).public_bytes(Encoding.PEM).decode()
    broker.call(store.set_ca_crl(fleet.id, crl))
    broker.call(broker.running.follower.poll_once())  # the broker has read the change
    assert connack(broker, tmp_path, leaf) == REFUSED
    resigned = issue("meter", key=leaf.key)  # the same key, self-signed
    assert connack(broker, tmp_path, resigned) == REFUSED
    assert broker.running.auth_log.counts["revoked_by_ca"] == 2


def test_self_signed_certificates_re_dated_by_the_device(tmp_path: Path) -> None:
    """Identity by key (the default) admits the same key with new dates; whole-certificate
    pinning admits only the certificate registered."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = issue("meter", not_before=past, not_after=past + dt.timedelta(days=1))
    redated = issue("meter", key=expired.key)
    for whole, expected in ((False, ConnackCode.ACCEPTED), (True, REFUSED)):
        running = BrokerThread(
            broker_settings(tmp_path / f"data-{whole}", pin_whole_certificate=whole)
        )
        try:
            running.provision("meter", expired)
            assert connack(running, tmp_path, expired) == REFUSED  # expired
            assert connack(running, tmp_path, redated) == expected
        finally:
            running.stop()
        if whole:
            assert running.running.auth_log.counts["certificate_not_pinned"] == 1


def _legacy_client(broker: BrokerThread, certfile: Path) -> Client:
    """A paho client whose OpenSSL lets it present a 1024-bit RSA key (security level 0,
    set before the key is loaded: at the default level 2 the client refuses it itself)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_verify_locations(broker.server_cert)
    context.load_cert_chain(certfile)
    paho = mqtt.Client(CallbackAPIVersion.VERSION2)
    client = Client(paho)
    paho.tls_set_context(context)
    paho.on_connect = lambda _c, _u, _f, rc, _p: client.connack.put(rc)
    paho.connect_async("127.0.0.1", broker.port)
    paho.loop_start()
    return client


def test_weak_keys_and_ca_certificates_are_no_device_certificates(
    broker: BrokerThread, tmp_path: Path
) -> None:
    trust(broker, "fleet", CA, creates=True)
    weak_key = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the attack
    weak = issue("old-meter", key=weak_key, issuer=CA)
    client = _legacy_client(broker, write_pem(tmp_path, weak, "weak"))
    try:
        assert client.wait_connack() == REFUSED
    finally:
        client.close()
    sub_ca = issue("sub-ca", issuer=CA, ca=True)
    assert connack(broker, tmp_path, sub_ca) == REFUSED
    counts = broker.running.auth_log.counts
    assert (counts["weak_key"], counts["ca_certificate_as_device"]) == (1, 1)
    store = broker.running.store
    with pytest.raises(ValidationError, match="RSA key of 1024 bits is too weak"):
        broker.call(store.create_device_with_credential("m", x509=parse_credential(weak.cert_pem)))
    with pytest.raises(ValidationError, match=r"CA certificate issued by another CA"):
        broker.call(
            store.create_device_with_credential("n", x509=parse_credential(sub_ca.cert_pem))
        )


@pytest.fixture
def first_start(tmp_path: Path) -> Iterator[BrokerThread]:
    """A broker that makes its data directory and database itself (the ``broker`` fixture's
    database is a copy, in a folder the copy made)."""
    with BrokerThread(broker_settings(tmp_path / "data")) as running:
        yield running


def test_a_copy_of_the_data_directory_gives_no_access_token(first_start: BrokerThread) -> None:
    """Tokens used to sit in plain text in nanoiot.db (mode 0644, in a 0755 folder): a copy
    of it was a key to every token device. Now the files hold a keyed hash, and the token
    still works for the device that has it."""
    broker = first_start
    store = broker.running.store
    device = broker.call(store.create_device("gateway"))
    token = broker.call(store.add_token_credential(device.id, "gw-token-5b1e8c0d7a")).token
    assert token == "gw-token-5b1e8c0d7a"
    client = mqtt_client(broker.port, broker.server_cert, None, username=token)
    try:
        assert client.wait_connack() == ConnackCode.ACCEPTED
    finally:
        client.close()
    data = broker.settings.data_dir
    files = [path for path in data.rglob("*") if path.is_file()]
    assert any(path.name == "nanoiot.db" for path in files)
    assert all(token.encode() not in path.read_bytes() for path in files)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "nanoiot.db").stat().st_mode) == 0o600
