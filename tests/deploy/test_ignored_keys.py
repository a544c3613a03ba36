"""Private keys and keystores that the README's commands write are ignored by git.

The README makes a first device in the project folder and server and device keys in conf/;
none of it may end up in a commit (the README walk also checks `git status` after running
them for real, in tests/e2e/test_readme_walk.py).
"""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WRITTEN = [
    "mqttclient.nopass.pem",
    "mqttclient.pub.pem",
    "mqttclient.jks",
    "conf/mqttserver.key.pem",
    "conf/mqttserver.pub.pem",
    "conf/mqttserver.cer",
    "conf/mqttserver.jks",
    "conf/mqttclient.nopass.pem",
    "conf/mqttclient.pub.pem",
    "conf/mqttclient.jks",
    "conf/nanoiot-device-ca.pem",
    "conf/nanoiot-device-ca.key.pem",
    "sensor-1.nopass.pem",
    "keys/server.p12",
    "data/nanoiot.db",
    "data/certs/mqttserver.key.pem",
]
SHIPPED = ["conf/nanoiot.yaml", "conf/keygen.properties", "conf/server.keygen.sh", "README.md"]


def ignored(paths: list[str]) -> set[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO, input="\n".join(paths), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.split())


def test_keys_and_keystores_the_readme_writes_are_ignored() -> None:
    assert ignored(WRITTEN) == set(WRITTEN)


def test_shipped_files_are_not_ignored() -> None:
    assert ignored(SHIPPED) == set()
