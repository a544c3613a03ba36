"""What ships: both scripts, the properties file in conf/ and inside the package, alike."""

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.keygen.conftest import CONF, REPO, VENV_BIN

SCRIPTS = ("server.keygen.sh", "client.keygen.sh")


def test_packaged_properties_equal_the_conf_copy() -> None:
    packaged = REPO / "nanoiot" / "keygen" / "keygen.properties"
    assert packaged.read_text() == (CONF / "keygen.properties").read_text()


def test_default_properties_command_points_at_the_packaged_file() -> None:
    out = subprocess.run(
        [str(VENV_BIN / "nanoiot"), "keygen", "default-properties"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out).read_text() == (CONF / "keygen.properties").read_text()


def test_pyproject_installs_the_scripts_and_the_properties() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert sorted(setuptools["script-files"]) == sorted(f"conf/{name}" for name in SCRIPTS)
    assert "keygen.properties" in setuptools["package-data"]["nanoiot.keygen"]


def test_the_two_scripts_differ_only_in_their_kind_and_header() -> None:
    server, client = ((CONF / name).read_text().splitlines() for name in SCRIPTS)
    body_start = server.index("set -euo pipefail")
    assert client.index("set -euo pipefail") == body_start
    differing = [
        (a, b) for a, b in zip(server[body_start:], client[body_start:], strict=True) if a != b
    ]
    assert differing == [("kind=server", "kind=client")]


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_executable_bash_and_parse(name: str) -> None:
    path = CONF / name
    assert os.access(path, os.X_OK)
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_shellcheck_clean(name: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", str(CONF / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
