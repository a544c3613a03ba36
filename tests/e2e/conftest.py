import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.migrate import upgrade
from tests.e2e.expiries import Expiries, watching_expiries
from tests.e2e.harness import BrokerThread, running_broker

# broker_settings lives in harness (running_broker needs it); importable from here too.
from tests.e2e.harness import broker_settings as broker_settings
from tests.e2e.suite5 import Suite5, start_suite
from tests.sqlite_template import migrated_sqlite
from tests.storage.pg import fresh_database


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with running_broker(tmp_path / "data") as running:
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
        yield migrated_sqlite(tmp_path / "data" / "nanoiot.db")
        return
    with fresh_database() as url:
        asyncio.run(upgrade(url))
        yield url


@pytest.fixture(scope="module", params=["tls", "tls-proxy"])
def suite(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Suite5]:
    """The Paho MQTT 5 suite's broker and clients (tests/e2e/suite5.py), one for each module
    of its cases (test_paho_suite5*.py), over mutual TLS and through the TLS proxy in turn.
    The MQTT 3.1.1 suite's module has a ``suite`` of its own."""
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield from start_suite(folder, request.param)
