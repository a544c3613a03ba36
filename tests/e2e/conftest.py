import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanoiot.settings import Settings
from storage.migrate import upgrade
from tests.e2e.expiries import Expiries, watching_expiries
from tests.e2e.harness import BrokerThread
from tests.storage.pg import fresh_database


def broker_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "mqtt_ssl_bind_address": "127.0.0.1",
        "mqtt_ssl_bind_port": 0,
        "http_bind_address": "127.0.0.1",
        "http_port": 0,
        "tls_handshake_timeout": 5.0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with BrokerThread(broker_settings(tmp_path / "data")) as running:
        yield running


@pytest.fixture
def expiries() -> Iterator[Expiries]:
    """The sessions the broker ends for their expiry, from the log line it writes then."""
    with watching_expiries() as handler:
        yield handler


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test's broker store, on SQLite and on PostgreSQL (fresh, migrated) in turn."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'nanoiot.db'}"
        return
    with fresh_database() as url:
        asyncio.run(upgrade(url))
        yield url
