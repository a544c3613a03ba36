"""Run the real ``nanoiot`` console script in a subprocess, as a user would; and the doctor
tests' ``world`` (``tests.cli.doctor_world``)."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.doctor_world import World

NANOIOT = str(Path(sys.executable).with_name("nanoiot"))

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose NanoIoT data (SQLite database) lives in this test's directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOIOT_", "MQTT_SSL_"))}
    env["NANOIOT_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "200"  # wide tables: fingerprints are not wrapped
    return env


@pytest.fixture
def nanoiot(cli_env: dict[str, str], tmp_path: Path) -> Cli:
    def run(
        *args: str, stdin: str | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [NANOIOT, *args],
            env=cli_env,
            cwd=tmp_path,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if ok and result.returncode != 0:
            pytest.fail(f"nanoiot {' '.join(args)} failed: {result.stderr}")
        return result

    return run


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)
