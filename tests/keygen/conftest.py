"""Run the shipped scripts as an operator would: copied into a folder, non-interactive.

The scripts are copied together with ``conf/keygen.properties`` into a temporary directory
("the folder they ship in") and run there with the virtualenv's ``bin`` on PATH, stdin
closed, so any prompt would show up as a hang or a failure rather than pass silently.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
VENV_BIN = Path(sys.executable).parent
SHIPPED = ("keygen.properties", "server.keygen.sh", "client.keygen.sh")

Run = Callable[..., subprocess.CompletedProcess[str]]


def script_env(tmp: Path, path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOIOT_", "MQTT_SSL_"))}
    env["PATH"] = path if path is not None else f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NANOIOT_DATA_DIR"] = str(tmp / "data")
    env["COLUMNS"] = "200"
    return env


def ship(folder: Path) -> Path:
    """Copy the scripts and the shipped properties into ``folder``, as a release would."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        shutil.copy2(CONF / name, folder / name)
    return folder


def runner(folder: Path, env: dict[str, str] | None = None) -> Run:
    def run(
        script: str, *args: str, ok: bool = True, stdin: int | None = subprocess.DEVNULL
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [f"./{script}", *args],
            cwd=folder,
            env=env or script_env(folder),
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok and result.returncode != 0:
            pytest.fail(f"{script} {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    return run


@dataclass(frozen=True)
class Generated:
    """Both scripts run once with the shipped properties; tests read, never modify, this."""

    folder: Path
    server_stdout: str
    server_stderr: str
    client_stdout: str


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    folder = ship(tmp_path_factory.mktemp("shipped"))
    run = runner(folder)
    server = run("server.keygen.sh")
    client = run("client.keygen.sh")
    return Generated(folder, server.stdout, server.stderr, client.stdout)


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    return ship(tmp_path / "keygen")


@pytest.fixture
def run(shipped: Path) -> Run:
    return runner(shipped)


def tool(name: str) -> str:
    """The path of an external checker; a clear skip where it is absent."""
    found = shutil.which(name)
    if found is None:
        what = "Java's keytool" if name == "keytool" else name
        pytest.skip(f"{what} is not installed on this machine; install it to run this check")
    return found


def check(*command: str, stdin: str | None = None) -> str:
    """Run a checker; its failure fails the test with its own message. Returns stdout+stderr."""
    result = subprocess.run(
        [tool(command[0]), *command[1:]],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}")
    return result.stdout + result.stderr
