"""What a first run gets wrong, answered in one line: a port in use, a database URL written
the usual way (real PostgreSQL and SQLite behind it)."""

import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import NANOIOT, Cli


def test_mqtt_port_in_use_is_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            **cli_env,
            "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
            "MQTT_SSL_BIND_PORT": str(port),
            "NANOIOT_HTTP_PORT": "0",
        }
        result = subprocess.run(
            [NANOIOT, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1:] == [
        f"error: cannot listen for MQTT on 127.0.0.1:{port} (MQTT_SSL_BIND_ADDRESS / "
        "MQTT_SSL_BIND_PORT): Address already in use (is another broker running?)"
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgresql_url_without_a_driver(
    nanoiot: Cli, cli_env: dict[str, str], postgres_url: str, scheme: str
) -> None:
    cli_env["NANOIOT_DATABASE_URL"] = postgres_url.replace("postgresql+asyncpg", scheme)
    nanoiot("db", "upgrade")
    nanoiot("device", "add", "pg-device")
    listed = json.loads(nanoiot("device", "list", "--json").stdout)
    assert [d["name"] for d in listed] == ["pg-device"]


def test_sqlite_url_without_a_driver(nanoiot: Cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    database = tmp_path / "elsewhere" / "fleet.db"
    cli_env["NANOIOT_DATABASE_URL"] = f"sqlite:///{database}"
    nanoiot("device", "add", "sqlite-device")
    assert database.exists()
    listed = json.loads(nanoiot("device", "list", "--json").stdout)
    assert [d["name"] for d in listed] == ["sqlite-device"]


def test_a_synchronous_driver_is_one_line_saying_what_to_write(
    nanoiot: Cli, cli_env: dict[str, str]
) -> None:
    cli_env["NANOIOT_DATABASE_URL"] = "postgresql+psycopg2://nanoiot:secret@db/nanoiot"
    result = nanoiot("device", "list", ok=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: setting 'database_url' (from $NANOIOT_DATABASE_URL): "
        "the driver 'psycopg2' is not asyncio-capable: write postgresql+asyncpg:// or just "
        "postgresql://"
    ]
