"""TLS fixtures: a server CA and certificate, and self-signed client certificates; and a
running broker with the end-to-end tests' settings (``broker``).

All made at test time (no key is committed). The certificates are session-scoped because key
generation is the slow part and no test changes them.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.session_store import SqlSessionStore
from nanoiot.settings import Settings
from storage.sql import SqlCredentialStore
from tests.broker.tls_certs import ClientFiles, ServerPki, client_cert, make_server_pki
from tests.e2e.harness import BrokerThread, running_broker


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ServerPki:
    return make_server_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients")


@pytest.fixture(scope="session")
def client_ec(client_dir: Path) -> ClientFiles:
    """An unprovisioned self-signed EC P-256 device certificate."""
    return client_cert(client_dir, "device-ec", "ec")


@pytest.fixture(scope="session")
def client_rsa(client_dir: Path) -> ClientFiles:
    """An unprovisioned self-signed RSA-2048 device certificate."""
    return client_cert(client_dir, "device-rsa", "rsa")


@pytest.fixture
def tls_settings(pki: ServerPki) -> Callable[..., Settings]:
    """Settings with the test server's PEM credentials; keyword arguments override."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mqtt_ssl_pem_cert": pki.cert_file,
            "mqtt_ssl_pem_key": pki.key_file,
            "tls_handshake_timeout": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with running_broker(tmp_path / "data") as running:
        yield running


@pytest.fixture
def completed_kept() -> int:
    """The QoS 2 ids completed that ``sessions`` keeps per session (0: none); a test module
    that needs some overrides it."""
    return 0


@pytest.fixture
async def sessions(
    sqlite_store: SqlCredentialStore, completed_kept: int
) -> AsyncIterator[SqlSessionStore]:
    """The persistent sessions kept in ``sqlite_store``, written out before it closes."""
    store = SqlSessionStore(sqlite_store, completed_kept=completed_kept)
    try:
        yield store
    finally:
        await store.close(within=5)
