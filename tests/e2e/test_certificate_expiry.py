"""A certificate that expires while its device is connected (RFC 5280 §4.1.2.5): the
connection is closed once it has, as a revoked one is, whether the device's own certificate
or the CA certificate in the chain it sent runs out first; a real broker, real TLS, paho."""

import datetime as dt
from pathlib import Path

from auth.connack import ConnackCode
from broker.mqtt.codes import Reason
from tests.certgen import Issued, issue
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, write_pem
from tests.e2e.trusted_ca import CA, connack, trust
from tests.e2e.v5_client import V5Client, reason_string, v5_client

# Long enough for the handshake and CONNECT on a loaded machine, short enough to wait for.
LIFETIME = dt.timedelta(seconds=6)


def ending_soon(cn: str, issuer: Issued | None = None, *, ca: bool = False) -> Issued:
    now = dt.datetime.now(dt.UTC)
    return issue(cn, issuer=issuer, ca=ca, not_before=now - dt.timedelta(minutes=5),
                 not_after=now + LIFETIME)  # fmt: skip


def connect(broker: BrokerThread, certfile: Path) -> V5Client:
    client = v5_client(broker.port, broker.server_cert, certfile)
    assert client.wait_connack()[0] == 0
    return client


def closed_for(client: V5Client) -> str:
    """The reason string of the DISCONNECT the broker sends once the certificate expired."""
    try:
        assert client.disconnected.wait(WAIT + LIFETIME.total_seconds())
        code, properties = client.wait_disconnect()
        assert code == Reason.ADMINISTRATIVE_ACTION
        return reason_string(properties)
    finally:
        client.close()


def test_a_device_is_disconnected_when_its_certificate_expires(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """Before, a device connected a second before its certificate's notAfter stayed
    connected for as long as it kept the connection alive."""
    _, short = broker.provision("meter-1", ending_soon("meter-1"))
    client = connect(broker, write_pem(tmp_path, short, "meter-1"))
    expired_on = f"{short.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    assert closed_for(client) == f"certificate expired on {expired_on}"
    assert connack(broker, tmp_path, short) == ConnackCode.NOT_AUTHORIZED


def test_a_device_is_disconnected_when_the_ca_in_its_chain_expires(
    broker: BrokerThread, tmp_path: Path
) -> None:
    trust(broker, "fleet", CA, creates=True)
    intermediate = ending_soon("Fleet Issuing CA", CA, ca=True)
    leaf = issue("sensor-4", issuer=intermediate)  # valid for 30 days itself
    certfile = tmp_path / "sensor-4.nopass.pem"
    certfile.write_text(leaf.key_pem + leaf.cert_pem + intermediate.cert_pem)
    client = connect(broker, certfile)
    assert closed_for(client) == "a CA certificate in the chain is outside its validity"


def test_no_timer_when_validity_is_not_checked(tmp_path: Path) -> None:
    """MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT: an expired certificate gets in, so its
    expiry while connected closes nothing either."""
    settings = broker_settings(tmp_path / "data", mqtt_ssl_skip_validity_check_for_client_cert=True)
    with BrokerThread(settings) as broker:
        _, short = broker.provision("meter-2", ending_soon("meter-2"))
        client = connect(broker, write_pem(tmp_path, short, "meter-2"))
        try:
            [live] = broker.running.broker.clients()
            assert live._cert_timer is None
        finally:
            client.close()
