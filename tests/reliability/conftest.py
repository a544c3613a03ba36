"""One broker per module, a canary device on it, and the certificates bad clients present.

The broker is shared by a module's cases on purpose: the canary lives through all of them,
and each case checks it afterwards. Timeouts are short so that cases about slow clients
finish quickly; ``max_packet_size`` is small so that the boundary is cheap to cross.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from auth.certificate import parse_credential
from storage.records import TrustedCA
from tests.certgen import Issued, issue, revocation_list
from tests.e2e.harness import BrokerThread, broker_settings
from tests.reliability.canary import Canary

HANDSHAKE_TIMEOUT = 1.0  # seconds, also the wait for CONNECT after the handshake
MAX_PACKET_SIZE = 64 * 1024


@dataclass(frozen=True)
class FleetPki:
    """A CA the broker trusts (leaves 'device-<name>'), with one leaf in its CRL."""

    ca: Issued
    revoked: Issued


@pytest.fixture(scope="module")
def fleet() -> FleetPki:
    ca = issue("Reliability Fleet CA", ca=True)
    return FleetPki(ca, issue("device-revoked-1", issuer=ca))


def start_broker(data_dir: Path, fleet: FleetPki, **overrides: object) -> BrokerThread:
    values: dict[str, object] = {
        # This suite floods from one address on purpose (1,000 half-open connections, a line
        # for each violation, bad first packets by the thousand): one host's bounds must not
        # hide what it measures.
        "max_connecting_per_address": 10_000,
        "auth_log_repeats": 100_000,
        "auth_failures_before_throttle": 1_000_000,
        **overrides,
    }
    settings = broker_settings(
        data_dir, tls_handshake_timeout=HANDSHAKE_TIMEOUT, max_packet_size=MAX_PACKET_SIZE,
        **values,
    )  # fmt: skip
    broker = BrokerThread(settings)
    try:
        trust_with_crl(broker, fleet)
    except BaseException:
        broker.stop()
        raise
    return broker


def trust_with_crl(broker: BrokerThread, fleet: FleetPki) -> TrustedCA:
    store = broker.running.store
    ca = broker.call(
        store.add_trusted_ca(
            "fleet", parse_credential(fleet.ca.cert_pem), cn_regex=r"device-(.+)",
            create_devices=True,
        )
    )  # fmt: skip
    crl = revocation_list(fleet.ca, fleet.revoked.cert.serial_number)
    broker.call(store.set_ca_crl(ca.id, crl.public_bytes(Encoding.PEM).decode()))
    broker.call(broker.running.follower.poll_once())
    return ca


@pytest.fixture(scope="module")
def rbroker(tmp_path_factory: pytest.TempPathFactory, fleet: FleetPki) -> Iterator[BrokerThread]:
    broker = start_broker(tmp_path_factory.mktemp("broker") / "data", fleet)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="module")
def canary(rbroker: BrokerThread, certs_dir: Path) -> Iterator[Canary]:
    bird = Canary(rbroker, certs_dir)
    try:
        yield bird
    finally:
        bird.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The broker's log lines about refusals (it runs in this process, in another thread)."""
    for name in ("broker.core", "broker.client", "broker.registry", "nanoiot.auth"):
        caplog.set_level(logging.INFO, logger=name)
    # Last: set_level also sets the capturing handler's level, and handshake failures beyond
    # the rate limit's burst are DEBUG.
    caplog.set_level(logging.DEBUG, logger="broker.tls_failures")
    return caplog


def logged(caplog: pytest.LogCaptureFixture, *fragments: str) -> list[str]:
    """The captured messages that contain every fragment."""
    messages = [record.getMessage() for record in caplog.records]
    return [m for m in messages if all(fragment in m for fragment in fragments)]
