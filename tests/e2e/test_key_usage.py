"""Certificates whose key usage (RFC 5280 §4.2.1.3) forbids what they are used for, presented
over real TLS by a paho client: a device certificate whose key is not for signatures, and a
CA certificate whose key is not for signing certificates, in the chain a device sends."""

from pathlib import Path

from cryptography import x509

from auth.connack import ConnackCode
from storage.records import AuthOutcome
from tests.certgen import Issued, issue
from tests.e2e.harness import BrokerThread, mqtt_client
from tests.e2e.trusted_ca import CA, connack, trust


def usage(
    *, signs: bool = False, certifies: bool = False, enciphers: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signs,
        content_commitment=False,
        key_encipherment=enciphers,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certifies,
        crl_sign=certifies,
        encipher_only=False,
        decipher_only=False,
    )


def refusal_details(broker: BrokerThread) -> list[str]:
    broker.call(broker.running.auth_log.stop())  # flush the event writer
    events = broker.call(broker.running.store.list_auth_events(outcome=AuthOutcome.DENIED))
    return [event.reason for event in events]


def test_a_pinned_certificate_whose_key_is_not_for_signing_is_refused(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """The TLS client signs its handshake with a key its certificate says is for key
    transport only; registered by its key, it was let in all the same."""
    enciphering = issue("meter-1", key_usage=usage(enciphers=True))
    broker.provision("meter-1", enciphering)
    signing = issue("meter-2", key_usage=usage(signs=True, enciphers=True))
    broker.provision("meter-2", signing)
    assert connack(broker, tmp_path, signing) == ConnackCode.ACCEPTED
    assert connack(broker, tmp_path, enciphering) == ConnackCode.NOT_AUTHORIZED
    assert broker.running.auth_log.counts["not_for_client_auth"] == 1
    assert refusal_details(broker) == [
        "not_for_client_auth: certificate key is not for signing, which a TLS client does "
        "(key usage: keyEncipherment; digitalSignature is needed)"
    ]


def chain_connack(broker: BrokerThread, directory: Path, leaf: Issued, issuer: Issued) -> int:
    """The device sends its certificate and the intermediate that issued it (RFC 8446
    §4.4.2: the sender's certificate first)."""
    certfile = directory / f"{leaf.cert.serial_number:x}.nopass.pem"
    certfile.write_text(leaf.key_pem + leaf.cert_pem + issuer.cert_pem)
    client = mqtt_client(broker.port, broker.server_cert, certfile)
    try:
        return client.wait_connack()
    finally:
        client.close()


def test_a_ca_certificate_not_for_signing_certificates_issues_no_device(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """An operator trusts a CA that also issued, say, an OCSP responder's certificate with
    basicConstraints cA but a key usage of digitalSignature only: whoever holds that key
    made devices of the trusted CA at will."""
    trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    responder = issue("Fleet OCSP", issuer=CA, ca=True, key_usage=usage(signs=True))
    issuing = issue("Fleet Issuing CA", issuer=CA, ca=True, key_usage=usage(certifies=True))
    minted = issue("device-minted", issuer=responder)
    proper = issue("device-proper", issuer=issuing)
    assert chain_connack(broker, tmp_path, proper, issuing) == ConnackCode.ACCEPTED
    assert chain_connack(broker, tmp_path, minted, responder) == ConnackCode.NOT_AUTHORIZED
    assert broker.running.auth_log.counts["untrusted_issuer"] == 1
    assert refusal_details(broker) == [
        "untrusted_issuer: CA certificate 'CN=Fleet OCSP' may not sign certificates: its key "
        "usage lacks keyCertSign"
    ]
    devices = broker.call(broker.running.store.list_devices()).items
    assert [device.name for device in devices] == ["proper"]
