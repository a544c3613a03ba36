"""Each ``nanoiot`` command loads what it uses and no more.

Start-up is mostly imports: SQLAlchemy, the settings model (pydantic), cryptography's X.509
code and the admin web stack each cost a good part of a second of CPU, and every CLI call,
broker worker and node pays for what it loads. These tests run the real entry point in a
subprocess and look at the modules it loaded when it exits.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The console script's own body (see the nanoiot entry in pyproject.toml), plus a note of the
# modules loaded, written when the process exits (also through sys.exit).
RUN = (
    "import atexit, json, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "sys.argv[0] = 'nanoiot'\n"
    "from nanoiot.cli import main\n"
    "main()\n"
)
DATABASE = ("sqlalchemy", "alembic", "aiosqlite", "asyncpg", "storage")
WEB = ("fastapi", "starlette", "uvicorn", "jinja2", "prometheus_client", "admin")
BROKER = ("broker", "OpenSSL")
# Not pydantic: typer itself loads it to convert the options of a command it runs.
SETTINGS = ("yaml", "nanoiot.settings")
X509 = ("cryptography", "auth")


def loaded_by(tmp_path: Path, cli_env: dict[str, str], *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(out), *args],
        env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(out.read_text())
    return set(modules)


def among(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The loaded modules that are, or are inside, one of ``packages``."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_help_loads_no_database_settings_or_certificate_code(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    modules = loaded_by(tmp_path, cli_env, "--help")
    assert among(modules, DATABASE + WEB + BROKER + SETTINGS + X509) == []
    assert "nanoiot.cli.keygen" in modules  # every command's options were read


@pytest.mark.parametrize("command", ["device", "credentials", "ca", "keygen", "db"])
def test_a_group_help_loads_no_database_or_settings(
    tmp_path: Path, cli_env: dict[str, str], command: str
) -> None:
    modules = loaded_by(tmp_path, cli_env, command, "--help")
    assert among(modules, DATABASE + WEB + BROKER + SETTINGS + X509) == []


def test_keygen_without_provisioning_loads_no_database_or_settings(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    modules = loaded_by(tmp_path, cli_env, "keygen", "server", "-d", str(tmp_path / "keys"))
    assert (tmp_path / "keys" / "mqttserver.pub.pem").is_file()
    assert among(modules, DATABASE + WEB + BROKER + SETTINGS) == []


def test_a_store_command_loads_no_web_stack_broker_or_other_commands_code(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    modules = loaded_by(tmp_path, cli_env, "device", "add", "sensor-1")
    assert "sqlalchemy" in modules
    others = ("nanoiot.cli.doctor_report", "nanoiot.cli.keygen_run", "nanoiot.diagnosis")
    assert among(modules, WEB + BROKER + others) == []
