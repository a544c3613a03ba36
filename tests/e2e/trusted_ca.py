"""A trusted CA's devices against a real broker, for the tests of CA-issued devices: the CA
trusted in the broker's store, a leaf's connection and its CONNACK, and the fingerprints of
the X.509 credentials a device holds."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from auth.certificate import parse_credential
from storage.records import TrustedCA
from tests.certgen import Issued, issue
from tests.e2e.harness import BrokerThread, Client, mqtt_client, write_pem

CA = issue("Fleet CA", ca=True)


def trust(
    broker: BrokerThread, name: str, ca: Issued, cn_regex: str | None = None, creates: bool = False
) -> TrustedCA:
    parsed = parse_credential(ca.cert_pem)
    store = broker.running.store
    return broker.call(
        store.add_trusted_ca(name, parsed, cn_regex=cn_regex, create_devices=creates)
    )


@contextmanager
def connected(
    broker: BrokerThread, directory: Path, leaf: Issued, client_id: str
) -> Iterator[Client]:
    """A paho client presenting ``leaf`` (key and certificate in one .nopass.pem); always closed."""
    certfile = write_pem(directory, leaf, f"{leaf.cert.serial_number:x}")
    client = mqtt_client(broker.port, broker.server_cert, certfile, client_id=client_id)
    try:
        yield client
    finally:
        client.close()


def connack(broker: BrokerThread, directory: Path, leaf: Issued) -> int:
    with connected(broker, directory, leaf, "") as client:
        return client.wait_connack()


def x509_fingerprints(broker: BrokerThread, device_name: str) -> set[str | None]:
    store = broker.running.store

    async def fingerprints() -> set[str | None]:
        device = await store.get_device_by_name(device_name)
        return {c.spki_sha256 for c in await store.list_credentials(device.id)}

    return broker.call(fingerprints())
